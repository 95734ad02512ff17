"""``xmlflow run``: run pipelines on local files, in this process, with a live display.

It goes through the same path as an upload: a :class:`~xmlflow.service.Service` on a
temporary data folder (embedded backend: SQLite and worker threads), jobs submitted
with the same options, the same runner, and the events read back from the same
event log that ``/stream`` serves. So ``run`` shows exactly what the page would, and
``--json`` prints exactly the events a stream client would receive.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson

from .. import zygote
from ..backends.base import EventLog
from ..errors import BadRequest, XmlflowError
from ..models import Event, EventType
from ..pipeline import check_step, step_file
from ..service import Service, Upload, check_submission
from ..settings import Settings
from .client import umask
from .display import FileJob, Reporter

QUIET = 1.0  # seconds a listener waits for an event before it looks whether to stop
CANCEL_WAIT = 5.0  # seconds Ctrl-C waits for the cancelled jobs to end


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
        check_submission(settings, pipeline, options)  # before any file is copied
        self.settings = settings
        self.pipeline = pipeline
        self.options = options
        self.out_dir = out_dir
        self.reporter = reporter
        self._written: set[Path] = set()
        self._inputs: set[tuple[int, int]] = set()

    def run(self, files: Sequence[Path]) -> list[FileJob]:
        """Run every file to its end; Ctrl-C cancels the jobs still running, then re-raises."""
        check_inputs(files)
        check_out_dir(self.out_dir)
        remove_stale_runs(Path(tempfile.gettempdir()))
        jobs = [FileJob(f, size=f.stat().st_size) for f in files]
        self._inputs = {identity for f in files if (identity := _identity(f))}
        for spec in self.settings.pipeline(self.pipeline):  # loaded once, here: every job's
            check_step(spec, self.settings.steps_dir, self.settings.config_dir)  # fork has it
        # Everything this run needs is loaded: what the collector would scan from now
        # on (and touch in each fork's copy of every page) never becomes garbage.
        gc.freeze()
        zygote.start()  # now, while this process has one thread: see xmlflow.zygote
        with contextlib.ExitStack() as stack:
            stack.callback(zygote.stop)
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=RUN_PREFIX))
            settings = self.settings.replace(
                data_dir=Path(tmp), max_queued=len(files) + 1, redis_url=None, webhook_url=None
            )
            service = Service(settings)
            service.start()  # its runner threads
            listening: Listening | None = None
            try:
                self._submit(service, jobs)
                self.reporter.start(jobs, len(settings.pipelines[self.pipeline]))
                listening = Listening(service.events, jobs, settings.workers + 1)
                self._follow(service, listening)
            except KeyboardInterrupt:
                try:
                    self._cancel_all(service, jobs, listening)
                finally:  # what became of each file, and the terminal's cursor back
                    self.reporter.finish(jobs)
                raise
            finally:
                if listening is not None:
                    listening.stop()
                service.close()
        self.reporter.finish(jobs)
        return jobs

    def _submit(self, service: Service, jobs: list[FileJob]) -> None:
        link = self._reads_only()
        uploads = []
        for job in jobs:
            path, stream = service.incoming_file()
            stream.close()
            hand_over(job.source, path, link=link)
            uploads.append(Upload(path, job.source.name))
        submitted = service.submit_many(uploads, pipeline=self.pipeline, options=self.options)
        for job, created in zip(jobs, submitted, strict=True):
            job.job_id = created.id

    def _reads_only(self) -> bool:
        """Whether every step of the pipeline is one of xmlflow's: they never write their
        input (user steps are asked not to, but a mistake would change the user's file)."""
        steps_dir = self.settings.steps_dir
        return all(step_file(s, steps_dir) is None for s in self.settings.pipeline(self.pipeline))

    def _follow(self, service: Service, listening: Listening, timeout: float | None = None) -> None:
        """Show each job's events as its listener hands them over, until all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not all(job.done for job in listening.jobs):
            left = None if deadline is None else deadline - time.monotonic()
            handed = listening.next(left)
            if handed is None:
                return
            job, events = handed
            for event in events:
                self._handle(service, job, event)

    def _handle(self, service: Service, job: FileJob, event: Event) -> None:
        job.last_event = event.id
        if event.type is EventType.END:
            job.error = event.data.get("error")
            job.status = str(event.data.get("status"))
            if job.status == "succeeded":
                try:
                    job.outputs = self._save_outputs(service, job, event.data.get("outputs", []))
                except OSError as exc:  # the folder is full, or gone: say so, go on
                    job.status = "failed"  # in the summary and the exit status
                    job.error = f"its outputs could not be saved in {self.out_dir}: {exc}"
                    print(f"xmlflow run: error: {job.source}: {job.error}", file=sys.stderr)
        self.reporter.event(job, event)

    def _save_outputs(
        self, service: Service, job: FileJob, outputs: list[dict[str, Any]]
    ) -> list[str]:
        """Move each output into ``out_dir`` (a rename: the run's folder is temporary), or
        copy it from another file system under a temporary name first: a file of the
        output's name is always whole."""
        saved = []
        for output in outputs:
            source = service.files(job.job_id).out / output["name"]
            target = self._target(output["name"], job)
            try:
                os.replace(source, target)
            except OSError:  # another file system
                with tempfile.NamedTemporaryFile(
                    dir=self.out_dir, prefix=".xmlflow-", delete=False
                ) as partial:
                    pass
                try:
                    shutil.copyfile(source, partial.name)
                    os.replace(partial.name, target)
                except BaseException:
                    Path(partial.name).unlink(missing_ok=True)
                    raise
            os.chmod(target, 0o666 & ~umask())  # as a new file here, not the job's 0600
            saved.append(str(target))
        return saved

    def _target(self, name: str, job: FileJob) -> Path:
        """Where an output goes: never over one of this run's inputs (``data.json`` run
        from its own folder), and two inputs never overwrite each other's outputs."""
        target = self.out_dir / name
        if target in self._written or _identity(target) in self._inputs:
            path = Path(name)
            target = self.out_dir / f"{path.stem}-{job.job_id[:8]}{path.suffix}"
        self._written.add(target)
        return target

    def _cancel_all(
        self, service: Service, jobs: list[FileJob], listening: Listening | None
    ) -> None:
        """Stop what still runs and wait briefly, so steps can clean up their files."""
        for job in jobs:
            if job.job_id and not job.done:
                with contextlib.suppress(XmlflowError):  # it ended meanwhile
                    service.cancel(job.job_id)
        if listening is None:  # interrupted while submitting: show what was submitted end
            submitted = [j for j in jobs if j.job_id]
            self.reporter.start(submitted, len(self.settings.pipelines[self.pipeline]))
            listening = Listening(service.events, submitted, self.settings.workers + 1)
        try:
            self._follow(service, listening, timeout=CANCEL_WAIT)
        finally:
            listening.stop()


RUN_PREFIX = "xmlflow-run-"  # the run's temporary data folder, in TMPDIR
STALE_AFTER = 60.0  # seconds a run's folder must be untouched before it counts as left


def check_inputs(files: Sequence[Path]) -> None:
    """Every input is a regular file: a device (``/dev/zero``), a FIFO or a pipe
    (``<(…)``) would be read without end, hang, or could not be read twice."""
    for path in files:
        if not path.is_file():
            raise BadRequest(
                f"{path}: not a regular file (a device, FIFO or pipe?): save it to a file first"
            )


def check_out_dir(out_dir: Path) -> None:
    """``--out`` can take files, before any job runs rather than after they all did."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise BadRequest(f"--out {out_dir}: cannot write there ({exc.strerror})") from None


def remove_stale_runs(tmp: Path) -> None:
    """Remove what killed runs left in ``tmp``: a run's folder whose lock nobody holds
    (its process is gone) and that nothing touched for ``STALE_AFTER`` seconds (a run
    that just ended may still be deleting its own)."""
    now = time.time()
    for folder in tmp.glob(f"{RUN_PREFIX}*"):
        with contextlib.suppress(OSError):
            if now - folder.stat().st_mtime < STALE_AFTER:
                continue
            with open(folder / "xmlflow.lock", "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: alive
                shutil.rmtree(folder, ignore_errors=True)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def hand_over(source: Path, target: Path, *, link: bool) -> None:
    """Give a job its input at ``target``: a hard link to ``source`` when ``link`` (free,
    where a copy costs about 1 ms per MB), else, or where no link can be made (another
    file system, a file of another user), a copy in the kernel (sendfile).

    A link is safe because the job only reads its source and then deletes its own name
    for it (``target``): the user's file stays as it was. A file changed while ``xmlflow
    run`` runs is then read as it is when its job starts, not as it was at the start.
    """
    if link:
        try:
            target.unlink()
            os.link(source.resolve(), target)  # the file, not a (relative) symlink to it
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


class Listening:
    """Listeners on the event log (:meth:`EventLog.listen`) handing each job's events, as
    they are appended, to the one thread that shows them: a run waits for nothing else.

    ``listeners`` threads take the jobs in the order they were queued, the order the
    executor starts them, and each follows its job until it ends: with one more listener
    than jobs run at once, every running job has one, and a thousand files need no
    thousand threads (a job still queued shows nothing new until it starts).
    """

    def __init__(self, events: EventLog, jobs: list[FileJob], listeners: int) -> None:
        self.jobs = jobs
        self._events = events
        self._waiting = iter(list(jobs))
        self._lock = threading.Lock()
        self._handed: queue.SimpleQueue[tuple[FileJob, list[Event]]] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._listen, name=f"xmlflow-listen-{i}", daemon=True)
            for i in range(min(listeners, len(jobs)))
        ]
        for thread in self._threads:
            thread.start()

    def next(self, timeout: float | None) -> tuple[FileJob, list[Event]] | None:
        """The next events of one job; None once ``timeout`` seconds passed without."""
        if timeout is not None and timeout <= 0:
            return None
        try:
            return self._handed.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        """End every listener (within ``QUIET`` seconds) before the event log closes."""
        self._stopped.set()
        for thread in self._threads:
            thread.join()

    def _listen(self) -> None:
        while not self._stopped.is_set() and (job := self._take()) is not None:
            with closing(self._events.listen(job.job_id, 0, QUIET)) as batches:
                for events in batches:
                    if events:
                        self._handed.put((job, events))
                    if self._stopped.is_set() or (events and events[-1].type is EventType.END):
                        break

    def _take(self) -> FileJob | None:
        with self._lock:
            return next(self._waiting, None)
