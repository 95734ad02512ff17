"""Find steps and run them in order. No Flask, no storage: events go to a callback.

A job's run is described once, by a :class:`RunPlan` (what the service decides: files,
steps, options, limits), and carried out by a :class:`JobRun` that takes the plan as it
is; :func:`run_plan` does both in the current process (the job's child process calls it,
see :mod:`xmlflow.jobprocess`).

Steps load through one path, user folder first (``processing_steps/<id>.py`` beside
``config.py``), then xmlflow's built-ins (``xmlflow.steps.<id>``) — the way Sphinx
loads its built-in extensions through the same registry as third-party ones.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import (
    ConfigError,
    InjectedFailure,
    JobCancelled,
    StepFailed,
    StepLoadError,
    StepTimeout,
)
from .inputs import Limits, use_limits
from .jobfiles import is_disk_full
from .models import (
    CANCELLED_BY_REQUEST,
    NO_SPACE,
    OUT_OF_MEMORY,
    EventType,
    JobStatus,
    StepSpec,
    StepStatus,
    progress_event,
    step_event,
)
from .step import Output, StepContext, UploadOption

log = logging.getLogger(__name__)

StepFunction = Callable[[StepContext], Any]
Emit = Callable[[EventType, dict[str, Any]], object]  # what it returns is ignored

PROGRESS_INTERVAL = 0.1  # seconds between progress events: at most ~10 a second
_load_lock = threading.Lock()
_user_modules: dict[Path, tuple[float, ModuleType]] = {}


def step_file(spec: StepSpec, steps_dir: Path | None) -> Path | None:
    """The user's file for this step, if there is one."""
    if steps_dir is None:
        return None
    candidate = steps_dir / f"{spec.id}.py"
    return candidate if candidate.is_file() else None


def load_step(spec: StepSpec, steps_dir: Path | None) -> StepFunction:
    """Return the step's function; :class:`StepLoadError` says what was looked for and why not."""
    path = step_file(spec, steps_dir)
    module = _load_user_module(spec, path) if path else _load_builtin_module(spec, steps_dir)
    where = str(path) if path else f"xmlflow.steps.{spec.id}"
    func = getattr(module, spec.module, None)
    if func is None:
        raise StepLoadError(f"step {spec.id!r}: no function {spec.module!r} in {where}")
    if not callable(func):
        raise StepLoadError(f"step {spec.id!r}: {spec.module!r} in {where} is not a function")
    return func  # type: ignore[no-any-return]


def _load_user_module(spec: StepSpec, path: Path) -> ModuleType:
    mtime = path.stat().st_mtime
    with _load_lock:
        cached = _user_modules.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        name = f"xmlflow_user_steps.{spec.id}_{abs(hash(str(path)))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise StepLoadError(f"step {spec.id!r}: cannot import {path}: {exc!r}") from exc
        sys.modules[name] = module
        _user_modules[path] = (mtime, module)
        return module


def _load_builtin_module(spec: StepSpec, steps_dir: Path | None) -> ModuleType:
    name = f"xmlflow.steps.{spec.id}"
    if importlib.util.find_spec(name) is None:
        looked = f"{steps_dir / (spec.id + '.py')} nor " if steps_dir else ""
        raise StepLoadError(
            f"step {spec.id!r}: unknown id: there is neither {looked}a built-in step {name}"
        )
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise StepLoadError(f"step {spec.id!r}: cannot import {name}: {exc!r}") from exc


def check_pipelines(
    pipelines: dict[str, list[StepSpec]], steps_dir: Path | None, config_dir: Path | None = None
) -> None:
    """Load every step of every pipeline once, so a broken config fails at start-up.

    A step's module may also define ``check_options(ctx)``: it is called with a context
    that has the step's ``options`` and ``config_dir`` but no input, and raises
    :class:`~xmlflow.errors.ConfigError` for options the step could never run with.
    """
    for name, specs in pipelines.items():
        for i, spec in enumerate(specs):
            try:
                check_step(spec, steps_dir, config_dir)
            except StepLoadError as exc:
                raise StepLoadError(f"pipeline {name!r}, step {i}: {exc.message}") from exc
            except ConfigError as exc:
                raise ConfigError(
                    f"pipeline {name!r}, step {i} ({spec.id!r}): {exc.message}"
                ) from exc


