"""The live streams: one job's events, or several jobs' (:mod:`.multistream`), replayed
from ``Last-Event-ID`` and then followed until the job (every job) ended."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

from flask import Blueprint, Response, request
from prometheus_client import Gauge

from .. import sse
from ..errors import BadRequest
from ..models import EventType
from ..service import Service
from . import metrics, multistream, service
from .api import get_job_or_404
from .multistream import going_away_frame, gone_frame, through_end, vanished

bp = Blueprint("stream", __name__)


@bp.get("/stream")
def stream_by_query() -> Response:
    """The seed's form: ``/stream?job=<id>``."""
    job_id = request.args.get("job") or request.args.get("job_id")
    if not job_id:
        raise BadRequest("say which job: /stream/<job_id> or /stream?job=<job_id>")
    return stream(job_id)


@bp.get("/stream/<job_id>")
@bp.get("/api/jobs/<job_id>/events")
def stream(job_id: str) -> Response:
    job = get_job_or_404(job_id)
    after = sse.parse_last_event_id(
        request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    )
    if after >= job.last_event_id:
        if job.status.finished:
            return no_content()
        # Beyond the last event (a garbled id): from the last one, or it would wait for
        # events that never come, and never see the end.
        after = job.last_event_id
    body = _frames(service(), job_id, after, metrics.open_streams())
    # The server iterates the generator itself: no werkzeug ClosingIterator and
    # _iter_encoded around it, two Python frames fewer per event (it yields bytes, and
    # closing it is all there is to close).
    return Response(body, headers=sse.HEADERS, direct_passthrough=True)


@bp.get("/api/events")
def stream_many() -> Response:
    """Several jobs' events on one stream: ``/api/events?job=<id>&job=<id>…``."""
    ids = _requested_jobs()
    positions = sse.parse_positions(
        request.headers.get("Last-Event-ID") or request.args.get("lastEventId"), len(ids)
    )
    jobs = [
        multistream.Followed.start(get_job_or_404(i), p)
        for i, p in zip(ids, positions, strict=True)
    ]
    if all(job.done for job in jobs):
        return no_content()
    body = multistream.body(service(), jobs, metrics.open_streams())
    return Response(body, headers=sse.HEADERS, direct_passthrough=True)


def _requested_jobs() -> list[str]:
    """The ``job`` parameters, checked: some, not too many, none twice."""
    if len(request.query_string) > multistream.MAX_QUERY:
        raise BadRequest(
            f"the query is longer than {multistream.MAX_QUERY} bytes: ask for fewer jobs"
        )
    ids = request.args.getlist("job")
    if not ids:
        raise BadRequest("say which jobs: /api/events?job=<id>&job=<id>")
    if len(ids) > multistream.MAX_JOBS:
        raise BadRequest(f"{len(ids)} jobs asked, at most {multistream.MAX_JOBS} per stream")
    if len(set(ids)) < len(ids):
        twice = next(i for n, i in enumerate(ids) if i in ids[:n])
        raise BadRequest(f"job {twice!r} is asked twice")
    return ids


def no_content() -> Response:
    """The client already has the end: 204 tells EventSource to stop reconnecting.

    With the stream's headers: Flask's default ``text/html`` made SSE clients such as
    httpx-sse raise instead of seeing an empty stream.
    """
    return Response(status=204, headers=sse.HEADERS)


def _frames(svc: Service, job_id: str, after: int, counter: Gauge | None) -> Iterator[bytes]:
    """The stream's body; runs after the view returned, so it is handed the service.

    One listener registration for the whole stream (``listen``), and one write per
    wake-up whatever number of events it brings; each event's frame is encoded once
    per process (:func:`sse.event_frame`) and shared by every listener, so what a
    listener costs per event is a wake-up and a ``send``, through one generator of
    ours and the backend's ``listen``.

    A keepalive that falls due reads the job's record once (:func:`vanished`): a job
    deleted, expired or lost with Redis ends the stream, which would otherwise send
    keepalives for ever.

    The stream counts itself in ``counter`` (open streams) here, in the generator, not
    in a wrapper around it (one more frame per event) nor with ``call_on_close``
    (werkzeug's server skips ``close()`` when the client resets the connection; a
    generator is still finalised when it is dropped).
    """
    if counter is not None:
        counter.inc()
    try:
        yield sse.encode(retry=svc.settings.sse_retry_ms, comment=f"job {job_id}")
        with closing(svc.events.listen(job_id, after, svc.settings.sse_keepalive)) as batches:
            for batch in batches:
                if not batch:
                    if svc.closing:
                        break
                    if vanished(svc.store, job_id):  # see multistream: its `end` never comes
                        yield gone_frame(job_id)
                        return
                    yield sse.KEEPALIVE
                elif batch[-1].type is EventType.END or len(batch) > 1:
                    events = through_end(batch)
                    yield sse.frames(events)
                    if events[-1].type is EventType.END:
                        return
                else:  # the usual wake-up: one event, not the end
                    yield sse.event_frame(batch[0])
        # the feed closed (or will not wait any more) before the job's end: shutdown
        yield going_away_frame()
    finally:
        if counter is not None:
            counter.dec()
