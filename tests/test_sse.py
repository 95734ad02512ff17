"""SSE framing as a table of exact bytes."""

from __future__ import annotations

from typing import Any

import pytest

from xmlflow import sse


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": {"a": 1}}, b'data: {"a":1}\n\n'),
        ({"data": {"a": 1}, "event": "step", "id": 3}, b'id: 3\nevent: step\ndata: {"a":1}\n\n'),
        ({"data": "two\nlines"}, b"data: two\ndata: lines\n\n"),
        ({"data": "cr\rand\r\ncrlf"}, b"data: cr\ndata: and\ndata: crlf\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": {"text": "a\nb"}}, b'data: {"text":"a\\nb"}\n\n'),
        ({"event": "bad\nname", "data": "x"}, b"event: badname\ndata: x\n\n"),
        ({"id": "4\r\n2\x00", "data": "x"}, b"id: 42\ndata: x\n\n"),
        ({"retry": 2000}, b"retry: 2000\n\n"),
        ({"comment": "keepalive"}, b": keepalive\n\n"),
        ({"comment": "a\nb", "retry": 10}, b": a\n: b\nretry: 10\n\n"),
        ({"data": {"é": "ü"}}, '{"é":"ü"}'.join(["data: ", "\n\n"]).encode()),
    ],
)
def test_encode(kwargs: dict[str, Any], expected: bytes) -> None:
    assert sse.encode(**kwargs) == expected


def test_keepalive_is_a_comment() -> None:
    assert sse.KEEPALIVE.startswith(b":") and sse.KEEPALIVE.endswith(b"\n\n")


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, 0), ("", 0), ("7", 7), (" 12 ", 12), ("-3", 0), ("abc", 0), ("1-0", 0)],
)
def test_parse_last_event_id(header: str | None, expected: int) -> None:
    assert sse.parse_last_event_id(header) == expected


def test_headers_defeat_proxy_buffering_and_caches() -> None:
    assert sse.HEADERS["Cache-Control"] == "no-store"
    assert sse.HEADERS["X-Accel-Buffering"] == "no"
    assert sse.HEADERS["Content-Type"].startswith("text/event-stream")
