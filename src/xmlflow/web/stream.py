"""The live stream of a job's events, replayed from ``Last-Event-ID`` and then followed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

from flask import Blueprint, Response, request
from prometheus_client import Gauge

from .. import sse
from ..errors import BadRequest
from ..models import Event, EventType
from ..service import Service
from . import metrics, service
from .api import get_job_or_404

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
    if job.status.finished and after >= job.last_event_id:
        # The client already has the end: 204 tells EventSource to stop reconnecting.
        return Response(status=204)
    body = _frames(service(), job_id, after, metrics.open_streams())
    # The server iterates the generator itself: no werkzeug ClosingIterator and
    # _iter_encoded around it, two Python frames fewer per event (it yields bytes, and
    # closing it is all there is to close).
    return Response(body, headers=sse.HEADERS, direct_passthrough=True)


def _frames(svc: Service, job_id: str, after: int, counter: Gauge | None) -> Iterator[bytes]:
    """The stream's body; runs after the view returned, so it is handed the service.

    One listener registration for the whole stream (``listen``), and one write per
    wake-up whatever number of events it brings; each event's frame is encoded once
    per process (:func:`sse.event_frame`) and shared by every listener, so what a
    listener costs per event is a wake-up and a ``send``, through one generator of
    ours and the backend's ``listen``.

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
                    if svc.closing:  # shutting down: the client reconnects from `last`
                        return
                    yield sse.KEEPALIVE
                elif batch[-1].type is EventType.END or len(batch) > 1:
                    events = _through_end(batch)
                    yield sse.frames(events)
                    if events[-1].type is EventType.END:
                        return
                else:  # the usual wake-up: one event, not the end
                    yield sse.event_frame(batch[0])
    finally:
        if counter is not None:
            counter.dec()


def _through_end(events: list[Event]) -> list[Event]:
    """The events up to and including an ``end``: nothing is sent after it."""
    for i, event in enumerate(events):
        if event.type is EventType.END:
            return events[: i + 1]
    return events
