// The list view: one compact row per job, searched, filtered and paged by the server.
//
// A history of thousands of jobs stays cheap: the page holds one page of rows (PAGE_SIZE)
// and asks GET /api/jobs?q=&status=&pipeline=&limit=&offset= for the next. Rows are not
// on the page's event stream (that one follows the cards' unfinished jobs): while the
// list is shown and one of its rows is unfinished, the page asks for its page again
// every REFRESH_MS, one request for all its rows. Selection is kept by job id across
// pages and refreshes; actions apply to the selected jobs, one request per job.

import { api } from "./api.js";
import { FINISHED, STATUS_LABEL } from "./card.js";
import { $, announce, clone, setBar } from "./dom.js";
import { formatDuration, formatSize, formatWhen, plural } from "./format.js";

const PAGE_SIZE = 50;
const SEARCH_DELAY_MS = 250;
const REFRESH_MS = 2000;
const DOWNLOAD_GAP_MS = 400; // between downloads: browsers drop some started at once

export class JobList {
  #rows = new Map(); // job id -> {el, job}
  #selected = new Set(); // job ids, kept across pages
  #offset = 0;
  #total = 0;
  #asked = 0; // the latest request's number: an older answer arriving late is dropped
  #searchTimer = null;
  #refreshTimer = null;
  #lastClicked = null; // for shift-click ranges

