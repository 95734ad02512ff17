"""Redis mode: a stream whose job vanished (``FLUSHALL``, a Redis restarted empty) ends;
a stream whose Redis is merely away waits for it, and goes on to the job's end.

The embedded cases, and the helpers, are in ``tests/integration/test_stream_vanished.py``.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import redis

from xmlflow.backends.redis import RedisStore

from ..integration.test_stream_vanished import (
    KEEPALIVE,
    assert_ended_as_gone,
    assert_reconnection_is_404,
    follow_raw,
)
from .conftest import Cluster

pytestmark = pytest.mark.redis


@pytest.fixture
def quick_keepalives(cluster: Cluster) -> Cluster:
    cluster.extra_env["XMLFLOW_SSE_KEEPALIVE"] = str(KEEPALIVE)
    return cluster


def test_flushall_ends_the_stream_of_a_queued_job(quick_keepalives: Cluster) -> None:
    web = quick_keepalives.web()  # no worker: the job stays queued, its stream open
    [job] = web.upload(("a.xml", b"<a/>"))
    url = web.url + job["stream_url"]
    flush = redis.Redis.from_url(quick_keepalives.redis.url).flushall
    lines, closed = follow_raw(url, lambda: flush(), KEEPALIVE * 5)
    assert_ended_as_gone(lines, closed, job["id"])
    assert_reconnection_is_404(url, job["id"])


def test_a_deleted_job_ends_a_several_job_stream_on_gunicorn(quick_keepalives: Cluster) -> None:
    web = quick_keepalives.web(web_workers=1)
    kept, gone = (job["id"] for job in web.upload(("a.xml", b"<a/>"), ("b.xml", b"<b/>")))
    url = f"{web.url}/api/events?job={kept}&job={gone}"
    store = RedisStore(redis.Redis.from_url(quick_keepalives.redis.url), retention=60, lease_ttl=4)
    lines, closed = follow_raw(url, lambda: store.delete(gone), KEEPALIVE * 5)
    assert_ended_as_gone(lines, closed, gone)
    assert_reconnection_is_404(url, gone)
    assert web.job(kept)["status"] == "queued"


def test_while_redis_is_down_the_stream_waits_and_then_sees_the_end(
    quick_keepalives: Cluster,
) -> None:
    """A failed look at the job is no proof that it is gone: the stream keeps waiting."""
    cluster = quick_keepalives
    web = cluster.web()
    [job] = web.upload(("a.xml", b"<a/>"))
    lines: list[str] = []

    def follow() -> None:
        timeout = httpx.Timeout(60, connect=5)
        with httpx.stream("GET", web.url + job["stream_url"], timeout=timeout) as response:
            lines.extend(response.iter_lines())

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(KEEPALIVE * 1.5)
    cluster.redis.stop()  # its append-only file keeps the job
    time.sleep(KEEPALIVE * 6)
    assert reader.is_alive(), f"the stream ended during the outage: {lines[-5:]}"
    cluster.redis.start()
    cluster.worker()
    reader.join(60)
    assert not reader.is_alive(), "the job's end did not end the stream"
    assert "event: end" in lines and not any(line.startswith(": gone") for line in lines)
    assert web.job(job["id"])["status"] == "succeeded"
