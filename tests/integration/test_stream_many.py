"""``GET /api/events?job=…&job=…``: several jobs' events on one stream, on a real server.

Every job's events on the shared stream are compared with its own stream's, content
and order; the ids are position vectors that resume every job exactly.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import requests
from httpx_sse import connect_sse

from ..conftest import Server

XML = b"<orders><order id='1'>tea</order><order id='2'>cake</order></orders>"


def stream_url(srv: Server, job_ids: list[str]) -> str:
    return f"{srv.url}/api/events?" + "&".join(f"job={j}" for j in job_ids)


def read_many(
    srv: Server, job_ids: list[str], *, last_event_id: str | None = None, stop_after: int = 0
) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, type, data) of each event the stream sends until it closes (or ``stop_after``)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    events: list[tuple[str, str, dict[str, Any]]] = []
    with (
        httpx.Client(timeout=httpx.Timeout(60, connect=5)) as client,
        connect_sse(client, "GET", stream_url(srv, job_ids), headers=headers) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if sse.data:
                events.append((sse.id, sse.event, sse.json()))
                if len(events) == stop_after:
                    break
    return events


def per_job(
    events: list[tuple[str, str, dict[str, Any]]], job_ids: list[str]
) -> dict[str, list[tuple[int, str, dict[str, Any]]]]:
    """Each job's (own id, type, data) in the order received; the own id is its position."""
    out: dict[str, list[tuple[int, str, dict[str, Any]]]] = {j: [] for j in job_ids}
    for vector, type_, data in events:
        index = job_ids.index(data["job"])
        out[data["job"]].append((int(vector.split(".")[index]), type_, data))
    return out


