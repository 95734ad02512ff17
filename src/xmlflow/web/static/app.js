// xmlflow's page: uploads files, shows every job as a card, follows unfinished jobs live.

import { api } from "./api.js";
import { FINISHED, JobCard } from "./card.js";
import { $, announce } from "./dom.js";
import { plural } from "./format.js";
import { placeCard, removeCard } from "./groups.js";
import { JobList } from "./list.js";
import { LiveUpdates } from "./live.js";
import { OptionInputError, StepOptions } from "./options.js";
import { Uploader } from "./uploads.js";

const PAGE_SIZE = 25;
const PIPELINE_KEY = "xmlflow.pipeline";
const VIEW_KEY = "xmlflow.view";

const cards = new Map(); // job id -> JobCard
const live = new LiveUpdates();
const list = new JobList($("#list-view"), { onRemoved: forgetCard });
const options = new StepOptions($("#step-options"));
let totalJobs = 0;

// -- cards ---------------------------------------------------------------------------------------

function showCard(job, { atTop }) {
  let card = cards.get(job.id);
  if (card) {
    card.applySnapshot(job);
  } else {
    card = new JobCard(job, { onCancel: cancelJob, onRemove: removeJob });
    cards.set(job.id, card);
    placeCard($("#job-list"), card.el, job.group, { atTop }); // a zip's jobs: under its name
    card.tick();
  }
  if (!card.finished) live.follow(card);
  return card;
}

function updateCounts() {
  const empty = cards.size === 0;
  $("#empty-state").hidden = !empty;
  const count = $("#job-count");
  count.hidden = empty;
  count.textContent = plural(Math.max(totalJobs, cards.size), "job");
  $("#load-more").hidden = cards.size >= totalJobs;
}

async function addJob(jobId) {
  try {
    const job = await api(`/api/jobs/${encodeURIComponent(jobId)}`);
    totalJobs += cards.has(job.id) ? 0 : 1;
    showCard(job, { atTop: true });
    if (list.visible) list.refreshSoon();
    announce(`${job.filename} uploaded: job started.`);
  } catch (error) {
    showListError(error.message);
  }
  updateCounts();
}

async function loadHistory() {
  const panel = $(".jobs");
  panel.setAttribute("aria-busy", "true");
  try {
    // Newest first; the cards shown are a newest-first prefix, so their count is the offset.
    const page = await api(`/api/jobs?limit=${PAGE_SIZE}&offset=${cards.size}`);
    totalJobs = page.total;
    for (const job of page.jobs) showCard(job, { atTop: false });
    showListError("");
  } catch (error) {
    if (error.status === 401) return signIn(); // leaves "Loading…" up while the browser goes
    showListError(`${error.message} (Your jobs are safe on the server; reload the page to see them.)`);
  }
  panel.setAttribute("aria-busy", "false");
  $("#jobs-loading").hidden = true;
  updateCounts();
}

/** The server wants its token: its sign-in page brings the person back here. */
function signIn() {
  window.location.assign(`/signin?next=${encodeURIComponent(window.location.pathname)}`);
}

function showListError(message) {
  const box = $("#jobs-error");
  box.textContent = message;
  box.hidden = !message;
}

async function cancelJob(card) {
  try {
    card.applySnapshot(await api(`/api/jobs/${encodeURIComponent(card.id)}/cancel`, { method: "POST" }));
  } catch (error) {
    if (error.status !== 409) card.setNote(`Could not cancel: ${error.message}`);
  }
  if (card.finished) live.stop(card);
}

async function removeJob(card) {
  const outputs = card.outputCount ? ` and delete its ${plural(card.outputCount, "output")}` : "";
  if (outputs && !window.confirm(`Remove ${card.filename}${outputs}?`)) return;
  try {
    await api(`/api/jobs/${encodeURIComponent(card.id)}`, { method: "DELETE" });
  } catch (error) {
    if (error.status !== 404) return card.setNote(`Could not remove: ${error.message}`);
  }
  const next = card.el.nextElementSibling ?? card.el.previousElementSibling;
  forgetCard(card.id);
  announce(`${card.filename} removed.`);
  (next?.querySelector("button:not([hidden])") ?? $("#jobs-title")).focus();
}

