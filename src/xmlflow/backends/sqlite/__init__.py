"""The embedded backend's data: jobs and their events in one SQLite file, nothing to run.

Each part has a module, as in :mod:`..redis`: :mod:`.store` (jobs and their events,
written together: the ``JobStore``), :mod:`.listeners` (this process's listeners: the
``EventFeed``), :mod:`.outbox` (webhook deliveries, in the same file and transactions).
"""

from __future__ import annotations

from pathlib import Path

from .listeners import SqliteListeners
from .store import SqliteStore

__all__ = ["SqliteListeners", "SqliteStore", "open_sqlite"]


def open_sqlite(path: Path, *, webhooks: bool = False) -> tuple[SqliteStore, SqliteListeners]:
    """A store on the file at ``path``, and the listeners it tells of each commit."""
    store = SqliteStore(path, webhooks=webhooks)
    listeners = SqliteListeners(store)
    store.on_commit = listeners.notify
    return store, listeners
