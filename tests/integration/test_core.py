"""The seed's contract over real HTTP: upload, watch the stream, download, restart."""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import xmltodict

from ..conftest import TEST_CONFIG, TEST_STEPS, Server, write_config

DOCS = {
    "records.xml": b"""<?xml version="1.0"?>
<records>
  <!-- exported nightly -->
  <record id="1"><name>  Ada  </name><tags><tag>x</tag><tag>y</tag></tags></record>
  <record id="2"><name>Grace</name><empty/><note></note></record>
</records>""",
    "single.xml": b"<root><only>one</only></root>",
    "attrs.xml": b'<?xml version="1.0" encoding="UTF-8"?><cfg v="2"><opt k="a">1</opt>'
    b'<opt k="b"/><?pi ignore me?><txt>caf\xc3\xa9 &amp; cr\xc3\xa8me</txt></cfg>',
    "mixed.xml": b"<p>Hello <b>bold</b> world<i>it</i></p>",
    "ns.xml": b'<a:doc xmlns:a="urn:a" xmlns="urn:d"><a:item>1</a:item><item a:x="y">2</item>'
    b"</a:doc>",
}


def test_default_pipeline_event_sequence(server: Server) -> None:
    (job,) = server.upload(("records.xml", DOCS["records.xml"]))
    assert job["stream_url"] == f"/stream/{job['id']}"
    events = server.events(job["id"])
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    kinds = [(e.event, e.data.get("status")) for e in events if e.event != "progress"]
    assert kinds == [
        ("job", "queued"),
        ("job", "running"),
        ("step", "running"),
        ("step", "succeeded"),
        ("step", "running"),
        ("step", "succeeded"),
        ("end", "succeeded"),
    ]
    end = events[-1].data
    assert [o["name"] for o in end["outputs"]] == ["records.json"]
    step = events[2].data
    assert step == {
        "index": 0,
        "total": 2,
        "id": "process_xml",
        "name": "Convert",
        "status": "running",
    }


