// xmlflow page: uploads files, shows every job as a card, follows each job's SSE stream.
"use strict";

const FINISHED = new Set(["succeeded", "failed", "cancelled", "interrupted"]);
const cards = new Map(); // job id -> {el, source, steps: Map}

function $(sel, root = document) { return root.querySelector(sel); }

function formatSize(bytes) {
  if (bytes == null) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function setStatus(card, status) {
  card.el.dataset.status = status;
  $(".job-status", card.el).textContent = status;
  $(".cancel", card.el).hidden = FINISHED.has(status);
}

function renderJob(job) {
  let card = cards.get(job.id);
  if (!card) {
    const el = $("#job-template").content.firstElementChild.cloneNode(true);
    el.dataset.jobId = job.id;
    card = { el, source: null, steps: new Map(), total: job.steps.length };
    cards.set(job.id, card);
    $(".job-name", el).textContent = job.filename;
    $(".job-size", el).textContent = formatSize(job.size);
    $(".cancel", el).addEventListener("click", () => cancelJob(job.id));
    job.steps.forEach((step, index) => addStep(card, step, index));
    $("#job-list").prepend(el);
    $("#empty-state").hidden = true;
  }
  job.steps.forEach((step, index) => updateStep(card, { index, ...step }));
  setStatus(card, job.status);
  if (FINISHED.has(job.status)) showEnd(card, job);
  return card;
}

function addStep(card, step, index) {
  const el = $("#step-template").content.firstElementChild.cloneNode(true);
  el.dataset.stepId = step.id;
  el.dataset.index = index;
  $(".step-name", el).textContent = step.name;
  $(".steps", card.el).append(el);
  card.steps.set(index, el);
}

function updateStep(card, data) {
  const el = card.steps.get(data.index);
  if (!el) return;
  if (data.status) {
    el.dataset.status = data.status;
    $(".step-state", el).textContent = data.status;
    $(".step-bar", el).hidden = data.status !== "running";
  }
  if (data.elapsed != null) $(".step-time", el).textContent = `${Number(data.elapsed).toFixed(2)} s`;
  const error = $(".step-error", el);
  error.hidden = !data.error;
  error.textContent = data.error || "";
  if (data.fraction != null && data.status !== "succeeded") {
    $(".step-bar span", el).style.width = `${Math.round(data.fraction * 100)}%`;
  }
  if (data.message) $(".step-message", el).textContent = data.message;
  updateOverall(card);
}

function updateOverall(card) {
  let done = 0;
  for (const el of card.steps.values()) {
    if (["succeeded", "failed", "skipped"].includes(el.dataset.status)) done += 1;
    else if (el.dataset.status === "running") {
      done += (parseFloat($(".step-bar span", el).style.width) || 0) / 100;
    }
  }
  const pct = card.steps.size ? Math.round((done / card.steps.size) * 100) : 0;
  const bar = $(".bar", card.el);
  bar.setAttribute("aria-valuenow", pct);
  $("span", bar).style.width = `${pct}%`;
}

function showEnd(card, end) {
  setStatus(card, end.status);
  const error = $(".job-error", card.el);
  error.hidden = !end.error;
  error.textContent = end.error || "";
  $(".job-note", card.el).hidden = true;
  const list = $(".outputs", card.el);
  list.replaceChildren();
  for (const output of end.outputs || []) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = output.url;
    a.textContent = `Download ${output.name} (${formatSize(output.size)})`;
    a.setAttribute("download", output.name);
    li.append(a);
    list.append(li);
  }
  if (end.status === "succeeded") updateOverall(card);
  if (card.source) { card.source.close(); card.source = null; }
}

function follow(jobId) {
  const card = cards.get(jobId);
  if (!card || card.source) return;
  const source = new EventSource(`/stream/${jobId}`);
  card.source = source;
  const note = $(".job-note", card.el);
  source.addEventListener("open", () => { note.hidden = true; });
  source.addEventListener("error", () => {
    if (card.source && !FINISHED.has(card.el.dataset.status)) {
      note.textContent = "reconnecting…";
      note.hidden = false;
    }
  });
  source.addEventListener("job", (e) => setStatus(card, JSON.parse(e.data).status));
  source.addEventListener("step", (e) => updateStep(card, JSON.parse(e.data)));
  source.addEventListener("progress", (e) => updateStep(card, JSON.parse(e.data)));
  source.addEventListener("end", (e) => showEnd(card, JSON.parse(e.data)));
}

async function loadJob(jobId) {
  const response = await fetch(`/api/jobs/${jobId}`);
  if (!response.ok) return;
  const job = await response.json();
  renderJob(job);
  if (!FINISHED.has(job.status)) follow(job.id);
}

async function loadHistory() {
  const response = await fetch("/api/jobs?limit=50");
  if (!response.ok) return;
  const { jobs } = await response.json();
  for (const job of jobs.reverse()) {
    renderJob(job);
    if (!FINISHED.has(job.status)) follow(job.id);
  }
}

async function cancelJob(jobId) {
  const response = await fetch(`/api/jobs/${jobId}/cancel`, { method: "POST" });
  if (!response.ok && response.status !== 409) {
    const body = await response.json().catch(() => ({}));
    alert(body.error ? body.error.message : `Cancel failed (${response.status})`);
  }
}

function upload(files) {
  const form = $("#upload-form");
  const errorEl = $("#upload-error");
  errorEl.hidden = true;
  if (!files.length) {
    errorEl.textContent = "Choose at least one XML file first.";
    errorEl.hidden = false;
    return;
  }
  const data = new FormData();
  for (const file of files) data.append("file", file, file.name);
  const pipeline = $("#pipeline", form);
  if (pipeline) data.append("pipeline", pipeline.value);
  const item = document.createElement("li");
  item.textContent = `Uploading ${files.length} file(s)… 0%`;
  $("#upload-progress").append(item);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/upload");
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) item.textContent = `Uploading ${files.length} file(s)… ${Math.round((e.loaded / e.total) * 100)}%`;
  });
  xhr.addEventListener("load", () => {
    item.remove();
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (xhr.status !== 202) {
      errorEl.textContent = body.error ? body.error.message : `Upload failed (${xhr.status}).`;
      errorEl.hidden = false;
      return;
    }
    for (const job of body.jobs) loadJob(job.id);
  });
  xhr.addEventListener("error", () => {
    item.remove();
    errorEl.textContent = "The upload did not reach the server. Check your connection and try again.";
    errorEl.hidden = false;
  });
  xhr.send(data);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = $("#upload-form");
  const input = $("#file-input");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    upload(Array.from(input.files));
    form.reset();
  });
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    upload(Array.from(e.dataTransfer.files));
  });
  loadHistory();
});
