"""The embedded job store: jobs and their events in one SQLite file (WAL).

Nothing to install and nothing to run beside the web process. Every event append is
one SQLite transaction that also updates the job's record, so a crash can never leave
the two disagreeing. Right after each commit the store hands the event to
``on_commit``: the listeners of this process (:mod:`.listeners`) take it from memory.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from ...errors import Conflict, NotFound
from ...models import (
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
from ..base import name_matches, status_set
from ..watch import MEMORY
from .outbox import SqliteOutbox

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
READ_MANY = 400  # jobs per batched read of the listeners' ticker (two SQL variables each)


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
    """``JobStore`` on one SQLite database: records, events, and the two in one transaction."""

    def __init__(self, path: Path, *, webhooks: bool = False) -> None:
        self.path = path
        self._local = _per_os_thread()
        # each event right after its commit, by its writer's thread (see sqlite.open_sqlite)
        self.on_commit: Callable[[Event], None] = _nobody
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
        self.on_commit(event)
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
        self.on_commit(event)
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
            self.on_commit(ended)
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

    # -- events ------------------------------------------------------------------------------

    def append(
        self, job_id: str, type: EventType, data: dict[str, Any], *, attempt: int | None = None
    ) -> Event:
        with self._transaction() as db:
            job = self._locked_job(db, job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            event = self._append(db, job, type, data, attempt)
        self.on_commit(event)
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

    def recent(self, job_id: str) -> list[Event]:
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

    def read_many(self, cursors: dict[str, int]) -> dict[str, list[Event]]:
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


def _nobody(event: Event) -> None:
    """``on_commit`` of a store that no listener follows."""


def _dump(job: Job) -> bytes:
    return orjson.dumps(job.to_dict())


def _load(doc: bytes) -> Job:
    return Job.from_dict(orjson.loads(doc))
