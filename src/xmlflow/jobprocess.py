"""Isolation: run one job's plan in a child process, and survive whatever the steps do.

The plan and the run itself are :mod:`xmlflow.pipeline`'s; the claim before it and the
``end`` after it are :mod:`xmlflow.jobrun`'s. This module owns only the child: its
start, its limits, the pipe that relays its events, and stopping it.

Steps are user code: they may hang in C, eat memory or call ``os._exit``. In a
thread of the web process any of those would take the server down or leave a
worker stuck for ever. In a child process:

- the parent keeps appending the child's events itself (so SSE listeners in the
  web process are woken at once, and only one process writes the store);
- a step that outlives ``XMLFLOW_STEP_TIMEOUT``, or that does not stop when its
  job is cancelled, gets ``STOP_GRACE`` seconds to notice by itself, then SIGTERM,
  then ``KILL_GRACE`` later SIGKILL: stopped within 2 s even when stuck in C (a
  regular expression backtracking for ever never looks at ``ctx.cancelled``);
- a run the store refuses (:class:`~xmlflow.models.Superseded`: another run replaced
  it) or that lost its lease kills its child at once and raises;
- ``XMLFLOW_JOB_MEMORY_MB`` caps what the child may map beyond the address space it
  starts with (what it shares with the process it was forked from, which depends on
  how it was started): a greedy step gets a ``MemoryError`` (or is killed), not the
  machine;
- a child that dies (``os._exit``, a signal, the OOM killer) fails its job with
  its exit status, and the rest of the pipeline is marked skipped;
- the child dies with its parent (``PR_SET_PDEATHSIG``), so a killed server
  leaves no orphan writing outputs for a job that is now ``interrupted``.

Children come from a fork server (safe in a threaded parent): multiprocessing's
``forkserver``, which preloads xmlflow once, or, where the process forked one before
its first thread (``xmlflow run``), a :mod:`~xmlflow.zygote`, which needs no new
interpreter at all.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from . import zygote
from .models import (
    CANCELLED_BY_REQUEST,
    INTERRUPTED,
    OUT_OF_MEMORY,
    EventType,
    JobStatus,
    StepStatus,
    Superseded,
    step_event,
)
from .pipeline import RunPlan, RunResult, run_plan

log = logging.getLogger(__name__)
Emit = Callable[[EventType, dict[str, Any]], object]  # what it returns is ignored
STOP_GRACE = 1.0  # seconds a cancelled or overdue step gets to stop by itself
KILL_GRACE = 0.5  # seconds between SIGTERM and SIGKILL
POLL = 0.1  # seconds between the parent's looks at cancel, deadline and the child


_context_lock = threading.Lock()
_context: Any = None
_children_lock = threading.Lock()
_children: set[Any] = set()
_stopping = threading.Event()


def kill_children() -> None:
    """Stop every running job's process: the server is going away (they end interrupted)."""
    _stopping.set()
    with _children_lock:
        for child in _children:
            child.kill()


def stopping(within: float = 0.0) -> bool:
    """Whether this process is stopping (:func:`kill_children` was called), waiting up to
    ``within`` seconds for it: the pause of a runner waiting for something that may never
    come back (room on a full disk) while the server is going away."""
    return _stopping.wait(within)


def _mp_context(method: str) -> Any:
    global _context
    if method == "fork":
        return multiprocessing.get_context("fork")
    with _context_lock:
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
            # not lxml: process_xml runs on expat (native or Python); the steps that use
            # lxml (validate, transform, xpath_filter) import it when they run
            _context.set_forkserver_preload(["xmlflow.jobprocess", "xmlflow.xml"])
        return _context