@pytest.mark.parametrize("name", sorted(DOCS))
def test_json_output_equals_xmltodict(server: Server, name: str) -> None:
    (job,) = server.upload((name, DOCS[name]))
    end = server.events(job["id"])[-1]
    assert end.data["status"] == "succeeded", end.data
    stem = name.removesuffix(".xml")
    response = httpx.get(f"{server.url}/api/jobs/{job['id']}/outputs/{stem}.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert json.dumps(response.json()) == json.dumps(xmltodict.parse(DOCS[name]))


def test_last_event_id_resumes_without_duplicates(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"), pipeline="paced")
    everything = server.events(job["id"])
    for cut in (1, 3, len(everything) - 1):
        resumed = server.events(job["id"], last_event_id=cut)
        assert [e.id for e in resumed] == [e.id for e in everything[cut:]]
        assert resumed == everything[cut:]


def test_reconnect_mid_job_resumes_at_next_id(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"), pipeline="paced")
    seen = []
    with httpx.stream("GET", f"{server.url}/stream/{job['id']}", timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                seen.append(int(line[4:]))
            if len(seen) == 3:
                break
    rest = server.events(job["id"], last_event_id=seen[-1])
    assert rest[0].id == seen[-1] + 1
    assert rest[-1].event == "end"


def test_stream_after_end_replays_everything(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"))
    live = server.events(job["id"])
    server.wait_finished(job["id"])
    assert server.events(job["id"]) == live
    seed_form = httpx.get(f"{server.url}/stream?job={job['id']}", timeout=10)
    assert seed_form.text.count("event: ") == len(live)


def test_reconnect_after_end_gets_204(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"))
    last = server.events(job["id"])[-1]
    response = httpx.get(
        f"{server.url}/stream/{job['id']}", headers={"Last-Event-ID": str(last.id)}, timeout=10
    )
    assert response.status_code == 204


def test_stream_headers_retry_and_unknown_job(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"))
    response = httpx.get(f"{server.url}/stream/{job['id']}", timeout=10)
    assert response.headers["cache-control"] == "no-cache, no-store"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "retry: " in response.text
    missing = httpx.get(f"{server.url}/stream/{'0' * 32}", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_error_chance_one_fails_clearly(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"), pipeline="flaky")
    events = server.events(job["id"])
    failed = [e.data for e in events if e.event == "step" and e.data["status"] == "failed"]
    assert len(failed) == 1 and "injected" in failed[0]["error"]
    skipped = [e.data["id"] for e in events if e.event == "step" and e.data["status"] == "skipped"]
    assert skipped == ["cleanup"]
    assert events[-1].data["status"] == "failed" and "injected" in events[-1].data["error"]
    assert events[-1].data["outputs"] == []


def test_not_well_formed_xml_names_line_and_column(server: Server) -> None:
    (job,) = server.upload(("bad.xml", b"<a>\n  <b>text</c>\n</a>"))
    end = server.events(job["id"])[-1].data
    assert end["status"] == "failed"
    assert end["error"].startswith("line 2, column ")


def test_user_step_in_processing_steps_runs(server: Server) -> None:
    (job,) = server.upload(("note.txt", b"quiet please"), pipeline="custom")
    end = server.events(job["id"])[-1].data
    assert end["status"] == "succeeded"
    assert httpx.get(server.url + end["outputs"][0]["url"]).text == "QUIET PLEASE!"


def test_raising_step_message_reaches_the_user(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a/>"), pipeline="raising")
    job_state = server.wait_finished(job["id"])
    assert job_state["status"] == "failed"
    assert job_state["error"] == "RuntimeError: the disk of records is on fire"
    assert [s["status"] for s in job_state["steps"]] == ["failed", "skipped"]


def test_source_is_deleted_after_success_and_failure(server: Server) -> None:
    """Only outputs stay: a job that kept none keeps no folder (tests/test_job_folders.py)."""
    ok, bad = server.upload(("ok.xml", b"<a>1</a>"), ("bad.xml", b"<a>"))
    kept = {ok["id"]: ["out"], bad["id"]: None}
    for job in (ok, bad):
        server.wait_finished(job["id"])
        job_dir = server.data_dir / "jobs" / job["id"]
        assert (sorted(os.listdir(job_dir)) if job_dir.exists() else None) == kept[job["id"]]
    assert list((server.data_dir / "incoming").iterdir()) == []


def test_cancel_a_running_job(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"), pipeline="slow")
    deadline = time.monotonic() + 10
    while server.job(job["id"])["steps"][0]["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    response = httpx.post(f"{server.url}/api/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    state = server.wait_finished(job["id"], timeout=5)
    assert time.monotonic() - started < 2
    assert state["status"] == "cancelled"
    assert server.events(job["id"])[-1].data["status"] == "cancelled"
    again = httpx.post(f"{server.url}/api/jobs/{job['id']}/cancel")
    assert again.status_code == 409


def test_twenty_uploads_at_once_all_finish(server: Server) -> None:
    def one(i: int) -> str:
        (job,) = server.upload((f"doc{i}.xml", f"<doc><n>{i}</n></doc>".encode()))
        return str(job["id"])

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(one, range(20)))
    assert len(set(ids)) == 20
    for i, job_id in enumerate(ids):
        end = server.events(job_id)[-1].data
        assert end["status"] == "succeeded"
        body = httpx.get(server.url + end["outputs"][0]["url"]).json()
        assert body == {"doc": {"n": str(i)}}


def test_job_status_and_list(server: Server) -> None:
    (job,) = server.upload(("status.xml", b"<a>1</a>"))
    server.events(job["id"])
    state = server.job(job["id"])
    assert state["status"] == "succeeded"
    assert state["filename"] == "status.xml"
    assert [s["status"] for s in state["steps"]] == ["succeeded", "succeeded"]
    assert all(s["elapsed"] is not None for s in state["steps"])
    assert state["outputs"][0]["url"] == f"/api/jobs/{job['id']}/outputs/status.json"
    assert state["created_at"] <= state["started_at"] <= state["ended_at"]
    listing = httpx.get(f"{server.url}/api/jobs?limit=1").json()
    assert listing["jobs"][0]["id"] == job["id"] and listing["total"] >= 1


def test_client_file_name_is_never_a_path(server: Server) -> None:
    (job,) = server.upload(("../../etc/evil.xml", b"<a>1</a>"))
    end = server.events(job["id"])[-1].data
    assert server.job(job["id"])["filename"] == "evil.xml"
    assert [o["name"] for o in end["outputs"]] == ["evil.json"]
    assert not (server.data_dir.parent / "etc").exists()


def test_unknown_pipeline_and_missing_file_are_400(server: Server) -> None:
    bad = httpx.post(
        f"{server.url}/upload", files={"file": ("a.xml", b"<a/>")}, data={"pipeline": "nope"}
    )
    assert bad.status_code == 400 and "nope" in bad.json()["error"]["message"]
    wrong_field = httpx.post(f"{server.url}/upload", files={"upload": ("a.xml", b"<a/>")})
    assert wrong_field.status_code == 400
    assert "'file'" in wrong_field.json()["error"]["message"]
    assert list((server.data_dir / "incoming").iterdir()) == []


def test_page_has_the_upload_form(server: Server) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200
    assert 'type="file"' in page.text and "multiple" in page.text
    assert httpx.get(server.url + "/static/app.js").status_code == 200


@pytest.fixture
def fresh(tmp_path: Path) -> Server:
    config = write_config(tmp_path / "conf", TEST_CONFIG, TEST_STEPS)
    return Server(config=config, data_dir=tmp_path / "data")


def test_upload_over_the_limit_is_413_and_leaves_nothing(fresh: Server) -> None:
    fresh.env["XMLFLOW_MAX_UPLOAD_MB"] = "0.01"
    fresh.start()
    try:
        big = b"<a>" + b"x" * 50_000 + b"</a>"
        response = httpx.post(f"{fresh.url}/upload", files={"file": ("big.xml", big)}, timeout=30)
        assert response.status_code == 413
        assert "limit" in response.json()["error"]["message"]
        assert list((fresh.data_dir / "incoming").iterdir()) == []
        assert list((fresh.data_dir / "jobs").iterdir()) == []
        ok = httpx.post(f"{fresh.url}/upload", files={"file": ("s.xml", b"<a/>")}, timeout=30)
        assert ok.status_code == 202
    finally:
        fresh.stop()


def test_killed_server_reports_running_job_interrupted(fresh: Server) -> None:
    fresh.start()
    try:
        (running,) = fresh.upload(("a.xml", b"<a>1</a>"), pipeline="slow")
        deadline = time.monotonic() + 10
        while fresh.job(running["id"])["steps"][0]["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        fresh.kill()
        fresh.start()
        events = fresh.events(running["id"], timeout=20)
        assert events[-1].event == "end"
        assert events[-1].data["status"] == "interrupted"
        job = fresh.job(running["id"])
        assert job["status"] == "interrupted"
        # An ended job shows no step still running: the one cut short failed with the reason.
        step = job["steps"][0]
        assert step["status"] == "failed" and step["error"] == job["error"], step
        assert not (fresh.data_dir / "jobs" / running["id"] / "source").exists()
    finally:
        fresh.stop()


def test_queued_jobs_run_after_restart_with_their_pipeline(fresh: Server) -> None:
    fresh.env["XMLFLOW_WORKERS"] = "1"
    fresh.start()
    try:
        (blocker,) = fresh.upload(("a.xml", b"<a>1</a>"), pipeline="slow")
        (waiting,) = fresh.upload(("b.xml", b"<b>2</b>"), pipeline="custom")
        assert fresh.job(waiting["id"])["status"] == "queued"
        fresh.kill()
        fresh.start()
        end = fresh.events(waiting["id"], timeout=20)[-1].data
        assert end["status"] == "succeeded"
        assert [o["name"] for o in end["outputs"]] == ["b.upper.txt"]
        assert fresh.job(blocker["id"])["status"] == "interrupted"
    finally:
        fresh.stop()


def test_retention_sweep_removes_old_jobs(fresh: Server) -> None:
    fresh.env.update({"XMLFLOW_RETENTION_HOURS": "0.0003", "XMLFLOW_SWEEP_INTERVAL": "0.2"})
    fresh.start()
    try:
        (job,) = fresh.upload(("a.xml", b"<a>1</a>"))
        url = fresh.url + fresh.events(job["id"])[-1].data["outputs"][0]["url"]
        assert httpx.get(url).status_code == 200
        deadline = time.monotonic() + 10
        while httpx.get(f"{fresh.url}/api/jobs/{job['id']}").status_code != 404:
            assert time.monotonic() < deadline, "the sweep did not remove the job"
            time.sleep(0.2)
        assert httpx.get(url).status_code == 404
        assert not (fresh.data_dir / "jobs" / job["id"]).exists()
    finally:
        fresh.stop()


def test_events_are_json_lines(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"))
    raw = httpx.get(f"{server.url}/stream/{job['id']}", timeout=10).text
    for line in raw.splitlines():
        if line.startswith("data: "):
            json.loads(line[6:])


def test_many_listeners_see_the_same_events(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"), pipeline="paced")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: server.events(job["id"]), range(6)))
    assert all(r == results[0] for r in results)
    assert results[0][-1].event == "end"


def test_keepalive_comments_while_nothing_happens(fresh: Server) -> None:
    fresh.env["XMLFLOW_SSE_KEEPALIVE"] = "0.3"
    fresh.start()
    try:
        (job,) = fresh.upload(("a.xml", b"<a>1</a>"), pipeline="slow")
        comments = 0
        with httpx.stream("GET", f"{fresh.url}/stream/{job['id']}", timeout=10) as response:
            for line in response.iter_lines():
                comments += line == ": keepalive"
                if comments == 3:
                    break
        assert comments == 3
        httpx.post(f"{fresh.url}/api/jobs/{job['id']}/cancel")
    finally:
        fresh.stop()


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_large_upload_is_streamed_to_disk_not_memory(fresh: Server) -> None:
    fresh.start()
    try:
        assert fresh.proc is not None
        before = _peak_rss_kib(fresh.proc.pid)
        chunk = b"<r>" + b"x" * (1 << 20) + b"</r>"

        def body() -> Iterator[bytes]:
            yield b'--B\r\nContent-Disposition: form-data; name="pipeline"\r\n\r\nslow\r\n'
            yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.xml"\r\n'
            yield b"Content-Type: application/xml\r\n\r\n<big>"
            for _ in range(150):
                yield chunk
            yield b"</big>\r\n--B--\r\n"

        response = httpx.post(
            f"{fresh.url}/upload",
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=B"},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["jobs"][0]["id"]
        assert fresh.job(job_id)["pipeline"] == "slow"
        assert fresh.job(job_id)["size"] == 150 * len(chunk) + len(b"<big></big>")
        grown_mib = (_peak_rss_kib(fresh.proc.pid) - before) / 1024
        assert grown_mib < 40, f"the server grew by {grown_mib:.0f} MiB for a 150 MiB upload"
        httpx.post(f"{fresh.url}/api/jobs/{job_id}/cancel")
    finally:
        fresh.stop()


def test_sigterm_ends_running_jobs_interrupted_and_keeps_queued_ones(fresh: Server) -> None:
    fresh.env["XMLFLOW_WORKERS"] = "1"
    fresh.start()
    try:
        (running,) = fresh.upload(("a.xml", b"<a>1</a>"), pipeline="slow")
        (waiting,) = fresh.upload(("b.xml", b"<b>2</b>"))
        deadline = time.monotonic() + 10
        while fresh.job(running["id"])["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert fresh.proc is not None
        started = time.monotonic()
        fresh.proc.terminate()
        assert fresh.proc.wait(10) is not None
        assert time.monotonic() - started < 5
        fresh.start()
        assert fresh.job(running["id"])["status"] == "interrupted"
        assert fresh.events(waiting["id"], timeout=20)[-1].data["status"] == "succeeded"
    finally:
        fresh.stop()
