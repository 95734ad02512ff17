"""The embedded backend: SQLite for jobs and events (:mod:`.sqlite`), threads for work,
and the data folder's lock. Nothing to install and nothing to run beside the web process.

In embedded mode jobs run inside the server process, on ``XMLFLOW_WORKERS`` *runner*
threads (``xmlflow-runner-N``); each takes a job id and calls the service's run of it
(:class:`xmlflow.jobrun.JobRunner`). They are not "workers": that word is kept for the
``xmlflow worker`` processes of Redis mode (:mod:`.redis.worker`).

One embedded process serves a data folder at a time: it holds the folder's lock from
:meth:`EmbeddedDuties.start` to :meth:`EmbeddedDuties.close`, so that its start-up
recovery may take every unfinished job as its own.
"""

from __future__ import annotations

import fcntl
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..errors import Conflict
from ..settings import Settings
from .base import Backend, Capacity, Events
from .sqlite import open_sqlite

log = logging.getLogger(__name__)


class ThreadExecutor:
    """A fixed number of runner threads taking job ids from an unbounded FIFO queue.

    Back-pressure is not this queue's business: the service refuses uploads past
    ``XMLFLOW_MAX_QUEUED`` by counting queued jobs in the store. Nothing runs before
    :meth:`start`: a service built without starting it (tests, ``create_app(start=False)``)
    keeps its jobs queued.
    """

    def __init__(self, run_job: Callable[[str], None], runners: int) -> None:
        self._run_job = run_job
        self._closed = threading.Event()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"xmlflow-runner-{i}", daemon=True)
            for i in range(runners)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def capacity(self) -> Capacity:
        live = sum(t.is_alive() for t in self._threads)
        return Capacity("runner_threads", live, self._queue.qsize())

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None and not self._closed.is_set():
            try:
                self._run_job(job_id)
            except Exception:
                log.exception("job %s crashed its runner thread", job_id)

    def shutdown(self, wait: bool = True) -> None:
        """Start no more jobs (queued ones stay queued for the next start); let running ones end."""
        self._closed.set()
        started = [t for t in self._threads if t.ident is not None]
        for _ in started:
            self._queue.put(None)
        if wait:
            for t in started:
                t.join()


class EmbeddedDuties:
    """What the embedded backend does at start and close: lock, recover, run; and back."""

    def __init__(self, data_dir: Path, executor: ThreadExecutor) -> None:
        self.data_dir = data_dir
        self.executor = executor
        self._lock_file: IO[bytes] | None = None

    def start(self, take_over: Callable[[bool], None]) -> None:
        """Take the data folder, let the service settle what the last process left
        (``take_over(exclusive=True)``), then start running jobs."""
        # One embedded server per data folder: a second one would 'recover' live jobs.
        self._lock_file = lock_data_dir(self.data_dir)
        take_over(True)
        self.executor.start()

    def close(self) -> None:
        self.executor.shutdown()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the data folder's lock
            self._lock_file = None


def lock_data_dir(data_dir: Path) -> IO[bytes]:
    """The data folder's lock, held while the returned file stays open; :class:`Conflict`
    naming the remedy when another embedded process holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_file = open(data_dir / "xmlflow.lock", "wb")  # noqa: SIM115 - the caller closes it
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise Conflict(
            f"another xmlflow process is serving {data_dir} in embedded mode; "
            "use another XMLFLOW_DATA_DIR, or XMLFLOW_REDIS_URL to run several"
        ) from None
    return lock_file


def open_embedded_backend(settings: Settings, run_job: Callable[[str], None]) -> Backend:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "xmlflow.db"
    store, listeners = open_sqlite(path, webhooks=bool(settings.webhook_url))
    executor = ThreadExecutor(run_job, settings.workers)
    duties = EmbeddedDuties(settings.data_dir.resolve(), executor)

    def close() -> None:
        duties.close()
        listeners.close()  # after the runners: the running jobs' ends are published

    return Backend(
        name="sqlite",
        store=store,
        events=Events(store, listeners, listeners.count),
        executor=executor,
        start=duties.start,
        close=close,
        outbox=store.outbox,
    )
