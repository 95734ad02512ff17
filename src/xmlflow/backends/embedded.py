"""The embedded backend: one SQLite file (WAL) for jobs and events, threads for work.

Nothing to install and nothing to run beside the web process. Every event append
is one SQLite transaction that also updates the job's record, so a crash can never
leave the two disagreeing. Listeners in this process get each event from the writer
that committed it, through memory (:class:`_Listeners`); another process's writes are
read from the file once a second.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import orjson

from ..errors import Conflict, NotFound
from ..models import (
    Event,
    EventType,
    Job,
    JobStatus,
    apply_event,
    bounded_data,
    cancelled_end,
    queued_event,
    running_event,
)
from ..settings import Settings
from .base import Backend, name_matches, status_set
from .local import EmbeddedDuties, ThreadExecutor
from .sqlite_outbox import SqliteOutbox

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at DESC);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    id INTEGER NOT NULL,
    type TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, id)
) WITHOUT ROWID;
"""
POLL_INTERVAL = 1.0  # seconds: how soon another process's events are noticed
MEMORY = 512  # recent events kept in memory per followed job
TICKS = 4  # ticker wake-ups per (shortest) keepalive period
READ_MANY = 400  # jobs per batched read of the ticker (two SQL variables each)


class _Watch:
    """One job listeners in this process follow: its latest events, and a wake-up.

    What the watch has is one immutable ``state`` (replaced, never changed), published
    before ``arrived`` is set; listeners read both without the lock, so waking 1,000 of
    them costs 1,000 attribute reads, not 1,000 turns of a lock. ``arrived`` is replaced
    at each wake-up: waking every listener is one ``set()``.
    """

    __slots__ = ("state", "arrived", "listeners")

    def __init__(self, recent: list[Event]) -> None:
        self.state: tuple[int, tuple[Event, ...]] = (recent[-1].id if recent else 0, tuple(recent))
        self.arrived = threading.Event()
        self.listeners = 0

    @property
    def cursor(self) -> int:
        """The id of the newest event the watch has."""
        return self.state[0]

    def publish(self, events: list[Event]) -> None:
        """Add committed events (contiguous, right after the cursor), then wake listeners."""
        memory = (self.state[1] + tuple(events))[-MEMORY:]
        self.state = (memory[-1].id, memory)
        self.wake()

    def wake(self) -> None:
        """Wake whoever waits now; later waits get a new Event."""
        arrived, self.arrived = self.arrived, threading.Event()
        arrived.set()

    def since(self, after: int) -> list[Event] | None:
        """Events after ``after`` from memory; None when memory does not reach back."""
        cursor, memory = self.state  # one read: a consistent pair
        if cursor <= after:
            return []
        if not memory or memory[0].id > after + 1:
            return None
        return list(memory[after + 1 - memory[0].id :])  # ids in memory are contiguous


