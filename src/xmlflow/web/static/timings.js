// A finished job's steps as bars as long as the time each took: plain DOM and CSS, no
// chart library. The text of each row (name and time) says it all; the bars help compare.

import { formatDuration } from "./format.js";

/** A <figure> for steps with a time, or null when fewer than two have one (a single
 * step's time is already on its row). `steps`: [{id, name, elapsed}]. */
export function stepChart(steps) {
  const timed = steps.filter((s) => Number(s.elapsed) > 0);
  if (timed.length < 2) return null;
  const longest = Math.max(...timed.map((s) => Number(s.elapsed)));
  const chart = el("figure", "step-chart");
  const rows = el("ol");
  for (const step of timed) rows.append(row(step, longest));
  chart.append(el("figcaption", "", "Time per step"), rows);
  return chart;
}

function row(step, longest) {
  const item = el("li", "step-chart-row");
  item.dataset.stepId = step.id;
  const track = el("span", "step-chart-track");
  const bar = el("span", "step-chart-bar");
  bar.style.width = `${Math.max(1, (100 * Number(step.elapsed)) / longest)}%`;
  track.append(bar);
  item.append(el("span", "step-chart-name", step.name), track, el("span", "step-chart-time", formatDuration(step.elapsed)));
  return item;
}

function el(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}
