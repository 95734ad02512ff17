"""Redis refusing writes (out of memory), paused, or restarted: nothing dies, nothing is lost.

Each case runs on this module's own redis-server, whose memory limit and process the
tests change (and put back).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from ..conftest import Event, Server
from .conftest import Cluster, RedisServer, Worker
from .test_distributed import _wait_status

pytestmark = pytest.mark.redis


@pytest.fixture
def outage_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """A cluster whose leases outlast the outages below (a busy machine is slow too)."""
    cluster.extra_env["XMLFLOW_LEASE_SECONDS"] = "20"
    client = redis.Redis.from_url(cluster.redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    yield cluster
    resume(cluster.redis)
    client.config_set("maxmemory", 0)


def out_of_memory(server: RedisServer) -> None:
    """Every write is refused with OOM from now on (reads still work)."""
    redis.Redis.from_url(server.url).config_set("maxmemory", 1)


def memory_back(server: RedisServer) -> None:
    redis.Redis.from_url(server.url).config_set("maxmemory", 0)


def resume(server: RedisServer) -> None:
    assert server.proc
    os.kill(server.proc.pid, signal.SIGCONT)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def health(web: Server) -> httpx.Response:
    return httpx.get(web.url + "/api/health", timeout=40)


def wait_healthy(web: Server, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (response := health(web)).status_code != 200:
        assert time.monotonic() < deadline, response.json()
        time.sleep(0.2)


def assert_alive(*workers: Worker) -> None:
    for w in workers:
        assert w.proc and w.proc.poll() is None, w.log_path.read_text()[-3000:]


def assert_one_clean_run(events: list[Event]) -> None:
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert [e.event for e in events].count("end") == 1
    assert events[-1].event == "end" and events[-1].data["status"] == "succeeded", events[-1]


def test_out_of_memory_refuses_uploads_and_workers_ride_it_out(outage_cluster: Cluster) -> None:
    cluster = outage_cluster
    web = cluster.web()
    busy = cluster.worker()
    [running] = web.upload(("a.xml", b"<a/>"), pipeline="paced")
    [waiting] = web.upload(("b.xml", b"<b/>"))  # behind it: one worker
    _wait_status(web.job, running["id"], "running")
    data = cluster.root / "data"
    before = files_under(data)

    out_of_memory(cluster.redis)
    late = cluster.worker()  # starts while Redis refuses its registration
    refused = httpx.post(
        web.url + "/upload", files=[("file", ("c.xml", b"<c/>", "application/xml"))], timeout=40
    )
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "backend_unavailable"
    assert "Redis" in refused.json()["error"]["message"]
    for told in (refused.text, health(web).text):  # the kind of outage, never Redis's text
        assert "maxmemory" not in told and "xmlflow:" not in told, told
    assert files_under(data) == before  # no source, no .part: nothing of the refused upload
    unhealthy = health(web)
    assert unhealthy.status_code == 503 and "store" in unhealthy.json()["failed"]
    time.sleep(4)  # long enough for both workers to meet the refusals
    assert_alive(busy, late)

    memory_back(cluster.redis)
    wait_healthy(web)
    [after] = web.upload(("d.xml", b"<d/>"))
    for job in (running, waiting, after):
        assert_one_clean_run(web.events(job["id"]))
    assert_alive(busy, late)
    assert sorted(p.name for p in (data / "jobs").iterdir()) == sorted(
        j["id"] for j in (running, waiting, after)
    )


def test_paused_redis_is_waited_out(outage_cluster: Cluster) -> None:
    cluster = outage_cluster
    web = cluster.web()
    workers = [cluster.worker(), cluster.worker()]
    jobs = web.upload(*[(f"{i}.xml", b"<a/>") for i in range(2)], pipeline="paced")
    _wait_status(web.job, jobs[0]["id"], "running")
    assert cluster.redis.proc
    os.kill(cluster.redis.proc.pid, signal.SIGSTOP)
    time.sleep(4)
    resume(cluster.redis)

    jobs += web.upload(("late.xml", b"<a/>"))
    for job in jobs:
        assert_one_clean_run(web.events(job["id"]))
    wait_healthy(web)
    assert_alive(*workers)


def test_restarted_redis_keeps_workers_working(outage_cluster: Cluster) -> None:
    cluster = outage_cluster
    web = cluster.web()
    workers = [cluster.worker(), cluster.worker()]
    [first] = web.upload(("a.xml", b"<a/>"))
    assert_one_clean_run(web.events(first["id"]))
    cluster.redis.restart(down_for=2)

    wait_healthy(web)
    jobs = web.upload(*[(f"{i}.xml", b"<a/>") for i in range(3)])
    for job in jobs:
        assert_one_clean_run(web.events(job["id"]))
    assert_alive(*workers)


def test_a_redis_restart_while_jobs_run_is_ridden_out(outage_cluster: Cluster) -> None:
    """Redis down for 3 s in the middle of two running jobs (with its append-only file,
    as the docs advise): they wait for it and succeed, once each."""
    cluster = outage_cluster
    web = cluster.web()
    workers = [cluster.worker(), cluster.worker()]
    jobs = web.upload(*[(f"{i}.xml", b"<a/>") for i in range(2)], pipeline="paced")
    for job in jobs:
        _wait_status(web.job, job["id"], "running")
    cluster.redis.restart(down_for=3)

    for job in jobs:
        assert_one_clean_run(web.events(job["id"]))
    assert_alive(*workers)


def test_a_worker_started_while_redis_is_down_waits_for_it(outage_cluster: Cluster) -> None:
    """A machine's boot order is nobody's promise: ``xmlflow worker`` started before
    Redis waits for it (backing off), then takes jobs, as after an outage."""
    cluster = outage_cluster
    cluster.redis.stop()
    try:
        worker = cluster.worker()
        deadline = time.monotonic() + 15  # its first attempt gives up after ~2.5 s of retries
        while "cannot reach Redis" not in worker.log_path.read_text():
            assert time.monotonic() < deadline, worker.log_path.read_text()
            time.sleep(0.2)
        assert_alive(worker)
    finally:
        cluster.redis.start()
    web = cluster.web()
    [job] = web.upload(("a.xml", b"<a/>"))
    assert_one_clean_run(web.events(job["id"]))
    assert_alive(worker)
    assert "cannot reach Redis" in worker.log_path.read_text()


def _pauses(worker: Worker) -> list[float]:
    """The pauses the worker announced after losing Redis, in order."""
    text = worker.log_path.read_text()
    return [
        float(line.rsplit(" in ", 1)[1].split()[0])
        for line in text.splitlines()
        if "worker lost Redis" in line and "starting again in" in line
    ]


def _registered(server: RedisServer) -> bool:
    try:
        return bool(redis.Redis.from_url(server.url).keys("rq:worker:*"))
    except redis.ConnectionError:
        return False


def _wait_registered(server: RedisServer, worker: Worker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _registered(server):
        assert time.monotonic() < deadline, worker.log_path.read_text()
        time.sleep(0.2)


def test_an_outage_after_a_long_one_is_met_with_the_first_pause(outage_cluster: Cluster) -> None:
    """Redis refusing writes makes RQ's worker quit, and each new worker that cannot
    register waits longer (1, 2, 4, 8 s...). One that came back and registered, then met
    a second, short outage, waits 1 s again: it waited the 30 s the long outage had
    reached, and queued jobs went without it for half a minute."""
    cluster = outage_cluster
    worker = cluster.worker()
    _wait_registered(cluster.redis, worker, 20)
    out_of_memory(cluster.redis)
    try:
        deadline = time.monotonic() + 60
        while not any(pause >= 4 for pause in _pauses(worker)):  # 1, 2, 4...
            assert time.monotonic() < deadline, worker.log_path.read_text()
            time.sleep(0.2)
    finally:
        memory_back(cluster.redis)
    deadline = time.monotonic() + 40
    while not _registered(cluster.redis) or "started with PID" not in _since_last_pause(worker):
        assert time.monotonic() < deadline, worker.log_path.read_text()
        time.sleep(0.2)
    time.sleep(1)  # its bootstrap done
    before = len(_pauses(worker))
    out_of_memory(cluster.redis)  # a second, short outage
    try:
        deadline = time.monotonic() + 30
        while len(_pauses(worker)) == before:
            assert time.monotonic() < deadline, worker.log_path.read_text()
            time.sleep(0.2)
    finally:
        memory_back(cluster.redis)
    assert _pauses(worker)[before] == 1, worker.log_path.read_text()
    assert_alive(worker)


def _since_last_pause(worker: Worker) -> str:
    return worker.log_path.read_text().rsplit("starting again in", 1)[-1]


def test_an_idle_worker_waits_for_redis_at_most_a_heartbeat_between_tries(
    outage_cluster: Cluster,
) -> None:
    """RQ's own tries to reach Redis while it waits for a job doubled to 60 s, and the
    wait carried over to the next outage: an idle worker slept a minute through a
    5-second one. Here no wait between tries is longer than 5 s."""
    cluster = outage_cluster
    worker = cluster.worker()
    _wait_registered(cluster.redis, worker, 20)
    cluster.redis.stop()
    try:
        time.sleep(9)  # waits of 1, 2, 4, then 8 (before) or 5, logged at about 7 s
    finally:
        cluster.redis.start()
    waits = [
        int(line.rsplit("retrying in ", 1)[1].split()[0])
        for line in worker.log_path.read_text().splitlines()
        if "could not connect to Redis instance" in line
    ]
    assert waits and max(waits) <= 5, worker.log_path.read_text()
    _wait_registered(cluster.redis, worker, 10)
    assert_alive(worker)