def assert_same_as_own_streams(
    srv: Server, job_ids: list[str], events: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """Each job's events on the shared stream are its own stream's, all of them, once."""
    for job_id, got in per_job(events, job_ids).items():
        own = srv.events(job_id)
        assert [g[0] for g in got] == [e.id for e in own], f"job {job_id}: lost or repeated"
        assert [g[1] for g in got] == [e.event for e in own]
        assert [g[2] for g in got] == [{**e.data, "job": job_id} for e in own]
    final = [srv.job(j)["last_event_id"] for j in job_ids]
    assert events[-1][0] == ".".join(map(str, final))


def upload_jobs(srv: Server, paced: int, quick: int) -> list[str]:
    jobs = (
        srv.upload(*[(f"p{i}.xml", XML) for i in range(paced)], pipeline="paced") if paced else []
    )
    jobs += srv.upload(*[(f"q{i}.xml", XML) for i in range(quick)]) if quick else []
    return [job["id"] for job in jobs]


def test_one_stream_carries_every_jobs_events_and_closes_after_the_last_end(
    server: Server,
) -> None:
    job_ids = upload_jobs(server, paced=2, quick=2)
    events = read_many(server, job_ids)
    assert_same_as_own_streams(server, job_ids, events)
    assert sum(type_ == "end" for _, type_, _ in events) == len(job_ids)
    assert all(server.job(j)["status"] == "succeeded" for j in job_ids)


def test_last_event_id_resumes_every_job_where_it_was(server: Server) -> None:
    job_ids = upload_jobs(server, paced=2, quick=1)
    first = read_many(server, job_ids, stop_after=4)
    rest = read_many(server, job_ids, last_event_id=first[-1][0])
    assert_same_as_own_streams(server, job_ids, first + rest)


def test_a_garbled_last_event_id_starts_every_job_over(server: Server) -> None:
    job_ids = upload_jobs(server, paced=0, quick=2)
    for job_id in job_ids:
        server.wait_finished(job_id)
    for garbled in ("abc", "3", "1.2.3", "1.-2", "1.x"):
        events = read_many(server, job_ids, last_event_id=garbled)
        assert_same_as_own_streams(server, job_ids, events)


def test_positions_beyond_a_live_jobs_last_event_still_end_the_stream(server: Server) -> None:
    """A ``Last-Event-ID`` past the job's last id: the stream goes on from its last event
    and closes at its end (the job's own stream: the test below)."""
    job_ids = upload_jobs(server, paced=2, quick=0)
    events = read_many(server, job_ids, last_event_id="999.0")
    assert [type_ for _, type_, _ in events].count("end") == 2
    assert all(server.job(j)["status"] == "succeeded" for j in job_ids)


def test_a_live_jobs_own_stream_ends_whatever_id_was_asked(server: Server) -> None:
    [job_id] = upload_jobs(server, paced=1, quick=0)
    with requests.get(
        f"{server.url}/stream/{job_id}", headers={"Last-Event-ID": "999"}, stream=True, timeout=10
    ) as response:
        assert response.status_code == 200
        body = b"".join(response.iter_content(None))  # returns only when the stream closes
    assert b"event: end" in body
    assert server.job(job_id)["status"] == "succeeded"


def test_after_the_end_a_204_that_sse_clients_take_as_an_empty_stream(server: Server) -> None:
    job_ids = upload_jobs(server, paced=0, quick=2)
    last = [server.wait_finished(j)["last_event_id"] for j in job_ids]
    urls = {
        stream_url(server, job_ids): ".".join(map(str, last)),
        f"{server.url}/stream/{job_ids[0]}": str(last[0]),
    }
    for url, last_event_id in urls.items():
        headers = {"Last-Event-ID": last_event_id}
        with (
            httpx.Client(timeout=10) as client,
            connect_sse(client, "GET", url, headers=headers) as source,
        ):
            assert source.response.status_code == 204
            assert list(source.iter_sse()) == []  # httpx-sse raised on text/html
        plain = requests.get(url, headers=headers, timeout=10)
        assert plain.status_code == 204 and plain.content == b""
        assert "text/html" not in plain.headers.get("Content-Type", "")


def test_stream_headers_one_connection_header_and_no_cache(server: Server) -> None:
    [job_id] = upload_jobs(server, paced=0, quick=1)
    for url in (stream_url(server, [job_id]), f"{server.url}/stream/{job_id}"):
        with requests.get(url, stream=True, timeout=10) as response:
            assert len(response.raw.headers.getlist("Connection")) <= 1
            assert "no-cache" in response.headers["Cache-Control"]
            assert "no-store" in response.headers["Cache-Control"]
            assert response.headers["Content-Type"].startswith("text/event-stream")


def three_streams_on_one_session(srv: Server, job_ids: list[str]) -> None:
    """``requests.Session`` reuses a socket the server kept open: each stream must complete.

    With two ``Connection`` headers (``keep-alive`` read first, ``close`` meant), the
    second request went to a closed socket and got no answer.
    """
    with requests.Session() as session:
        for url in [stream_url(srv, job_ids), f"{srv.url}/stream/{job_ids[0]}"] * 2:
            with session.get(url, stream=True, timeout=10) as response:
                assert response.status_code == 200
                body = b"".join(response.iter_content(None))
            assert body.count(b"event: end") == (1 if "/stream/" in url else len(job_ids))


def test_three_stream_requests_in_a_row_on_one_requests_session(server: Server) -> None:
    job_ids = upload_jobs(server, paced=0, quick=2)
    three_streams_on_one_session(server, job_ids)


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("", 400, "say which jobs"),
        ("job=a&job=a", 400, "asked twice"),
        ("&".join(f"job=j{i}" for i in range(201)), 400, "at most 200"),
        ("job=" + "a" * 8100, 400, "longer than"),
        ("job=nosuchjob", 404, "nosuchjob"),
    ],
)
def test_bad_requests_say_what_is_wrong(server: Server, query: str, status: int, says: str) -> None:
    response = httpx.get(f"{server.url}/api/events?{query}", timeout=10)
    assert response.status_code == status
    assert says in response.json()["error"]["message"]
