"""Jobs and their events in Redis: a hash per job, a stream per job, sorted sets as indexes.

Every change goes through :meth:`RedisStore._transact`: ``WATCH`` the job's hash, read
it, fold the new events into the record with :func:`models.apply_event` (the same
function the embedded backend uses), then one ``MULTI``/``EXEC`` writes the record,
``XADD``s the events and moves the job between the index sets. A concurrent writer
makes ``EXEC`` fail and the change is simply recomputed, so ``claim`` and ``cancel``
are atomic across every process.

Redis going away for a moment (a restart, a freeze) is waited out for up to ``OUTAGE_GRACE``
seconds. A retried ``EXEC`` whose first attempt did land is recognised by the
change's random ``nonce`` stored in the same transaction, so no event is doubled.

Fencing (see :mod:`xmlflow.models`): appends name their run's attempt, and
``apply_event`` refuses a stale attempt's event, or any event after ``end``, inside the
``WATCH``; the lease holds the attempt number, so a superseded run cannot renew it.
Every event of a job is kept until the job's retention ends (no stream trimming): a
replay from the start always has the start.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from ...errors import BackendUnavailable, Conflict, NotFound
from ...models import (
    LOST,
    Event,
    EventType,
    Job,
    JobStatus,
    apply_event,
    bounded_data,
    cancelled_end,
    lost_end,
    queued_event,
    running_event,
)
from ..base import name_matches, status_set
from .keys import Keys, event_id, stream_id
from .outbox import RedisOutbox

log = logging.getLogger(__name__)

SCAN_CHUNK = 500  # job documents read per round trip when filtering by pipeline or name
OUTAGE_GRACE = 30.0  # seconds a write waits for Redis to come back before giving up
# Redis cannot serve us right now, and will again: unreachable or slow (a restart, a
# pause), out of memory under ``noeviction`` (OOM), a replica (READONLY), or loading its
# data (LOADING, a ConnectionError). A write refused for one of these is retried or
# answered 503, never taken for a bug.
REDIS_DOWN = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
)


@dataclass
class Change:
    """A change being computed under ``WATCH``: the events to add and fields to set."""

    job: Job
    cancel: bool
    attempts: int
    leased: bool
    events: list[Event] = field(default_factory=list)
    fields: dict[str, str | int] = field(default_factory=dict)
    lease: int | None = None  # the attempt to hold the job's lease, set by a claim
    replayed: bool = False  # the change had already been applied by an earlier try

    def append(self, type: EventType, data: dict[str, Any], attempt: int | None = None) -> Event:
        data = bounded_data(data)
        apply_event(self.job, type, data, time.time(), attempt)
        self.job.last_event_id += 1
        event = Event(self.job.id, self.job.last_event_id, type, data)
        self.events.append(event)
        return event


Decide = Callable[[Change], bool]  # returns False to leave the job as it is


class RedisStore:
    """``JobStore``: jobs and their events (appended and replayed; listening is
    :mod:`.fanout`'s)."""

    def __init__(
        self, client: redis.Redis, *, retention: float, lease_ttl: float, webhooks: bool = False
    ) -> None:
        self.r = client
        self.retention = retention
        self.lease_ttl = lease_ttl
        # with webhooks on, each end event records its delivery in the same MULTI
        self.outbox = RedisOutbox(client) if webhooks else None

    # -- JobStore ----------------------------------------------------------------------------

    def create(self, job: Job) -> Event:
        change = Change(job, cancel=False, attempts=0, leased=False)
        event = change.append(*queued_event(job.id))
        with _available():
            pipe = self.r.pipeline(transaction=True)
            pipe.zadd(Keys.all_jobs, {job.id: job.created_at})
            self._write(pipe, change, old_status=None, nonce="")
            pipe.execute()
        return event

    def get(self, job_id: str) -> Job | None:
        with _available():
            doc: bytes | None = self.r.hget(Keys.job.format(job_id), "doc")  # type: ignore[assignment]
        return _load(doc) if doc else None

    def list_jobs(
        self,
        *,
        status: JobStatus | Collection[JobStatus] | None = None,
        pipeline: str | None = None,
        q: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        statuses = sorted(status_set(status))
        indexes = [Keys.by_status.format(s) for s in statuses] or [Keys.all_jobs]
        with _available():
            if pipeline is None and not q:
                return self._index_page(indexes, limit, offset)
            return self._filtered_page(indexes, pipeline, q, limit, offset)

    def _index_page(self, indexes: list[str], limit: int, offset: int) -> tuple[list[Job], int]:
        """A page read from the index sets alone: each set's first ``offset + limit``, merged."""
        total = sum(int(self.r.zcard(index)) for index in indexes)
        if len(indexes) == 1:
            return self._load_many(
                _ids(self.r.zrevrange(indexes[0], offset, offset + limit - 1))
            ), total
        scored: list[tuple[bytes, float]] = []
        for index in indexes:
            scored += self.r.zrevrange(index, 0, offset + limit - 1, withscores=True)  # type: ignore[arg-type]
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        return self._load_many(_ids([m for m, _ in scored[offset : offset + limit]])), total

    def _filtered_page(
        self, indexes: list[str], pipeline: str | None, q: str | None, limit: int, offset: int
    ) -> tuple[list[Job], int]:
        """Pipeline and file name are only in each job's document: read them in chunks,
        newest first, keeping only the page asked for (memory bounded by the chunk)."""
        scored: list[tuple[bytes, float]] = []
        for index in indexes:
            scored += self.r.zrevrange(index, 0, -1, withscores=True)  # type: ignore[arg-type]
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        ids = _ids([m for m, _ in scored])
        page: list[Job] = []
        total = 0
        for start in range(0, len(ids), SCAN_CHUNK):
            for job in self._load_many(ids[start : start + SCAN_CHUNK]):
                if pipeline is not None and job.pipeline_name != pipeline:
                    continue
                if not name_matches(job.filename, q):
                    continue
                if offset <= total < offset + limit:
                    page.append(job)
                total += 1
        return page, total

    def claim(self, job_id: str) -> Job | None:
        def decide(c: Change) -> bool:
            if c.job.status is not JobStatus.QUEUED:
                return False
            c.append(*running_event(c.job))
            c.lease = c.job.attempt
            return True

        change = self._transact(job_id, decide)
        claimed = change is not None and (change.replayed or bool(change.events))
        return change.job if change and claimed else None

    def cancel(self, job_id: str) -> Job:
        def decide(c: Change) -> bool:
            if c.job.status.finished:
                raise Conflict(f"job {job_id} has already ended ({c.job.status})")
            if c.job.status is JobStatus.QUEUED:
                c.append(*cancelled_end())
            c.fields["cancel"] = 1
            return True

        change = self._transact(job_id, decide)
        if change is None:
            raise NotFound(f"no job {job_id!r}")
        return change.job

    def cancel_requested(self, job_id: str) -> bool:
        with _available():
            return self.r.hget(Keys.job.format(job_id), "cancel") == b"1"

    def delete(self, job_id: str) -> None:
        with _available():
            pipe = self.r.pipeline(transaction=True)
            pipe.delete(
                Keys.job.format(job_id), Keys.events.format(job_id), Keys.lease.format(job_id)
            )
            for index in (Keys.all_jobs, Keys.ended, *Keys.status_sets()):
                pipe.zrem(index, job_id)
            pipe.execute()

    def unfinished(self) -> list[Job]:
        with _available():
            ids = [
                *_ids(self.r.zrange(Keys.by_status.format(JobStatus.QUEUED), 0, -1)),
                *_ids(self.r.zrange(Keys.by_status.format(JobStatus.RUNNING), 0, -1)),
            ]
            return sorted(self._load_many(ids), key=lambda j: j.created_at)

    def expired(self, ended_before: float) -> list[str]:
        with _available():
            return _ids(self.r.zrangebyscore(Keys.ended, "-inf", f"({ended_before}"))

    def queued_before(self, created_before: float) -> list[str]:
        """Ids of jobs queued since before ``created_before`` (the lost-job monitor's)."""
        with _available():
            key = Keys.by_status.format(JobStatus.QUEUED)
            return _ids(self.r.zrangebyscore(key, "-inf", created_before))

    def count_queued(self) -> int:
        with _available():
            return int(self.r.zcard(Keys.by_status.format(JobStatus.QUEUED)))

    # -- events: append and replay ------------------------------------------------------------

    def append(
        self, job_id: str, type: EventType, data: dict[str, Any], *, attempt: int | None = None
    ) -> Event:
        change = self._transact(job_id, lambda c: bool(c.append(type, data, attempt)))
        if change is None:
            raise NotFound(f"no job {job_id!r}")
        if change.replayed:
            return Event(job_id, change.job.last_event_id, type, data)
        return change.events[0]

    def read(self, job_id: str, after: int = 0) -> list[Event]:
        with _available():
            entries: Any = self.r.xrange(Keys.events.format(job_id), min=str(after + 1), max="+")
        return [to_event(job_id, entry_id, fields) for entry_id, fields in entries]

    # -- leases: which running jobs still have a live process ----------------------------------

    def renew_lease(self, job_id: str, attempt: int) -> bool:
        """Extend the lease of the job's run ``attempt``; False if that run no longer holds it
        (it expired, the job ended, or a later attempt claimed the job): stop the run."""
        renewed = self.r.eval(
            RENEW_LEASE, 1, Keys.lease.format(job_id), str(attempt), int(self.lease_ttl * 1000)
        )
        return bool(renewed)

    def running_without_lease(self) -> list[str]:
        with _available():
            ids = _ids(self.r.zrange(Keys.by_status.format(JobStatus.RUNNING), 0, -1))
            pipe = self.r.pipeline(transaction=False)
            for job_id in ids:
                pipe.exists(Keys.lease.format(job_id))
            alive = pipe.execute()
        return [i for i, up in zip(ids, alive, strict=True) if not up]

    def settle_lost(self, job_id: str, retries: int) -> Job | None:
        """End (or requeue, while retries are left) a running job whose lease has expired.

        Returns the job as settled (its ``attempt`` is the lost run's), or None when it
        was not lost after all.
        """

        def decide(c: Change) -> bool:
            if c.job.status is not JobStatus.RUNNING or c.leased:
                return False
            if c.attempts < retries:
                c.fields["attempts"] = c.attempts + 1
                c.append(*queued_event(job_id, retry=c.attempts + 1, error=LOST))
            else:
                c.append(*lost_end())
            return True

        change = self._transact(job_id, decide)
        return change.job if change and change.events else None

    def try_lock(self, key: str, seconds: float) -> bool:
        with _available():
            return bool(self.r.set(key, b"1", nx=True, px=int(seconds * 1000)))

    # -- the transaction --------------------------------------------------------------------------

    def _transact(self, job_id: str, decide: Decide) -> Change | None:
        """Apply ``decide`` to the job atomically; None if there is no such job."""
        nonce = secrets.token_hex(8)
        deadline = time.monotonic() + OUTAGE_GRACE
        pause = 0.05
        while True:
            try:
                return self._attempt(job_id, decide, nonce)
            except redis.WatchError:
                continue
            except REDIS_DOWN as exc:
                if time.monotonic() > deadline:
                    raise BackendUnavailable.of_redis(exc) from exc
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _attempt(self, job_id: str, decide: Decide, nonce: str) -> Change | None:
        key, lease = Keys.job.format(job_id), Keys.lease.format(job_id)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.watch(key, lease)  # type: ignore[no-untyped-call]
            fields: list[Any] = pipe.hmget(key, "doc", "cancel", "attempts", "nonce")
            doc, cancel, attempts, last_nonce = fields
            if doc is None:
                return None
            change = Change(
                _load(doc), cancel == b"1", int(attempts or 0), bool(pipe.exists(lease))
            )
            if last_nonce == nonce.encode():
                change.replayed = True
                return change
            old_status = change.job.status
            if not decide(change):
                return change
            pipe.multi()
            self._write(pipe, change, old_status, nonce)
            pipe.execute()
            return change

    def _write(self, pipe: Any, c: Change, old_status: JobStatus | None, nonce: str) -> None:
        """Queue the writes of one change on a ``MULTI`` pipeline."""
        job, key, events = c.job, Keys.job.format(c.job.id), Keys.events.format(c.job.id)
        for event in c.events:
            entry = {"t": str(event.type), "d": orjson.dumps(event.data)}
            pipe.xadd(events, entry, id=stream_id(event.id))
            if event.type is EventType.END and self.outbox is not None:
                self.outbox.add(pipe, job, event)
        pipe.hset(
            key,
            mapping={
                "doc": orjson.dumps(job.to_dict()),
                "status": str(job.status),
                "nonce": nonce,
                **c.fields,
            },
        )
        if old_status is not job.status:
            if old_status is not None:
                pipe.zrem(Keys.by_status.format(old_status), job.id)
            pipe.zadd(Keys.by_status.format(job.status), {job.id: job.created_at})
        if c.lease is not None:
            pipe.set(Keys.lease.format(job.id), str(c.lease), px=int(self.lease_ttl * 1000))
        if job.status.finished:
            self._retire(pipe, job)

    def _retire(self, pipe: Any, job: Job) -> None:
        """A finished job: index it for the sweep, and let Redis forget it if nobody sweeps."""
        pipe.zadd(Keys.ended, {job.id: job.ended_at or time.time()})
        pipe.delete(Keys.lease.format(job.id))
        safety_net = int(self.retention * 2) + 3600
        pipe.expire(Keys.job.format(job.id), safety_net)
        pipe.expire(Keys.events.format(job.id), safety_net)

    def _load_many(self, ids: list[str]) -> list[Job]:
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(Keys.job.format(job_id), "doc")
        return [_load(doc) for doc in pipe.execute() if doc]


# Extend the lease only if it still names the caller's attempt (compare and expire, atomic).
RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def to_event(job_id: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    return Event(
        job_id, event_id(entry_id), EventType(fields[b"t"].decode()), orjson.loads(fields[b"d"])
    )


def _load(doc: bytes) -> Job:
    return Job.from_dict(orjson.loads(doc))


def _ids(values: Any) -> list[str]:
    """Members of a sorted set as text (the client is left in bytes mode, as RQ needs)."""
    return [v.decode() for v in values]


@contextmanager
def _available() -> Iterator[None]:
    """Reads fail fast while Redis is down: a 503 the client can retry, not a 500."""
    try:
        yield
    except REDIS_DOWN as exc:
        raise BackendUnavailable.of_redis(exc) from exc
