"""The three seams: where jobs are kept, where their events are logged, where they run.

Each has an embedded implementation (SQLite + threads, :mod:`.embedded`) and a Redis
one (:mod:`.redis`). The web layer and the worker see only these protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..models import Event, EventType, Job, JobStatus

if TYPE_CHECKING:
    from ..webhooks import Outbox


MAX_QUERY_CHARS = 200
"""The longest file-name search (``q``) a list accepts: every job's name is compared to it."""


def status_set(status: JobStatus | Collection[JobStatus] | None) -> frozenset[JobStatus]:
    """``list_jobs``'s ``status`` argument as a set (empty: no filter)."""
    if status is None:
        return frozenset()
    if isinstance(status, JobStatus):
        return frozenset({status})
    return frozenset(status)


def name_matches(filename: str, q: str | None) -> bool:
    """The one meaning of ``q`` for every store: a case-insensitive substring of the name."""
    return not q or q.casefold() in filename.casefold()


class JobStore(Protocol):
    """Job records. Each change of status goes through :meth:`EventLog.append`."""

    def create(self, job: Job) -> Event:
        """Save a new job and append its first event (``job`` / ``queued``)."""

    def get(self, job_id: str) -> Job | None: ...

    def list_jobs(
        self,
        *,
        status: JobStatus | Collection[JobStatus] | None = None,
        pipeline: str | None = None,
        q: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """Newest first; returns one page and the total count of the jobs that match.

        ``status``: one status or several (any of them; empty: all); ``q``: a substring of
        the file name, compared case-insensitively (``str.casefold``). The caller bounds
        ``q``'s length (:data:`MAX_QUERY_CHARS`).
        """

    def claim(self, job_id: str) -> Job | None:
        """Atomically move a queued job to running as its next attempt (``Job.attempt``);
        None if it is not queued any more."""

    def cancel(self, job_id: str) -> Job:
        """End a queued job as cancelled, or flag a running one; raises NotFound/Conflict."""

    def cancel_requested(self, job_id: str) -> bool: ...

    def delete(self, job_id: str) -> None:
        """Forget a job and its events (its files are the caller's)."""

    def unfinished(self) -> list[Job]:
        """Jobs queued or running, oldest first: what a restart must look at."""

    def expired(self, ended_before: float) -> list[str]:
        """Ids of jobs that ended before the given time."""

    def count_queued(self) -> int: ...


class EventLog(Protocol):
    """Append-only events per job, with replay from an id and live follow."""

    def append(
        self, job_id: str, type: EventType, data: dict[str, Any], *, attempt: int | None = None
    ) -> Event:
        """Append an event and fold it into the job record, atomically.

        A run passes its ``attempt``; the append raises :class:`~xmlflow.models.Superseded`
        when that attempt is not the job's running one, or when the job has ended.
        """

    def read(self, job_id: str, after: int = 0) -> list[Event]: ...

    def follow(self, job_id: str, after: int, timeout: float) -> list[Event]:
        """Events after ``after``; blocks up to ``timeout`` seconds while there are none."""

    def listen(self, job_id: str, after: int, timeout: float) -> Generator[list[Event], None, None]:
        """``follow`` for a whole stream: each batch after the last, [] after ``timeout`` s
        of quiet, until the log closes; the caller closes the generator when done."""


def following(
    follow: Callable[[str, int, float], list[Event]], job_id: str, after: int, timeout: float
) -> Generator[list[Event], None, None]:
    """``listen`` as ``follow`` in a loop, for logs with nothing to keep between batches."""
    while True:
        events = follow(job_id, after, timeout)
        if events:
            after = events[-1].id
        yield events


class Executor(Protocol):
    """Runs ``run_job(job_id)`` somewhere, some time soon: on this process's runner threads
    (embedded) or on whichever ``xmlflow worker`` takes it from the RQ queue (Redis)."""

    def submit(self, job_id: str) -> None: ...

    def shutdown(self, wait: bool = True) -> None: ...


Lost = Callable[[], bool]
# Given the claimed job, keeps the run's claim alive while the run lasts; yields ``lost()``.
Guard = Callable[[Job], AbstractContextManager[Lost]]
# The service's settling of what the last processes left, given to the backend's start:
# ``exclusive`` when this process alone serves the data folder (it holds its lock).
TakeOver = Callable[[bool], None]


def unguarded(job: Job) -> AbstractContextManager[Lost]:
    """No lease to keep: the embedded run lives and dies with the process of its store."""
    return nullcontext(lambda: False)


@dataclass
class Backend:
    """The three seams, opened together for one process, and what they need at its start.

    Everything that differs between the modes is said here, so that the service never
    asks which backend it has.
    """

    name: str  # "sqlite" or "redis", as /api/health reports it
    store: JobStore
    events: EventLog
    executor: Executor
    start: Callable[[TakeOver], None]  # lock/recover (embedded), lost-job monitor (Redis)
    close: Callable[[], None]
    guard: Guard = unguarded  # kept around each run: the Redis lease
    outbox: Outbox | None = None  # webhook deliveries, when XMLFLOW_WEBHOOK_URL is set
