// Uploads: one XMLHttpRequest per file, so each file has its own progress bar and outcome.

import { OFFLINE_MESSAGE, errorMessage, parseJson } from "./api.js";
import { $, clone } from "./dom.js";
import { formatSize } from "./format.js";

const RETRYABLE = new Set([0, 429, 502, 503, 504]);

export class Uploader {
  #active = 0;

  /**
   * @param list      the <ul> that shows uploads in progress
   * @param maxBytes  the server's per-upload limit, checked before sending
   * @param onJob     called with each new job's id
   * @param onRefused called with the server's error when it refuses the upload's options (422)
   */
  constructor({ list, maxBytes, maxSize, onJob, onRefused = () => {} }) {
    this.list = list;
    this.maxBytes = maxBytes;
    this.maxSize = maxSize;
    this.onJob = onJob;
    this.onRefused = onRefused;
  }

  /** True while any file is still being sent (leaving the page would lose it). */
  get busy() {
    return this.#active > 0;
  }

  /** Send each file as its own upload, with the pipeline and options chosen now. */
  add(files, pipeline, options = {}) {
    const choice = { pipeline, options: Object.keys(options).length ? JSON.stringify(options) : "" };
    for (const file of files) this.#send(file, choice, this.#item(file));
  }

  #item(file) {
    const item = clone("upload-template");
    $(".upload-name", item).textContent = file.name;
    $(".upload-size", item).textContent = formatSize(file.size);
    $(".upload-bar", item).setAttribute("aria-label", `Upload of ${file.name}`);
    $(".dismiss", item).addEventListener("click", () => item.remove());
    this.list.append(item);
    return item;
  }

  #send(file, choice, item) {
    if (file.size > this.maxBytes) {
      return fail(item, `${file.name} is ${formatSize(file.size)}, more than the ${this.maxSize} limit per file. Split it, or ask your administrator to raise the limit.`, false);
    }
    if (file.size === 0) return fail(item, `${file.name} is empty: choose a file with XML in it.`, false);
    setState(item, "uploading", "Waiting to upload…");
    const data = new FormData();
    data.append("file", file, file.name);
    if (choice.pipeline) data.append("pipeline", choice.pipeline);
    if (choice.options) data.append("options", choice.options);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/upload");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) showProgress(item, e.loaded / e.total);
    });
    xhr.addEventListener("loadend", () => {
      this.#active -= 1;
      this.#finish(xhr, file, choice, item);
    });
    this.#active += 1;
    xhr.send(data);
  }

  #finish(xhr, file, choice, item) {
    const body = parseJson(xhr.responseText);
    if (xhr.status === 202 && body?.jobs?.length) {
      item.remove();
      for (const job of body.jobs) this.onJob(job.id);
      return;
    }
    const message = xhr.status ? errorMessage(xhr.status, body) : OFFLINE_MESSAGE;
    if (xhr.status === 422 && body?.error) this.onRefused(body.error);
    fail(item, `${file.name}: ${message}`, RETRYABLE.has(xhr.status), () => {
      this.#send(file, choice, item);
    });
  }
}

function setState(item, state, text) {
  item.dataset.state = state;
  const line = $(".upload-state", item);
  if (line.textContent !== text) line.textContent = text;
}

function showProgress(item, fraction) {
  const pct = Math.round(fraction * 100);
  $(".upload-bar", item).value = pct;
  // The status line is read aloud: change it in quarters, the bar shows the rest.
  setState(item, "uploading", pct >= 100 ? "Uploaded, starting the job…" : `Uploading… ${Math.floor(pct / 25) * 25} %`);
}

function fail(item, message, retryable, retry) {
  setState(item, "failed", message);
  $(".upload-bar", item).hidden = true;
  const again = $(".retry", item);
  again.hidden = !retryable;
  again.onclick = retryable ? () => {
    again.hidden = true;
    $(".dismiss", item).hidden = true;
    $(".upload-bar", item).hidden = false;
    $(".upload-bar", item).value = 0;
    retry();
  } : null;
  $(".dismiss", item).hidden = false;
}
