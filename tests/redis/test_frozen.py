"""Redis frozen (SIGSTOP: its connections stay open and nothing answers), or refusing
connections: the service answers in seconds, and what runs or streams waits it out.

Each test freezes this module's redis-server and thaws it (SIGCONT) before it ends.
Times are measured by a real HTTP client (``requests``) given minutes to answer, so a
hang shows as a slow answer, not as the client's own timeout.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from ..conftest import Server
from .conftest import Cluster, RedisServer
from .test_distributed import _wait_status
from .test_outage import assert_alive, files_under, wait_healthy

pytestmark = pytest.mark.redis

HEALTH_SECONDS = 3.5  # an operator expects ~3 s; the checks have 2 s, the rest is slack
UPLOAD_SECONDS = 10.0
PATIENT = 300  # the client's own timeout: far beyond any answer expected here


@pytest.fixture
def frozen(cluster: Cluster) -> Iterator[Cluster]:
    """A cluster whose leases outlast the freezes below; Redis is thawed whatever happens."""
    cluster.extra_env["XMLFLOW_LEASE_SECONDS"] = "20"
    yield cluster
    thaw(cluster.redis)


def thaw(server: RedisServer) -> None:
    assert server.proc
    os.kill(server.proc.pid, signal.SIGCONT)


@contextmanager
def redis_frozen(server: RedisServer) -> Iterator[None]:
    assert server.proc
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        thaw(server)


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def get(web: Server, path: str) -> tuple[requests.Response, float]:
    return timed(lambda: requests.get(web.url + path, timeout=PATIENT))


def post_file(web: Server, path: str) -> tuple[requests.Response, float]:
    files = [("file", ("a.xml", b"<a/>", "application/xml"))]
    return timed(lambda: requests.post(web.url + path, files=files, timeout=PATIENT))


def test_health_answers_503_in_seconds_while_redis_is_frozen(frozen: Cluster) -> None:
    web = frozen.web()
    with redis_frozen(frozen.redis):
        answer, took = get(web, "/api/health")
        again, took_again = get(web, "/api/health")  # the first one's checks may still hang

    for response, seconds in ((answer, took), (again, took_again)):
        assert response.status_code == 503, response.text
        assert seconds < HEALTH_SECONDS, (seconds, response.text)
        body = response.json()
        assert {"store", "queue", "workers"} <= set(body["failed"]), body
        assert body["checks"]["store"]["error"].startswith("TimeoutError: "), body
        assert body["checks"]["data_dir"]["ok"], body  # the checks that can answer, do
    wait_healthy(web)


def test_health_answers_in_seconds_while_redis_refuses_connections(frozen: Cluster) -> None:
    web = frozen.web()
    frozen.redis.stop()
    try:
        answer, took = get(web, "/api/health")
    finally:
        frozen.redis.start()
    assert answer.status_code == 503, answer.text
    assert took < HEALTH_SECONDS, (took, answer.text)
    assert "store" in answer.json()["failed"]
    wait_healthy(web)


def test_uploads_while_redis_is_frozen_get_503_in_seconds_and_leave_nothing(
    frozen: Cluster,
) -> None:
    web = frozen.web()
    data = frozen.root / "data"
    before = files_under(data)
    with redis_frozen(frozen.redis):
        for path in ("/upload", "/api/jobs"):
            refused, took = post_file(web, path)
            assert refused.status_code == 503, refused.text
            assert took < UPLOAD_SECONDS, (path, took)
            assert int(refused.headers["Retry-After"]) > 0
            error = refused.json()["error"]
            assert error["code"] == "backend_unavailable", error
            assert "TimeoutError" in error["message"], error
        assert files_under(data) == before  # no source, no .part, no job folder
        for page in ("/", "/api/pipelines"):  # what needs no Redis still answers
            answer, took = get(web, page)
            assert answer.status_code == 200 and took < 2, (page, took)

    frozen.worker()
    [job] = web.upload(("b.xml", b"<b/>"))
    assert web.wait_finished(job["id"])["status"] == "succeeded"


# -- streams and running jobs ------------------------------------------------------------------


class StreamReader(threading.Thread):
    """Reads ``/stream/<job>`` with ``requests``, noting when each frame arrived."""

    def __init__(self, web: Server, job_id: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{web.url}/stream/{job_id}"
        self.frames: list[tuple[float, dict[str, str]]] = []
        self.opened = threading.Event()

    def run(self) -> None:
        with requests.get(self.url, stream=True, timeout=PATIENT) as response:
            response.raise_for_status()
            frame: dict[str, str] = {}
            for line in response.iter_lines(decode_unicode=True):
                self.opened.set()
                if line:
                    field, _, value = line.partition(":")
                    frame[field or "comment"] = value.strip()
                elif frame:
                    self.frames.append((time.monotonic(), frame))
                    frame = {}

    def keepalives_between(self, start: float, end: float) -> int:
        return sum(
            1 for at, f in self.frames if start < at < end and f.get("comment") == "keepalive"
        )

    def events(self) -> list[dict[str, Any]]:
        return [{"id": int(f["id"]), "event": f["event"]} for _, f in self.frames if "id" in f]


def test_open_streams_and_running_jobs_wait_out_a_freeze(frozen: Cluster) -> None:
    """Frozen for longer than a command may wait (5 s) but shorter than the lease: the
    streams go on sending keepalives, then deliver every event; the jobs end once each."""
    frozen.extra_env["XMLFLOW_SSE_KEEPALIVE"] = "1"
    web = frozen.web()
    worker = frozen.worker()
    jobs = web.upload(("a.xml", b"<a/>"), ("b.xml", b"<b/>"), pipeline="paced")  # one waits
    readers = [StreamReader(web, job["id"]) for job in jobs]
    for reader in readers:
        reader.start()
        assert reader.opened.wait(10)
    _wait_status(web.job, jobs[0]["id"], "running")

    with redis_frozen(frozen.redis):
        frozen_at = time.monotonic()
        time.sleep(8)
        thawed_at = time.monotonic()

    for reader in readers:
        reader.join(60)
        assert not reader.is_alive(), "the stream never ended"
        assert reader.keepalives_between(frozen_at, thawed_at) >= 1, reader.frames
        events = reader.events()
        assert [e["id"] for e in events] == list(range(1, len(events) + 1)), events
        assert [e["event"] for e in events].count("end") == 1, events
    for job in jobs:
        assert web.job(job["id"])["status"] == "succeeded"
    assert_alive(worker)
    wait_healthy(web)
