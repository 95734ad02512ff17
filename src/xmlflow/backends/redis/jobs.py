"""Running jobs on RQ, keeping their leases, and settling the jobs of lost workers.

RQ moves a job id from the web process to some ``xmlflow worker``; the worker's work-
horse (a fork per job) calls :func:`xmlflow.backends.redis.worker.run_job`, which runs
the job (:mod:`xmlflow.jobrun`) with a lease kept alive beside it (the backend's
``guard``). RQ alone cannot tell us when a worker *and* its horse were killed (its
abandoned-job cleanup is slow and does not know our job record), so the lease does:
``claim`` sets it in the same transaction that marks the job running, a thread in the
horse renews it, and a monitor in every process (one at a time, under a short lock) ends
or requeues running jobs whose lease has expired. The same monitor enqueues again a job
that is still ``queued`` in our records but that RQ no longer holds (a worker took it
and died before claiming it): claiming is atomic, so a job enqueued twice still runs
once.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from rq import Queue, Worker
from rq.registry import StartedJobRegistry

from ...jobfiles import JobFiles
from ...models import JobStatus
from ..base import Capacity
from .keys import QUEUE_NAME, Keys
from .store import RedisStore

log = logging.getLogger(__name__)

JOB_FUNCTION = "xmlflow.backends.redis.worker.run_job"


class RQExecutor:
    """``Executor`` on an RQ queue: ``submit`` enqueues; workers elsewhere run the job."""

    def __init__(self, client: redis.Redis, *, failure_ttl: int) -> None:
        self.queue = Queue(QUEUE_NAME, connection=client)
        self.started = StartedJobRegistry(queue=self.queue)
        self.failure_ttl = failure_ttl

    def submit(self, job_id: str) -> None:
        # No RQ timeout (XMLFLOW_STEP_TIMEOUT is ours) and no RQ result: the record is ours.
        # The RQ job's id starts with ours, so the monitor can tell whether it is still
        # waiting or running somewhere; it is new at each enqueue (see rq_job_id).
        self.queue.enqueue(
            JOB_FUNCTION,
            job_id,
            job_id=rq_job_id(job_id),
            job_timeout=-1,
            result_ttl=0,
            failure_ttl=self.failure_ttl,
            description=f"xmlflow job {job_id}",
        )

    def pending(self) -> set[str]:
        """The xmlflow job ids RQ still holds: waiting in the queue, or taken by a worker
        whose heartbeat is alive (a dead worker's entry expires with its heartbeat).

        A job RQ is just moving between the two may be missed, and so enqueued twice:
        harmless, since only one run can ``claim`` it; the other returns at once.
        """
        started = set(self.started.get_job_ids(cleanup=False))
        started -= set(self.started.get_expired_job_ids())
        rq_ids = [*self.queue.get_job_ids(), *started]
        return {xmlflow_job_id(i) for i in rq_ids if i.startswith(RQ_PREFIX)}

    def capacity(self) -> Capacity:
        """The ``xmlflow worker`` processes on the queue whose RQ record is alive, and the
        queue's length. A worker that stopped says so to RQ at once; one that was killed
        counts until its record expires (``worker.WORKER_TTL``, 20 s), and a live one
        registers again at its next heartbeat if Redis lost it (``worker.XmlflowWorker``)."""
        keys = Worker.all_keys(queue=self.queue)
        with self.queue.connection.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            live = sum(pipe.execute()) if keys else 0
        return Capacity("rq_workers", live, self.queue.count)

    def shutdown(self, wait: bool = True) -> None:
        """Nothing runs in this process."""


RQ_PREFIX = "xmlflow-"


def rq_job_id(job_id: str) -> str:
    """A new RQ id at each enqueue of the job: ``xmlflow-<job id>-<random>``.

    RQ keeps one record per id and deletes it when an execution of that id ends (we
    keep no result). A job enqueued again while a run of it still goes on (a retry of
    a paused worker's job, whose stale run is fenced later; a job enqueued twice) would
    share that record: the first execution to end deleted it under the other, whose
    end RQ then logged as an ERROR and put in its failed registry.
    """
    return f"{RQ_PREFIX}{job_id}-{secrets.token_hex(4)}"


def xmlflow_job_id(rq_id: str) -> str:
    """Ours in an RQ id of :func:`rq_job_id`'s, or of the older ``xmlflow-<job id>``."""
    return rq_id.removeprefix(RQ_PREFIX).partition("-")[0]


@contextmanager
def lease_kept(store: RedisStore, job_id: str, attempt: int) -> Iterator[Callable[[], bool]]:
    """Renew the lease of the job's run ``attempt`` while the body runs; yields ``lost()``.

    ``lost()`` turns true once a renewal is refused (the job was settled as lost, ended,
    or claimed again) or none has succeeded for a whole lease period (Redis away, or this
    process was paused): from then on another run may own the job, so the caller stops
    its child at once. The thread dies with this process, which is the point.
    """
    stop, refused = threading.Event(), threading.Event()
    renewed = [time.monotonic()]

    def renew() -> None:
        while not stop.wait(store.lease_ttl / 5):
            try:
                if not store.renew_lease(job_id, attempt):
                    log.warning("job %s: attempt %d lost its lease; stopping it", job_id, attempt)
                    refused.set()
                    return
                renewed[0] = time.monotonic()
            except Exception as exc:  # Redis away: the lease has room for a short outage
                log.warning("job %s: could not renew its lease: %s", job_id, exc)

    def lost() -> bool:
        return refused.is_set() or time.monotonic() - renewed[0] > store.lease_ttl

    thread = threading.Thread(target=renew, name=f"xmlflow-lease-{job_id}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()


class LostJobMonitor:
    """Every few seconds, one process settles running jobs whose lease expired."""

    def __init__(
        self, store: RedisStore, executor: RQExecutor, data_dir: Path, retries: int
    ) -> None:
        self.store = store
        self.executor = executor
        self.data_dir = data_dir
        self.retries = retries
        self.interval = max(1.0, min(5.0, store.lease_ttl / 3))
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="xmlflow-monitor", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.store.try_lock(Keys.monitor, self.interval * 0.8):
                    self.check()
            except Exception as exc:
                log.warning("lost-job check failed (will try again): %s", exc)

    def check(self) -> int:
        """Settle every lost job now; returns how many were."""
        return self._settle_running() + self._requeue_orphans()

    def _requeue_orphans(self) -> int:
        """Queued jobs that RQ no longer holds: a worker took one and died before the job
        was claimed (or the queue was lost with Redis). Enqueue them again."""
        waiting = self.store.queued_before(time.time() - 2 * self.store.lease_ttl)
        if not waiting:
            return 0
        orphans = set(waiting) - self.executor.pending()
        for job_id in orphans:
            log.warning("job %s: queued but no longer held by RQ; enqueued again", job_id)
            self.executor.submit(job_id)
        return len(orphans)

    def _settle_running(self) -> int:
        settled = 0
        for job_id in self.store.running_without_lease():
            job = self.store.settle_lost(job_id, self.retries)
            if job is None:
                continue
            settled += 1
            log.warning("job %s: its worker was lost; now %s", job_id, job.status)
            files = JobFiles(self.data_dir, job_id)
            shutil.rmtree(files.attempt(job.attempt), ignore_errors=True)
            if job.status is JobStatus.QUEUED:
                self.executor.submit(job_id)
            else:  # ended: its source, scratch and unpublished outputs go too
                files.discard_inputs(outputs=True)
        return settled
