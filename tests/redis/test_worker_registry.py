"""``/api/health``'s count of live ``xmlflow worker`` processes follows the truth.

RQ registers a worker once, at its start, and a worker's heartbeat only pushes back the
expiry of its record: after ``FLUSHALL`` or a restart of a Redis that keeps nothing on
disk, live workers went on taking jobs but counted 0 (health ``degraded`` for good);
and a worker killed with ``kill -9`` counted for 8 minutes (RQ's worker TTL). Each
heartbeat now registers the worker again, and its record outlives a heartbeat by
``WORKER_TTL`` only, while a busy worker's heartbeat goes on during its job.

The Redis here keeps nothing on disk (``--save '' --appendonly no``), as the
operator's did.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from xmlflow.backends.redis.worker import HEARTBEAT_INTERVAL, WORKER_TTL

from ..conftest import TEST_STEPS, Server, write_config
from .conftest import REDIS_STEPS, Cluster, RedisServer, _redis_binary_or_skip

pytestmark = pytest.mark.redis

CONFIG = """
    PIPELINES = {
        "default": [
            {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"},
        ],
        "long": [
            {"id": "tick", "name": "Tick", "module": "run_tick", "options": {"ticks": 200}},
        ],
    }
"""
PORTS = range(6350, 6400)  # this test module's own redis-servers


def _port_in_range() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


@pytest.fixture
def volatile(tmp_path: Path) -> Iterator[Cluster]:
    _redis_binary_or_skip()
    server = RedisServer(tmp_path / "redis", port=_port_in_range(), persistent=False).start()
    write_config(tmp_path / "conf", CONFIG, {**TEST_STEPS, "tick": REDIS_STEPS["tick"]})
    cluster = Cluster(tmp_path, server)
    yield cluster
    cluster.stop()
    server.stop()


def workers_check(web: Server) -> dict[str, Any]:
    body = httpx.get(web.url + "/api/health", timeout=30).json()
    check: dict[str, Any] = body["checks"]["workers"]
    return check


def wait_workers(web: Server, count: int, within: float) -> float:
    """Seconds until health counts ``count`` live workers; fails after ``within``."""
    start = time.monotonic()
    while (live := workers_check(web)["rq_workers"]) != count:
        assert time.monotonic() - start < within, f"{live} workers, not {count}"
        time.sleep(0.2)
    return time.monotonic() - start


def converts(web: Server, name: str) -> None:
    """A real XML file uploaded now runs and gives the right JSON."""
    [job] = web.upload((name, b'<order id="7"><item>pen</item><item>ink</item></order>'))
    done = web.wait_finished(job["id"], timeout=20)
    assert done["status"] == "succeeded", done
    [output] = done["outputs"]
    body = json.loads(httpx.get(web.url + output["url"], timeout=10).content)
    assert body == {"order": {"@id": "7", "item": ["pen", "ink"]}}


def test_live_workers_count_again_soon_after_flushall(volatile: Cluster) -> None:
    web = volatile.web()
    volatile.worker(), volatile.worker()
    wait_workers(web, 2, within=15)
    converts(web, "before.xml")

    redis.Redis.from_url(volatile.redis.url).flushall()
    assert workers_check(web)["rq_workers"] < 2  # what the operator saw, for good
    wait_workers(web, 2, within=HEARTBEAT_INTERVAL + 5)
    client = redis.Redis.from_url(volatile.redis.url)
    records = [client.hgetall(key) for key in client.scan_iter("rq:worker:*")]
    assert len(records) == 2 and all(b"birth" in r and b"queues" in r for r in records)
    converts(web, "after.xml")
    assert workers_check(web) == {"ok": True, "rq_workers": 2, "queue_length": 0}


def test_live_workers_count_again_after_redis_restarts_empty(volatile: Cluster) -> None:
    web = volatile.web()
    volatile.worker()
    wait_workers(web, 1, within=15)

    volatile.redis.restart(down_for=0.5)
    wait_workers(web, 1, within=HEARTBEAT_INTERVAL + 10)
    converts(web, "after-restart.xml")


def test_a_killed_worker_stops_counting_and_a_busy_one_goes_on(volatile: Cluster) -> None:
    web = volatile.web()
    busy, idle = volatile.worker(), volatile.worker()
    wait_workers(web, 2, within=15)
    # 200 ticks of 0.12 s: 24 s, past WORKER_TTL
    [job] = web.upload(("long.xml", b"<r/>"), pipeline="long")
    deadline = time.monotonic() + 10
    while not busy.horse_pids() and not idle.horse_pids():
        assert time.monotonic() < deadline, "no worker took the job"
        time.sleep(0.1)
    if idle.horse_pids():
        busy, idle = idle, busy

    idle.kill_with_horse()
    wait_workers(web, 1, within=WORKER_TTL + 5)
    # the busy worker's record outlives several TTLs without a gap while its job runs
    while web.job(job["id"])["status"] == "running":
        assert workers_check(web)["rq_workers"] == 1
        time.sleep(0.5)
    assert web.job(job["id"])["status"] == "succeeded"
    assert workers_check(web)["rq_workers"] == 1


def test_flushall_while_a_job_runs_leaves_rq_nothing_to_complain_of(volatile: Cluster) -> None:
    web = volatile.web()
    worker = volatile.worker()
    wait_workers(web, 1, within=15)
    web.upload(("long.xml", b"<r/>"), pipeline="long")
    deadline = time.monotonic() + 10
    while not worker.horse_pids():
        assert time.monotonic() < deadline, "the worker did not take the job"
        time.sleep(0.1)
    time.sleep(0.5)
    client = redis.Redis.from_url(volatile.redis.url)
    client.flushall()

    # the run is fenced (its job is gone), the worker counts again and takes new jobs
    wait_workers(web, 1, within=HEARTBEAT_INTERVAL + 5)
    converts(web, "after.xml")
    time.sleep(1)  # RQ's "Job OK" comes just after the job's end
    log = worker.log_path.read_text()
    assert "ERROR rq.worker" not in log and "InvalidJobOperation" not in log, log
    assert "its record was lost from Redis while it ran" in log
    left = sorted(k.decode() for k in client.scan_iter("rq:*"))
    assert [k for k in left if k.startswith(("rq:job:", "rq:failed:", "rq:results:"))] == []
    assert [k for k in left if "intermediate" in k] == []
