// A look inside an output without downloading it: the first records as a collapsible tree
// (or the first lines of a text output), more on demand.
//
// The server sends one bounded page per request (GET …/outputs/<name>/preview) with a
// cursor for the next; the page asks for a page only when the person opens the preview or
// presses "Show more", so a gigabyte output costs the browser what was looked at.
// Everything from the output is put in the DOM with textContent, never as markup.

import { api } from "./api.js";
import { formatSize, plural } from "./format.js";

const PAGE_RECORDS = 20;
const PAGE_LINES = 50;
const RECORDS = /\.(json|jsonl|ndjson|zip)$/i;
const TEXT = /\.(txt|csv|tsv|xml|log|md|html|ya?ml)$/i;
const SUMMARY_CHARS = 90;

/** True for outputs the server can preview (the others are only downloaded). */
export function previewable(output) {
  return RECORDS.test(output.name) || TEXT.test(output.name);
}

/** A closed <details> that loads the output's first page the first time it is opened. */
export function previewBlock(output) {
  const block = el("details", "preview");
  const summary = el("summary", "preview-toggle", "Preview");
  summary.setAttribute("aria-label", `Preview ${output.name}`);
  const body = el("div", "preview-body");
  block.append(summary, body);
  const limit = TEXT.test(output.name) ? PAGE_LINES : PAGE_RECORDS;
  const state = { url: `${output.url}/preview`, limit, next: null, shown: 0, body, kind: "" };
  block.addEventListener("toggle", () => {
    if (block.open && !state.started) {
      state.started = true;
      loadPage(state);
    }
  });
  return block;
}

async function loadPage(state) {
  const { body } = state;
  const more = body.querySelector(".preview-more");
  if (more) more.disabled = true;
  body.setAttribute("aria-busy", "true");
  const query = new URLSearchParams({ limit: String(state.limit) });
  if (state.next) query.set("cursor", state.next);
  try {
    const page = await api(`${state.url}?${query}`);
    showPage(state, page);
  } catch (error) {
    setNote(body, `Could not load the preview: ${error.message}`, "preview-error");
    if (more) more.disabled = false;
  }
  body.setAttribute("aria-busy", "false");
}

function showPage(state, page) {
  const { body } = state;
  body.querySelector(".preview-error")?.remove(); // a retry that worked
  if (!state.kind) {
    state.kind = page.kind;
    state.path = page.path?.length ? page.path.join(".") : "";
    body.append(el("p", "preview-meta"), el("ol", page.kind === "text" ? "preview-lines" : "preview-records"));
  }
  if (page.kind === "binary") {
    setNote(body, "This kind of file has no preview: download it to open it.", "preview-note");
    return;
  }
  const list = body.querySelector(".preview-records, .preview-lines");
  if (page.lines) {
    page.lines.forEach((line, i) => list.append(lineItem(line, state.shown + i)));
    state.shown += page.lines.length;
  } else {
    for (const item of page.items) list.append(recordItem(item, state.shown === 0 && item === page.items[0]));
    state.shown += page.items.length;
  }
  body.querySelector(".preview-meta").textContent = describe(page, state.shown, state.path);
  if (page.oversized) {
    setNote(body, `The next record is larger than the preview reads at once: download ${page.name} to see it.`, "preview-note");
  }
  state.next = page.next;
  showMoreButton(state, page);
}

/** "30 records in catalog.book · 2.1 KB · showing the first 20"; "at least 20 records"
 * when the count is not known. */
function describe(page, shown, path) {
  const word = page.kind === "text" ? "line" : "record";
  const count = page.count != null ? plural(page.count, word) : `at least ${plural(page.count_at_least, word)}`;
  const parts = [path ? `${count} in ${path}` : count, formatSize(page.size)];
  if (page.count == null || shown < page.count) parts.push(`showing the first ${shown}`);
  return parts.join(" · ");
}

function showMoreButton(state, page) {
  let more = state.body.querySelector(".preview-more");
  if (!page.next) {
    more?.remove();
    return;
  }
  if (!more) {
    more = el("button", "button small secondary preview-more", "Show more");
    more.type = "button";
    more.addEventListener("click", () => loadPage(state));
    state.body.append(more);
  }
  more.disabled = false;
}

function setNote(body, text, className) {
  let note = body.querySelector(`.${className}`);
  if (!note) {
    note = el("p", className);
    body.append(note);
  }
  note.textContent = text;
}

// -- the tree ----------------------------------------------------------------------------------

function lineItem(line, index) {
  const li = el("li", "preview-line");
  li.value = index + 1;
  li.textContent = line;
  return li;
}

function recordItem(item, open) {
  const li = el("li", "preview-record");
  li.dataset.index = item.index;
  if ("error" in item) {
    li.append(el("span", "tree-index", `#${item.index + 1}`), " ", el("span", "tree-error", `${item.error}: ${item.text ?? ""}`));
    return li;
  }
  const label = item.key != null ? item.key : `#${item.index + 1}`;
  li.append(node(label, item.value, open, "tree-index"));
  return li;
}

/** One value: a leaf line, or a <details> whose children are built when first opened. */
function node(key, value, open = false, keyClass = "tree-key") {
  if (value === null || typeof value !== "object") {
    const leaf = el("div", "tree-leaf");
    leaf.append(el("span", keyClass, String(key)), el("span", "tree-colon", ": "), scalar(value));
    return leaf;
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  const details = el("details", "tree-node");
  const summary = el("summary", "tree-summary");
  const size = Array.isArray(value) ? plural(entries.length, "item") : plural(entries.length, "key");
  summary.append(
    el("span", keyClass, String(key)),
    el("span", "tree-colon", ": "),
    el("span", "tree-shape", `${Array.isArray(value) ? "[ ]" : "{ }"} ${size}`),
    el("span", "tree-glance", glance(value)),
  );
  details.append(summary);
  const children = el("div", "tree-children");
  details.append(children);
  const fill = () => {
    if (children.childElementCount || !details.open) return;
    for (const [k, v] of entries) children.append(node(k, v));
  };
  details.addEventListener("toggle", fill);
  if (open) {
    details.open = true;
    fill();
  }
  return details;
}

function scalar(value) {
  const type = value === null ? "null" : typeof value;
  return el("span", `tree-value tree-${type}`, type === "string" ? JSON.stringify(value) : String(value));
}

/** A short one-line look at a container, shown beside its summary. */
function glance(value) {
  const text = JSON.stringify(value);
  return text.length > SUMMARY_CHARS ? `${text.slice(0, SUMMARY_CHARS)}…` : text;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}
