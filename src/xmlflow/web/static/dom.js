// Small DOM helpers shared by the page's modules.

export const $ = (selector, root = document) => root.querySelector(selector);

/** A fresh copy of a <template>'s single top-level element. */
export function clone(templateId) {
  return document.getElementById(templateId).content.firstElementChild.cloneNode(true);
}

/** Set a progressbar element (role="progressbar" with a .bar-fill child) to 0..1. */
export function setBar(bar, fraction) {
  const pct = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
  bar.setAttribute("aria-valuenow", String(pct));
  bar.querySelector(".bar-fill").style.width = `${pct}%`;
  return pct;
}

/** Say something to screen-reader users once, politely. */
export function announce(message) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // A fresh text node in a new task makes screen readers read it even when it repeats.
  setTimeout(() => { region.textContent = message; }, 50);
}