  /** @param onRemoved called with each removed job's id (the cards drop theirs) */
  constructor(root, { onRemoved }) {
    this.root = root;
    this.onRemoved = onRemoved;
    this.body = $(".list-rows", root);
    this.q = $("#list-q", root);
    this.status = $("#list-status", root);
    this.pipeline = $("#list-pipeline", root);
    this.q.addEventListener("input", () => this.#searchSoon());
    $("#list-filters", root).addEventListener("submit", (event) => {
      event.preventDefault();
      this.#filtersChanged();
    });
    this.status.addEventListener("change", () => this.#filtersChanged());
    this.pipeline.addEventListener("change", () => this.#filtersChanged());
    $("#list-prev", root).addEventListener("click", () => this.#turn(-PAGE_SIZE));
    $("#list-next", root).addEventListener("click", () => this.#turn(PAGE_SIZE));
    $("#list-all", root).addEventListener("change", (event) => this.#selectPage(event.target.checked));
    $("#list-cancel", root).addEventListener("click", () => this.#cancelSelected());
    $("#list-remove", root).addEventListener("click", () => this.#removeSelected());
    $("#list-download", root).addEventListener("click", () => this.#downloadSelected());
  }

  get visible() {
    return !this.root.hidden;
  }

  /** The pipelines to filter by (from GET /api/pipelines, read by the page once). */
  setPipelines(names) {
    for (const name of names) {
      const item = document.createElement("option");
      item.value = name;
      item.textContent = name;
      this.pipeline.append(item);
    }
    this.pipeline.closest(".list-filter").hidden = names.length < 2;
  }

  show(on) {
    this.root.hidden = !on;
    if (on) this.refresh();
    else clearTimeout(this.#refreshTimer);
  }

  /** Uploads of many files add jobs one by one: one request for all of them. */
  refreshSoon() {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = setTimeout(() => this.refresh(), 150);
  }

  /** Ask the server for the current page again (after an upload, an action, a filter). */
  async refresh() {
    clearTimeout(this.#refreshTimer);
    const asked = ++this.#asked;
    this.root.setAttribute("aria-busy", "true");
    let page;
    try {
      page = await api(`/api/jobs?${this.#query()}`);
    } catch (error) {
      if (asked !== this.#asked) return;
      this.#showError(error.message);
      this.root.setAttribute("aria-busy", "false");
      return;
    }
    if (asked !== this.#asked) return; // a newer search is on its way
    if (!page.jobs.length && page.total && this.#offset > 0) {
      this.#offset = Math.max(0, page.total - ((page.total % PAGE_SIZE) || PAGE_SIZE));
      return this.refresh(); // the page emptied (removed jobs): show the last one there is
    }
    this.#showError("");
    this.#total = page.total;
    this.#render(page.jobs);
    this.root.setAttribute("aria-busy", "false");
    if (this.visible && page.jobs.some((job) => !FINISHED.has(job.status))) {
      this.#refreshTimer = setTimeout(() => this.#refreshIfSeen(), REFRESH_MS);
    }
  }

  /** A tab in the background asks nothing; coming back, it asks at once. */
  #refreshIfSeen() {
    if (document.hidden) {
      document.addEventListener("visibilitychange", () => this.visible && this.refresh(), { once: true });
      return;
    }
    this.refresh();
  }

  #query() {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(this.#offset) });
    const q = this.q.value.trim();
    if (q) params.set("q", q);
    if (this.status.value) params.set("status", this.status.value);
    if (this.pipeline.value) params.set("pipeline", this.pipeline.value);
    return params.toString();
  }

  #searchSoon() {
    clearTimeout(this.#searchTimer);
    this.#searchTimer = setTimeout(() => this.#filtersChanged(), SEARCH_DELAY_MS);
  }

  #filtersChanged() {
    clearTimeout(this.#searchTimer);
    this.#offset = 0;
    this.refresh();
  }

  #turn(delta) {
    this.#offset = Math.max(0, this.#offset + delta);
    this.refresh();
  }

  // -- rows ------------------------------------------------------------------------------------

  #render(jobs) {
    const before = [...this.#rows.keys()].join();
    const rows = new Map();
    for (const job of jobs) {
      const row = this.#rows.get(job.id) ?? this.#makeRow(job);
      row.job = job;
      fillRow(row.el, job, this.#selected.has(job.id));
      rows.set(job.id, row);
    }
    this.#rows = rows;
    // Only a changed set of rows is put back (a refresh would otherwise take the focus away).
    if ([...rows.keys()].join() !== before) this.body.replaceChildren(...[...rows.values()].map((r) => r.el));
    const first = jobs.length ? this.#offset + 1 : 0;
    const last = this.#offset + jobs.length;
    $("#list-range", this.root).textContent = jobs.length
      ? `${first}–${last} of ${this.#total.toLocaleString()}`
      : "";
    $("#list-prev", this.root).disabled = this.#offset === 0;
    $("#list-next", this.root).disabled = last >= this.#total;
    const empty = $("#list-empty", this.root);
    empty.hidden = jobs.length > 0;
    empty.textContent = this.#filtered() ? "No job matches these filters." : "No jobs yet.";
    this.#updateSelection();
  }

  #filtered() {
    return Boolean(this.q.value.trim() || this.status.value || this.pipeline.value);
  }

  #makeRow(job) {
    const el = clone("list-row-template");
    el.dataset.jobId = job.id;
    const box = $(".row-select", el);
    box.addEventListener("click", (event) => this.#clickBox(job.id, box.checked, event.shiftKey));
    return { el, job };
  }

  // -- selection -------------------------------------------------------------------------------

  #clickBox(id, checked, shift) {
    const ids = [...this.#rows.keys()];
    const from = ids.indexOf(this.#lastClicked);
    const to = ids.indexOf(id);
    const range = shift && from >= 0 && to >= 0
      ? ids.slice(Math.min(from, to), Math.max(from, to) + 1)
      : [id];
    for (const one of range) {
      if (checked) this.#selected.add(one);
      else this.#selected.delete(one);
      const row = this.#rows.get(one);
      if (row) $(".row-select", row.el).checked = checked;
    }
    this.#lastClicked = id;
    this.#updateSelection();
  }

  #selectPage(checked) {
    for (const [id, row] of this.#rows) {
      if (checked) this.#selected.add(id);
      else this.#selected.delete(id);
      $(".row-select", row.el).checked = checked;
    }
    this.#updateSelection();
  }

  #updateSelection() {
    const onPage = [...this.#rows.keys()].filter((id) => this.#selected.has(id)).length;
    const all = $("#list-all", this.root);
    all.checked = onPage > 0 && onPage === this.#rows.size;
    all.indeterminate = onPage > 0 && onPage < this.#rows.size;
    const count = this.#selected.size;
    $("#list-selected", this.root).textContent = count ? `${plural(count, "job")} selected` : "Select jobs to act on them";
    for (const id of ["#list-cancel", "#list-remove", "#list-download"]) $(id, this.root).disabled = count === 0;
    for (const row of this.#rows.values()) row.el.classList.toggle("selected", this.#selected.has(row.job.id));
  }

  /** The selected jobs as last seen (rows on other pages are only known by id). */
  #selectedJobs() {
    return [...this.#selected].map((id) => this.#rows.get(id)?.job ?? { id });
  }

  // -- actions ---------------------------------------------------------------------------------

  async #cancelSelected() {
    const jobs = this.#selectedJobs().filter((job) => !FINISHED.has(job.status));
    let done = 0;
    for (const job of jobs) {
      try {
        await api(`/api/jobs/${encodeURIComponent(job.id)}/cancel`, { method: "POST" });
        done += 1;
      } catch (error) {
        if (error.status !== 409) this.#showError(`Could not cancel ${job.filename ?? job.id}: ${error.message}`);
      }
    }
    this.#say(done ? `${plural(done, "job")} cancelled.` : "None of the selected jobs was still running.");
    await this.refresh();
  }

  async #removeSelected() {
    const jobs = this.#selectedJobs();
    const running = jobs.filter((job) => job.status && !FINISHED.has(job.status));
    const removable = jobs.filter((job) => !running.includes(job));
    if (!removable.length) return this.#say("Cancel running jobs before removing them.");
    if (!window.confirm(`Remove ${plural(removable.length, "job")} and delete their outputs?`)) return;
    let done = 0;
    for (const job of removable) {
      try {
        await api(`/api/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
      } catch (error) {
        if (error.status !== 404) {
          this.#showError(`Could not remove ${job.filename ?? job.id}: ${error.message}`);
          continue;
        }
      }
      done += 1;
      this.#selected.delete(job.id);
      this.onRemoved(job.id);
    }
    const kept = running.length ? ` ${plural(running.length, "running job")} kept: cancel first.` : "";
    this.#say(`${plural(done, "job")} removed.${kept}`);
    await this.refresh();
  }

  /** Each succeeded job's outputs.zip, one after the other (the browser may ask once). */
  async #downloadSelected() {
    const jobs = this.#selectedJobs().filter((job) => job.status === "succeeded");
    const skipped = this.#selected.size - jobs.length;
    for (const [i, job] of jobs.entries()) {
      if (i) await new Promise((resolve) => setTimeout(resolve, DOWNLOAD_GAP_MS));
      const link = document.createElement("a");
      link.href = `/api/jobs/${encodeURIComponent(job.id)}/outputs.zip`;
      link.download = "";
      link.hidden = true;
      document.body.append(link);
      link.click();
      link.remove();
    }
    const note = skipped ? ` ${plural(skipped, "job")} without outputs skipped.` : "";
    this.#say(`Downloading ${plural(jobs.length, "zip")}.${note}`);
  }

  #say(message) {
    $("#list-note", this.root).textContent = message;
    announce(message);
  }

  #showError(message) {
    const box = $("#list-error", this.root);
    box.textContent = message;
    box.hidden = !message;
  }
}

function fillRow(el, job, selected) {
  const box = $(".row-select", el);
  box.checked = selected;
  box.setAttribute("aria-label", `Select ${job.filename}`);
  setText($(".row-name", el), job.filename);
  $(".row-name", el).title = job.filename;
  setText($(".row-pipeline", el), job.pipeline);
  const badge = $(".row-status", el);
  badge.dataset.status = job.status;
  setText(badge, STATUS_LABEL[job.status] ?? job.status);
  el.dataset.status = job.status;
  const pct = setBar($(".row-bar", el), progress(job));
  $(".row-bar", el).setAttribute("aria-label", `${job.filename}: ${pct} %`);
  const when = $(".row-when", el);
  setText(when, formatWhen(job.created_at));
  when.dateTime = new Date(job.created_at * 1000).toISOString();
  when.title = new Date(job.created_at * 1000).toLocaleString();
  setText($(".row-duration", el), formatDuration(job.elapsed));
  setText($(".row-size", el), formatSize(job.size));
}

/** Done steps plus the running one's fraction, over the steps (a succeeded job is full). */
function progress(job) {
  if (job.status === "succeeded") return 1;
  const steps = job.steps ?? [];
  if (!steps.length) return 0;
  let done = 0;
  for (const step of steps) {
    if (step.status === "succeeded" || step.status === "skipped") done += 1;
    else if (step.status === "running") done += step.fraction ?? 0;
  }
  return done / steps.length;
}

function setText(el, text) {
  const value = text ?? "";
  if (el.textContent !== value) el.textContent = value;
}
