"""The live stream of a job's events, replayed from ``Last-Event-ID`` and then followed."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, request

from .. import sse
from ..errors import BadRequest
from ..models import EventType
from ..service import Service
from . import service
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
    return Response(_frames(service(), job_id, after), headers=sse.HEADERS)


def _frames(svc: Service, job_id: str, after: int) -> Iterator[bytes]:
    """The stream's body; runs after the view returned, so it is handed the service."""
    keepalive = svc.settings.sse_keepalive
    yield sse.encode(retry=svc.settings.sse_retry_ms, comment=f"job {job_id}")
    last = after
    while True:
        events = svc.events.follow(job_id, last, timeout=keepalive)
        if not events:
            if svc.closing:  # shutting down: the client reconnects elsewhere, from `last`
                return
            yield sse.KEEPALIVE
            continue
        for event in events:
            yield sse.encode(event.data, event=str(event.type), id=event.id)
            last = event.id
            if event.type is EventType.END:
                return
