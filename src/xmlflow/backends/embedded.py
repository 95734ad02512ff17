"""The embedded backend: one SQLite file (WAL) for jobs and events, threads for work.

Nothing to install and nothing to run beside the web process. Every event append
is one SQLite transaction that also updates the job's record, so a crash can never
leave the two disagreeing; listeners in this process are woken through a condition
per job, and poll the file once a second so that another process's writes are seen
too.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
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
    running_event,
)
from ..settings import Settings
from .base import Backend, following
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
MEMORY = 256  # recent events kept in memory per followed job


class _Listened:
    """A job someone in this process follows: its condition and its latest events.

    ``recent`` holds contiguous committed events, appended by this process's own writes
    as they commit: every listener woken by an event takes it from here instead of
    reading it back from SQLite (with 2,000 listeners, 2,000 queries per event).
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.count = 0
        self.recent: deque[Event] = deque(maxlen=MEMORY)

    def add(self, event: Event) -> None:
        """Remember a just-committed event; start over if it does not follow the last one."""
        if self.recent and event.id <= self.recent[-1].id:
            return  # committed earlier than one already here: listeners read it from SQLite
        if self.recent and event.id != self.recent[-1].id + 1:
            self.recent.clear()
        self.recent.append(event)

    def since(self, after: int) -> list[Event] | None:
        """Events after ``after`` from memory; None when memory does not reach back."""
        if not self.recent or self.recent[0].id > after + 1:
            return None
        newest = self.recent[-1].id
        return [self.recent[-k] for k in range(newest - after, 0, -1)]


class _Signals:
    """A condition per job that has listeners, so an event wakes only its own listeners."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conds: dict[str, _Listened] = {}

    @contextmanager
    def listening(self, job_id: str) -> Iterator[_Listened]:
        with self._lock:
            entry = self._conds.setdefault(job_id, _Listened())
            entry.count += 1
        try:
            yield entry
        finally:
            with self._lock:
                entry.count -= 1
                if entry.count == 0:
                    self._conds.pop(job_id, None)

    def notify(self, job_id: str, event: Event) -> None:
        with self._lock:
            entry = self._conds.get(job_id)
        if entry:
            with entry.cond:
                entry.add(event)
                entry.cond.notify_all()


class SqliteStore:
    """JobStore and EventLog on one SQLite database."""

    def __init__(self, path: Path, *, webhooks: bool = False) -> None:
        self.path = path
        self._local = threading.local()
        self._signals = _Signals()
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
            event = self._append(db, job, EventType.JOB, {"job": job.id, "status": "queued"})
        self._signals.notify(job.id, event)
        return event

    def get(self, job_id: str) -> Job | None:
        row = self._db().execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _load(row[0]) if row else None

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        pipeline: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        where, args = _filters(status, pipeline)
        db = self._db()
        total = db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
        rows = db.execute(
            f"SELECT doc FROM jobs {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [_load(r[0]) for r in rows], int(total)

    def claim(self, job_id: str) -> Job | None:
        with self._transaction() as db:
            job = self._locked_job(db, job_id)
            if job is None or job.status is not JobStatus.QUEUED:
                return None
            event = self._append(db, job, EventType.JOB, running_event(job))
        self._signals.notify(job_id, event)
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
                ended = self._append(db, job, EventType.END, cancelled_end())
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        if ended is not None:
            self._signals.notify(job_id, ended)
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
        self._signals.notify(job_id, event)
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
        """Woken events come from memory; SQLite is read on entry, on a memory miss, and
        once per ``POLL_INTERVAL`` of quiet (another process's writes wake nobody here)."""
        deadline = time.monotonic() + timeout
        with self._signals.listening(job_id) as entry:
            woken = False
            while True:
                with entry.cond:
                    events = entry.since(after) if woken else None
                    if events is None:
                        events = self.read(job_id, after)
                    left = deadline - time.monotonic()
                    if events or left <= 0:
                        return events
                    woken = entry.cond.wait(min(left, POLL_INTERVAL))

    def listen(self, job_id: str, after: int, timeout: float) -> Generator[list[Event], None, None]:
        return following(self.follow, job_id, after, timeout)

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


def _filters(status: JobStatus | None, pipeline: str | None) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if status is not None:
        clauses.append("status = ?")
        args.append(str(status))
    if pipeline is not None:
        clauses.append("pipeline = ?")
        args.append(pipeline)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), args


def _dump(job: Job) -> bytes:
    return orjson.dumps(job.to_dict())


def _load(doc: bytes) -> Job:
    return Job.from_dict(orjson.loads(doc))


class ThreadExecutor:
    """A fixed number of worker threads taking job ids from an unbounded FIFO queue.

    Back-pressure is not this queue's business: the web layer refuses uploads past
    ``XMLFLOW_MAX_QUEUED`` by counting queued jobs in the store.
    """

    def __init__(self, run_job: Callable[[str], None], workers: int) -> None:
        self._run_job = run_job
        self._closed = threading.Event()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"xmlflow-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None and not self._closed.is_set():
            try:
                self._run_job(job_id)
            except Exception:
                log.exception("job %s crashed its worker thread", job_id)

    def shutdown(self, wait: bool = True) -> None:
        """Start no more jobs (queued ones stay queued for the next start); let running ones end."""
        self._closed.set()
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join()


def open_embedded_backend(settings: Settings, run_job: Callable[[str], None]) -> Backend:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(settings.data_dir / "xmlflow.db", webhooks=bool(settings.webhook_url))
    executor = ThreadExecutor(run_job, settings.workers)
    return Backend(
        store=store, events=store, executor=executor, close=executor.shutdown, outbox=store.outbox
    )
