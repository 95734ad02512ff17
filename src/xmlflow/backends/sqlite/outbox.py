"""The embedded store's webhook outbox: a table in the same SQLite file as the jobs.

:meth:`SqliteOutbox.add` runs inside the transaction that appends a job's ``end`` event
(``SqliteStore._append`` in :mod:`.store`), so the delivery is committed with the end or
not at all.

A claim is a lease (``lease_until``) held by this process (``owner``, random per
process). Only one embedded process serves a data folder (its lock), so a lease held by
another owner belongs to a process that died: it is free at once, and a delivery cut
off by a crash is sent again as soon as the server is back.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

from ...models import Event, Job
from ...webhooks import Delivery, outbox_entry

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    next_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    token TEXT NOT NULL DEFAULT '',
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_at);
"""


class SqliteOutbox:
    """``webhooks.Outbox`` on the store's database (its connection and transactions)."""

    def __init__(
        self,
        db: Callable[[], sqlite3.Connection],
        transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
    ) -> None:
        self._db = db
        self._transaction = transaction
        self._owner = secrets.token_hex(8)
        db().executescript(SCHEMA)

    def add(self, db: sqlite3.Connection, job: Job, event: Event) -> None:
        """Record the delivery of a job's end, in the caller's transaction."""
        ident, body = outbox_entry(job, event)
        now = job.ended_at or 0.0
        db.execute(
            "INSERT OR IGNORE INTO webhook_outbox (id, job_id, body, created_at, next_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (ident, job.id, body, now, now),
        )

    def claim(self, now: float, lease: float) -> Delivery | None:
        token = secrets.token_hex(8)
        with self._transaction() as db:
            row = db.execute(
                "SELECT id, job_id, body, created_at, attempts FROM webhook_outbox "
                "WHERE next_at <= ? AND (lease_until <= ? OR owner != ?) "
                "ORDER BY next_at LIMIT 1",
                (now, now, self._owner),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, owner = ?, "
                "lease_until = ?, token = ? WHERE id = ?",
                (self._owner, now + lease, token, row[0]),
            )
        return Delivery(row[0], row[1], bytes(row[2]), row[3], row[4] + 1, token)

    def done(self, delivery: Delivery) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM webhook_outbox WHERE id = ?", (delivery.id,))

    def retry_at(self, delivery: Delivery, when: float, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE webhook_outbox SET next_at = ?, lease_until = 0, last_error = ? "
                "WHERE id = ? AND owner = ? AND token = ?",
                (when, error, delivery.id, self._owner, delivery.token),
            )

    def pending(self) -> int:
        row = self._db().execute("SELECT COUNT(*) FROM webhook_outbox").fetchone()
        return int(row[0])
