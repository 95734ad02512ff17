// Live updates: one EventSource per unfinished job, at most MAX_STREAMS at a time.
//
// Browsers open at most 6 HTTP/1.1 connections per host, and an EventSource holds one for
// as long as its job runs; so a few streams are open and the other unfinished jobs wait
// their turn, refreshed meanwhile by a cheap poll of /api/jobs.
//
// Reconnection is EventSource's own: after a dropped connection it reconnects and sends
// Last-Event-ID, and the server replays what came after. The first connection passes the
// id the card's snapshot ended at (?lastEventId=), so nothing is shown twice or skipped.
// After `end` the page closes the stream, or the browser would reconnect for ever.

import { api } from "./api.js";

const MAX_STREAMS = 4; // leaves two connections for uploads, fetches and downloads
const POLL_MS = 3000;
const EVENT_TYPES = ["job", "step", "progress", "end"];

export class LiveUpdates {
  #open = new Map(); // job id -> EventSource
  #waiting = new Map(); // job id -> card waiting for a free stream
  #retries = new Map(); // job id -> refusals in a row, for back-off
  #pollTimer = null;

  follow(card) {
    if (card.finished || this.#open.has(card.id)) return;
    if (this.#open.size < MAX_STREAMS) {
      this.#waiting.delete(card.id);
      this.#connect(card);
    } else {
      this.#waiting.set(card.id, card);
      this.#schedulePoll();
    }
  }

  stop(card) {
    this.#open.get(card.id)?.close();
    this.#open.delete(card.id);
    this.#waiting.delete(card.id);
    this.#retries.delete(card.id);
    this.#next();
  }

  /** For tests and curious people: how many streams are open right now. */
  get openCount() {
    return this.#open.size;
  }

  #connect(card) {
    const url = `/stream/${encodeURIComponent(card.id)}?lastEventId=${card.lastEventId}`;
    const source = new EventSource(url);
    this.#open.set(card.id, source);
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (event) => {
        card.applyEvent(type, JSON.parse(event.data), Number(event.lastEventId) || 0);
        if (type === "end") this.#ended(card);
      });
    }
    source.addEventListener("open", () => {
      this.#retries.delete(card.id);
      card.setConnectionLost(false);
    });
    source.addEventListener("error", () => {
      if (this.#open.get(card.id) !== source) return; // closed by us meanwhile
      if (source.readyState === EventSource.CONNECTING) {
        card.setConnectionLost(true); // EventSource retries by itself
        return;
      }
      // CLOSED: the server answered with an error (or 204, "you have it all"): look it up.
      source.close();
      this.#open.delete(card.id);
      this.#next();
      this.#resync(card);
    });
  }

  /** After `end`: close the stream, then take the server's record (its start and end times). */
  async #ended(card) {
    this.stop(card);
    try {
      card.applySnapshot(await api(`/api/jobs/${encodeURIComponent(card.id)}`));
    } catch {
      // The card already shows the end; only the exact duration is missing.
    }
  }

  async #resync(card) {
    const tries = (this.#retries.get(card.id) ?? 0) + 1;
    this.#retries.set(card.id, tries);
    try {
      card.applySnapshot(await api(`/api/jobs/${encodeURIComponent(card.id)}`));
      if (card.finished) return this.stop(card);
      card.setConnectionLost(tries > 1);
      setTimeout(() => this.follow(card), backoff(tries - 1));
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        card.setNote(error.message);
        return this.stop(card);
      }
      if (error.status === 404) {
        card.setNote("This job no longer exists on the server (it was removed or expired).");
        return this.stop(card);
      }
      card.setConnectionLost(true);
      setTimeout(() => this.#resync(card), backoff(tries));
    }
  }

  #next() {
    while (this.#open.size < MAX_STREAMS && this.#waiting.size) {
      const cards = [...this.#waiting.values()];
      const card = cards.find((c) => c.status === "running") ?? cards[0];
      this.#waiting.delete(card.id);
      if (!card.finished) this.#connect(card);
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
      const { jobs } = await api("/api/jobs?limit=500");
      for (const job of jobs) {
        const card = this.#waiting.get(job.id);
        card?.applySnapshot(job);
        if (card?.finished) this.#waiting.delete(job.id);
      }
    } catch {
      // Offline for now: the open streams say so on their cards; try again at the next poll.
    }
    this.#schedulePoll();
  }
}

/** 0 -> 1 s, 1 -> 2 s, 2 -> 4 s … at most 30 s. */
function backoff(attempt) {
  return Math.min(30_000, 1000 * 2 ** attempt);
}
