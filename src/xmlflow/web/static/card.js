// One job as a card: built from a job's JSON, then kept current by its stream's events.
//
// Every event carries the job's event id; a card remembers the last one it applied and
// ignores anything older, so a snapshot followed by a replayed stream never shows a step twice.

import { $, announce, clone, setBar } from "./dom.js";
import {
  formatDuration,
  formatReading,
  formatSize,
  formatWhen,
  plural,
  sentence,
  splitLocation,
} from "./format.js";
import { previewBlock, previewable } from "./preview.js";
import { RateMeter } from "./rate.js";
import { stepChart } from "./timings.js";

export const FINISHED = new Set(["succeeded", "failed", "cancelled", "interrupted"]);
const STEP_DONE = new Set(["succeeded", "failed", "skipped"]);
export const RECONNECTING = "Connection lost — reconnecting…";

export const STATUS_LABEL = {
  queued: "Queued",
  running: "Running",
  succeeded: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
  interrupted: "Interrupted",
};

const STEP_LABEL = {
  pending: "pending",
  running: "running",
  succeeded: "succeeded",
  failed: "failed",
  skipped: "skipped",
};

export class JobCard {
  /** @param job the job's JSON, as GET /api/jobs/<id> returns it */
  constructor(job, { onCancel, onRemove }) {
    this.id = job.id;
    this.filename = job.filename;
    this.lastEventId = 0;
    this.status = "queued";
    this.startedAt = null; // server time (s) the job started
    this.endedAt = null;
    this.el = clone("job-template");
    this.el.dataset.jobId = job.id;
    if (job.group) this.el.dataset.group = job.group; // a member of this zip (see groups.js)
    this.el.setAttribute("aria-labelledby", `job-${job.id}-name`);
    const name = $(".job-name", this.el);
    name.id = `job-${job.id}-name`;
    name.textContent = job.filename;
    name.title = job.filename;
    $(".job-size", this.el).textContent = formatSize(job.size);
    $(".job-pipeline", this.el).textContent = job.pipeline ? `${job.pipeline} pipeline` : "";
    const when = $(".job-when", this.el);
    when.dateTime = new Date(job.created_at * 1000).toISOString();
    when.dataset.epoch = job.created_at;
    this.steps = job.steps.map((step, index) => this.#makeStep(step, index));
    this.#wireButtons(onCancel, onRemove);
    this.applySnapshot(job);
  }

  get finished() {
    return FINISHED.has(this.status);
  }

  /** Bring the card to a job's JSON, unless the card already saw newer events. */
  applySnapshot(job) {
    if ((job.last_event_id ?? 0) < this.lastEventId) return;
    this.lastEventId = job.last_event_id ?? 0;
    this.startedAt = job.started_at;
    this.endedAt = job.ended_at;
    job.steps.forEach((step, index) => this.#updateStep(index, step));
    if (FINISHED.has(job.status)) this.#end(job, { quiet: true });
    else this.#setStatus(job.status, { quiet: true });
  }

  /** Apply one stream event; returns false for an event the card already has. */
  applyEvent(type, data, id) {
    if (id && id <= this.lastEventId) return false;
    if (id) this.lastEventId = id;
    if (type === "job") {
      if (data.status === "running" && !this.startedAt) this.startedAt = Date.now() / 1000;
      this.#setStatus(data.status);
    } else if (type === "step") {
      this.#stepEvent(data);
    } else if (type === "progress") {
      const { fraction, message, done, total } = data;
      this.#updateStep(data.index, { fraction, message, done, total });
    } else if (type === "end") {
      this.endedAt = Date.now() / 1000;
      this.#end(data);
    }
    return true;
  }

  /** Show (or clear, with "") a line about the card, e.g. why an action failed. */
  setNote(text) {
    const note = $(".job-note", this.el);
    note.textContent = text;
    note.hidden = !text;
  }

  /** While its stream is down the card says so, and stops pretending to move. */
  setConnectionLost(lost) {
    if (lost) this.el.dataset.connection = "lost";
    else delete this.el.dataset.connection;
    this.setNote(lost ? RECONNECTING : "");
  }

  /** Called about once a second: the clocks of the running job and its running step. */
  tick(nowSeconds = Date.now() / 1000) {
    $(".job-when", this.el).textContent = formatWhen(Number($(".job-when", this.el).dataset.epoch));
    if (this.startedAt) {
      const took = formatDuration((this.endedAt ?? nowSeconds) - this.startedAt);
      $(".job-elapsed", this.el).textContent = this.endedAt ? `took ${took}` : `${took} so far`;
    }
    if (this.status !== "running") return;
    for (const step of this.steps) {
      if (step.status === "running" && step.since) {
        $(".step-time", step.el).textContent = formatDuration(nowSeconds - step.since);
      }
    }
  }

  // -- steps ---------------------------------------------------------------------------------

  #makeStep(step, index) {
    const el = clone("step-template");
    el.dataset.stepId = step.id;
    el.dataset.index = index;
    $(".step-name", el).textContent = step.name;
    $(".step-bar", el).setAttribute("aria-label", `${step.name} progress`);
    const reading = document.createElement("span");
    reading.className = "step-reading";
    $(".step-progress", el).append(reading);
    $(".steps", this.el).append(el);
    return { el, id: step.id, name: step.name, status: "pending", since: null, meter: new RateMeter() };
  }

  #stepEvent(data) {
    const step = this.steps[data.index];
    if (!step) return;
    if (data.status === "running") step.since = Date.now() / 1000;
    this.#updateStep(data.index, data);
    if (data.status === "failed") announce(`${this.filename}: step ${step.name} failed.`);
  }

