"""``execute_job``: the one function every executor calls, in a thread or an RQ worker."""

from __future__ import annotations

import logging
import shutil
import time
from typing import TYPE_CHECKING, Any

from .models import EventType, JobStatus
from .pipeline import JobRun

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger(__name__)
CANCEL_CHECK_INTERVAL = 0.2  # seconds between looks at the store's cancel flag


def execute_job(service: Service, job_id: str) -> None:
    """Run a queued job to its end; does nothing when the job is no longer queued."""
    job = service.store.claim(job_id)
    if job is None:
        return
    from .service import output_url

    job_dir = service.job_dir(job_id)
    run = JobRun(
        job_id=job_id,
        specs=job.pipeline,
        source=job_dir / "source",
        workdir=job_dir / "work",
        outdir=job_dir / "out",
        filename=job.filename,
        emit=lambda type, data: service.events.append(job_id, type, data),
        is_cancelled=_cancel_probe(service, job_id),
        steps_dir=service.settings.steps_dir,
        config_dir=service.settings.config_dir,
        job_options=job.options,
        step_timeout=service.settings.step_timeout,
    )
    try:
        status, error = run.run()
    except Exception as exc:  # a bug in the runner itself: still end the job
        log.exception("job %s: the runner failed", job_id)
        status, error = JobStatus.FAILED, f"internal error: {exc!r}"
    end: dict[str, Any] = {"status": str(status), "error": error, "outputs": []}
    if status is JobStatus.SUCCEEDED:
        end["outputs"] = [
            {
                "name": o.name,
                "size": o.size,
                "media_type": o.media_type,
                "url": output_url(job_id, o.name),
            }
            for o in run.outputs.values()
        ]
    else:  # a failed or cancelled job offers nothing, not even what earlier steps wrote
        shutil.rmtree(job_dir / "out", ignore_errors=True)
    service.events.append(job_id, EventType.END, end)


def _cancel_probe(service: Service, job_id: str) -> Any:
    """``is_cancelled`` for the run: asks the store at most every 0.2 s."""
    last = [0.0, False]

    def probe() -> bool:
        now = time.monotonic()
        if not last[1] and now - last[0] >= CANCEL_CHECK_INTERVAL:
            last[0] = now
            last[1] = service.store.cancel_requested(job_id)
        return bool(last[1])

    return probe
