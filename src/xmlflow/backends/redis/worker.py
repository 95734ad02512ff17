"""``xmlflow worker``: an RQ worker process, and the RQ job function its horses run.

"Worker" means this and nothing else: a process that takes job ids from the Redis
queue and runs them, one at a time, each in a work-horse RQ forks for it. (In
embedded mode jobs run on the server's *runner threads*, :mod:`xmlflow.backends.embedded`.)

The worker builds the same :class:`~xmlflow.service.Service` from the same settings as
the web processes, so a step runs identically wherever it runs. The horse inherits
this module's service (redis-py reopens its connections after a fork), so a job costs
a fork, not a start-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue, Worker, worker_registration
from rq.exceptions import InvalidJobOperation
from rq.job import Job
from rq.registry import StartedJobRegistry

from ...service import Service
from ...settings import Settings, load_settings
from . import connect
from .keys import QUEUE_NAME

log = logging.getLogger(__name__)

_service: Service | None = None


def _this_process() -> Service:
    """This process's service; built from the environment when RQ runs us without ``work``."""
    global _service
    if _service is None:
        _service = Service(load_settings())
    return _service


def run_job(job_id: str) -> None:
    """The RQ job (:data:`~xmlflow.backends.redis.jobs.JOB_FUNCTION`): the service runs it,
    with the backend's guard renewing its attempt's lease (and stopping its child at once
    if the lease is lost or refused).

    A run the store fenced (superseded: the job was settled as lost, retried, or ended
    by someone else) returns normally, as does one that finds its job no longer queued:
    xmlflow stopped it on purpose, so it is no failure of RQ's (only an exception of the
    machinery here lands in RQ's failed registry). Each enqueue has an RQ id of its own
    (``jobs.rq_job_id``), so a stale run and its retry never share RQ's record.
    """
    _this_process().run_job(job_id, start_method="fork")  # the horse lives for this job only


def work(settings: Settings, *, burst: bool = False, name: str | None = None) -> None:
    """Run one RQ worker on the xmlflow queue; rides out Redis outages by starting over."""
    assert settings.redis_url
    global _service
    svc = _service = Service(settings)
    svc.start()
    try:
        run_worker(connect(settings.redis_url, socket_timeout=30), burst=burst, name=name)
    finally:
        svc.close()


def worker_name() -> str:
    return f"xmlflow-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


HEARTBEAT_INTERVAL = 5  # seconds between a worker's heartbeats, idle or running a job
WORKER_TTL = 20  # a worker whose heartbeats stop (killed, frozen) stops counting after this