def check_step(spec: StepSpec, steps_dir: Path | None, config_dir: Path | None) -> None:
    """Load one step and run its ``check_options``; raises what a broken entry deserves."""
    upload_options(spec, steps_dir)
    check_step_options(spec, spec.options, steps_dir, config_dir)


def check_step_options(
    spec: StepSpec, options: dict[str, Any], steps_dir: Path | None, config_dir: Path | None
) -> None:
    """Run the step's ``check_options`` (if it has one) on ``options``."""
    check = getattr(step_module(spec, steps_dir), "check_options", None)
    if callable(check):
        check(_options_context(spec, options, config_dir))


def step_module(spec: StepSpec, steps_dir: Path | None) -> ModuleType | None:
    """The module the step's function lives in (loading it if needed)."""
    return sys.modules.get(load_step(spec, steps_dir).__module__)


def upload_options(spec: StepSpec, steps_dir: Path | None) -> dict[str, UploadOption]:
    """The options an upload may set for this step, by name: its ``UPLOAD_OPTIONS``.

    A step that declares none accepts none. A malformed declaration is a
    :class:`ConfigError`, so it stops start-up rather than letting anything through.
    """
    declared = getattr(step_module(spec, steps_dir), "UPLOAD_OPTIONS", ())
    if not isinstance(declared, list | tuple) or not all(
        isinstance(o, UploadOption) for o in declared
    ):
        raise ConfigError(
            f"step {spec.id!r}: UPLOAD_OPTIONS must be a list of xmlflow.step.UploadOption"
        )
    return {o.name: o for o in declared}


