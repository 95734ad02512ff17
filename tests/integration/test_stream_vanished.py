"""A stream whose job vanishes while it is followed ends, instead of sending keepalives for ever.

Embedded mode: the job's rows are deleted from the SQLite file by another process
(through the store's own ``delete``, as the retention sweep does), while a queued job
is followed. The Redis cases (``FLUSHALL``, an outage) are in
``tests/redis/test_vanished_on_redis.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from xmlflow.backends.sqlite import SqliteStore

from ..conftest import TEST_CONFIG, TEST_STEPS, Server, write_config

KEEPALIVE = 1.0  # seconds (XMLFLOW_SSE_KEEPALIVE): the stream looks at its job this often


def follow_raw(url: str, then: Callable[[], None], within: float) -> tuple[list[str], bool]:
    """The stream's lines, as a client reads them, until it closes (True) or ``within``
    seconds after ``then`` ran (False). ``then`` runs at the first keepalive: the stream
    is open and waiting when the job goes."""
    lines: list[str] = []
    deadline = None
    with httpx.stream("GET", url, timeout=httpx.Timeout(10, connect=5)) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            lines.append(line)
            if deadline is None and line == ": keepalive":
                then()
                deadline = time.monotonic() + within
            if deadline is not None and time.monotonic() > deadline:
                return lines, False
    return lines, True


def assert_ended_as_gone(lines: list[str], closed: bool, job_id: str) -> None:
    assert closed, f"the stream still sends keepalives: {lines[-5:]}"
    frames = [line for line in lines if line]
    assert frames[-1] == f": gone: job {job_id} no longer exists", frames[-5:]
    assert "event: end" not in lines, "no end made up: the job did not end"


def assert_reconnection_is_404(url: str, job_id: str) -> None:
    """What an EventSource (the page) or ``xmlflow submit`` does next, and acts on."""
    again = httpx.get(url, timeout=10)
    assert again.status_code == 404 and job_id in again.json()["error"]["message"], again.text


@pytest.fixture
def one_runner(tmp_path: Path) -> Iterator[Server]:
    """One runner thread, kept busy by a slow job: the next jobs stay queued."""
    config = write_config(tmp_path / "conf", TEST_CONFIG, TEST_STEPS)
    env = {"XMLFLOW_WORKERS": "1", "XMLFLOW_SSE_KEEPALIVE": str(KEEPALIVE)}
    srv = Server(config=config, data_dir=tmp_path / "data", env=env).start()
    srv.upload(("busy.xml", b"<a/>"), pipeline="slow")
    yield srv
    srv.stop()


def delete_from_store(srv: Server, *job_ids: str) -> Callable[[], None]:
    def delete() -> None:
        store = SqliteStore(srv.data_dir / "xmlflow.db")
        for job_id in job_ids:
            store.delete(job_id)

    return delete


def test_a_followed_job_deleted_from_sqlite_ends_its_stream(one_runner: Server) -> None:
    [job] = one_runner.upload(("a.xml", b"<a/>"))
    assert one_runner.job(job["id"])["status"] == "queued"
    url = one_runner.url + job["stream_url"]
    lines, closed = follow_raw(url, delete_from_store(one_runner, job["id"]), KEEPALIVE * 5)
    assert_ended_as_gone(lines, closed, job["id"])
    assert_reconnection_is_404(url, job["id"])


def test_a_several_job_stream_ends_when_one_of_its_jobs_is_deleted(one_runner: Server) -> None:
    kept, gone = (job["id"] for job in one_runner.upload(("a.xml", b"<a/>"), ("b.xml", b"<b/>")))
    url = f"{one_runner.url}/api/events?job={kept}&job={gone}"
    lines, closed = follow_raw(url, delete_from_store(one_runner, gone), KEEPALIVE * 5)
    assert_ended_as_gone(lines, closed, gone)
    assert_reconnection_is_404(url, gone)
    assert one_runner.job(kept)["status"] == "queued"
