"""Jobs and their events: plain data, and the one function that folds an event into a job.

A job's record is a projection of its event log: :func:`apply_event` is the only
code that changes a job's status, steps or outputs, and every backend applies it in
the same transaction that appends the event. So what ``GET /api/jobs/<id>`` says and
what the stream said can never disagree.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


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


def apply_event(job: Job, type: EventType, data: dict[str, Any], now: float) -> None:
    """Fold one event into the job's record (in place)."""
    if type is EventType.JOB:
        job.status = JobStatus(data["status"])
        if job.status is JobStatus.RUNNING and job.started_at is None:
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
        job.outputs = [
            OutputInfo(o["name"], o["size"], o.get("media_type", "application/octet-stream"))
            for o in data.get("outputs", [])
        ]
