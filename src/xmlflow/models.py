"""Jobs and their events: plain data, and the one function that folds an event into a job.

A job's record is a projection of its event log: :func:`apply_event` is the only
code that changes a job's status, steps or outputs, and every backend applies it in
the same transaction that appends the event. So what ``GET /api/jobs/<id>`` says and
what the stream said can never disagree.

It is also the fence. Each claim of a job starts a new *attempt* (1, 2, ... with
retries); a run appends its events naming its attempt, and :func:`apply_event`
refuses (:class:`Superseded`) an event from an attempt that is no longer the job's
current running one, and any event at all once the job has ended. Because the check
runs inside the store's transaction, a run declared lost that wakes up later cannot
add a second ``end``, nor interleave with the run that replaced it.

Event data is bounded here too (:func:`bounded_data`): no event, and so no job record,
can be larger than ``MAX_EVENT_BYTES``, and text that is not valid Unicode (a lone
surrogate) is stored with U+FFFD in its place instead of failing the append.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from .errors import Conflict

MAX_EVENT_BYTES = 64 * 1024  # an event's data as JSON, at most


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED}
)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class EventType(StrEnum):
    JOB = "job"
    STEP = "step"
    PROGRESS = "progress"
    END = "end"


@dataclass(frozen=True)
class StepSpec:
    """One entry of a pipeline, validated: what ``config.py`` declared."""

    id: str
    name: str
    module: str
    delay: float = 0.0
    error_chance: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepSpec:
        return cls(
            id=d["id"],
            name=d["name"],
            module=d["module"],
            delay=float(d.get("delay", 0.0)),
            error_chance=float(d.get("error_chance", 0.0)),
            options=dict(d.get("options") or {}),
        )


@dataclass
class StepState:
    id: str
    name: str
    status: StepStatus = StepStatus.PENDING
    elapsed: float | None = None
    error: str | None = None
    fraction: float | None = None
    message: str | None = None


@dataclass
class OutputInfo:
    name: str
    size: int
    media_type: str = "application/octet-stream"


@dataclass
class Job:
    id: str
    filename: str
    size: int
    pipeline_name: str
    pipeline: list[StepSpec]
    status: JobStatus = JobStatus.QUEUED
    steps: list[StepState] = field(default_factory=list)
    outputs: list[OutputInfo] = field(default_factory=list)
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_event_id: int = 0
    attempt: int = 0  # how many times the job was claimed: the current run's number
    group: str | None = None  # the zip the job's file came from (its members are grouped)

    def __post_init__(self) -> None:
        if not self.steps:
            self.steps = [StepState(id=s.id, name=s.name) for s in self.pipeline]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = str(self.status)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        d = dict(d)
        d["pipeline"] = [StepSpec.from_dict(s) for s in d["pipeline"]]
        d["steps"] = [
            StepState(**{**s, "status": StepStatus(s["status"])}) for s in d.get("steps", [])
        ]
        d["outputs"] = [OutputInfo(**o) for o in d.get("outputs", [])]
        d["status"] = JobStatus(d["status"])
        return cls(**d)


@dataclass(frozen=True)
class Event:
    """One entry of a job's event log; ``id`` increases by one per job, from 1."""

    job_id: str
    id: int
    type: EventType
    data: dict[str, Any]


class Superseded(Conflict):
    """An append the store refused: the job has ended, or the run is not its current one.

    The run that gets it has been replaced (declared lost, requeued, or ended by
    someone else): it must stop at once and leave the job's files alone.
    """


def fence(job: Job, attempt: int | None) -> None:
    """Refuse any event after ``end``, and a run's event unless it is the running attempt.

    ``attempt`` is None for the store's own decisions (claim, cancel, settling a lost
    job, recovery), which look at the job's status themselves.
    """
    if job.status.finished:
        raise Superseded(f"job {job.id} has already ended ({job.status})")
    if attempt is not None and (attempt != job.attempt or job.status is not JobStatus.RUNNING):
        raise Superseded(
            f"job {job.id}: attempt {attempt} was superseded "
            f"(the job is {job.status}, attempt {job.attempt})"
        )


def apply_event(
    job: Job, type: EventType, data: dict[str, Any], now: float, attempt: int | None = None
) -> None:
    """Fold one event into the job's record (in place), after :func:`fence` let it in."""
    fence(job, attempt)
    if type is EventType.JOB:
        job.status = JobStatus(data["status"])
        if job.status is JobStatus.RUNNING:
            job.attempt = int(data.get("attempt", job.attempt + 1))
            if job.started_at is None:
                job.started_at = now
    elif type is EventType.STEP:
        step = job.steps[data["index"]]
        step.status = StepStatus(data["status"])
        step.elapsed = data.get("elapsed", step.elapsed)
        step.error = data.get("error")
        if step.status is StepStatus.SUCCEEDED:
            step.fraction = 1.0
    elif type is EventType.PROGRESS:
        step = job.steps[data["index"]]
        step.fraction = data.get("fraction")
        step.message = data.get("message")
    elif type is EventType.END:
        job.status = JobStatus(data["status"])
        job.error = data.get("error")
        job.ended_at = now
        _close_running_steps(job)
        job.outputs = [
            OutputInfo(o["name"], o["size"], o.get("media_type", "application/octet-stream"))
            for o in data.get("outputs", [])
        ]