def _options_context(
    spec: StepSpec, options: dict[str, Any], config_dir: Path | None
) -> StepContext:
    return StepContext(
        job_id="",
        step_id=spec.id,
        input=Path(os.devnull),
        workdir=Path(os.devnull),
        filename="",
        options=dict(options),
        config_dir=config_dir,
    )


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs to know, decided by the service: picklable, no connections."""

    job_id: str
    specs: Sequence[StepSpec]
    source: Path
    workdir: Path
    outdir: Path
    filename: str
    steps_dir: Path | None = None
    config_dir: Path | None = None
    job_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    step_timeout: float | None = None
    memory_mb: float | None = None  # the job process's cap (XMLFLOW_JOB_MEMORY_MB)
    log_level: int = logging.INFO  # the job process's, as its parent's
    input_limits: Limits = field(default_factory=Limits)


@dataclass
class RunResult:
    status: JobStatus
    error: str | None
    outputs: list[Output] = field(default_factory=list)


def run_plan(plan: RunPlan, emit: Emit, is_cancelled: Callable[[], bool]) -> RunResult:
    """Run the plan here, in this process, with its caps on decompressing."""
    use_limits(plan.input_limits, plan.source, plan.filename)
    run = JobRun(plan, emit, is_cancelled)
    status, error = run.run()
    return RunResult(status, error, list(run.outputs.values()))


@dataclass
class JobRun:
    """One job's run through its pipeline; emits ``step`` and ``progress`` events."""

    plan: RunPlan
    emit: Emit
    is_cancelled: Callable[[], bool] = lambda: False
    rng: random.Random = field(default_factory=random.Random)
    outputs: dict[str, Output] = field(default_factory=dict)

    def run(self) -> tuple[JobStatus, str | None]:
        """Run every step; always cleans up, and returns the final status and error."""
        status, error = JobStatus.SUCCEEDED, None
        current = self.plan.source
        try:
            self.plan.workdir.mkdir(parents=True, exist_ok=True)
            self.plan.outdir.mkdir(parents=True, exist_ok=True)
            for index, spec in enumerate(self.plan.specs):
                if status is not JobStatus.SUCCEEDED:
                    self._step_event(index, spec, StepStatus.SKIPPED)
                    continue
                status, error, current = self._run_step(index, spec, current)
        finally:
            self._clean_up()
        return status, error

    def _run_step(
        self, index: int, spec: StepSpec, current: Path
    ) -> tuple[JobStatus, str | None, Path]:
        started = time.monotonic()
        self._step_event(index, spec, StepStatus.RUNNING)
        deadline = started + self.plan.step_timeout if self.plan.step_timeout else None
        ctx = self._context(index, spec, current, deadline)
        try:
            self._wait_delay(spec.delay, deadline)
            if spec.error_chance and self.rng.random() < spec.error_chance:
                raise InjectedFailure(
                    f"injected failure: step {spec.id!r} has error_chance={spec.error_chance}"
                )
            load_step(spec, self.plan.steps_dir)(ctx)
            if self.is_cancelled():
                raise JobCancelled("cancelled")
        except JobCancelled:
            self._step_event(index, spec, StepStatus.SKIPPED, started, "cancelled")
            return JobStatus.CANCELLED, CANCELLED_BY_REQUEST, current
        except Exception as exc:
            message = describe_failure(spec, exc)
            if is_disk_full(exc):
                self._free_space()  # before the failure is recorded, which needs room too
            else:
                self._keep_outputs(ctx)  # complete files only, e.g. validate's violations
            self._step_event(index, spec, StepStatus.FAILED, started, message)
            return JobStatus.FAILED, message, current
        self._keep_outputs(ctx)
        self._step_event(index, spec, StepStatus.SUCCEEDED, started)
        return JobStatus.SUCCEEDED, None, ctx.passed_on or current

    def _keep_outputs(self, ctx: StepContext) -> None:
        for output in ctx.outputs:
            self.outputs[output.name] = output

    def _free_space(self) -> None:
        """A step met a full disk: the job keeps nothing, and frees its room at once."""
        self.outputs.clear()
        for folder in (self.plan.outdir, self.plan.workdir):
            shutil.rmtree(folder, ignore_errors=True)

    def _context(
        self, index: int, spec: StepSpec, current: Path, deadline: float | None
    ) -> StepContext:
        options = {**spec.options, **self.plan.job_options.get(spec.id, {})}
        return StepContext(
            job_id=self.plan.job_id,
            step_id=spec.id,
            input=current,
            workdir=self.plan.workdir,
            outdir=self.plan.outdir,
            filename=self.plan.filename,
            options=options,
            config_dir=self.plan.config_dir,
            log=logging.getLogger(f"xmlflow.steps.{spec.id}"),
            _report=_Throttle(index, self.emit),
            _is_cancelled=lambda: self._check(deadline),
        )

    def _check(self, deadline: float | None) -> bool:
        if deadline is not None and time.monotonic() > deadline:
            raise StepTimeout(
                f"step timed out after {self.plan.step_timeout:g} s (XMLFLOW_STEP_TIMEOUT)"
            )
        return self.is_cancelled()

    def _wait_delay(self, delay: float, deadline: float | None) -> None:
        """Sleep ``delay`` seconds in small slices, so cancel and timeout act within 0.1 s."""
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            if self._check(deadline):
                raise JobCancelled("cancelled")
            time.sleep(min(left, 0.05))

    def _step_event(
        self,
        index: int,
        spec: StepSpec,
        status: StepStatus,
        started: float | None = None,
        error: str | None = None,
    ) -> None:
        elapsed = None if started is None else time.monotonic() - started
        self.emit(
            *step_event(index, len(self.plan.specs), spec, status, elapsed=elapsed, error=error)
        )

    def _clean_up(self) -> None:
        """Delete the uploaded source and the scratch folder: only outputs are kept."""
        with contextlib.suppress(FileNotFoundError):
            self.plan.source.unlink()
        shutil.rmtree(self.plan.workdir, ignore_errors=True)


def describe_failure(spec: StepSpec, exc: BaseException) -> str:
    """A message a person can act on: ours as is, anything else with its type."""
    if isinstance(exc, StepFailed | StepLoadError):
        return exc.message
    if isinstance(exc, MemoryError):  # the job process's cap, or the machine's
        return OUT_OF_MEMORY
    if is_disk_full(exc):  # a write's error names its file when open_output knows it
        name = getattr(exc, "filename", None)
        return f"{NO_SPACE} while writing {Path(name).name}" if isinstance(name, str) else NO_SPACE
    log.error("step %r raised an unexpected error", spec.id, exc_info=exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Throttle:
    """Turns ``ctx.progress()`` calls into at most ~10 progress events a second."""

    def __init__(self, index: int, emit: Emit) -> None:
        self.index = index
        self.emit = emit
        self.last = 0.0

    def __call__(
        self,
        fraction: float,
        message: str | None,
        done: int | None = None,
        total: int | None = None,
    ) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        self.emit(*progress_event(self.index, fraction, message, done, total))
