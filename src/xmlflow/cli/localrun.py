"""``xmlflow run``: run pipelines on local files, in this process, with a live display.

It goes through the same path as an upload: a :class:`~xmlflow.service.Service` on a
temporary data folder (embedded backend: SQLite and worker threads), jobs submitted
with the same options, the same runner, and the events read back from the same
event log that ``/stream`` serves. So ``run`` shows exactly what the page would, and
``--json`` prints exactly the events a stream client would receive.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ..errors import Unprocessable, XmlflowError
from ..models import Event, EventType
from ..service import Service, check_job_options
from ..settings import Settings
from .client import umask
from .display import FileJob, Reporter

POLL_INTERVAL = 0.05  # seconds between looks at the event log while jobs run


def parse_option(text: str) -> tuple[str, str, Any]:
    """``step.key=value`` -> (step, key, value); the value is JSON when it parses as JSON.

    >>> parse_option("shout.suffix=?")
    ('shout', 'suffix', '?')
    >>> parse_option("process_xml.indent=2")
    ('process_xml', 'indent', 2)
    """
    target, sep, raw = text.partition("=")
    step, dot, key = target.partition(".")
    if not sep or not dot or not step or not key:
        raise ValueError(f"expected step.key=value, got {text!r}")
    try:
        value: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw
    return step.strip(), key.strip(), value


def collect_options(texts: Sequence[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for text in texts:
        step, key, value = parse_option(text)
        options.setdefault(step, {})[key] = value
    return options


class LocalRun:
    """Runs each file as a job of ``pipeline`` and copies the outputs to ``out_dir``."""

    def __init__(
        self,
        settings: Settings,
        pipeline: str,
        options: dict[str, dict[str, Any]],
        out_dir: Path,
        reporter: Reporter,
    ) -> None:
        if pipeline not in settings.pipelines:
            raise Unprocessable(
                f"unknown pipeline {pipeline!r}", details={"pipelines": sorted(settings.pipelines)}
            )
        check_job_options(options, settings.pipelines[pipeline], settings)
        self.settings = settings
        self.pipeline = pipeline
        self.options = options
        self.out_dir = out_dir
        self.reporter = reporter
        self._written: set[Path] = set()

    def run(self, files: Sequence[Path]) -> list[FileJob]:
        """Run every file to its end; Ctrl-C cancels the jobs still running, then re-raises."""
        jobs = [FileJob(f, size=f.stat().st_size) for f in files]
        with tempfile.TemporaryDirectory(prefix="xmlflow-run-") as tmp:
            settings = self.settings.replace(
                data_dir=Path(tmp), max_queued=len(files) + 1, redis_url=None
            )
            service = Service(settings)
            try:
                self._submit(service, jobs)
                self.reporter.start(jobs, len(settings.pipelines[self.pipeline]))
                self._follow(service, jobs)
            except KeyboardInterrupt:
                self._cancel_all(service, jobs)
                raise
            finally:
                service.close()
        self.reporter.finish(jobs)
        return jobs

    def _submit(self, service: Service, jobs: list[FileJob]) -> None:
        for job in jobs:
            path, stream = service.incoming_file()
            stream.close()
            shutil.copyfile(job.source, path)  # in the kernel (sendfile), not through Python
            submitted = service.submit(
                path, job.source.name, pipeline=self.pipeline, options=self.options
            )
            job.job_id = submitted.id

    def _follow(self, service: Service, jobs: list[FileJob], timeout: float | None = None) -> None:
        """Read each job's new events from the log, as a stream would, until all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not all(job.done for job in jobs):
            if deadline is not None and time.monotonic() > deadline:
                return
            quiet = True
            for job in (j for j in jobs if j.job_id and not j.done):
                for event in service.events.read(job.job_id, job.last_event):
                    quiet = False
                    self._handle(service, job, event)
            if quiet:
                time.sleep(POLL_INTERVAL)

    def _handle(self, service: Service, job: FileJob, event: Event) -> None:
        job.last_event = event.id
        if event.type is EventType.END:
            job.error = event.data.get("error")
            if event.data.get("status") == "succeeded":
                job.outputs = self._copy_outputs(service, job, event.data.get("outputs", []))
            job.status = str(event.data.get("status"))
        self.reporter.event(job, event)

    def _copy_outputs(
        self, service: Service, job: FileJob, outputs: list[dict[str, Any]]
    ) -> list[str]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        copied = []
        for output in outputs:
            source = service.job_dir(job.job_id) / "out" / output["name"]
            target = self._target(output["name"], job)
            try:  # the run's folder is temporary: move the output out, no copy
                os.replace(source, target)
                os.chmod(target, 0o666 & ~umask())  # as a new file here, not the job's 0600
            except OSError:  # another file system
                shutil.copyfile(source, target)
            copied.append(str(target))
        return copied

    def _target(self, name: str, job: FileJob) -> Path:
        """Where an output goes; two inputs of this run never overwrite each other's."""
        target = self.out_dir / name
        if target in self._written:
            path = Path(name)
            target = self.out_dir / f"{path.stem}-{job.job_id[:8]}{path.suffix}"
        self._written.add(target)
        return target

    def _cancel_all(self, service: Service, jobs: list[FileJob]) -> None:
        """Stop what still runs and wait briefly, so steps can clean up their files."""
        for job in jobs:
            if job.job_id and not job.done:
                with contextlib.suppress(XmlflowError):  # it ended meanwhile
                    service.cancel(job.job_id)
        self._follow(service, [j for j in jobs if j.job_id], timeout=5)
