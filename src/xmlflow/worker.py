"""``execute_job``: the one function every executor calls, in a thread or an RQ worker.

A run is one *attempt* at its job (the store numbers them at each claim). It works in
a folder of its own, ``jobs/<id>/attempt-<n>/`` (a link to the source, scratch, and
its outputs), appends its events naming its attempt, and publishes its outputs to
``jobs/<id>/out/`` only after checking it is still the job's current run, just before
it appends ``end``. A run the store refuses (:class:`~xmlflow.models.Superseded`: the
job was declared lost, requeued or ended meanwhile) stops its child at once, drops its
folder and leaves the job, its source and its outputs to whoever replaced it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .jobprocess import RunPlan, RunResult, run_isolated
from .models import EventData, EventType, Job, JobStatus, Superseded, end_event, fence

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger(__name__)
CANCEL_CHECK_INTERVAL = 0.2  # seconds between looks at the store's cancel flag
OFFERS_OUTPUTS = (JobStatus.SUCCEEDED, JobStatus.FAILED)  # a failed job keeps its complete files

Lost = Callable[[], bool]
# Given the claimed job, keeps the run's claim alive while the run lasts; yields ``lost()``.
Guard = Callable[[Job], AbstractContextManager[Lost]]


def unguarded(job: Job) -> AbstractContextManager[Lost]:
    """No lease to keep: the embedded run lives and dies with the process of its store."""
    return nullcontext(lambda: False)


def execute_job(
    service: Service, job_id: str, *, start_method: str = "forkserver", guard: Guard = unguarded
) -> None:
    """Run a queued job to its end; does nothing when the job is no longer queued.

    The steps always run in a child process (see :mod:`xmlflow.jobprocess`), started
    with ``start_method``; ``guard`` keeps the claim (the Redis lease) while they run.
    """
    job = service.store.claim(job_id)
    if job is None:
        return
    run_dir = service.attempt_dir(job_id, job.attempt)
    try:
        with guard(job) as lost:
            result = _run(service, job, run_dir, lost, start_method)
            _finish(service, job, run_dir, result, lost)
    except Superseded as exc:
        log.warning("job %s: attempt %d stopped: %s", job_id, job.attempt, exc)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run(service: Service, job: Job, run_dir: Path, lost: Lost, start_method: str) -> RunResult:
    def emit(type: EventType, data: dict[str, Any]) -> None:
        service.events.append(job.id, type, data, attempt=job.attempt)

    try:
        return run_isolated(
            _plan(service, job, run_dir),
            emit,
            _cancel_probe(service, job.id),
            abandoned=lost,
            start_method=start_method,
        )
    except Superseded:
        raise
    except Exception as exc:  # a bug in the runner itself: still end the job
        log.exception("job %s: the runner failed", job.id)
        return RunResult(JobStatus.FAILED, f"internal error: {exc!r}")


def _plan(service: Service, job: Job, run_dir: Path) -> RunPlan:
    """The run's own folder: a hard link to the source (the steps delete theirs when they
    are done, and a retry needs it), scratch, and outputs that nobody serves yet."""
    run_dir.mkdir(parents=True, exist_ok=True)
    source = run_dir / "source"
    with contextlib.suppress(FileNotFoundError):  # gone: the first step says so
        os.link(service.job_dir(job.id) / "source", source)
    settings = service.settings
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


def _finish(service: Service, job: Job, run_dir: Path, result: RunResult, lost: Lost) -> None:
    """Drop the source, publish a success's outputs, append ``end``: each only while this run
    is still the job's current one, so a client that sees ``end`` finds the files final."""
    job_dir = service.job_dir(job.id)
    _still_current(service, job, lost)
    (job_dir / "source").unlink(missing_ok=True)
    published = (
        result.status in OFFERS_OUTPUTS
        and bool(result.outputs)
        and _publish(run_dir / "out", job_dir / "out")
    )
    try:
        service.events.append(job.id, *result_end(job.id, result), attempt=job.attempt)
    except Superseded:
        if published:  # replaced between the check and the end: take them back
            shutil.rmtree(job_dir / "out", ignore_errors=True)
        raise


def _still_current(service: Service, job: Job, lost: Lost) -> None:
    """Raise :class:`Superseded` unless this run still holds its lease and is the job's run."""
    if lost():
        raise Superseded(f"job {job.id}: attempt {job.attempt} lost its lease")
    now = service.store.get(job.id)
    if now is None:
        raise Superseded(f"job {job.id} is gone")
    fence(now, job.attempt)


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
    from .service import output_url

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


def _cancel_probe(service: Service, job_id: str) -> Callable[[], bool]:
    """``is_cancelled`` for the run: asks the store at most every 0.2 s."""
    last = [0.0, False]

    def probe() -> bool:
        now = time.monotonic()
        if not last[1] and now - last[0] >= CANCEL_CHECK_INTERVAL:
            last[0] = now
            last[1] = service.store.cancel_requested(job_id)
        return bool(last[1])

    return probe
