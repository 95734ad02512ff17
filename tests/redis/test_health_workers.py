"""``/api/health`` in Redis mode says whether anyone runs the jobs.

With no ``xmlflow worker`` the uploads are taken and wait; health must say so
(``degraded``, still 200: the web node serves streams and downloads all the same) with
the number of live workers and the queue's length, and be ``ok`` again once a worker
has run them.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ..conftest import Server
from .conftest import Cluster

pytestmark = pytest.mark.redis


def health(web: Server) -> tuple[int, dict[str, Any]]:
    response = httpx.get(web.url + "/api/health", timeout=30)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def wait_health(web: Server, status: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (answer := health(web))[1]["status"] != status:
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)
    assert answer[0] == 200
    return answer[1]


def test_health_is_degraded_while_jobs_wait_for_a_worker(cluster: Cluster) -> None:
    web = cluster.web()
    code, idle = health(web)
    assert code == 200 and idle["status"] == "ok" and idle["degraded"] == []
    assert idle["checks"]["workers"] == {"ok": True, "rq_workers": 0, "queue_length": 0}

    [job] = web.upload(("a.xml", b"<a/>"))
    code, waiting = health(web)
    assert code == 200, "no worker is no reason to take this web node out of rotation"
    assert waiting["status"] == "degraded" and waiting["failed"] == []
    assert waiting["degraded"] == ["workers"]
    workers = waiting["checks"]["workers"]
    assert workers["rq_workers"] == 0 and workers["queue_length"] == 1 and workers["degraded"]
    assert workers["warning"] == "1 job(s) queued and no rq_workers alive: they wait"

    worker = cluster.worker()
    assert web.wait_finished(job["id"])["status"] == "succeeded"
    running = wait_health(web, "ok")
    assert running["checks"]["workers"] == {"ok": True, "rq_workers": 1, "queue_length": 0}

    worker.stop()  # SIGTERM: RQ's worker leaves its registry as it goes
    web.upload(("b.xml", b"<b/>"))
    stopped = wait_health(web, "degraded")
    assert stopped["checks"]["workers"]["rq_workers"] == 0
    assert stopped["checks"]["workers"]["queue_length"] == 1