def run_isolated(
    plan: RunPlan,
    emit: Emit,
    is_cancelled: Callable[[], bool],
    *,
    abandoned: Callable[[], bool] = lambda: False,
    start_method: str = "forkserver",
) -> RunResult:
    """Run the plan in a child process; returns how it ended, whatever the child did.

    Raises :class:`Superseded` (after killing the child) when ``emit`` does, or as soon
    as ``abandoned()`` is true: this run no longer owns its job.

    ``forkserver`` suits a threaded, long-lived parent (the web process). A process
    that exists for one job only (RQ's work-horse) passes ``fork``: it has nothing
    to lose to a fork and would pay a forkserver's start-up for every job.
    """
    child, parent_end = _start_child(plan, start_method)
    watch = _Supervisor(plan, emit)
    try:
        result = watch.follow(parent_end, child, is_cancelled, abandoned)
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        parent_end.close()
        with _children_lock:
            _children.discard(child)
    if result is None:
        result = watch.lost(child.exitcode, stopping=_stopping.is_set())
    return result


def _start_child(plan: RunPlan, start_method: str) -> tuple[Any, Connection]:
    """The job's process, running :func:`_child_main`, and our end of its pipe."""
    forks = zygote.running() if start_method == "forkserver" else None
    if forks is not None:
        try:
            with _children_lock:
                child = forks.start_process(_child_main, (plan,))
                _children.add(child)
            return child, child.conn
        except OSError as exc:
            if forks.alive():
                raise
            log.warning("the zygote is gone (%s): jobs start from a forkserver now", exc)
            zygote.stop()
    context = _mp_context(start_method)
    parent_end, child_end = context.Pipe(duplex=True)
    for end in (parent_end, child_end):  # under gevent, socketpair() hands out non-blocking
        os.set_blocking(end.fileno(), True)  # ends, and Connection's reads expect blocking
    # Not a daemon: a step may start processes of its own (daemons cannot).
    child = context.Process(
        target=_child_main, args=(plan, child_end), name=f"xmlflow-job-{plan.job_id}"
    )
    with _children_lock:
        child.start()
        _children.add(child)
    child_end.close()
    return child, parent_end


class _Supervisor:
    """The parent's side: relays events, forwards cancel, stops an overdue or cancelled child."""

    def __init__(self, plan: RunPlan, emit: Emit) -> None:
        self.plan = plan
        self.emit = emit
        self.running: int | None = None
        self.step_started = 0.0
        self.finished_steps: set[int] = set()
        self.cancelled_at: float | None = None
        self.terminated_at: float | None = None
        self.timed_out = False

    def follow(
        self,
        conn: Connection,
        child: Any,
        is_cancelled: Callable[[], bool],
        abandoned: Callable[[], bool],
    ) -> RunResult | None:
        """Relay until the child's result; None if it died or had to be stopped.

        Cancel, the deadline and the lease are looked at on every turn, not only when
        the child is quiet: a step reporting progress ten times a second is never quiet.
        """
        while True:
            if conn.poll(POLL):
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    return None
                if message[0] == "result":
                    return RunResult(message[1], message[2], message[3])
                self._relay(message[1], message[2])
            elif not child.is_alive() and not conn.poll(0):
                return None
            if abandoned():
                raise Superseded(f"job {self.plan.job_id}: this run lost its lease")
            if self.cancelled_at is None and is_cancelled():
                with contextlib.suppress(OSError):
                    conn.send("cancel")
                self.cancelled_at = time.monotonic()
            self._escalate(child)

    def _relay(self, type: EventType, data: dict[str, Any]) -> None:
        if type is EventType.STEP:
            if data["status"] == StepStatus.RUNNING:
                self.running, self.step_started = data["index"], time.monotonic()
            else:
                self.finished_steps.add(data["index"])
                self.running = None
        self.emit(type, data)

    def _stop_due(self) -> float | None:
        """When the child must have stopped by: its cancel or its step's deadline, plus grace."""
        due = []
        if self.cancelled_at is not None:
            due.append(self.cancelled_at + STOP_GRACE)
        limit = self.plan.step_timeout
        if limit is not None and self.running is not None:
            due.append(self.step_started + limit + STOP_GRACE)
        return min(due) if due else None

    def _escalate(self, child: Any) -> None:
        """SIGTERM a child past its due time; SIGKILL it if it is still there ``KILL_GRACE`` on."""
        now = time.monotonic()
        if self.terminated_at is not None:
            if now - self.terminated_at > KILL_GRACE:
                child.kill()
            return
        due = self._stop_due()
        if due is not None and now >= due:
            self.timed_out = self.cancelled_at is None
            self.terminated_at = now
            child.terminate()

    def lost(self, exitcode: int | None, *, stopping: bool = False) -> RunResult:
        """The child ended without a result: fail the running step, skip the rest, clean up."""
        status = JobStatus.INTERRUPTED if stopping else JobStatus.FAILED
        if stopping:
            error = INTERRUPTED
        elif self.cancelled_at is not None:
            status, error = JobStatus.CANCELLED, CANCELLED_BY_REQUEST
        elif self.timed_out:
            error = (
                f"step timed out after {self.plan.step_timeout:g} s (XMLFLOW_STEP_TIMEOUT) "
                "and was stopped"
            )
        else:
            error = f"the job's process ended unexpectedly ({_describe_exit(exitcode)})"
        total = len(self.plan.specs)
        for index, spec in enumerate(self.plan.specs):
            if index in self.finished_steps:
                continue
            if index != self.running:
                self.emit(*step_event(index, total, spec, StepStatus.SKIPPED))
                continue
            elapsed = time.monotonic() - self.step_started
            if status is JobStatus.CANCELLED:  # as the runner says it of a cooperative step
                event = step_event(
                    index, total, spec, StepStatus.SKIPPED, elapsed=elapsed, error="cancelled"
                )
            else:
                event = step_event(
                    index, total, spec, StepStatus.FAILED, elapsed=elapsed, error=error
                )
            self.emit(*event)
        with contextlib.suppress(FileNotFoundError):
            self.plan.source.unlink()
        shutil.rmtree(self.plan.workdir, ignore_errors=True)
        return RunResult(status, error)


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "no exit status"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = "; perhaps out of memory" if exitcode == -signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {exitcode}"


