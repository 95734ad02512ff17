"""Two web processes and two workers on one Redis: jobs go in through one, stream from the other."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from .conftest import Cluster

pytestmark = pytest.mark.redis


def test_upload_on_one_web_stream_from_the_other(cluster: Cluster) -> None:
    web_a, web_b = cluster.web(), cluster.web()
    cluster.worker(), cluster.worker()
    jobs = web_a.upload(*[(f"f{i}.xml", f"<r>{i}</r>".encode()) for i in range(6)])

    for job in jobs:
        events = web_b.events(job["id"])
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        assert events[0].data == {"job": job["id"], "status": "queued"}
        assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"
        output = events[-1].data["outputs"][0]
        body = httpx.get(web_a.url + output["url"], timeout=10)
        assert body.text.endswith("!") and body.text.upper() == body.text


def test_both_workers_take_jobs(cluster: Cluster) -> None:
    web = cluster.web()
    workers = [cluster.worker(), cluster.worker()]
    jobs = web.upload(*[(f"f{i}.xml", b"<r/>") for i in range(4)], pipeline="paced")
    for job in jobs:
        assert web.events(job["id"])[-1].data["status"] == "succeeded"
    deadline = time.monotonic() + 10  # RQ logs "Job OK" just after the job's last event
    while sum(ran := [w.log_path.read_text().count("Job OK") for w in workers]) < 4:
        assert time.monotonic() < deadline, f"jobs per worker: {ran}"
        time.sleep(0.1)
    assert all(ran), f"jobs per worker: {ran}"


def test_replay_from_last_event_id_on_another_web_process(cluster: Cluster) -> None:
    web_a, web_b = cluster.web(), cluster.web()
    cluster.worker()
    [job] = web_a.upload(("a.xml", b"<a/>"), pipeline="paced")
    everything = web_a.events(job["id"])
    middle = len(everything) // 2
    rest = web_b.events(job["id"], last_event_id=everything[middle - 1].id)
    assert rest == everything[middle:]
    gone = httpx.get(
        f"{web_b.url}/stream/{job['id']}",
        headers={"Last-Event-ID": str(everything[-1].id)},
        timeout=5,
    )
    assert gone.status_code == 204


def test_job_record_agrees_with_the_stream(cluster: Cluster) -> None:
    web_a, web_b = cluster.web(), cluster.web()
    cluster.worker()
    [job] = web_a.upload(("a.xml", b"<a/>"), pipeline="raising")
    events = web_b.events(job["id"])
    record = web_a.job(job["id"])
    assert record["status"] == "failed" == events[-1].data["status"]
    assert "on fire" in record["error"]
    assert record["last_event_id"] == events[-1].id


def test_cancel_through_one_web_process_reaches_the_worker(cluster: Cluster) -> None:
    web_a, web_b = cluster.web(), cluster.web()
    cluster.worker()
    [job] = web_a.upload(("a.xml", b"<a/>"), pipeline="long")
    _wait_status(web_a.job, job["id"], "running")
    response = httpx.post(f"{web_b.url}/api/jobs/{job['id']}/cancel", timeout=5)
    assert response.status_code == 202
    end = web_a.events(job["id"], timeout=20)[-1]
    assert end.event == "end" and end.data["status"] == "cancelled"


def test_queue_limit_counts_jobs_queued_through_every_web_process(cluster: Cluster) -> None:
    cluster.extra_env["XMLFLOW_MAX_QUEUED"] = "3"
    web_a, web_b = cluster.web(), cluster.web()  # no worker: everything stays queued
    web_a.upload(("1.xml", b"<a/>"), ("2.xml", b"<a/>"))
    web_b.upload(("3.xml", b"<a/>"))
    refused = httpx.post(web_b.url + "/upload", files={"file": ("4.xml", b"<a/>")}, timeout=10)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "queue_full"
    assert refused.headers["Retry-After"]


def test_worker_without_redis_url_refuses_clearly(tmp_path: object) -> None:
    env = {"PATH": "/usr/bin:/bin", "XMLFLOW_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "xmlflow", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "XMLFLOW_REDIS_URL" in done.stderr


def test_embedded_mode_does_not_import_redis_or_rq(tmp_path: object) -> None:
    code = (
        "import sys; from xmlflow.app import create_app; create_app(start=False); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'rq')))"
    )
    env = {"PATH": "/usr/bin:/bin", "XMLFLOW_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _wait_status(get: object, job_id: str, status: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get(job_id)  # type: ignore[operator]
        if job["status"] == status:
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {status}")
