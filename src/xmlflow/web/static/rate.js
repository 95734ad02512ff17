// How fast a running step reads its input, from the progress events' bytes (done/total).
//
// The rate is measured over a sliding window of recent samples, not since the step
// started: a step that slows down (a heavier part of the file) shows it within seconds,
// and the ETA follows the current pace. No DOM here.

const WINDOW_MS = 5000;
const MIN_SPAN_MS = 400; // fewer than this between samples: too noisy to call a rate

export class RateMeter {
  #samples = []; // [ms, bytes] oldest first

  /** Record that `done` of `total` bytes were read at `nowMs`. */
  add(done, total, nowMs = Date.now()) {
    this.total = total;
    this.done = done;
    const last = this.#samples.at(-1);
    if (last && done < last[1]) this.#samples = []; // a new run or a retried step
    this.#samples.push([nowMs, done]);
    while (this.#samples.length > 2 && nowMs - this.#samples[0][0] > WINDOW_MS) this.#samples.shift();
  }

  /** Bytes per second over the window, or null while there is too little to tell. */
  get rate() {
    const first = this.#samples[0];
    const last = this.#samples.at(-1);
    if (!first || last[0] - first[0] < MIN_SPAN_MS) return null;
    return ((last[1] - first[1]) * 1000) / (last[0] - first[0]);
  }

  /** Seconds until `total` at the current rate; null when unknown or stalled. */
  get eta() {
    const rate = this.rate;
    if (!rate || rate <= 0 || this.total == null) return null;
    return Math.max(0, this.total - this.done) / rate;
  }
}
