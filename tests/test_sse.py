"""SSE framing as a table of exact bytes."""

from __future__ import annotations

from typing import Any

import pytest

from xmlflow import sse
from xmlflow.models import Event, EventType


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
    assert sse.HEADERS["Cache-Control"] == "no-cache, no-store"
    assert sse.HEADERS["X-Accel-Buffering"] == "no"
    assert sse.HEADERS["Content-Type"].startswith("text/event-stream")


def test_headers_leave_the_connection_to_the_server() -> None:
    """werkzeug adds ``Connection: close``: a second, contrary header hung reused sockets."""
    assert "connection" not in {name.lower() for name in sse.HEADERS}


@pytest.mark.parametrize(
    ("event", "positions", "expected"),
    [
        (
            Event("ab12", 3, EventType.PROGRESS, {"step": "x", "progress": 0.5}),
            "3.0",
            b'id: 3.0\nevent: progress\ndata: {"step":"x","progress":0.5,"job":"ab12"}\n\n',
        ),
        (
            Event("ab12", 1, EventType.JOB, {"job": "ab12", "status": "queued"}),
            "0.1",
            b'id: 0.1\nevent: job\ndata: {"job":"ab12","status":"queued"}\n\n',
        ),
    ],
)
def test_job_frame(event: Event, positions: str, expected: bytes) -> None:
    assert sse.job_frame(event, positions) == expected


@pytest.mark.parametrize(("positions", "expected"), [([7], "7"), ([12, 0, 7], "12.0.7"), ([], "")])
def test_positions_id(positions: list[int], expected: str) -> None:
    assert sse.positions_id(positions) == expected


@pytest.mark.parametrize(
    ("header", "count", "expected"),
    [
        ("12.0.7", 3, [12, 0, 7]),
        (" 3.4 ", 2, [3, 4]),
        ("5", 1, [5]),
        (None, 2, [0, 0]),
        ("", 2, [0, 0]),
        ("5", 2, [0, 0]),  # a one-job id for two jobs: which one? start over
        ("1.2.3", 2, [0, 0]),
        ("1.-2", 2, [0, 0]),
        ("1.x", 2, [0, 0]),
        ("1..2", 3, [0, 0, 0]),
        ("１.2", 2, [0, 0]),  # a full-width digit is a digit to Python, not to us
        ("9" * 20, 1, [sse.PAST_THE_END]),  # past any end: after the end, not from the start
        ("9" * 29 + ".1", 2, [sse.PAST_THE_END, 1]),
    ],
)
def test_parse_positions(header: str | None, count: int, expected: list[int]) -> None:
    assert sse.parse_positions(header, count) == expected
