"""Server-Sent Events framing: pure functions from events to the bytes on the wire.

Follows the WHATWG EventSource format, as sse-starlette does, with these choices:

- ``data`` is one line of JSON (orjson never emits a raw newline), but any text is
  still split on CR, LF and CRLF into several ``data:`` lines, so the framing can
  never be broken by a value.
- CR and LF are removed from ``id`` and ``event``; an ``id`` may not contain NUL
  (browsers then ignore it), so NUL is removed too.
- Keepalives are comments (``: keepalive``), which EventSource ignores.
- No ``Connection`` header: the server decides (werkzeug's says ``close``, gunicorn's
  keeps the connection alive), and a second one made clients reuse a closed socket.
- ``Cache-Control: no-cache`` (what proxies know for event streams) and ``no-store``.

A stream of several jobs (:func:`job_frame`) sends each job's events unchanged but for
a ``"job"`` key in ``data``, with an ``id`` that holds every job's position: see
:func:`positions_id`.

Many listeners of one job get the same bytes: :func:`event_frame` encodes an event
once per process (an event never changes once it has its id) and every stream writes
that one ``bytes`` object; :func:`frames` joins a batch into a single write.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

import orjson

from .models import Event

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-store",
    "X-Accel-Buffering": "no",
}
KEEPALIVE = b": keepalive\n\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FIELD_UNSAFE = re.compile(r"[\r\n\0]")


def encode(
    data: Any = None,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """One SSE frame, terminated by a blank line."""
    lines: list[str] = []
    if comment is not None:
        lines.extend(f": {line}" for line in _LINE_BREAK.split(comment))
    if id is not None:
        lines.append(f"id: {_FIELD_UNSAFE.sub('', str(id))}")
    if event is not None:
        lines.append(f"event: {_FIELD_UNSAFE.sub('', event)}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    if data is not None:
        text = data if isinstance(data, str) else orjson.dumps(data).decode()
        lines.extend(f"data: {line}" for line in _LINE_BREAK.split(text))
    return ("\n".join(lines) + "\n\n").encode()


FRAME_CACHE = 4096  # frames kept: far more than the events in flight at any moment
_frames: dict[tuple[str, int], bytes] = {}
_frames_lock = threading.Lock()


def event_frame(event: Event) -> bytes:
    """The frame of one event, encoded the first time a listener of this process needs it.

    Keyed by (job, id), which names one event for good: ids are never reused within a
    job, job ids never across jobs. Lookups take no lock (one dict read); only a new
    frame does, to add it and evict the oldest one.
    """
    key = (event.job_id, event.id)
    frame = _frames.get(key)
    if frame is None:
        frame = encode(event.data, event=str(event.type), id=event.id)
        with _frames_lock:
            _frames[key] = frame
            while len(_frames) > FRAME_CACHE:
                del _frames[next(iter(_frames))]  # dicts keep insertion order: the oldest
    return frame


def frames(events: Iterable[Event]) -> bytes:
    """Several events as one write: a listener that fell behind catches up in one ``send``."""
    return b"".join(map(event_frame, events))


def parse_last_event_id(value: str | None) -> int:
    """The numeric id a reconnecting client sent; 0 (from the start) if absent or garbled."""
    if not value:
        return 0
    try:
        n = int(value.strip())
    except ValueError:
        return 0
    return max(n, 0)


def job_frame(event: Event, positions: str) -> bytes:
    """One event of a several-job stream: its data names its job, its id is the positions.

    Encoded for each stream (the id is the stream's own), unlike :func:`event_frame`.
    """
    return encode({**event.data, "job": event.job_id}, event=str(event.type), id=positions)


def positions_id(positions: Iterable[int]) -> str:
    """The ``id`` of a several-job stream: each job's last event id, in the order asked.

    ``12.0.7``: the client has events 1-12 of the first job, none of the second, 1-7 of
    the third; sent back as ``Last-Event-ID``, it resumes every job where it was.
    """
    return ".".join(map(str, positions))


PAST_THE_END = 10**15


def parse_positions(value: str | None, count: int) -> list[int]:
    """The positions a reconnecting client sent for ``count`` jobs; all 0 if absent or garbled.

    A single number counts as garbled too (unless ``count`` is 1): a position given to
    the wrong job would skip its events, starting over only repeats them.
    """
    parts = (value or "").strip().split(".")
    if len(parts) != count or not all(p.isascii() and p.isdigit() for p in parts):
        return [0] * count
    # A number past any job's end means "after the end", as on a one-job stream: kept large
    # rather than parsed whole (the header's length is the server's to bound).
    return [int(p) if len(p) < 16 else PAST_THE_END for p in parts]
