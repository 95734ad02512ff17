"""Many listeners of one job on ``xmlflow serve`` (the default server: gunicorn, gevent,
embedded SQLite), and what the event log holds for them.

Listeners register once per stream and get each event from memory (see
``backends/sqlite/listeners.py``): these tests join streams before, during and after the
events, from the start and from a ``Last-Event-ID``, and check that each one gets
every event once, in order, and ends at ``end``; then that every registration is
given back, whether the stream ended or its client went away, through ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from .conftest import Server, write_config

EVENTS = 15  # progress events, 0.1 s apart (the runner's throttle)
EARLY = 100  # streams open before the events begin
LATE = 100  # streams that join while they flow (half of them from a Last-Event-ID)
CONFIG = f"""
    PIPELINES = {{"default": [{{"id": "count", "name": "Count", "module": "run_count",
                                "options": {{"events": {EVENTS}}}}}]}}
"""
STEP = """
    import time
    from pathlib import Path

    def run_count(ctx):
        go = Path(ctx.config_dir) / ("go-" + ctx.stem)  # each test starts its own job
        while not go.exists():
            time.sleep(0.02)
        for i in range(ctx.options["events"]):
            time.sleep(0.1)
            ctx.progress(i / ctx.options["events"], f"event {i}")
"""
GAUGE = re.compile(r"^xmlflow_event_listeners (\S+)$", re.MULTILINE)

Received = list[tuple[int, str, str]]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("listeners")
    config = write_config(root / "conf", CONFIG, {"count": STEP})
    # Keepalives every second: a stream whose client left notices it at its next write.
    server = Server(config=config, data_dir=root / "data", env={"XMLFLOW_SSE_KEEPALIVE": "1"})
    yield server.start()
    server.stop()


def listeners(server: Server) -> int:
    match = GAUGE.search(httpx.get(server.url + "/metrics", timeout=10).text)
    assert match, "no xmlflow_event_listeners in /metrics"
    return int(float(match.group(1)))


def wait_listeners(server: Server, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (now := listeners(server)) != count:
        assert time.monotonic() < deadline, f"{now} listeners registered, {count} expected"
        time.sleep(0.05)


async def follow(
    client: httpx.AsyncClient, url: str, last_event_id: int | None, seen: list[int]
) -> Received:
    """The stream's events until the server closes it; ``seen[0]``: the newest id seen."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: Received = []
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        source.response.raise_for_status()
        async for sse in source.aiter_sse():
            if sse.data:
                events.append((int(sse.id), sse.event, sse.data))
                seen[0] = max(seen[0], events[-1][0])
    return events


async def crowd(server: Server, job_id: str, go: Path) -> list[tuple[int, Received]]:
    """EARLY streams from the start, then go, then LATE more while the events flow."""
    url = f"{server.url}/stream/{job_id}"
    # A connection per stream, never reused: with reuse, a request now and then went out on
    # a pooled connection the server was closing ("disconnected without sending a response").
    limits = httpx.Limits(max_connections=EARLY + LATE + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=20), limits=limits) as client:
        seen = [0]
        tasks = [(0, asyncio.create_task(follow(client, url, None, seen))) for _ in range(EARLY)]
        await asyncio.to_thread(wait_listeners, server, EARLY)  # all registered
        go.touch()
        for n in range(LATE):
            await asyncio.sleep(EVENTS * 0.1 / LATE)  # joins spread over the events
            after = (seen[0] * n // LATE) if n % 2 else None  # from an earlier event, or the start
            tasks.append((after or 0, asyncio.create_task(follow(client, url, after, seen))))
        results = await asyncio.wait_for(asyncio.gather(*(t for _, t in tasks)), 60)
        return [(after, events) for (after, _), events in zip(tasks, results, strict=True)]


def test_each_listener_gets_every_event_once_in_order_and_gives_back_its_registration(
    srv: Server,
) -> None:
    (job,) = srv.upload(("crowd.xml", b"<a/>"))
    assert srv.config is not None
    go = srv.config.parent / "go-crowd"
    with ThreadPoolExecutor(1) as pool:  # an event loop of its own (Playwright may run one here)
        received = pool.submit(lambda: asyncio.run(crowd(srv, job["id"], go))).result()
    recorded = srv.events(job["id"])
    assert recorded[-1].event == "end" and recorded[-1].data["status"] == "succeeded"
    assert sum(e.event == "progress" for e in recorded) == EVENTS
    reference = [(e.id, e.event, e.data) for e in recorded]
    assert len(received) == EARLY + LATE
    for after, events in received:
        got = [(i, kind, json.loads(data)) for i, kind, data in events]
        assert got == reference[after:], f"a stream from {after} lost, repeated or reordered"
    wait_listeners(srv, 0)  # every stream ended at `end` and was unregistered


def test_a_listener_whose_client_left_is_unregistered(srv: Server) -> None:
    (job,) = srv.upload(("left.xml", b"<a/>"))  # waits for its go file: a quiet stream
    request = f"GET /stream/{job['id']} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    socks = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        sock.sendall(request.encode())
        socks.append(sock)
    for sock in socks:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_listeners(srv, 50)
    for sock in socks:
        sock.close()  # gone without a word: the next keepalive write fails
    wait_listeners(srv, 0)
    assert srv.proc is not None and srv.proc.poll() is None
    assert srv.config is not None
    (srv.config.parent / "go-left").touch()
    assert srv.wait_finished(job["id"])["status"] == "succeeded"


def database_descriptors(server: Server) -> int:
    """Descriptors on the SQLite files held by the server and its children (the worker)."""
    assert server.proc is not None
    pids, count = [server.proc.pid], 0
    for pid in pids:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pids += [int(c) for c in children]
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    count += "xmlflow.db" in os.readlink(fd)
    return count


def test_streams_that_ended_leave_no_database_connection_behind(srv: Server) -> None:
    """Each stream used to open a SQLite connection of its own (gevent makes thread-locals
    per greenlet) and keep it after it closed: 1,000 streams, 2,000 descriptors held."""
    (job,) = srv.upload(("fds.xml", b"<a/>"))  # waits for its go file: a quiet stream
    before = database_descriptors(srv)
    request = f"GET /stream/{job['id']} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(60)]
    for sock in socks:
        sock.sendall(request.encode())
    for sock in socks:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_listeners(srv, 60)
    for sock in socks:
        sock.close()
    wait_listeners(srv, 0)
    assert database_descriptors(srv) <= before + 6, "streams kept their connections"
    assert srv.config is not None
    (srv.config.parent / "go-fds").touch()
    assert srv.wait_finished(job["id"])["status"] == "succeeded"
