"""The seams: where jobs and their events are kept, how a process listens to them, where
jobs run.

The data splits where the backends split it: a :class:`JobStore` keeps the job records
and their events together (an event and the record it changes are one write), and an
:class:`EventFeed` hands the events a store committed to the listeners of this process.
:class:`EventLog` is what callers use as ``service.events``: the store's ``append`` and
``read`` with the feed's ``listen`` (:class:`Events` puts them side by side).

Each has an embedded implementation (SQLite, :mod:`.sqlite`, with threads for work:
:mod:`.embedded`) and a Redis one (:mod:`.redis`). The web layer and the worker see
only these protocols.
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
    """Job records and their append-only events, kept so that the two always agree.

    Every change of a job is an event: the store appends it and folds it into the record
    (:func:`models.apply_event`) in one transaction. The operations that change a job's
    status append their own event that way (``create``: ``job``/``queued``; ``claim``:
    ``job``/``running``; ``cancel`` of a queued job: ``end``/``cancelled``); every other
    event comes through :meth:`append`.
    """

    def create(self, job: Job) -> Event:
        """Save a new job with its first event (``job`` / ``queued``), which it returns."""

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
        """Atomically move a queued job to running as its next attempt (``Job.attempt``),
        appending its ``running`` event; None if it is not queued any more."""

    def cancel(self, job_id: str) -> Job:
        """End a queued job as cancelled (its ``end`` event), or flag a running one;
        raises NotFound/Conflict."""

    def cancel_requested(self, job_id: str) -> bool: ...

    def delete(self, job_id: str) -> None:
        """Forget a job and its events (its files are the caller's)."""

    def unfinished(self) -> list[Job]:
        """Jobs queued or running, oldest first: what a restart must look at."""

    def expired(self, ended_before: float) -> list[str]:
        """Ids of jobs that ended before the given time."""

    def count_queued(self) -> int: ...

    def append(
        self, job_id: str, type: EventType, data: dict[str, Any], *, attempt: int | None = None
    ) -> Event:
        """Append an event and fold it into the job record, atomically.

        A run passes its ``attempt``; the append raises :class:`~xmlflow.models.Superseded`
        when that attempt is not the job's running one, or when the job has ended.
        """

    def read(self, job_id: str, after: int = 0) -> list[Event]:
        """The job's events after ``after``, oldest first (ids are contiguous from 1)."""


class EventFeed(Protocol):
    """Live events for the listeners of this process (an SSE stream, ``xmlflow run``)."""

    def listen(self, job_id: str, after: int, timeout: float) -> Generator[list[Event], None, None]:
        """Each batch of the job's events after ``after`` (the first may be a replay), []
        after ``timeout`` s of quiet, until the feed closes; the caller closes the
        generator when done. One registration for the whole stream, not one per batch."""


class EventLog(Protocol):
    """``service.events``: a job's events, appended, read, and listened to."""

    def append(
        self, job_id: str, type: EventType, data: dict[str, Any], *, attempt: int | None = None
    ) -> Event:
        """:meth:`JobStore.append`."""

    def read(self, job_id: str, after: int = 0) -> list[Event]:
        """:meth:`JobStore.read`."""

    def listen(self, job_id: str, after: int, timeout: float) -> Generator[list[Event], None, None]:
        """:meth:`EventFeed.listen`."""


class Events:
    """The :class:`EventLog` of a backend: its store's ``append``/``read``, its feed's
    ``listen``, taken as they are (bound methods, no call in between: every event and
    every wake-up of a stream goes through them)."""

    def __init__(
        self, store: JobStore, feed: EventFeed, listeners: Callable[[], int] | None = None
    ) -> None:
        self.append = store.append
        self.read = store.read
        self.listen = feed.listen
        # the feed's count of listener registrations, where it keeps one (``/metrics``)
        self.listeners = listeners


@dataclass(frozen=True)
class Capacity:
    """Who runs the jobs right now, and how many wait for them (``/api/health``)."""

    kind: str  # "rq_workers" (Redis) or "runner_threads" (embedded)
    live: int
    waiting: int  # jobs handed to the executor and not taken yet


class Executor(Protocol):
    """Runs ``run_job(job_id)`` somewhere, some time soon: on this process's runner threads
    (embedded) or on whichever ``xmlflow worker`` takes it from the RQ queue (Redis)."""

    def submit(self, job_id: str) -> None: ...

    def capacity(self) -> Capacity: ...

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
