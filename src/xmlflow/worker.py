"""``execute_job``: the one function every executor calls, in a thread or an RQ worker."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .jobprocess import RunPlan, RunResult, run_isolated
from .models import EventType, JobStatus

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger(__name__)
CANCEL_CHECK_INTERVAL = 0.2  # seconds between looks at the store's cancel flag


def execute_job(service: Service, job_id: str, *, start_method: str = "forkserver") -> None:
    """Run a queued job to its end; does nothing when the job is no longer queued.

    The steps always run in a child process (see :mod:`xmlflow.jobprocess`), started
    with ``start_method``.
    """
    job = service.store.claim(job_id)
    if job is None:
        return
    job_dir = service.job_dir(job_id)
    settings = service.settings
    plan = RunPlan(
        job_id=job_id,
        specs=job.pipeline,
        source=job_dir / "source",
        workdir=job_dir / "work",
        outdir=job_dir / "out",
        filename=job.filename,
        steps_dir=settings.steps_dir,
        config_dir=settings.config_dir,
        job_options=job.options,
        step_timeout=settings.step_timeout,
        memory_mb=settings.job_memory_mb,
        log_level=logging.getLogger().getEffectiveLevel(),
    )
    try:
        result = run_isolated(
            plan,
            lambda type, data: service.events.append(job_id, type, data),
            _cancel_probe(service, job_id),
            start_method=start_method,
        )
    except Exception as exc:  # a bug in the runner itself: still end the job
        log.exception("job %s: the runner failed", job_id)
        result = RunResult(JobStatus.FAILED, f"internal error: {exc!r}")
    service.events.append(job_id, EventType.END, end_event(service, job_id, result))


def end_event(service: Service, job_id: str, result: RunResult) -> dict[str, Any]:
    """The ``end`` event's data; a cancelled job offers no outputs, a failed one its complete
    files (such as validate's list of violations)."""
    from .service import output_url

    end: dict[str, Any] = {"status": str(result.status), "error": result.error, "outputs": []}
    if result.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) and result.outputs:
        end["outputs"] = [
            {
                "name": o.name,
                "size": o.size,
                "media_type": o.media_type,
                "url": output_url(job_id, o.name),
            }
            for o in result.outputs
        ]
    else:
        shutil.rmtree(service.job_dir(job_id) / "out", ignore_errors=True)
    return end


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
