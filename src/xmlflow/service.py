"""The service: settings, a backend and the job files, and what happens to a job around its run.

The web layer, the CLI and every worker build one :class:`Service` and go through it.
Input is checked here once (:meth:`Service.submit_many`: pipeline, options, room in the
queue, all or nothing); a job's run is :mod:`xmlflow.jobrun`'s; its files are laid out
by :mod:`xmlflow.jobfiles`.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .backends import Backend, EventLog, JobStore, open_backend
from .errors import (
    BadRequest,
    ConfigError,
    Conflict,
    NotFound,
    QueueFull,
    UploadTooLarge,
    is_backend_outage,
)
from .jobfiles import JobFiles, incoming_file, make_folders
from .jobprocess import kill_children
from .jobrun import JobRunner
from .leftovers import remove_leftovers, remove_shared_leftovers
from .models import Event, EventType, Job, JobStatus, StepSpec, interrupted_end
from .pipeline import check_pipelines
from .settings import DEFAULT_PIPELINE, Settings
from .step import safe_output_name
from .upload_options import check_job_options
from .webhooks import WebhookSender, sender_for

log = logging.getLogger(__name__)
Observer = Callable[[Event], None]


def new_job_id() -> str:
    """128 random bits: job ids are unguessable, since knowing one gives its outputs."""
    return secrets.token_hex(16)


def display_name(name: str | None) -> str:
    """The client's file name made harmless for display and output names; never a path."""
    try:
        return safe_output_name(name or "")
    except ValueError:
        return "upload.xml"


@dataclass(frozen=True)
class Upload:
    """One document to become a job: its completely received file, the client's name for
    it, and the zip it came from (the page shows a zip's members together)."""

    path: Path
    name: str | None
    group: str | None = None


def check_submission(
    settings: Settings, pipeline: str | None, options: dict[str, dict[str, Any]]
) -> list[StepSpec]:
    """The checks of what a client asks for, before any file is taken: the pipeline exists
    (400) and the options are ones its steps let an upload set (422,
    :mod:`xmlflow.upload_options`). :meth:`Service.submit_many` runs them; ``xmlflow run``
    runs them first too, so that a typo is refused before gigabytes are copied."""
    try:
        specs = settings.pipeline(pipeline)
    except ConfigError as exc:  # the client's mistake here, not the config's
        raise BadRequest(exc.message, details=exc.details) from None
    check_job_options(options, specs, settings)
    return specs


