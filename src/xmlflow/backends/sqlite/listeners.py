"""Listening in the embedded backend: every event a store commits, to the listeners of
this process, through memory.

The writer of an event hands it over right after its commit (``SqliteStore.on_commit``);
what another process writes (a second store on the same file) is read from the file
by the ticker, once a second.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager

from ...models import Event
from ..watch import Watch as _Watch
from ..watch import leave
from .store import SqliteStore

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0  # seconds: how soon another process's events are noticed
TICKS = 4  # ticker wake-ups per (shortest) keepalive period


def _new_watch(recent: list[Event]) -> _Watch:
    """A watch that starts with the job's recent events (its cursor: the newest)."""
    return _Watch(recent[-1].id if recent else 0, recent)


class SqliteListeners:
    """``EventFeed``: every job followed in this process, a watch per job, one ticker for
    them all.

    The shape of the Redis follower (:mod:`..redis.fanout`), measured with
    ``bench/sse_load.py`` (1,000 streams of one job, 10 events a second, one gevent
    worker: 17-20 % of a core where it took 98 %, as much as the Redis worker):

    - a stream registers once (:meth:`listen`), not around every event;
    - the writer of an event publishes it to the job's watch right after its commit
      (:meth:`notify`), so every listener takes it from memory, not from SQLite;
    - a listener waits with no timeout of its own (under gevent a timed wait arms and
      disarms a timer each time; under threads it polls): one ticker per process wakes
      every watch a few times per keepalive period, and a listener whose keepalive
      falls due before the next tick sends it then;
    - the same ticker reads, in one query for every watched job, the events another
      process wrote (they wake nobody here), at most ``POLL_INTERVAL`` late. It ends
      when nothing is watched, and the next listener starts it again.
    """

    def __init__(self, store: SqliteStore) -> None:
        """Reads from ``store``; its ``on_commit`` must be :meth:`notify` (``open_sqlite``)."""
        self._read = store.read
        self._recent = store.recent
        self._read_many = store.read_many
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._tick = POLL_INTERVAL  # seconds between the ticker's wake-ups
        self._tick_changed = threading.Event()
        self._ticker: threading.Thread | None = None
        self._closed = False

    def count(self) -> int:
        """Listener registrations held now (for ``/metrics``: it returns to 0 when idle)."""
        with self._lock:
            return sum(w.listeners for w in self._watches.values())

    # -- the listener's side -------------------------------------------------------------------

    def listen(self, job_id: str, after: int, timeout: float) -> Generator[list[Event], None, None]:
        """Every batch of events after ``after``, [] after each ``timeout`` s of quiet;
        until the listeners close (:meth:`close`), when it returns."""
        self._tick_at_most(timeout / TICKS)
        with self._watching(job_id) as watch:
            while not self._closed:
                events = self._next(watch, job_id, after, time.monotonic() + timeout - self._tick)
                if events:
                    after = events[-1].id
                elif self._closed:
                    return
                yield events

    def _next(self, watch: _Watch, job_id: str, after: int, due: float) -> list[Event]:
        """The next events; [] at the first wake-up from ``due`` on (the ticker's, at worst)."""
        while True:
            arrived = watch.arrived  # before looking: a delivery after the look sets it
            events = watch.since(after)
            if events is None:  # behind what memory keeps: from SQLite
                events = self._read(job_id, after)
            if events or self._closed or time.monotonic() >= due:
                return events
            arrived.wait()

    @contextmanager
    def _watching(self, job_id: str) -> Iterator[_Watch]:
        with self._lock:
            watch = self._watches.get(job_id)
            if watch is None:
                # Read under the lock: an append that commits after this read notifies
                # after the watch is in place, one before it is in what was read.
                watch = self._watches[job_id] = _new_watch(self._recent(job_id))
            watch.listeners += 1
            ticker = None
            if self._ticker is None:
                ticker = self._ticker = threading.Thread(
                    target=self._tick_loop, name="xmlflow-tick", daemon=True
                )
        if ticker is not None:
            ticker.start()
        try:
            yield watch
        finally:
            leave(self._lock, self._watches, job_id, watch)

    def _tick_at_most(self, tick: float) -> None:
        if tick < self._tick:
            with self._lock:
                self._tick = min(self._tick, tick)
            self._tick_changed.set()  # a ticker sleeping a longer tick starts over

    def close(self) -> None:
        """Wake every listener with nothing, so the streams of this process end now.

        The server is going away: a stream of a job that is still queued gets no event
        before the keepalive (15 s by default), longer than gunicorn waits for it. Called
        once the runners stopped, so the running jobs' ``end`` (interrupted) is already
        published to their streams."""
        with self._lock:
            self._closed = True
            for watch in self._watches.values():
                watch.wake()

    # -- the writers' side ---------------------------------------------------------------------

    def notify(self, event: Event) -> None:
        """Publish an event its writer just committed to the listeners of its job, if any."""
        job_id = event.job_id
        watch = self._watches.get(job_id)  # no lock: most events have nobody listening
        if watch is None:
            return
        with self._lock:  # one publisher at a time, or two could lose an event
            cursor = watch.cursor
            if event.id == cursor + 1:
                watch.publish([event])
            elif event.id > cursor + 1:  # others committed before it, not yet published
                watch.publish(self._read(job_id, cursor))

    def _tick_loop(self) -> None:
        """Each tick: publish what other processes wrote, and wake every watch."""
        while True:
            self._tick_changed.wait(self._tick)
            self._tick_changed.clear()
            with self._lock:
                if not self._watches:
                    self._ticker = None
                    return
                cursors = {job_id: w.cursor for job_id, w in self._watches.items()}
            try:
                fresh = self._read_many(cursors)
            except sqlite3.Error as exc:
                log.warning("reading new events for listeners failed: %s", exc)
                fresh = {}
            with self._lock:
                for job_id, watch in self._watches.items():
                    cursor = watch.cursor
                    events = [e for e in fresh.get(job_id, ()) if e.id > cursor]
                    if events and events[0].id == cursor + 1:
                        watch.publish(events)
                    else:
                        watch.wake()
