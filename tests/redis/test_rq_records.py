"""What RQ records of xmlflow's runs: a run xmlflow fenced deliberately is no RQ failure.

A worker paused past its lease has its job retried on another worker; the paused run,
resumed, finds itself superseded and stops. The xmlflow job ends fine, so RQ must
record no failure: no ERROR or traceback in the workers' logs, nothing in RQ's failed
registry; the stale run says in one INFO line that it was superseded.
"""

from __future__ import annotations

import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry

from xmlflow.backends.redis.keys import QUEUE_NAME

from ..conftest import write_config
from .conftest import REDIS_STEPS, Cluster
from .test_fencing import (
    FENCED_CONFIG,
    LEASE,
    _pause_running_job,
    _resume,
    _wait_for_stale_run_to_go,
    _wait_until,
)

pytestmark = pytest.mark.redis


def test_a_superseded_run_and_its_retry_leave_no_rq_failure(cluster: Cluster) -> None:
    write_config(cluster.root / "conf", FENCED_CONFIG, REDIS_STEPS)
    cluster.extra_env |= {"XMLFLOW_LEASE_SECONDS": str(LEASE), "XMLFLOW_RETRIES": "1"}
    web = cluster.web()
    first = cluster.worker()
    [job] = web.upload(("a.xml", b"<a>text</a>"), pipeline="pausable")
    job_id = job["id"]
    _wait_until(web, job_id, lambda j: j["status"] == "running")
    second = cluster.worker()  # idle until the retry
    paused = _pause_running_job(web, first, job_id)
    try:
        _wait_until(web, job_id, lambda j: j["attempt"] == 2, timeout=LEASE * 5)
    finally:
        _resume(paused)
    _wait_for_stale_run_to_go(first)
    assert web.wait_finished(job_id)["status"] == "succeeded"
    _wait_for_stale_run_to_go(second)  # RQ's bookkeeping of the retry is done too

    logs = {w.log_path.name: w.log_path.read_text() for w in (first, second)}
    for name, text in logs.items():
        assert " ERROR " not in text and "Traceback" not in text, f"{name}:\n{text}"
    said = f" INFO xmlflow.jobrun: job {job_id}: attempt 1 superseded, stopped: "
    assert [said in line for line in logs["worker-0.log"].splitlines()].count(True) == 1
    queue = Queue(QUEUE_NAME, connection=redis.Redis.from_url(cluster.redis.url))
    assert FailedJobRegistry(queue=queue).get_job_ids() == []
