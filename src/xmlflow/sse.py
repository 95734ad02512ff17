"""Server-Sent Events framing: pure functions from events to the bytes on the wire.

Follows the WHATWG EventSource format, as sse-starlette does, with these choices:

- ``data`` is one line of JSON (orjson never emits a raw newline), but any text is
  still split on CR, LF and CRLF into several ``data:`` lines, so the framing can
  never be broken by a value.
- CR and LF are removed from ``id`` and ``event``; an ``id`` may not contain NUL
  (browsers then ignore it), so NUL is removed too.
- Keepalives are comments (``: keepalive``), which EventSource ignores.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
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


def parse_last_event_id(value: str | None) -> int:
    """The numeric id a reconnecting client sent; 0 (from the start) if absent or garbled."""
    if not value:
        return 0
    try:
        n = int(value.strip())
    except ValueError:
        return 0
    return max(n, 0)
