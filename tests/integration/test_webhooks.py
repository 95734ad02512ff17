"""Webhooks through ``xmlflow serve`` (embedded mode) and a real receiver on a free port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import Server, free_port
from ..webhook_receiver import Receiver, check_signature

SECRET = "s3cret-for-the-tests"
BOOKS = b'<?xml version="1.0"?><catalog><book id="1"><title>Dune</title></book></catalog>'
BACKOFF = 0.2


def hooked_server(tmp: Path, url: str, **env: str) -> Server:
    settings = {
        "XMLFLOW_WEBHOOK_URL": url,
        "XMLFLOW_WEBHOOK_SECRET": SECRET,
        "XMLFLOW_WEBHOOK_BACKOFF": str(BACKOFF),
        "XMLFLOW_WEBHOOK_TIMEOUT": "2",
        **env,
    }
    return Server(config=None, data_dir=tmp / "data", env=settings)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_a_delivery_is_signed_and_retried_with_growing_delays(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.script = lambda n, tries: ("500", "close")[n] if n < 2 else "ok"
    receiver.start()
    server = hooked_server(tmp_path, receiver.url).start()
    try:
        (job,) = server.upload(("books.xml", BOOKS))
        finished = server.wait_finished(job["id"])
        (accepted,) = receiver.wait_accepted(1)
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
    finally:
        server.stop()

    tries = receiver.received
    assert [t.answer for t in tries] == ["500", "close", "ok"]
    assert {t.delivery for t in tries} == {f"{job['id']}-{finished['last_event_id']}"}
    assert [t.headers["x-xmlflow-attempt"] for t in tries] == ["1", "2", "3"]
    delays = [float(d) for d in re.findall(r"next try in ([0-9.]+) s", server.log())]
    assert len(delays) == 2 and BACKOFF <= delays[0] < delays[1], delays  # growing
    gaps = [tries[1].at - tries[0].at, tries[2].at - tries[1].at]
    assert gaps[0] >= BACKOFF and gaps[1] >= 2 * BACKOFF, gaps  # and waited for
    for t in tries:
        check_signature(SECRET, t)
        assert t.body == accepted.body  # the same body every time, frozen at the end
    assert accepted.headers["content-type"] == "application/json"
    assert accepted.headers["x-xmlflow-event"] == "job.ended"

    payload = accepted.payload
    assert payload["id"] == accepted.delivery and payload["type"] == "job.ended"
    sent = payload["job"]
    assert sent["id"] == job["id"] and sent["status"] == "succeeded" and sent["error"] is None
    assert sent["pipeline"] == "default" and sent["filename"] == "books.xml"
    assert sent["size"] == len(BOOKS)
    assert sent["created_at"] <= sent["started_at"] <= sent["ended_at"]
    assert sent["ended_at"] == finished["ended_at"]
    assert [o["name"] for o in sent["outputs"]] == [o["name"] for o in finished["outputs"]]
    assert sent["outputs"][0]["url"] == f"/api/jobs/{job['id']}/outputs/books.json"

    assert 'xmlflow_webhook_deliveries_total{outcome="delivered"} 1.0' in metrics
    assert 'xmlflow_webhook_deliveries_total{outcome="failed"} 2.0' in metrics
    log = server.log()
    assert "try 1 failed: HTTP 500: oops" in log
    assert f"webhook {accepted.delivery} (job {job['id']}) delivered on try 3" in log


def test_a_server_killed_mid_delivery_delivers_again_after_its_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.script = lambda n, tries: "hang" if n == 0 else "ok"
    receiver.start()
    server = hooked_server(tmp_path, receiver.url).start()
    try:
        (job,) = server.upload(("books.xml", BOOKS))
        receiver.wait_received(1)  # the job has ended; its POST is under way
        server.kill()
    finally:
        server.stop()
    assert receiver.accepted() == []

    again = hooked_server(tmp_path, receiver.url).start()
    try:
        (accepted,) = receiver.wait_accepted(1)
        assert again.job(job["id"])["status"] == "succeeded"
    finally:
        again.stop()
    first, second = receiver.received
    assert first.delivery == second.delivery == accepted.delivery
    assert first.body == second.body and second.headers["x-xmlflow-attempt"] == "2"
    check_signature(SECRET, second)
    assert accepted.payload["job"]["id"] == job["id"]


def test_a_receiver_down_for_a_while_gets_the_delivery_when_it_is_back(tmp_path: Path) -> None:
    receiver = Receiver(script=lambda n, tries: "302" if n == 0 else "ok")  # not listening yet
    server = hooked_server(tmp_path, receiver.url).start()
    try:
        jobs = [server.upload((f"b{i}.xml", BOOKS))[0] for i in range(2)]
        for job in jobs:
            server.wait_finished(job["id"])
        deadline = time.monotonic() + 20
        while server.log().count("ConnectError") < 4:  # both tried, at least twice each
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        receiver.start()
        accepted = receiver.wait_accepted(2)
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
    finally:
        server.stop()
        receiver.stop()
    assert sorted(r.payload["job"]["id"] for r in accepted) == sorted(j["id"] for j in jobs)
    assert "HTTP 302 (redirects are not followed)" in server.log()
    assert {r.path for r in receiver.received} == {"/hook"}  # never to /elsewhere
    assert "xmlflow_webhooks_pending 0.0" in metrics


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"XMLFLOW_WEBHOOK_URL": "ftp://example.com/hook"}, "must be an http:// or https:// URL"),
        ({"XMLFLOW_WEBHOOK_URL": "http://example.com/hook"}, "needs XMLFLOW_WEBHOOK_SECRET"),
        ({"XMLFLOW_WEBHOOK_URL": "http://u:p@example.com/"}, "must not hold credentials"),
    ],
)
def test_a_bad_webhook_setting_stops_start_up_with_its_reason(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xmlflow", "serve", "--port", str(free_port())],
        env={**os.environ, "XMLFLOW_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
