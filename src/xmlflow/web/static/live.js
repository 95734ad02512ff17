// Live updates: every unfinished job the page shows, over ONE EventSource.
//
// Browsers open at most 6 HTTP/1.1 connections per host. A stream per job held them all
// (and a reload then hung waiting for one); so the page asks for all its jobs on one
// stream, /api/events?job=…&job=…, which names the job in each event's data and whose
// id holds every job's position in the order asked ("12.0.7"). Uploads, fetches and
// downloads have the other connections.
//
// Reconnection is EventSource's own: after a dropped connection it reconnects and sends
// the last id, and the server resumes every job where it was. When the set of jobs
// changes (a job added), the page opens a new stream, passing each card's own position
// (?lastEventId=), so nothing is shown twice or skipped. A job whose `end` came is left
// on the stream until the next change (the server sends nothing more for it); the stream
// is closed when no job is left, or the browser would reconnect for ever.

import { api } from "./api.js";

const MAX_JOBS = 50; // per stream, so its address stays short; more wait and are polled
const REOPEN_MS = 100; // cards shown together (a page of history, many uploads): one stream
const POLL_MS = 3000;
const EVENT_TYPES = ["job", "step", "progress", "end"];

export class LiveUpdates {
  #followed = new Map(); // job id -> card on the stream (or on the next one)
  #waiting = new Map(); // job id -> card over MAX_JOBS, refreshed by polling
  #source = null; // the one EventSource
  #reopenTimer = null;
  #retries = 0; // failed recoveries in a row, for back-off
  #pollTimer = null;

  follow(card) {
    if (card.finished || this.#followed.has(card.id)) return;
    if (this.#followed.size < MAX_JOBS) {
      this.#waiting.delete(card.id);
      this.#followed.set(card.id, card);
      this.#scheduleReopen(REOPEN_MS);
    } else {
      this.#waiting.set(card.id, card);
      this.#schedulePoll();
    }
  }

  stop(card) {
    this.#waiting.delete(card.id);
    if (!this.#followed.delete(card.id)) return;
    this.#next();
    if (!this.#followed.size) this.#close();
  }

  /** For tests and curious people: how many streams are open right now (0 or 1). */
  get openCount() {
    return this.#source ? 1 : 0;
  }

  /** For tests: how many jobs the page follows live. */
  get followedCount() {
    return this.#followed.size;
  }

  #scheduleReopen(delay) {
    if (this.#reopenTimer) return;
    this.#reopenTimer = setTimeout(() => {
      this.#reopenTimer = null;
      this.#open();
    }, delay);
  }

  #close() {
    this.#source?.close();
    this.#source = null;
    clearTimeout(this.#reopenTimer);
    this.#reopenTimer = null;
  }

  /** (Re)open the stream for the followed jobs, each from the last event its card has. */
  #open() {
    this.#source?.close();
    this.#source = null;
    if (!this.#followed.size) return;
    const order = [...this.#followed.keys()];
    const jobs = order.map((id) => `job=${encodeURIComponent(id)}`).join("&");
    const positions = order.map((id) => this.#followed.get(id).lastEventId).join(".");
    const source = new EventSource(`/api/events?${jobs}&lastEventId=${positions}`);
    this.#source = source;
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (event) => this.#event(order, type, event));
    }
    source.addEventListener("open", () => {
      this.#retries = 0;
      for (const card of this.#followed.values()) card.setConnectionLost(false);
    });
    source.addEventListener("error", () => {
      if (this.#source !== source) return; // replaced or closed by us meanwhile
      if (source.readyState === EventSource.CONNECTING) {
        for (const card of this.#followed.values()) card.setConnectionLost(true); // it retries
        return;
      }
      // CLOSED: the server answered with an error (or 204, "you have it all"): look it up.
      this.#close();
      this.#recover();
    });
  }

  #event(order, type, event) {
    const data = JSON.parse(event.data);
    const card = this.#followed.get(data.job);
    if (!card) return; // stopped meanwhile (removed, cancelled)
    const id = Number(event.lastEventId.split(".")[order.indexOf(data.job)]) || 0;
    card.applyEvent(type, data, id);
    if (type === "end") this.#ended(card);
  }

  /** After `end`: leave the stream, then take the server's record (its start and end times). */
  async #ended(card) {
    this.stop(card);
    try {
      card.applySnapshot(await api(`/api/jobs/${encodeURIComponent(card.id)}`));
    } catch {
      // The card already shows the end; only the exact duration is missing.
    }
  }

  /** The stream was refused: bring each card to the server's record, then try again. */
  async #recover() {
    this.#retries += 1;
    let offline = false;
    for (const card of [...this.#followed.values()]) {
      try {
        card.applySnapshot(await api(`/api/jobs/${encodeURIComponent(card.id)}`));
        if (card.finished) this.stop(card);
      } catch (error) {
        if (error.status === 401 || error.status === 403) {
          card.setNote(error.message);
          this.stop(card);
        } else if (error.status === 404) {
          card.setNote("This job no longer exists on the server (it was removed or expired).");
          this.stop(card);
        } else {
          offline = true;
        }
      }
    }
    for (const card of this.#followed.values()) card.setConnectionLost(offline || this.#retries > 1);
    if (this.#followed.size) this.#scheduleReopen(backoff(this.#retries - 1));
  }

  /** Waiting cards take the places that came free. */
  #next() {
    while (this.#followed.size < MAX_JOBS && this.#waiting.size) {
      const cards = [...this.#waiting.values()];
      const card = cards.find((c) => c.status === "running") ?? cards[0];
      this.#waiting.delete(card.id);
      if (!card.finished) this.follow(card);
    }
  }

  /** A waiting card whose job has ended (or is gone): the server's record says which. */
  async #lookUp(card) {
    try {
      card.applySnapshot(await api(`/api/jobs/${encodeURIComponent(card.id)}`));
    } catch (error) {
      if (error.status !== 404) throw error;
      card.setNote("This job no longer exists on the server (it was removed or expired).");
      this.#waiting.delete(card.id);
    }
  }

  #schedulePoll() {
    if (this.#pollTimer) return;
    this.#pollTimer = setTimeout(() => this.#poll(), POLL_MS);
  }

  async #poll() {
    this.#pollTimer = null;
    if (!this.#waiting.size) return;
    try {
      // Only unfinished jobs: a long history is not read every 3 s. A waiting card whose
      // job is not among them has ended: its own record says how.
      const { jobs } = await api("/api/jobs?status=queued,running&limit=500");
      const unfinished = new Set(jobs.map((job) => job.id));
      for (const job of jobs) this.#waiting.get(job.id)?.applySnapshot(job);
      for (const card of [...this.#waiting.values()]) {
        if (!unfinished.has(card.id)) await this.#lookUp(card);
        if (card.finished) this.#waiting.delete(card.id);
      }
    } catch {
      // Offline for now: the stream says so on its cards; try again at the next poll.
    }
    this.#schedulePoll();
  }
}

/** 0 -> 1 s, 1 -> 2 s, 2 -> 4 s … at most 30 s. */
function backoff(attempt) {
  return Math.min(30_000, 1000 * 2 ** attempt);
}