  #updateStep(index, data) {
    const step = this.steps[index];
    if (!step) return;
    const { el } = step;
    if (data.status && data.status !== step.status) {
      step.status = data.status;
      el.dataset.status = data.status;
      $(".step-state", el).textContent = STEP_LABEL[data.status] ?? data.status;
      if (data.status === "running" && !step.since) step.since = this.#estimatedStepStart(index);
    }
    const running = step.status === "running";
    $(".step-progress", el).hidden = !(running || data.message || $(".step-message", el).textContent);
    $(".step-bar", el).hidden = !running;
    if (data.elapsed != null) {
      step.elapsed = data.elapsed;
      $(".step-time", el).textContent = formatDuration(data.elapsed);
    }
    if (data.fraction != null) step.fraction = data.fraction;
    if (running) setBar($(".step-bar", el), step.fraction ?? 0);
    if (data.message) $(".step-message", el).textContent = data.message;
    this.#showReading(step, running, data);
    if ("error" in data || data.status) this.#stepError(step, data.error);
    this.#updateProgress();
  }

  /** Bytes read, MB/s and an ETA while a step that reads its input runs; nothing after. */
  #showReading(step, running, data) {
    if (running && data.done != null && data.total != null) step.meter.add(data.done, data.total);
    const { meter } = step;
    const text = running && meter.total ? formatReading(meter.done, meter.total, meter.rate, meter.eta) : "";
    const line = $(".step-reading", step.el);
    if (line.textContent !== text) line.textContent = text;
  }

  #stepError(step, error) {
    const box = $(".step-error", step.el);
    // A cancelled run marks the running step "skipped" with the error "cancelled": not a fault.
    const shown = error && step.status === "failed" ? splitLocation(error) : null;
    box.hidden = !shown;
    $(".step-error-where", step.el).textContent = shown?.where ?? "";
    $(".step-error-text", step.el).textContent = shown ? sentence(shown.text) : "";
  }

  /** After a reload the running step's start is not sent: the job's start plus the steps before. */
  #estimatedStepStart(index) {
    if (!this.startedAt) return Date.now() / 1000;
    const before = this.steps.slice(0, index);
    const spent = before.reduce((sum, s) => sum + (Number(s.elapsed) || 0), 0);
    return this.startedAt + spent;
  }

  // -- the whole job -------------------------------------------------------------------------

  #updateProgress() {
    const total = this.steps.length || 1;
    let done = 0;
    for (const step of this.steps) {
      if (STEP_DONE.has(step.status)) done += 1;
      else if (step.status === "running") done += step.fraction ?? 0;
    }
    const fraction = this.status === "succeeded" ? 1 : done / total;
    setBar($(".job-bar", this.el), fraction);
    $(".job-bar", this.el).setAttribute("aria-label", `${this.filename}: overall progress`);
    this.#summarise();
  }

  /** The card's one live line; it changes on step changes and every 10 %, not on every event. */
  #summarise() {
    let text = "";
    if (this.status === "queued") text = "Waiting for a free worker…";
    else if (this.status === "running") {
      const index = this.steps.findIndex((s) => s.status === "running");
      const step = this.steps[index];
      const tenths = Math.floor((step?.fraction ?? 0) * 10) * 10;
      text = step ? `Step ${index + 1} of ${this.steps.length}: ${step.name}` : "Running";
      if (tenths > 0) text += ` — ${tenths} %`;
    } else if (this.status === "cancelled") {
      text = "Cancelled: the remaining steps did not run.";
    } // the other endings speak through their outputs or their error box
    const line = $(".job-summary", this.el);
    if (line.textContent !== text) line.textContent = text;
    line.hidden = !text;
  }

  #setStatus(status, { quiet = false } = {}) {
    if (!status) return;
    const changed = status !== this.status;
    this.status = status;
    this.el.dataset.status = status;
    $(".job-status", this.el).textContent = STATUS_LABEL[status] ?? status;
    $(".cancel", this.el).hidden = FINISHED.has(status);
    $(".remove", this.el).hidden = !FINISHED.has(status);
    this.#updateProgress();
    if (changed && !quiet && FINISHED.has(status)) {
      announce(`${this.filename}: ${(STATUS_LABEL[status] ?? status).toLowerCase()}.`);
    }
  }

  #end(end, { quiet = false } = {}) {
    const outputs = end.outputs ?? [];
    this.outputCount = outputs.length;
    this.#showOutputs(outputs);
    this.#showTimings();
    this.#showJobError(end);
    this.setConnectionLost(false);
    this.#setStatus(end.status, { quiet });
    this.tick();
  }

  #showJobError(end) {
    const box = $(".job-error", this.el);
    const failed = this.steps.find((s) => s.status === "failed");
    let text = "";
    let help = "";
    if (end.status === "failed") {
      const located = failed && $(".step-error-where", failed.el).textContent;
      text = failed ? `Step “${failed.name}” failed.` : sentence(end.error) || "The job failed.";
      help = located
        ? "Fix the XML at the line and column shown, then upload the file again."
        : "Fix what the message above describes, then upload the file again. If it is about the pipeline rather than your file, tell your administrator.";
    } else if (end.status === "interrupted") {
      text = sentence(end.error) || "The server stopped while this job was running.";
      help = "Nothing was lost but this run: upload the file again to process it.";
    }
    box.hidden = !text;
    $(".job-error-text", this.el).textContent = text;
    $(".job-error-help", this.el).textContent = help;
  }

  #showOutputs(outputs) {
    const block = $(".outputs-block", this.el);
    const list = $(".outputs", this.el);
    list.replaceChildren(...outputs.map((output) => outputItem(output)));
    $(".outputs-title", this.el).textContent = plural(outputs.length, "output");
    const zip = $(".zip", this.el);
    zip.href = `/api/jobs/${encodeURIComponent(this.id)}/outputs.zip`;
    zip.setAttribute("download", `${this.filename.replace(/\.[^.]*$/, "")}-outputs.zip`);
    block.hidden = outputs.length === 0;
  }

  #showTimings() {
    $(".step-chart", this.el)?.remove();
    const chart = stepChart(this.steps);
    if (chart) $(".steps", this.el).after(chart);
  }

  #wireButtons(onCancel, onRemove) {
    const cancel = $(".cancel", this.el);
    cancel.setAttribute("aria-label", `Cancel ${this.filename}`);
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      cancel.textContent = "Cancelling…";
      try {
        await onCancel(this);
      } finally {
        cancel.disabled = false;
        cancel.textContent = "Cancel";
      }
    });
    const remove = $(".remove", this.el);
    remove.setAttribute("aria-label", `Remove ${this.filename}`);
    remove.addEventListener("click", () => onRemove(this));
  }
}

function outputItem(output) {
  const li = document.createElement("li");
  const link = document.createElement("a");
  link.href = output.url;
  link.download = output.name;
  link.className = "output-link";
  link.textContent = output.name;
  const size = document.createElement("span");
  size.className = "output-size";
  size.textContent = formatSize(output.size);
  li.append(link, " ", size);
  if (previewable(output)) li.append(previewBlock(output));
  return li;
}
