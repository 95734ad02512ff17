"""Following job streams: one reader per process, fanned out to every listener in it.

A browser's stream does not get a Redis connection of its own. Each web process runs
one reader (a thread; a greenlet under gevent, where ``threading`` is patched) that
``XREAD BLOCK``s on the streams of every job someone in this process is watching,
keeps the last events of each in memory, and wakes that job's listeners. A listener
that fell behind the memory (or arrives late) replays with ``XRANGE`` instead, so
nothing is ever skipped: ids are contiguous per job and every gap is filled from Redis.

When the set of watched jobs grows, the reader is blocked on the old set: another
connection sends ``CLIENT UNBLOCK`` to its connection so it starts over at once.

The listener's side is the hot path (2,000 listeners of a job emitting 10 events a
second are 20,000 wake-ups a second), so, measured with ``bench/sse_load.py``:

- a stream registers once (:meth:`Follower.listen`), not around every event;
- listeners wait on an ``Event`` per job, replaced at each delivery, not on a
  ``Condition``: waking them all is one ``set()`` (under gevent, one loop over their
  greenlets), where ``notify_all`` released a lock per waiter and each then took the
  process-wide lock again just to leave its wait;
- the reader publishes the recent events as one immutable tuple, which listeners
  read without the lock;
- a listener waits with no timeout of its own: a wait with a timeout arms and disarms
  a gevent timer every time (a quarter of the worker's py-spy samples at 20,000 waits
  a second; without it one gevent worker went from 94 % to 58 % of a core and p99
  from 380 to 76 ms). One ticker per process wakes every watched job each quarter
  keepalive instead, and a listener whose keepalive falls due before the next tick
  sends it then: keepalives come between 3/4 of ``timeout`` and ``timeout`` apart,
  never later.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from ...models import Event
from ..watch import Watch as _Watch
from ..watch import leave
from .keys import Keys, event_id
from .store import REDIS_DOWN, to_event

log = logging.getLogger(__name__)

BLOCK_MS = 5_000  # an XREAD returns at least this often, even if nothing is unblocking it
# The reader's socket timeout: longer than its XREAD BLOCK, which answers within BLOCK_MS,
# so that only a Redis that stopped answering (frozen, gone) times it out.
READER_TIMEOUT = BLOCK_MS / 1000 + 10
BATCH = 1_000  # entries per stream per XREAD
TICKS = 4  # ticker wake-ups per (shortest) keepalive period


class Follower:
    """``EventFeed`` for one process: the reader thread and its listeners."""

    def __init__(
        self,
        new_connection: Callable[[], redis.Redis],
        control: redis.Redis,
        replay: Callable[[str, int], list[Event]],
    ) -> None:
        self._new_connection = new_connection
        self._control = control  # for CLIENT UNBLOCK; the shared pool
        self._replay = replay
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._changed = threading.Condition(self._lock)
        self._reader_id: int | None = None  # the reader's CLIENT ID while it is blocked
        self._closed = False
        self._thread: threading.Thread | None = None
        self._tick = math.inf  # seconds between the ticker's wake-ups: see _ticker
        self._tick_changed = threading.Event()
        self._ticker_thread: threading.Thread | None = None

    # -- the listener's side ---------------------------------------------------------------------

    def listen(self, job_id: str, after: int, timeout: float) -> Generator[list[Event], None, None]:
        """Every batch of events after ``after``, [] after each ``timeout`` s of quiet.

        For as long as the caller iterates, until the follower closes. The listener is
        registered once for all its batches (not around every event), and each batch
        is read without the lock.
        """
        if self._closed:
            return
        self._tick_at_most(timeout / TICKS)
        if job_id not in self._watches:
            events = self._safe_replay(job_id, after)
            if events:
                yield events
                after = events[-1].id
        with self._watching(job_id, after) as watch:
            while not self._closed:
                recent = self._next(watch, after, time.monotonic() + timeout - self._tick)
                # None: behind what the reader keeps, so read it from Redis
                events = self._safe_replay(job_id, after) if recent is None else recent
                if events:
                    after = events[-1].id
                elif self._closed:
                    return
                yield events

    def _next(self, watch: _Watch, after: int, due: float) -> list[Event] | None:
        """The next events; [] at the first wake-up from ``due`` on (the ticker's, at worst).

        ``due`` is a tick before the keepalive deadline, and the ticker wakes every
        watch at least once a tick, so the [] comes before the deadline.
        """
        while True:
            arrived = watch.arrived  # before looking: a delivery after the look sets it
            events = watch.since(after)
            if events is None or events or self._closed:
                return events
            if time.monotonic() >= due:
                return []
            arrived.wait()

    @contextmanager
    def _watching(self, job_id: str, after: int) -> Iterator[_Watch]:
        with self._lock:
            watch = self._watches.get(job_id)
            added = watch is None
            if watch is None:
                watch = self._watches[job_id] = _Watch(after)
                self._changed.notify()
            watch.listeners += 1
            reader_blocked_on = self._reader_id if added else None
        if self._thread is None:
            self._ensure_reader()
        if reader_blocked_on is not None:
            self._unblock(reader_blocked_on)
        try:
            yield watch
        finally:
            leave(self._lock, self._watches, job_id, watch)

    def _tick_at_most(self, tick: float) -> None:
        if tick < self._tick:
            with self._lock:
                self._tick = min(self._tick, tick)
                start = self._ticker_thread is None and not self._closed
                if start:
                    self._ticker_thread = threading.Thread(
                        target=self._ticker, name="xmlflow-tick", daemon=True
                    )
            if start:
                assert self._ticker_thread is not None
                self._ticker_thread.start()
            self._tick_changed.set()  # a ticker sleeping a longer tick starts over

    def _ticker(self) -> None:
        """Wake every watched job once a tick, so that waiting listeners see the time."""
        while not self._closed:
            self._tick_changed.wait(self._tick)
            self._tick_changed.clear()
            with self._lock:  # as the reader's wakes: two wakes at once could lose an Event
                for watch in self._watches.values():
                    watch.wake()

    def _safe_replay(self, job_id: str, after: int) -> list[Event]:
        try:
            return self._replay(job_id, after)
        except Exception as exc:  # Redis away: keep the stream open, the reader will resume
            log.warning("replay of job %s failed: %s", job_id, exc)
            time.sleep(0.5)
            return []

    def _unblock(self, client_id: int) -> None:
        try:
            self._control.client_unblock(client_id)
        except REDIS_DOWN:
            pass  # the reader is not blocked on a live connection either

    # -- the reader -------------------------------------------------------------------------------

    def _ensure_reader(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="xmlflow-follow", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: redis.Redis | None = None
        pause = 0.1
        while not self._closed:
            try:
                conn = conn or self._connect()
                self._read_once(conn)
                pause = 0.1
            except REDIS_DOWN as exc:
                log.warning("event reader lost Redis (%s); reconnecting in %.1f s", exc, pause)
                self._drop(conn)
                conn = None
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
            except Exception:
                log.exception("event reader failed; restarting it")
                self._drop(conn)
                conn = None
                time.sleep(1.0)

    def _connect(self) -> redis.Redis:
        conn = self._new_connection()
        client_id = int(conn.client_id())
        with self._lock:
            self._reader_id = client_id
        return conn

    def _drop(self, conn: redis.Redis | None) -> None:
        with self._lock:
            self._reader_id = None
        if conn is not None:
            conn.close()

    def _read_once(self, conn: redis.Redis) -> None:
        with self._lock:
            while not self._watches and not self._closed:
                self._changed.wait(1.0)
            cursors = {Keys.events.format(j): w.cursor for j, w in self._watches.items()}
        if not cursors:
            return
        reply = conn.xread(cursors, count=BATCH, block=BLOCK_MS)  # type: ignore[arg-type]
        if reply:
            self._deliver(reply)

    def _deliver(self, reply: Any) -> None:
        with self._lock:
            for key, entries in reply:
                job_id = key.decode().rpartition(":")[2]
                watch = self._watches.get(job_id)
                if watch is None:
                    continue
                cursor = watch.cursor
                fresh = [
                    to_event(job_id, entry_id, fields)
                    for entry_id, fields in entries
                    if event_id(entry_id) > cursor
                ]
                if fresh:
                    watch.publish(fresh)

    def close(self) -> None:
        """Wake every listener with nothing, so the streams of this process end now."""
        with self._lock:
            self._closed = True
            reader = self._reader_id
            for watch in self._watches.values():
                watch.wake()
            self._changed.notify_all()
        self._tick_changed.set()
        if reader is not None:
            self._unblock(reader)