class XmlflowWorker(Worker):
    """RQ's worker, with a heartbeat that ``/api/health``'s count of workers can trust.

    RQ registers a worker (its record, and its name in the queue's set of workers) once,
    at birth; a heartbeat only pushes back the record's expiry, by RQ's worker TTL + 60 s
    (8 minutes), and an idle worker beats every 405 s. So after ``FLUSHALL`` or a
    restart of a Redis that keeps nothing, live workers took jobs but counted 0, and a
    worker killed with ``kill -9`` counted for minutes. Here a worker beats every
    ``HEARTBEAT_INTERVAL``: its wait for a job lasts that long, and while a job runs RQ's
    monitor of the horse beats as often (it wakes from its wait for the horse to do it);
    each beat registers the worker again, writes its record back whole if Redis lost it,
    and keeps it ``WORKER_TTL`` seconds.
    """

    # RQ's own wait between tries when Redis refuses its wait for a job doubles up to 60 s
    # and is only reset by a job: after a long outage, an idle worker slept up to a minute
    # through the next short one while jobs queued. No longer than a heartbeat here.
    max_connection_wait_time = float(HEARTBEAT_INTERVAL)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        kwargs.setdefault("job_monitoring_interval", HEARTBEAT_INTERVAL)
        super().__init__(*args, **kwargs)
        self.registered = False  # its birth written to Redis: Redis was there for it

    def register_birth(self) -> None:
        super().register_birth()  # type: ignore[no-untyped-call]
        self.registered = True

    @property
    def dequeue_timeout(self) -> int:
        return HEARTBEAT_INTERVAL

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat, with ``WORKER_TTL`` whatever RQ asks, and the registration.

        Given a pipeline (RQ's beat during a job, or with its check for ``rq suspend``), the
        caller runs it; RQ's beat during a job writes the record back itself if it was lost.
        Alone (the beats around the wait for a job), this writes it back.
        """
        if pipeline is not None:
            super().heartbeat(WORKER_TTL, pipeline=pipeline)
            worker_registration.register(self, pipeline)
            return
        with self.connection.pipeline() as pipe:
            super().heartbeat(WORKER_TTL, pipeline=pipe)
            worker_registration.register(self, pipe)
            pipe.hexists(self.key, "birth")
            if not pipe.execute()[-1]:  # only what the beats wrote: Redis had lost the record
                log.warning("worker %s: Redis had lost its record; registered again", self.name)
                pipe.hset(self.key, mapping={**self.serialize(), "state": self.get_state()})
                pipe.execute()

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry
    ) -> None:
        """RQ's end of a job, unless Redis lost RQ's record of it while it ran (``FLUSHALL``,
        a restart of a Redis that keeps nothing): RQ raised ``InvalidJobOperation`` then,
        logged an ERROR and filed a rebuilt record as failed. xmlflow's own record of the
        job settles it (its run was fenced); RQ has nothing left to settle, so the leftovers
        of its heartbeats go."""
        try:
            super().handle_job_success(job, queue, started_job_registry)
        except InvalidJobOperation:
            if self.connection.hexists(job.key, "status"):
                raise
            log.warning("RQ job %s: its record was lost from Redis while it ran", job.id)
            with self.connection.pipeline() as pipe:
                pipe.delete(job.key)  # only the last heartbeat's field
                self.cleanup_execution(job, pipeline=pipe)
                pipe.execute()


RESTART_PAUSE = (1.0, 30.0)  # seconds before a worker that lost Redis starts again: first, most


def run_worker(client: redis.Redis, *, burst: bool = False, name: str | None = None) -> None:
    """Run an RQ worker on the xmlflow queue until it is told to stop (or, in burst, idle).

    RQ's ``Worker.work`` gives up on the first Redis error it meets outside its wait
    for a job (out of memory, READONLY, a timeout...): it logs "quitting" and
    *returns*, as if stopped. So a return without a stop request, or an exception, is
    an outage: this waits (with backoff), lets a job still running in the horse finish,
    and starts a new worker. Only SIGTERM/SIGINT (or an idle burst) end the loop.
    """
    pause = RESTART_PAUSE[0]
    while True:
        try:  # RQ names its connection here: Redis may be away from the very start
            worker = XmlflowWorker(
                [Queue(QUEUE_NAME, connection=client)],
                connection=client,
                name=name or worker_name(),
            )
        except redis.RedisError as exc:
            log.warning("worker cannot reach Redis (%s); trying again in %.0f s", exc, pause)
            time.sleep(pause)  # no RQ signal handler yet: SIGTERM/SIGINT end the process
            pause = min(pause * 2, RESTART_PAUSE[1])
            continue
        try:
            worker.work(burst=burst, with_scheduler=False)
            if _stopping(worker) or (burst and _queue_empty(worker)):
                return
            reason = "RQ's worker quit (see its log above)"
        except Exception as exc:  # from anywhere in RQ: bootstrap, dequeue, heartbeat...
            reason = f"{type(exc).__name__}: {exc}"
        if worker.registered:
            # Redis was back for it: this is a new outage, met with the first pause (a
            # worker back for 9 s after a long outage waited 30 s after the next, short one)
            pause = RESTART_PAUSE[0]
        log.warning("worker lost Redis (%s); starting again in %.0f s", reason, pause)
        if _wait_out(worker, pause):
            return
        pause = min(pause * 2, RESTART_PAUSE[1])


def _queue_empty(worker: Worker) -> bool:
    try:
        return all(q.count == 0 for q in worker.queues)
    except Exception:
        return False  # cannot tell: Redis is away, so the burst has not ended normally


def _wait_out(worker: Worker, pause: float) -> bool:
    """Wait for the old worker's horse and ``pause`` seconds; True if stopped meanwhile.

    RQ's signal handlers stay installed until the next worker's, so a SIGTERM now
    sets the old worker's flag. Its name is freed so that a ``--name`` can be reused.
    """
    horse = worker.horse_pid
    if horse:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(horse, 0)  # one job at a time per worker, even across restarts
    deadline = time.monotonic() + pause
    while time.monotonic() < deadline and not _stopping(worker):
        time.sleep(0.1)
    with contextlib.suppress(Exception):
        worker.register_death()  # type: ignore[no-untyped-call]
    return _stopping(worker)


def _stopping(worker: Worker) -> bool:
    """Whether the worker got SIGTERM/SIGINT: its handler notes the time (when idle, it
    stops at once without setting ``_stop_requested``, which is for a busy worker)."""
    return worker._stop_requested or worker._shutdown_requested_date is not None
