"""A job's run from claim to ``end``: :class:`JobRunner`, which every executor calls.

Who calls it: in embedded mode the executor's *runner threads* (``xmlflow-runner-N``,
:mod:`xmlflow.backends.embedded`); in Redis mode the work-horse of an ``xmlflow worker``
process (:mod:`xmlflow.backends.redis.worker`). "Worker" means only that: an RQ worker
process.

A run is one *attempt* at its job (the store numbers them at each claim). It works in
a folder of its own, ``jobs/<id>/attempt-<n>/`` (a link to the source, scratch, and
its outputs), appends its events naming its attempt, and publishes its outputs to
``jobs/<id>/out/`` only after checking it is still the job's current run, just before
it appends ``end``. A run the store refuses (:class:`~xmlflow.models.Superseded`: the
job was declared lost, requeued or ended meanwhile) stops its child at once, drops its
folder and leaves the job, its source and its outputs to whoever replaced it.

The steps themselves run as :mod:`xmlflow.pipeline` plans them, in a child process
(:mod:`xmlflow.jobprocess`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends.base import Guard, JobStore, Lost, unguarded
from .errors import BackendUnavailable
from .jobfiles import JobFiles, is_disk_full, output_url
from .jobprocess import run_isolated, stopping
from .models import (
    NO_SPACE,
    Event,
    EventData,
    EventType,
    Job,
    JobStatus,
    Superseded,
    end_event,
    fence,
)
from .pipeline import RunPlan, RunResult
from .settings import Settings

log = logging.getLogger(__name__)
CANCEL_CHECK_INTERVAL = 0.2  # seconds between looks at the store's cancel flag
OFFERS_OUTPUTS = (JobStatus.SUCCEEDED, JobStatus.FAILED)  # a failed job keeps its complete files
END_RETRY = (0.1, 2.0)  # seconds: first and longest wait between tries to record an end
EVENTS_NOT_RECORDED = f"{NO_SPACE}: the job's progress could not be recorded"

# EventLog.append, as the service observes it.
Append = Callable[..., Event]


@dataclass(frozen=True)
class JobRunner:
    """Claims, runs and ends the jobs of one service."""

    settings: Settings
    store: JobStore
    append: Append  # the service's: appends, then tells its observers
    guard: Guard = unguarded  # the Redis lease; nothing in embedded mode

    def run(self, job_id: str, *, start_method: str = "forkserver") -> None:
        """Run a queued job to its end; does nothing when the job is no longer queued.

        The steps always run in a child process (see :mod:`xmlflow.jobprocess`), started
        with ``start_method``; ``guard`` keeps the claim (the Redis lease) while they run.
        """
        job = self.store.claim(job_id)
        if job is None:
            return
        files = JobFiles(self.settings.data_dir.resolve(), job_id)
        run_dir = files.attempt(job.attempt)
        try:
            with self.guard(job) as lost:
                result = self._run(job, files, lost, start_method)
                self._finish(job, files, result, lost)
        except Superseded as exc:  # deliberate: whoever replaced the run said why
            log.info("job %s: attempt %d superseded, stopped: %s", job_id, job.attempt, exc)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            files.drop_if_empty()  # (a superseded run's job may have ended meanwhile)

    def _run(self, job: Job, files: JobFiles, lost: Lost, start_method: str) -> RunResult:
        def emit(type: EventType, data: dict[str, Any]) -> None:
            self.append(job.id, type, data, attempt=job.attempt)

        try:
            return run_isolated(
                self._plan(job, files),
                emit,
                self._cancel_probe(job.id),
                abandoned=lost,
                start_method=start_method,
            )
        except Superseded:
            raise
        except Exception as exc:
            if is_disk_full(exc):  # the store could not write the job's events
                log.warning("job %s: stopped, its events cannot be recorded: %s", job.id, exc)
                return RunResult(JobStatus.FAILED, EVENTS_NOT_RECORDED)
            log.exception("job %s: the runner failed", job.id)  # a bug: still end the job
            return RunResult(JobStatus.FAILED, f"internal error: {exc!r}")

    def _plan(self, job: Job, files: JobFiles) -> RunPlan:
        """The run's own folder: a hard link to the source (the steps delete theirs when they
        are done, and a retry needs it), scratch, and outputs that nobody serves yet."""
        run_dir = files.attempt(job.attempt)
        run_dir.mkdir(parents=True, exist_ok=True)
        source = run_dir / "source"
        with contextlib.suppress(FileNotFoundError):  # gone: the first step says so
            os.link(files.source, source)
        settings = self.settings
        return RunPlan(
            job_id=job.id,
            specs=job.pipeline,
            source=source,
            workdir=run_dir / "work",
            outdir=run_dir / "out",
            filename=job.filename,
            steps_dir=settings.steps_dir,
            config_dir=settings.config_dir,
            job_options=job.options,
            step_timeout=settings.step_timeout,
            memory_mb=settings.job_memory_mb,
            input_limits=settings.input_limits,
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    def _finish(self, job: Job, files: JobFiles, result: RunResult, lost: Lost) -> None:
        """Drop the source, publish the outputs, drop the rest of the run's files (and the
        job's folder when it kept no outputs), append ``end``: each only while this run is
        still the job's current one, so a client that sees ``end`` finds the files final.
        Files go first: on a full disk the room they free is what ``end`` is written with."""
        self._still_current(job, lost)
        files.source.unlink(missing_ok=True)
        run_dir = files.attempt(job.attempt)
        published = (
            result.status in OFFERS_OUTPUTS
            and bool(result.outputs)
            and _publish(run_dir / "out", files.out)
        )
        shutil.rmtree(run_dir, ignore_errors=True)
        files.drop_if_empty()
        try:
            self._record_end(job, result_end(job.id, result))
        except Superseded:
            if published:  # replaced between the check and the end: take them back
                shutil.rmtree(files.out, ignore_errors=True)
            raise

    def _record_end(self, job: Job, end: EventData) -> None:
        """Append ``end``, trying again while the disk is full: a job must not stay
        ``running`` for want of room to say it ended. A server that stops meanwhile
        leaves it to the next start's recovery (which ends it ``interrupted``)."""
        wait, longest = END_RETRY
        while True:
            try:
                self.append(job.id, *end, attempt=job.attempt)
                return
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                if wait == END_RETRY[0]:
                    log.warning("job %s: no room to record its end (%s); trying again", job.id, exc)
                if stopping(within=wait):
                    raise
                wait = min(wait * 2, longest)

    def _still_current(self, job: Job, lost: Lost) -> None:
        """Raise :class:`Superseded` unless this run still holds its lease and is the job's."""
        if lost():
            raise Superseded(f"job {job.id}: attempt {job.attempt} lost its lease")
        now = self.store.get(job.id)
        if now is None:
            raise Superseded(f"job {job.id} is gone")
        fence(now, job.attempt)

    def _cancel_probe(self, job_id: str) -> Callable[[], bool]:
        """``is_cancelled`` for the run: asks the store at most every 0.2 s.

        A store that cannot answer (Redis restarting) means "not cancelled, as far as we
        know": the run goes on, as its appends wait for Redis to come back, and a
        cancel is seen at the first answer after it; failing the job for an unanswered
        question would turn every Redis restart into failed jobs."""
        last = [0.0, False]

        def probe() -> bool:
            now = time.monotonic()
            if not last[1] and now - last[0] >= CANCEL_CHECK_INTERVAL:
                last[0] = now
                try:
                    last[1] = self.store.cancel_requested(job_id)
                except BackendUnavailable as exc:
                    log.debug("job %s: cannot ask whether it is cancelled: %s", job_id, exc)
            return bool(last[1])

        return probe


def _publish(outputs: Path, out: Path) -> bool:
    """Move the run's outputs where the job's are served from (one rename)."""
    if not outputs.is_dir():
        return False
    shutil.rmtree(out, ignore_errors=True)
    os.replace(outputs, out)
    return True


def result_end(job_id: str, result: RunResult) -> EventData:
    """The ``end`` event's data; a cancelled job offers no outputs, a failed one its complete
    files (such as validate's list of violations)."""
    outputs: list[dict[str, Any]] = []
    if result.status in OFFERS_OUTPUTS and result.outputs:
        outputs = [
            {
                "name": o.name,
                "size": o.size,
                "media_type": o.media_type,
                "url": output_url(job_id, o.name),
            }
            for o in result.outputs
        ]
    return end_event(result.status, result.error, outputs)