class Service:
    """One per process: the settings, the backend, and the job files."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        make_folders(self.data_dir)
        check_pipelines(settings.pipelines, settings.steps_dir, settings.config_dir)
        self.backend: Backend = open_backend(settings, self.run_job)
        self.runner = JobRunner(settings, self.backend.store, self.append, self.backend.guard)
        self._observers: list[Observer] = []
        self._stop = threading.Event()
        self.webhooks: WebhookSender | None = sender_for(settings, self.backend.outbox)

    @property
    def store(self) -> JobStore:
        return self.backend.store

    @property
    def events(self) -> EventLog:
        return self.backend.events

    # -- events ----------------------------------------------------------------------------------

    def append(
        self, job_id: str, type: EventType, data: dict[str, Any], *, attempt: int | None = None
    ) -> Event:
        """Append an event (see :meth:`EventLog.append`) and show it to the observers."""
        event = self.events.append(job_id, type, data, attempt=attempt)
        for observe in self._observers:
            observe(event)
        return event

    def add_observer(self, observe: Observer) -> None:
        """Call ``observe`` with each event this process appends (``/metrics`` counts them);
        it must not raise: a failing observer must never fail a job."""
        self._observers.append(observe)

    # -- files -----------------------------------------------------------------------------------

    def files(self, job_id: str) -> JobFiles:
        """The job's files; raises :class:`NotFound` for an id that cannot be a job's."""
        return JobFiles.checked(self.data_dir, job_id)

    def incoming_file(self) -> tuple[Path, IO[bytes]]:
        """A new, private file to receive an upload into."""
        return incoming_file(self.data_dir)

    def output_path(self, job: Job, name: str) -> Path:
        """The file of one of the job's outputs; only names the job registered are served."""
        if name not in {o.name for o in job.outputs}:
            raise NotFound(f"job {job.id} has no output {name!r}")
        path = self.files(job.id).out / name
        if not path.is_file():
            raise NotFound(f"output {name!r} of job {job.id} is gone (retention ended?)")
        return path

    # -- jobs ------------------------------------------------------------------------------------

    def submit_many(
        self,
        uploads: Sequence[Upload],
        *,
        pipeline: str | None = None,
        options: dict[str, dict[str, Any]] | None = None,
    ) -> list[Job]:
        """Turn completely received uploads into queued jobs and hand them to the executor.

        Everything is checked first, for all of them: the pipeline (400), the options
        (422, :mod:`xmlflow.upload_options`) and room in the queue (503): every upload
        becomes a job, or none does, and a client never has to guess which. The files
        of the uploads are moved, not copied.
        """
        options = options or {}
        specs = check_submission(self.settings, pipeline, options)
        self._check_room(len(uploads))
        name = pipeline or DEFAULT_PIPELINE
        return [self._submit(upload, name, specs, options) for upload in uploads]

    def _check_room(self, count: int) -> None:
        limit = self.settings.max_queued
        if count > limit:  # never fits: "try again" would be a lie
            raise UploadTooLarge(
                f"{count} files in one upload, but at most {limit} jobs can wait "
                f"(XMLFLOW_MAX_QUEUED): send them in uploads of {limit} or fewer",
                details={"files": count, "max_queued": limit},
            )
        waiting = self.store.count_queued()
        if waiting + count > limit:
            raise QueueFull(
                f"{waiting} job(s) are waiting and the limit is {limit} "
                f"(XMLFLOW_MAX_QUEUED): {count} more do not fit; try again shortly",
                retry_after=5,
                details={"queued": waiting, "max_queued": limit},
            )

    def _submit(
        self, upload: Upload, pipeline: str, specs: list[StepSpec], options: dict[str, Any]
    ) -> Job:
        job = Job(
            id=new_job_id(),
            filename=display_name(upload.name),
            size=upload.path.stat().st_size,
            pipeline_name=pipeline,
            pipeline=specs,
            options=options,
            group=upload.group,
        )
        files = JobFiles(self.data_dir, job.id)
        files.dir.mkdir(parents=True)
        os.replace(upload.path, files.source)
        try:
            self.store.create(job)
        except BaseException:  # no record (Redis out of memory, say): then no file either
            files.remove()
            raise
        try:
            self.backend.executor.submit(job.id)
        except Exception as exc:
            if not is_backend_outage(exc):
                raise
            # The job is recorded as queued: the lost-job monitor enqueues it again.
            log.warning("job %s: recorded but not enqueued (%s); the monitor will", job.id, exc)
        return job

    def run_job(self, job_id: str, *, start_method: str = "forkserver") -> None:
        """What the executor calls for each job id: see :class:`xmlflow.jobrun.JobRunner`."""
        self.runner.run(job_id, start_method=start_method)

    def cancel(self, job_id: str) -> Job:
        job = self.store.cancel(job_id)
        if job.status is JobStatus.CANCELLED:
            self.files(job_id).discard_inputs()
        return job

    def delete(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if not job.status.finished:
            raise Conflict(f"job {job_id} is {job.status}: cancel it first")
        self.store.delete(job_id)
        self.files(job_id).remove()

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the backend (which first lets :meth:`_take_over` settle what the last
        processes left), the retention sweep and the webhook sender."""
        self.backend.start(self._take_over)
        threading.Thread(target=self._sweep_loop, name="xmlflow-sweeper", daemon=True).start()
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

    def _take_over(self, exclusive: bool) -> None:
        """Settle what processes before this one left; the backend says how.

        ``exclusive`` (embedded: this process holds the data folder's lock): end the
        jobs the last server left running, rerun queued ones, then remove every file it
        left. Shared (Redis): only the files no live process can own; never fatal.
        """
        if not exclusive:
            remove_shared_leftovers(self.data_dir, self.store)
            return
        for job in self.store.unfinished():
            if job.status is JobStatus.RUNNING:
                log.warning("job %s was running when the server stopped: interrupted", job.id)
                self.files(job.id).discard_inputs()
                self.append(job.id, *interrupted_end())
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
            self.files(job_id).remove()
        if expired:
            log.info("retention: removed %d job(s)", len(expired))
        return len(expired)