/** A job removed (from its card or from the list): its card goes, if it has one. */
function forgetCard(jobId) {
  const card = cards.get(jobId);
  totalJobs = Math.max(0, totalJobs - 1);
  if (card) {
    live.stop(card);
    removeCard(card.el); // and its zip's heading, with the group's last card
    cards.delete(jobId);
  }
  updateCounts();
}

// -- views ---------------------------------------------------------------------------------------

/** Cards (the live monitor) or the list (find, select, act); the choice is remembered. */
function setUpViews() {
  const show = (view) => {
    const asList = view === "list";
    $("#cards-view").hidden = asList;
    $("#view-cards").setAttribute("aria-pressed", String(!asList));
    $("#view-list").setAttribute("aria-pressed", String(asList));
    list.show(asList);
    localStorage.setItem(VIEW_KEY, asList ? "list" : "cards");
  };
  $("#view-cards").addEventListener("click", () => show("cards"));
  $("#view-list").addEventListener("click", () => show("list"));
  show(localStorage.getItem(VIEW_KEY) === "list" ? "list" : "cards");
}

/** The pipelines' steps and options, for the options form and the list's filter. */
async function loadPipelines(picker) {
  try {
    const body = await api("/api/pipelines");
    options.setPipelines(body.pipelines, body.default);
    list.setPipelines(body.pipelines.map((p) => p.name));
  } catch {
    // Without them the page still uploads with the configured options.
  }
  options.show(picker?.value);
}

// -- uploads -------------------------------------------------------------------------------------

function setUpUploads() {
  const form = $("#upload-form");
  const input = $("#file-input");
  const picker = $("#pipeline");
  const uploader = new Uploader({
    list: $("#uploads"),
    maxBytes: Number(form.dataset.maxBytes),
    maxSize: form.dataset.maxSize,
    onJob: addJob,
    onRefused: (error) => options.showError(error.message, error.details ?? {}),
  });
  const start = (files) => {
    $("#upload-error").hidden = true;
    if (!files.length) return;
    let chosen;
    try {
      chosen = options.values();
    } catch (error) {
      if (!(error instanceof OptionInputError)) throw error;
      options.showError(error.message, { step: error.control.step.id, key: error.control.option.name });
      return;
    }
    options.clearError();
    uploader.add(files, picker?.value, chosen);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    start([...input.files]);
  });
  input.addEventListener("change", () => {
    start([...input.files]);
    input.value = ""; // choosing the same file again is a new upload
  });
  setUpPicker(picker);
  loadPipelines(picker);
  setUpDropping(start);
  window.addEventListener("beforeunload", (event) => {
    if (uploader.busy) event.preventDefault(); // the browser asks "leave the page?"
  });
}

function setUpPicker(picker) {
  if (!picker) return;
  const describe = () => {
    $("#pipeline-steps").textContent = `Steps: ${picker.selectedOptions[0]?.dataset.steps ?? ""}`;
  };
  const saved = localStorage.getItem(PIPELINE_KEY);
  if (saved && [...picker.options].some((o) => o.value === saved)) picker.value = saved;
  describe();
  picker.addEventListener("change", () => {
    localStorage.setItem(PIPELINE_KEY, picker.value);
    describe();
    options.show(picker.value);
  });
}

/** Files can be dropped anywhere on the page, not only on the drop zone. */
function setUpDropping(start) {
  const zone = $("#drop-zone");
  const overlay = $("#drop-overlay");
  let depth = 0;
  const carriesFiles = (event) => event.dataTransfer?.types.includes("Files");
  const show = (on) => {
    overlay.hidden = !on;
    zone.classList.toggle("over", on);
  };
  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    depth += 1;
    show(true);
  });
  document.addEventListener("dragleave", (event) => {
    if (!carriesFiles(event)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) show(false);
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault(); // or the browser would open the file instead
    depth = 0;
    show(false);
    start([...event.dataTransfer.files]);
  });
}

// -- start ---------------------------------------------------------------------------------------

function tickClocks() {
  let round = 0;
  setInterval(() => {
    round += 1;
    for (const card of cards.values()) {
      if (!FINISHED.has(card.status) || round % 30 === 0) card.tick();
    }
  }, 1000);
}

function start() {
  setUpUploads();
  setUpViews();
  $("#load-more").addEventListener("click", loadHistory);
  tickClocks();
  loadHistory();
  // Exposed for debugging in the console, and for the browser tests.
  window.xmlflow = { cards, live, list };
}

start();
