"""The embedded backend: SQLite for jobs and events (:mod:`.sqlite`), threads for work.

Nothing to install and nothing to run beside the web process.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from ..settings import Settings
from .base import Backend, Events
from .sqlite import open_sqlite

log = logging.getLogger(__name__)


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
    path = settings.data_dir / "xmlflow.db"
    store, listeners = open_sqlite(path, webhooks=bool(settings.webhook_url))
    executor = ThreadExecutor(run_job, settings.workers)
    return Backend(
        store=store,
        events=Events(store, listeners, listeners.count),
        executor=executor,
        close=executor.shutdown,
        outbox=store.outbox,
    )
