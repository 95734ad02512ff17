"""Several jobs' events on one stream, so a page follows every job it shows over one connection.

A browser keeps at most 6 HTTP/1.1 connections per host: one stream per job held them
all, and the next request (a reload, an upload) waited for a free one. Here one stream
carries the events of up to :data:`MAX_JOBS` jobs, each event naming its job in its
data, with an id that holds every job's position (:func:`sse.positions_id`), so
``Last-Event-ID`` resumes each job exactly where it was: nothing lost, nothing twice.

The event logs follow one job per ``listen`` and block in it, and the backends are not
this module's: each unfinished job gets a pump (a thread; a greenlet under gevent,
where ``threading`` is patched) that runs its ``listen`` and puts its batches on the
stream's queue, and the stream's generator writes whatever the queue holds in one
write. A pump stops at its job's ``end``, or at its next wake-up (an event or a
keepalive period) once the stream is closed.

A job can vanish while it is followed: deleted, expired, or lost with a Redis that
restarted empty (or was flushed). Its ``end`` then never comes, and the stream would
send keepalives for ever; so when a job's keepalive falls due (a quiet period, never
per event) its record is read once (:func:`vanished`), and a missing one ends the
stream with a ``: gone`` comment (:func:`gone_frame`). The client's reconnection then
gets the 404 of an unknown job, which every client already acts on (the page notes
the job is gone, ``xmlflow submit`` says so).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Gauge

from .. import sse
from ..backends.base import EventFeed, JobStore
from ..models import Event, EventType, Job
from ..service import Service

log = logging.getLogger(__name__)

MAX_JOBS = 200  # jobs per stream: a page's unfinished jobs (it follows 50), with room to spare
# bytes of query string: 200 ids of 32 characters with their "job=" and "&" (7,400), within
# the request line gunicorn takes (8,190 bytes, see gunicorn_conf), so the refusal is ours
MAX_QUERY = 8000

# What a pump puts on the queue: (job index, its next events), (index, GONE) when the
# job no longer exists, or (index, None) when its log stopped before the job's end
# (shutdown, or an error): the stream then closes and the client resumes from its
# positions.
GONE: Literal["gone"] = "gone"
_Item = tuple[int, list[Event] | Literal["gone"] | None]


@dataclass
class Followed:
    """One job of the stream: where the client is in its events, and whether it has the end."""

    job_id: str
    after: int
    done: bool

    @classmethod
    def start(cls, job: Job, after: int) -> Followed:
        """From the client's position, cut to the job's last event: a position beyond it
        (a garbled ``Last-Event-ID``) would wait for events that never come."""
        after = min(after, job.last_event_id)
        return cls(job.id, after, job.status.finished and after >= job.last_event_id)


def body(svc: Service, jobs: list[Followed], counter: Gauge | None) -> Iterator[bytes]:
    """The stream's body: the queued batches as frames, keepalives, until every job ended.

    Counts itself in ``counter`` (open streams) as the one-job stream does.
    """
    if counter is not None:
        counter.inc()
    stop = threading.Event()
    inbox: queue.SimpleQueue[_Item] = queue.SimpleQueue()
    try:
        yield sse.encode(retry=svc.settings.sse_retry_ms, comment=f"{len(jobs)} jobs")
        for index, job in enumerate(jobs):
            if not job.done:
                _start_pump(svc, index, job, inbox, stop)
        while not all(job.done for job in jobs):
            try:
                first = inbox.get(timeout=svc.settings.sse_keepalive)
            except queue.Empty:
                if svc.closing:
                    yield going_away_frame()
                    return
                yield sse.KEEPALIVE
                continue
            frames, stopped = _frames(jobs, [first, *_drain(inbox)])
            if frames:
                yield frames
            if stopped:
                if svc.closing:  # the logs stopped because the server does
                    yield going_away_frame()
                return
    finally:
        stop.set()
        if counter is not None:
            counter.dec()


def _frames(jobs: list[Followed], items: list[_Item]) -> tuple[bytes, bool]:
    """The frames of some batches (moving each job's position), and whether a log stopped
    (or a job vanished: its ``: gone`` comment is the last frame)."""
    out: list[bytes] = []
    stopped, last = False, b""
    for index, events in items:
        if not isinstance(events, list):  # None or GONE
            stopped = True
            if events == GONE:
                last = last or gone_frame(jobs[index].job_id)
            continue
        job = jobs[index]
        for event in events:
            if event.id <= job.after or job.done:
                continue  # a pump never repeats itself; this only guards the positions
            job.after = event.id
            job.done = event.type is EventType.END
            out.append(sse.job_frame(event, sse.positions_id(j.after for j in jobs)))
    out.append(last)
    return b"".join(out), stopped


def _drain(inbox: queue.SimpleQueue[_Item]) -> list[_Item]:
    """Whatever else is already queued: a stream that fell behind catches up in one write."""
    items: list[_Item] = []
    while True:
        try:
            items.append(inbox.get_nowait())
        except queue.Empty:
            return items


def _start_pump(
    svc: Service,
    index: int,
    job: Followed,
    inbox: queue.SimpleQueue[_Item],
    stop: threading.Event,
) -> None:
    threading.Thread(
        target=_pump,
        args=(svc.events, svc.store, index, job.job_id, job.after, inbox, stop),
        kwargs={"timeout": svc.settings.sse_keepalive},
        name=f"xmlflow-pump-{job.job_id[:8]}",
        daemon=True,
    ).start()


def _pump(
    feed: EventFeed,
    store: JobStore,
    index: int,
    job_id: str,
    after: int,
    inbox: queue.SimpleQueue[_Item],
    stop: threading.Event,
    *,
    timeout: float,
) -> None:
    """Follow one job for the stream until its end, the stream's close, the log's, or the
    job's disappearance (looked for once per quiet keepalive period)."""
    try:
        with closing(feed.listen(job_id, after, timeout)) as batches:
            for batch in batches:
                if stop.is_set():
                    return
                if batch:
                    events = through_end(batch)
                    inbox.put((index, events))
                    if events[-1].type is EventType.END:
                        return
                elif vanished(store, job_id):
                    inbox.put((index, GONE))
                    return
    except Exception:
        log.exception("following job %s for a stream failed", job_id)
    inbox.put((index, None))


def vanished(store: JobStore, job_id: str) -> bool:
    """Whether the job's record is gone: asked when a keepalive is due, one read.

    A read that fails is no answer: the store may be away for a while (a Redis
    restart), and a stream waits through that as it waits for events.
    """
    try:
        return store.get(job_id) is None
    except Exception as exc:
        log.debug("could not tell whether job %s still exists: %s", job_id, exc)
        return False


def gone_frame(job_id: str) -> bytes:
    """The last frame of a stream whose job vanished: a comment, which every SSE client
    skips (an event of a new type would break clients that know only the four), before
    the close; the reconnection's 404 is what clients act on."""
    return sse.encode(comment=f"gone: job {job_id} no longer exists")


def going_away_frame() -> bytes:
    """The last frame of a stream that ends because the server stops: a comment (skipped
    by every SSE client) saying why the stream ended before its job did. The client
    reconnects, to the next server, from its ``Last-Event-ID``."""
    return sse.encode(comment="the server is going away: reconnect with Last-Event-ID")


def through_end(events: list[Event]) -> list[Event]:
    """The events up to and including an ``end``: nothing is sent after it."""
    for i, event in enumerate(events):
        if event.type is EventType.END:
            return events[: i + 1]
    return events