def _close_running_steps(job: Job) -> None:
    """A step still running when its job ends (its process died with a server or a worker)
    ended with it: failed with the job's reason, or skipped if the job was cancelled."""
    cancelled = job.status is JobStatus.CANCELLED
    for step in job.steps:
        if step.status is StepStatus.RUNNING:
            step.status = StepStatus.SKIPPED if cancelled else StepStatus.FAILED
            step.error = step.error or ("cancelled" if cancelled else job.error)


# -- the events: every event a job's log holds is built by one of these -------------------------
#
# Each returns ``(type, data)``, ready for ``EventLog.append(job_id, *event)``; the data's
# keys are the wire format the stream, the page and the command line read (docs/api.md).

INTERRUPTED = "the server stopped while this job was running; upload the file again"
LOST = "the worker running this job was lost (killed or crashed); upload the file again"
CANCELLED_BY_REQUEST = "cancelled by request"
OUT_OF_MEMORY = "out of memory (XMLFLOW_JOB_MEMORY_MB)"  # a step's MemoryError
NO_SPACE = "no space left in the data folder"  # a job's write (or its events') met a full disk

EventData = tuple[EventType, dict[str, Any]]


def queued_event(job_id: str, *, retry: int | None = None, error: str | None = None) -> EventData:
    """The job waits for a run: on upload, or again after its run was lost (``retry`` n)."""
    data: dict[str, Any] = {"job": job_id, "status": str(JobStatus.QUEUED)}
    if retry is not None:
        data["retry"] = retry
    if error is not None:
        data["error"] = error
    return EventType.JOB, data


def running_event(job: Job) -> EventData:
    """The event a claim appends: the job runs, as attempt n + 1."""
    return EventType.JOB, {
        "job": job.id,
        "status": str(JobStatus.RUNNING),
        "attempt": job.attempt + 1,
    }


def step_event(
    index: int,
    total: int,
    spec: StepSpec,
    status: StepStatus,
    *,
    elapsed: float | None = None,
    error: str | None = None,
) -> EventData:
    """Step ``index`` (of ``total``) changed status; ``elapsed`` seconds once it has run."""
    data: dict[str, Any] = {
        "index": index,
        "total": total,
        "id": spec.id,
        "name": spec.name,
        "status": str(status),
    }
    if elapsed is not None:
        data["elapsed"] = round(elapsed, 3)
    if error is not None:
        data["error"] = error
    return EventType.STEP, data


def progress_event(
    index: int,
    fraction: float,
    message: str | None = None,
    done: int | None = None,
    total: int | None = None,
) -> EventData:
    """How far step ``index`` is: a fraction, and bytes ``done`` of ``total`` when known."""
    data: dict[str, Any] = {"index": index, "fraction": round(fraction, 4)}
    if message is not None:
        data["message"] = message
    if done is not None:
        data["done"], data["total"] = done, total
    return EventType.PROGRESS, data


def end_event(
    status: JobStatus, error: str | None = None, outputs: list[dict[str, Any]] | None = None
) -> EventData:
    """The job's last event: its final status, why it did not succeed, what it offers."""
    return EventType.END, {"status": str(status), "error": error, "outputs": list(outputs or [])}


def cancelled_end() -> EventData:
    return end_event(JobStatus.CANCELLED, CANCELLED_BY_REQUEST)


def interrupted_end() -> EventData:
    """The server stopped (or was killed) while the job ran; recovery appends this."""
    return end_event(JobStatus.INTERRUPTED, INTERRUPTED)


def lost_end() -> EventData:
    """A Redis worker died with the job and its retries are spent."""
    return end_event(JobStatus.FAILED, LOST)


# -- bounded event data ------------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")
# (longest string, longest list) tried in turn until the data fits MAX_EVENT_BYTES
_SHRINK_STEPS = ((4096, 200), (512, 20), (64, 3), (20, 0))
TRUNCATED_NOTE = f"event data over {MAX_EVENT_BYTES // 1024} KB: long texts and lists were cut"


def bounded_data(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as the store keeps it: valid Unicode, and at most ``MAX_EVENT_BYTES`` as JSON.

    A lone surrogate (from a step's message or an exception's text) would make the
    JSON encoder raise, failing the append and leaving the step ``running``; it becomes
    U+FFFD. Data too large is shrunk (strings cut with a note, lists cut short) and
    says so in ``truncated``; a long list a person needs belongs in an output file.
    """
    clean: dict[str, Any] = _replace_surrogates(data)
    if len(orjson.dumps(clean)) <= MAX_EVENT_BYTES:
        return clean
    for max_text, max_items in _SHRINK_STEPS:
        shrunk = {**_shrink(clean, max_text, max_items), "truncated": TRUNCATED_NOTE}
        if len(orjson.dumps(shrunk)) <= MAX_EVENT_BYTES:
            return shrunk
    short = {k: v for k, v in clean.items() if isinstance(v, int | float | bool | None)}
    return {**short, "truncated": TRUNCATED_NOTE}


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replace_surrogates(str(k)): _replace_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_surrogates(v) for v in value]
    return value


def _shrink(value: Any, max_text: int, max_items: int) -> Any:
    if isinstance(value, str) and len(value) > max_text:
        return f"{value[:max_text]}… [{len(value) - max_text} more characters cut]"
    if isinstance(value, dict):
        items = list(value.items())[: max(max_items, 16)]
        return {k: _shrink(v, max_text, max_items) for k, v in items}
    if isinstance(value, list):
        return [_shrink(v, max_text, max_items) for v in value[:max_items]]
    return value
