"""Faults: a worker killed mid-job, Redis restarted mid-job, web processes restarted or stopped."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis
from httpx_sse import ServerSentEvent, connect_sse

from ..conftest import Event, Server
from .conftest import Cluster, Worker
from .test_distributed import _wait_status

pytestmark = pytest.mark.redis


def _kill_mid_job(cluster: Cluster, web: Server) -> tuple[str, Worker, float]:
    doomed = cluster.worker()
    [job] = web.upload(("a.xml", b"<a/>"), pipeline="long")
    _wait_status(web.job, job["id"], "running")
    time.sleep(0.5)
    assert doomed.horse_pids(), "the job should be running in a work-horse"
    doomed.kill_with_horse()
    return job["id"], doomed, time.monotonic()


def _wait_for_no_folder(job_dir: Path) -> None:
    """The monitor removes a lost run's files (and the job's folder, which then holds
    nothing) just after it settles the job."""
    deadline = time.monotonic() + 5
    while job_dir.exists():
        assert time.monotonic() < deadline, sorted(job_dir.rglob("*"))
        time.sleep(0.1)


def test_killed_worker_fails_its_job_within_a_minute(cluster: Cluster) -> None:
    web = cluster.web()
    job_id, _, killed_at = _kill_mid_job(cluster, web)

    events = web.events(job_id, timeout=60)
    assert time.monotonic() - killed_at < 60
    end = events[-1]
    assert end.event == "end" and end.data["status"] == "failed"
    assert "worker" in end.data["error"] and "lost" in end.data["error"]
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert [e for e in events if e.event == "end"] == [end]
    _wait_for_no_folder(cluster.root / "data" / "jobs" / job_id)


def test_killed_worker_job_is_retried_when_asked(cluster: Cluster) -> None:
    cluster.extra_env["XMLFLOW_RETRIES"] = "1"
    web = cluster.web()
    job_id, _, _ = _kill_mid_job(cluster, web)
    cluster.worker()  # a healthy worker takes the retry

    events = web.events(job_id, timeout=90)
    requeued = [e for e in events if e.event == "job" and e.data["status"] == "queued"]
    assert len(requeued) == 2 and requeued[1].data["retry"] == 1
    assert events[-1].data["status"] == "succeeded"
    assert [e.event for e in events].count("end") == 1
    # No attempt-1/ of the lost run, and no empty out/: the tick step writes no outputs.
    _wait_for_no_folder(cluster.root / "data" / "jobs" / job_id)


def test_job_taken_by_a_worker_that_died_before_starting_it_runs_again(
    cluster: Cluster,
) -> None:
    """A worker pops the job from RQ's queue and dies before the job is claimed: the job
    is still ``queued`` in our records but nowhere in RQ. The monitor enqueues it again."""
    web = cluster.web()
    [job] = web.upload(("a.xml", b"<a/>"))  # no worker yet: it waits in RQ's queue
    client = redis.Redis.from_url(cluster.redis.url)
    [rq_id] = client.lrange("rq:queue:xmlflow", 0, -1)
    assert rq_id.decode().startswith(f"xmlflow-{job['id']}")
    assert client.lrem("rq:queue:xmlflow", 0, rq_id) == 1  # what a dying worker's pop leaves
    cluster.worker()
    events = web.events(job["id"], timeout=60)
    assert events[-1].data["status"] == "succeeded"
    assert [e.data.get("status") for e in events if e.event == "job"] == ["queued", "running"]


def test_redis_restart_mid_job_loses_nothing(cluster: Cluster) -> None:
    web_a, web_b = cluster.web(), cluster.web()
    cluster.worker()
    [job] = web_a.upload(("a.xml", b"<a/>"), pipeline="paced")
    _wait_status(web_a.job, job["id"], "running")

    seen = _read_until_error_or_end(web_b, job["id"], restart=cluster.redis.restart)
    last = seen[-1].id if seen else 0
    rest = _events_when_up(web_a, job["id"], last)
    events = seen + rest
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert events[-1].event == "end" and events[-1].data["status"] == "succeeded", events[-1]
    assert web_b.job(job["id"])["status"] == "succeeded"


def test_web_process_restart_loses_no_job_or_event(cluster: Cluster) -> None:
    web = cluster.web()
    cluster.worker()
    jobs = web.upload(*[(f"{i}.xml", b"<a/>") for i in range(3)], pipeline="paced")
    web.kill()
    time.sleep(1)
    web.start()
    for job in jobs:
        events = web.events(job["id"])
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        assert events[-1].data["status"] == "succeeded"


@pytest.mark.parametrize("web_workers", [None, 2], ids=["werkzeug", "gunicorn"])
def test_sigterm_ends_open_streams_promptly(cluster: Cluster, web_workers: int | None) -> None:
    web = cluster.web(web_workers)  # no worker: the job stays queued, its streams stay open
    [job] = web.upload(("a.xml", b"<a/>"))
    assert_sigterm_ends_streams(web, [f"{web.url}/stream/{job['id']}"] * 4)


def assert_sigterm_ends_streams(web: Server, urls: list[str]) -> None:
    """Open the streams, SIGTERM the server: every stream ends within 5 s, and the server."""
    assert web.proc
    with httpx.Client(timeout=httpx.Timeout(30, connect=5)) as client, ExitStack() as stack:
        streams = [_open_stream(stack, client, url) for url in urls]
        started = time.monotonic()
        web.proc.terminate()
        for frames in streams:
            with contextlib.suppress(httpx.TransportError):
                list(frames)  # returns when the server ends the stream
        assert time.monotonic() - started < 5
    assert web.proc.wait(10) in (0, -signal.SIGTERM)


def _open_stream(stack: ExitStack, client: httpx.Client, url: str) -> Iterator[ServerSentEvent]:
    """An open stream, past its first event; the caller reads the rest."""
    frames = stack.enter_context(connect_sse(client, "GET", url)).iter_sse()
    next(e for e in frames if e.data)
    return frames


def _read_until_error_or_end(web: Server, job_id: str, restart: object) -> list[Event]:
    """Stream the job; restart Redis after the second progress event; stop when the stream does."""
    seen: list[Event] = []
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(40, connect=5)) as client,
            connect_sse(client, "GET", f"{web.url}/stream/{job_id}") as source,
        ):
            for e in source.iter_sse():
                if not e.data:
                    continue
                seen.append(Event(int(e.id), e.event, e.json()))
                if sum(s.event == "progress" for s in seen) == 2:
                    restart()  # type: ignore[operator]
                if e.event == "end":
                    break
    except httpx.TransportError:
        pass  # a stream may be cut; the client reconnects from its last id, below
    return seen


def _events_when_up(web: Server, job_id: str, after: int) -> list[Event]:
    deadline = time.monotonic() + 40
    while True:
        try:
            response = httpx.get(
                f"{web.url}/stream/{job_id}", timeout=1, headers={"Last-Event-ID": str(after)}
            )
            if response.status_code == 204:
                return []
        except httpx.TransportError:
            pass
        try:
            return web.events(job_id, last_event_id=after, timeout=40)
        except (httpx.HTTPError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