# -- the child -------------------------------------------------------------------------------


def _child_main(plan: RunPlan, conn: Connection) -> None:
    zygote.die_with_parent()
    # SIGTERM ends the child even inside C code: no Python handler inherited from the
    # parent (RQ's horse installs one) that would wait for the interpreter to run it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Ctrl-C reaches the terminal's whole process group: the server, not the job, decides
    # what it means (the job ends interrupted), so a step must not die of it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(  # force: a zygote's child has its parent's handlers
        level=plan.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if plan.memory_mb:
        limit = _mapped_bytes() + int(plan.memory_mb * 1024 * 1024)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cancelled = threading.Event()
    threading.Thread(target=_await_cancel, args=(conn, cancelled), daemon=True).start()

    def emit(type: EventType, data: dict[str, Any]) -> None:
        try:
            conn.send(("event", type, data))
        except OSError:  # the parent is gone: nobody will ever read our outputs
            os._exit(1)

    try:
        result = run_plan(plan, emit, cancelled.is_set)
    except MemoryError:
        result = RunResult(JobStatus.FAILED, OUT_OF_MEMORY)
    with contextlib.suppress(OSError):
        conn.send(("result", result.status, result.error, result.outputs))


def _await_cancel(conn: Connection, cancelled: threading.Event) -> None:
    """Set ``cancelled`` when the parent says so; end the process when the parent is gone.

    The pipe's end is the one sign of the parent's death that reaches every job: our
    parent by ``PR_SET_PDEATHSIG`` is the forkserver, which outlives a killed server
    while any job holds it, and a step that reports nothing would run on for nobody.
    (After our result the parent closes the pipe too: we are ending then anyway.)"""
    try:
        while True:
            if conn.recv() == "cancel":
                cancelled.set()
    except (EOFError, OSError):
        os._exit(1)


def _mapped_bytes() -> int:
    """This process's address space now (``VmSize``); 0 where /proc does not tell."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0