class _Listeners:
    """Every job followed in this process: a watch per job, one ticker for them all.

    The shape of the Redis follower (:mod:`.redis.fanout`), measured with
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

    def __init__(
        self,
        read: Callable[[str, int], list[Event]],
        recent: Callable[[str], list[Event]],
        read_many: Callable[[dict[str, int]], dict[str, list[Event]]],
    ) -> None:
        self._read = read
        self._recent = recent
        self._read_many = read_many
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._tick = POLL_INTERVAL  # seconds between the ticker's wake-ups
        self._tick_changed = threading.Event()
        self._ticker: threading.Thread | None = None

    def count(self) -> int:
        """Listener registrations held now (for ``/metrics``: it returns to 0 when idle)."""
        with self._lock:
            return sum(w.listeners for w in self._watches.values())

    # -- the listener's side -------------------------------------------------------------------

    def listen(self, job_id: str, after: int, timeout: float) -> Generator[list[Event], None, None]:
        """Every batch of events after ``after``, [] after each ``timeout`` s of quiet."""
        self._tick_at_most(timeout / TICKS)
        with self._watching(job_id) as watch:
            while True:
                events = self._next(watch, job_id, after, time.monotonic() + timeout - self._tick)
                if events:
                    after = events[-1].id
                yield events

    def _next(self, watch: _Watch, job_id: str, after: int, due: float) -> list[Event]:
        """The next events; [] at the first wake-up from ``due`` on (the ticker's, at worst)."""
        while True:
            arrived = watch.arrived  # before looking: a delivery after the look sets it
            events = watch.since(after)
            if events is None:  # behind what memory keeps: from SQLite
                events = self._read(job_id, after)
            if events or time.monotonic() >= due:
                return events
            arrived.wait()

    @contextmanager
    def _watching(self, job_id: str) -> Iterator[_Watch]:
        with self._lock:
            watch = self._watches.get(job_id)
            if watch is None:
                # Read under the lock: an append that commits after this read notifies
                # after the watch is in place, one before it is in what was read.
                watch = self._watches[job_id] = _Watch(self._recent(job_id))
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
            with self._lock:
                watch.listeners -= 1
                if watch.listeners == 0 and self._watches.get(job_id) is watch:
                    del self._watches[job_id]

    def _tick_at_most(self, tick: float) -> None:
        if tick < self._tick:
            with self._lock:
                self._tick = min(self._tick, tick)
            self._tick_changed.set()  # a ticker sleeping a longer tick starts over

    # -- the writers' side ---------------------------------------------------------------------

    def notify(self, job_id: str, event: Event) -> None:
        """Publish an event its writer just committed to the listeners of its job, if any."""
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


def _per_os_thread() -> threading.local:
    """Storage per OS thread, gevent or not: gevent's monkey-patching makes
    ``threading.local`` per greenlet, so every request and stream would open a connection
    of its own (two file descriptors, and a page cache) and keep it while its greenlet is
    remembered: 1,000 streams held 2,000 descriptors after they closed, and a server
    under a 1,024-descriptor limit failed its 500th stream. The greenlets of one thread
    share its connection safely: none of them yields inside a statement or a transaction
    (sqlite3 and :func:`models.apply_event` never switch), so their uses never overlap."""
    monkey = sys.modules.get("gevent.monkey")  # never imported here: `xmlflow run` has none
    if monkey is not None and monkey.is_module_patched("threading"):
        local: type[threading.local] = monkey.get_original("threading", "local")
        return local()
    return threading.local()


class SqliteStore:
    """JobStore and EventLog on one SQLite database."""

    def __init__(self, path: Path, *, webhooks: bool = False) -> None:
        self.path = path
        self._local = _per_os_thread()
        self._listeners = _Listeners(self.read, self._recent, self._read_many)
        self._db().executescript(SCHEMA)
        # with webhooks on, each end event records its delivery in the same transaction
        self.outbox = SqliteOutbox(self._db, self._transaction) if webhooks else None

    # -- connections -------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- JobStore ----------------------------------------------------------------------------

    def create(self, job: Job) -> Event:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, status, pipeline, created_at, doc) VALUES (?, ?, ?, ?, ?)",
                (job.id, str(job.status), job.pipeline_name, job.created_at, _dump(job)),
            )
            event = self._append(db, job, *queued_event(job.id))
        self._listeners.notify(job.id, event)
        return event

    def get(self, job_id: str) -> Job | None:
        row = self._db().execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _load(row[0]) if row else None

    def list_jobs(
        self,
        *,
        status: JobStatus | Collection[JobStatus] | None = None,
        pipeline: str | None = None,
        q: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """The page's rows are chosen by key alone, then only their documents are read:
        sorting whole documents (several statuses match thousands of rows) cost 200 times
        more. A name search reads every document once, so it collects the matching keys in
        that one pass instead of counting in a second (``bench/list_jobs.py``)."""
        where, args = _filters(status_set(status), pipeline, q)
        db = self._db()
        order = "ORDER BY created_at DESC, id"
        if q:  # SQLite's lower() folds ASCII only: the name test is Python's, as in Redis
            db.create_function("xmlflow_name_matches", 2, name_matches, deterministic=True)
            keys = [r[0] for r in db.execute(f"SELECT rowid FROM jobs {where} {order}", args)]
            total, page = len(keys), keys[offset : offset + limit]
        else:
            total = int(db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0])
            sql = f"SELECT rowid FROM jobs {where} {order} LIMIT ? OFFSET ?"
            page = [r[0] for r in db.execute(sql, [*args, limit, offset])]
        marks = ", ".join("?" * len(page))
        rows = db.execute(f"SELECT doc FROM jobs WHERE rowid IN ({marks}) {order}", page)
        return [_load(r[0]) for r in rows], total

    def claim(self, job_id: str) -> Job | None:
        with self._transaction() as db:
            job = self._locked_job(db, job_id)
            if job is None or job.status is not JobStatus.QUEUED:
                return None
            event = self._append(db, job, *running_event(job))
        self._listeners.notify(job_id, event)
        return job

    def cancel(self, job_id: str) -> Job:
        with self._transaction() as db:
            job = self._locked_job(db, job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            if job.status.finished:
                raise Conflict(f"job {job_id} has already ended ({job.status})")
            ended = None
            if job.status is JobStatus.QUEUED:
                ended = self._append(db, job, *cancelled_end())
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        if ended is not None:
            self._listeners.notify(job_id, ended)
        return job

    def cancel_requested(self, job_id: str) -> bool:
        row = (
            self._db()
            .execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        return bool(row and row[0])

    def delete(self, job_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def unfinished(self) -> list[Job]:
        rows = (
            self._db()
            .execute(
                "SELECT doc FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at"
            )
            .fetchall()
        )
        return [_load(r[0]) for r in rows]

    def expired(self, ended_before: float) -> list[str]:
        rows = (
            self._db()
            .execute(
                "SELECT id FROM jobs WHERE ended_at IS NOT NULL AND ended_at < ?", (ended_before,)
            )
            .fetchall()
        )
        return [r[0] for r in rows]

    def count_queued(self) -> int:
        row = self._db().execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()
        return int(row[0])

    # -- EventLog ----------------------------------------------------------------------------

    def append(
        self, job_id: str, type: EventType, data: dict[str, Any], *, attempt: int | None = None
    ) -> Event:
        with self._transaction() as db:
            job = self._locked_job(db, job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            event = self._append(db, job, type, data, attempt)
        self._listeners.notify(job_id, event)
        return event

    def read(self, job_id: str, after: int = 0) -> list[Event]:
        rows = (
            self._db()
            .execute(
                "SELECT id, type, data FROM events WHERE job_id = ? AND id > ? ORDER BY id",
                (job_id, after),
            )
            .fetchall()
        )
        return [Event(job_id, r[0], EventType(r[1]), orjson.loads(r[2])) for r in rows]

    def follow(self, job_id: str, after: int, timeout: float) -> list[Event]:
        """Events after ``after``, waiting up to ``timeout`` s; [] on timeout."""
        with closing(self.listen(job_id, after, timeout)) as batches:
            return next(batches)

    def listen(self, job_id: str, after: int, timeout: float) -> Generator[list[Event], None, None]:
        """One registration for the whole stream: see :class:`_Listeners`."""
        return self._listeners.listen(job_id, after, timeout)

    def listeners(self) -> int:
        """Listener registrations held in this process now."""
        return self._listeners.count()

    def _recent(self, job_id: str) -> list[Event]:
        """The job's last ``MEMORY`` events, oldest first: a new watch's memory."""
        rows = (
            self._db()
            .execute(
                "SELECT id, type, data FROM events WHERE job_id = ? ORDER BY id DESC LIMIT ?",
                (job_id, MEMORY),
            )
            .fetchall()
        )
        return [Event(job_id, r[0], EventType(r[1]), orjson.loads(r[2])) for r in reversed(rows)]

    def _read_many(self, cursors: dict[str, int]) -> dict[str, list[Event]]:
        """The events after each job's cursor, a query per ``READ_MANY`` jobs."""
        found: dict[str, list[Event]] = {}
        items = list(cursors.items())
        for start in range(0, len(items), READ_MANY):
            chunk = items[start : start + READ_MANY]
            values = ", ".join(["(?, ?)"] * len(chunk))
            rows = (
                self._db()
                .execute(
                    f"WITH w(job_id, after) AS (VALUES {values}) "
                    "SELECT e.job_id, e.id, e.type, e.data FROM w JOIN events e "
                    "ON e.job_id = w.job_id AND e.id > w.after ORDER BY e.job_id, e.id",
                    [v for pair in chunk for v in pair],
                )
                .fetchall()
            )
            for r in rows:
                found.setdefault(r[0], []).append(
                    Event(r[0], r[1], EventType(r[2]), orjson.loads(r[3]))
                )
        return found

    # -- helpers -----------------------------------------------------------------------------

    def _locked_job(self, db: sqlite3.Connection, job_id: str) -> Job | None:
        row = db.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _load(row[0]) if row else None

    def _append(
        self,
        db: sqlite3.Connection,
        job: Job,
        type: EventType,
        data: dict[str, Any],
        attempt: int | None = None,
    ) -> Event:
        """Fence, fold and insert one event; the caller's transaction makes it atomic."""
        data = bounded_data(data)
        apply_event(job, type, data, time.time(), attempt)
        job.last_event_id += 1
        event = Event(job.id, job.last_event_id, type, data)
        db.execute(
            "INSERT INTO events (job_id, id, type, data) VALUES (?, ?, ?, ?)",
            (job.id, event.id, str(type), orjson.dumps(data)),
        )
        db.execute(
            "UPDATE jobs SET status = ?, ended_at = ?, doc = ? WHERE id = ?",
            (str(job.status), job.ended_at, _dump(job), job.id),
        )
        if type is EventType.END and self.outbox is not None:
            self.outbox.add(db, job, event)
        return event


def _filters(
    statuses: frozenset[JobStatus], pipeline: str | None, q: str | None
) -> tuple[str, list[Any]]:
    """The WHERE clause of :meth:`SqliteStore.list_jobs` (status and pipeline are indexed
    columns; the file name is only in the job's document)."""
    clauses: list[str] = []
    args: list[Any] = []
    if statuses:
        clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
        args.extend(sorted(str(s) for s in statuses))
    if pipeline is not None:
        clauses.append("pipeline = ?")
        args.append(pipeline)
    if q:
        clauses.append("xmlflow_name_matches(json_extract(CAST(doc AS TEXT), '$.filename'), ?)")
        args.append(q)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), args


def _dump(job: Job) -> bytes:
    return orjson.dumps(job.to_dict())


def _load(doc: bytes) -> Job:
    return Job.from_dict(orjson.loads(doc))


def open_embedded_backend(settings: Settings, run_job: Callable[[str], None]) -> Backend:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(settings.data_dir / "xmlflow.db", webhooks=bool(settings.webhook_url))
    executor = ThreadExecutor(run_job, settings.workers)
    duties = EmbeddedDuties(settings.data_dir.resolve(), executor)
    return Backend(
        name="sqlite",
        store=store,
        events=store,
        executor=executor,
        start=duties.start,
        close=duties.close,
        outbox=store.outbox,
    )
