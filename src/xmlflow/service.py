"""The service: settings, a backend and the job files, and what happens to a job around its run.

The web layer, the CLI and every worker build one :class:`Service` and go through it;
it owns the layout of ``XMLFLOW_DATA_DIR``::

    data/xmlflow.db             embedded job store and event log
    data/incoming/              uploads being received (renamed into place when complete)
    data/jobs/<id>/source       the uploaded file, deleted when the job ends
    data/jobs/<id>/attempt-<n>/ the n-th run's own folder (source link, work/, out/),
                                deleted when that run ends
    data/jobs/<id>/out/         outputs of the run that succeeded, moved here from its
                                attempt folder; kept until the retention period ends
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import IO, Any

from .backends import Backend, EventLog, JobStore, open_backend
from .errors import Conflict, NotFound, QueueFull, is_backend_outage
from .jobprocess import kill_children
from .leftovers import remove_leftovers
from .models import Job, JobStatus, interrupted_end
from .pipeline import check_pipelines
from .settings import Settings
from .step import safe_output_name
from .upload_options import check_job_options as check_job_options
from .webhooks import WebhookSender, sender_for

log = logging.getLogger(__name__)


def new_job_id() -> str:
    """128 random bits: job ids are unguessable, since knowing one gives its outputs."""
    return secrets.token_hex(16)


def output_url(job_id: str, name: str) -> str:
    """The download path of an output, percent-encoded once: a name may hold ``#``, ``%``,
    spaces or any Unicode, and every client (browser, curl, httpx) must get it back intact."""
    from urllib.parse import quote  # local: the one user in this module

    return f"/api/jobs/{quote(job_id, safe='')}/outputs/{quote(name, safe='')}"


def display_name(name: str | None) -> str:
    """The client's file name made harmless for display and output names; never a path."""
    try:
        return safe_output_name(name or "")
    except ValueError:
        return "upload.xml"


class Service:
    """One per process: the settings, the backend, and the job files."""

    def __init__(self, settings: Settings, *, start_workers: bool = True) -> None:
        from .worker import execute_job

        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        for sub in ("incoming", "jobs"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        check_pipelines(settings.pipelines, settings.steps_dir, settings.config_dir)
        self.backend: Backend = open_backend(settings, lambda job_id: execute_job(self, job_id))
        self._stop = threading.Event()
        self._lock_file: IO[bytes] | None = None
        self.webhooks: WebhookSender | None = sender_for(settings, self.backend.outbox)

    @property
    def store(self) -> JobStore:
        return self.backend.store

    @property
    def events(self) -> EventLog:
        return self.backend.events

    # -- files ---------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise NotFound(f"no job {job_id!r}")
        return self.data_dir / "jobs" / job_id

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        """The folder of one run of the job: a superseded run writes only there."""
        return self.job_dir(job_id) / f"attempt-{attempt}"

    def incoming_file(self) -> tuple[Path, IO[bytes]]:
        """A new, private file to receive an upload into."""
        path = self.data_dir / "incoming" / f"{secrets.token_hex(16)}.part"
        return path, open(path, "xb")  # noqa: SIM115 - the caller closes it

    def output_path(self, job: Job, name: str) -> Path:
        """The file of one of the job's outputs; only names the job registered are served."""
        if name not in {o.name for o in job.outputs}:
            raise NotFound(f"job {job.id} has no output {name!r}")
        path = self.job_dir(job.id) / "out" / name
        if not path.is_file():
            raise NotFound(f"output {name!r} of job {job.id} is gone (retention ended?)")
        return path

    # -- jobs ------------------------------------------------------------------------------------

    def submit(
        self,
        received: Path,
        filename: str | None,
        *,
        pipeline: str | None = None,
        options: dict[str, dict[str, Any]] | None = None,
        group: str | None = None,
    ) -> Job:
        """Turn a completely received upload into a queued job and hand it to the executor.

        ``group`` names the zip the file was a member of (the page shows them together).
        """
        specs = self.settings.pipeline(pipeline)
        check_job_options(options or {}, specs, self.settings)
        if self.store.count_queued() >= self.settings.max_queued:
            raise QueueFull(
                f"{self.settings.max_queued} jobs are already waiting (XMLFLOW_MAX_QUEUED); "
                "try again shortly",
                retry_after=5,
            )
        job = Job(
            id=new_job_id(),
            filename=display_name(filename),
            size=received.stat().st_size,
            pipeline_name=pipeline or "default",
            pipeline=specs,
            options=options or {},
            group=group,
        )
        job_dir = self.job_dir(job.id)
        job_dir.mkdir(parents=True)
        os.replace(received, job_dir / "source")
        try:
            self.store.create(job)
        except BaseException:  # no record (Redis out of memory, say): then no file either
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        try:
            self.backend.executor.submit(job.id)
        except Exception as exc:
            if not is_backend_outage(exc):
                raise
            # The job is recorded as queued: the lost-job monitor enqueues it again.
            log.warning("job %s: recorded but not enqueued (%s); the monitor will", job.id, exc)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.store.cancel(job_id)
        if job.status is JobStatus.CANCELLED:
            self._discard_inputs(job_id)
        return job

    def delete(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if not job.status.finished:
            raise Conflict(f"job {job_id} is {job.status}: cancel it first")
        self.store.delete(job_id)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def _discard_inputs(self, job_id: str) -> None:
        job_dir = self.job_dir(job_id)
        with contextlib.suppress(FileNotFoundError):
            (job_dir / "source").unlink()
        for folder in (job_dir / "work", *job_dir.glob("attempt-*")):
            shutil.rmtree(folder, ignore_errors=True)

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Take over the data folder: end jobs a dead process left running, rerun queued ones."""
        if not self.settings.redis_url:
            self._lock_data_dir()
            self._recover()
        threading.Thread(target=self._sweep_loop, name="xmlflow-sweeper", daemon=True).start()
        self.backend.start()
        if self.webhooks is not None:
            self.webhooks.start()

    @property
    def closing(self) -> bool:
        """True once :meth:`close` was called: open streams end instead of waiting on."""
        return self._stop.is_set()

    def close(self) -> None:
        self._stop.set()
        if self.webhooks is not None:
            self.webhooks.stop()
        kill_children()
        self.backend.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the data folder's lock
            self._lock_file = None

    def _lock_data_dir(self) -> None:
        """One embedded server per data folder: a second one would 'recover' live jobs."""
        self._lock_file = open(self.data_dir / "xmlflow.lock", "wb")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                f"another xmlflow process is serving {self.data_dir} in embedded mode; "
                "use another XMLFLOW_DATA_DIR, or XMLFLOW_REDIS_URL to run several"
            ) from None

    def _recover(self) -> None:
        """End the jobs the last server left running, then remove the files it left."""
        for job in self.store.unfinished():
            if job.status is JobStatus.RUNNING:
                log.warning("job %s was running when the server stopped: interrupted", job.id)
                self._discard_inputs(job.id)
                self.events.append(job.id, *interrupted_end())
            else:
                self.backend.executor.submit(job.id)
        remove_leftovers(self.data_dir, self.store, exclusive=True)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval):
            try:
                self.sweep()
            except Exception:
                log.exception("retention sweep failed; will try again")

    def sweep(self, now: float | None = None) -> int:
        """Remove the jobs that ended longer ago than the retention period."""
        cutoff = (now or time.time()) - self.settings.retention_hours * 3600
        expired = self.store.expired(cutoff)
        for job_id in expired:
            self.store.delete(job_id)
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        if expired:
            log.info("retention: removed %d job(s)", len(expired))
        return len(expired)
