"""The REST API over real HTTP: jobs, options, errors, downloads, pipelines, health, metrics."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from ..conftest import TEST_STEPS, Server, write_config

# Only user steps and the built-in clean-up: these tests are about the API, not XML.
API_CONFIG = """
    SHOUT = {"id": "shout", "name": "Shout", "module": "run_shout", "options": {"suffix": "!"}}
    PIPELINES = {
        "default": [SHOUT, {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"}],
        "slow": [dict(SHOUT, delay=30)],
        "raising": [{"id": "explode", "name": "Explode", "module": "run_explode"}],
    }
"""


def start_server(root: Path, body: str = API_CONFIG, **env: str) -> Server:
    config = write_config(root / "conf", body, TEST_STEPS)
    return Server(config=config, data_dir=root / "data", env=env).start()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("api"), XMLFLOW_WORKERS="4")
    yield srv
    srv.stop()


def post_jobs(srv: Server, *files: tuple[str, bytes], **form: str) -> httpx.Response:
    parts = [("file", (name, body, "application/xml")) for name, body in files]
    return httpx.post(f"{srv.url}/api/jobs", files=parts, data=form, timeout=30)


def job_count(srv: Server) -> int:
    total: int = httpx.get(f"{srv.url}/api/jobs?limit=1").json()["total"]
    return total


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def test_upload_several_files_runs_each_as_a_job(api: Server) -> None:
    response = post_jobs(api, ("a.xml", b"<a>one</a>"), ("b.xml", b"<b>two</b>"))
    assert response.status_code == 202
    jobs = response.json()["jobs"]
    assert [set(j) for j in jobs] == [{"id", "url", "stream_url", "events_url"}] * 2
    finished = [api.wait_finished(j["id"]) for j in jobs]
    assert [j["status"] for j in finished] == ["succeeded", "succeeded"]
    assert [j["filename"] for j in finished] == ["a.xml", "b.xml"]
    body = httpx.get(api.url + finished[1]["outputs"][0]["url"]).content
    assert body == b"<B>TWO</B>!"


def test_per_job_options_override_the_configured_ones(api: Server) -> None:
    response = post_jobs(api, ("q.xml", b"<q/>"), options=json.dumps({"shout": {"suffix": "?"}}))
    assert response.status_code == 202, response.text
    job = api.wait_finished(response.json()["jobs"][0]["id"])
    assert job["options"] == {"shout": {"suffix": "?"}}
    assert httpx.get(api.url + job["outputs"][0]["url"]).content == b"<Q/>?"


@pytest.mark.parametrize(
    ("options", "status", "code"),
    [
        ('{"no_such_step": {"x": 1}}', 422, "unprocessable"),
        ('{"shout": "loud"}', 422, "unprocessable"),
        ("[1, 2]", 422, "unprocessable"),
        ('{"shout": {', 400, "bad_request"),
    ],
)
def test_bad_options_are_refused_and_create_no_job(
    api: Server, options: str, status: int, code: str
) -> None:
    before = job_count(api)
    error = assert_error(post_jobs(api, ("x.xml", b"<x/>"), options=options), status, code)
    if "no_such_step" in options:
        assert error["details"] == {"unknown": ["no_such_step"], "steps": ["shout", "cleanup"]}
    assert job_count(api) == before


def test_upload_errors_say_what_is_wrong(api: Server) -> None:
    assert_error(post_jobs(api, ("x.xml", b"<x/>"), pipeline="nope"), 400, "bad_request")
    no_file = httpx.post(f"{api.url}/api/jobs", data={"pipeline": "default"}, files={"x": b""})
    assert_error(no_file, 400, "bad_request")
    as_json = httpx.post(f"{api.url}/api/jobs", json={"file": "<x/>"})
    assert_error(as_json, 415, "unsupported_media_type")


def test_unknown_jobs_are_404_on_every_job_route(api: Server) -> None:
    missing = "0" * 32
    for method, path in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/cancel"),
        ("GET", "/events"),
        ("GET", "/outputs"),
        ("GET", "/outputs/x.txt"),
        ("GET", "/outputs.zip"),
    ]:
        response = httpx.request(method, f"{api.url}/api/jobs/{missing}{path}")
        assert_error(response, 404, "not_found")


def test_a_running_job_cannot_be_deleted_or_zipped_but_can_be_cancelled(api: Server) -> None:
    (job,) = post_jobs(api, ("s.xml", b"<s/>"), pipeline="slow").json()["jobs"]
    url = f"{api.url}/api/jobs/{job['id']}"
    assert_error(httpx.delete(url), 409, "conflict")
    assert_error(httpx.get(url + "/outputs.zip"), 409, "conflict")
    assert httpx.post(url + "/cancel").status_code == 202
    assert api.wait_finished(job["id"], timeout=10)["status"] == "cancelled"
    assert_error(httpx.post(url + "/cancel"), 409, "conflict")
    assert httpx.delete(url).status_code == 204
    assert_error(httpx.get(url), 404, "not_found")


def test_outputs_zip_is_streamed_and_holds_every_output(api: Server) -> None:
    big = b"<doc>" + b"<r>row</r>" * 300_000 + b"</doc>"
    (job,) = post_jobs(api, ("big.xml", big)).json()["jobs"]
    finished = api.wait_finished(job["id"])
    with httpx.stream("GET", f"{api.url}/api/jobs/{job['id']}/outputs.zip") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert "content-length" not in response.headers  # sent while it is being built
        assert 'filename="big-' in response.headers["content-disposition"]
        body = response.read()
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.namelist() == [o["name"] for o in finished["outputs"]] == ["big.upper.txt"]
    assert archive.read("big.upper.txt") == big.upper() + b"!"
    assert len(body) < len(big) // 10  # compressed


def test_list_jobs_filters_by_status_and_pipeline_and_pages(api: Server) -> None:
    (failed,) = post_jobs(api, ("f.xml", b"<f/>"), pipeline="raising").json()["jobs"]
    assert api.wait_finished(failed["id"])["status"] == "failed"
    page = httpx.get(f"{api.url}/api/jobs", params={"pipeline": "raising"}).json()
    assert failed["id"] in [j["id"] for j in page["jobs"]]
    assert {j["pipeline"] for j in page["jobs"]} == {"raising"}
    page = httpx.get(f"{api.url}/api/jobs", params={"status": "failed"}).json()
    assert {j["status"] for j in page["jobs"]} == {"failed"}
    one = httpx.get(f"{api.url}/api/jobs", params={"limit": 1, "offset": 1}).json()
    assert len(one["jobs"]) == 1 and one["total"] >= 2 and one["offset"] == 1
    assert_error(httpx.get(f"{api.url}/api/jobs?status=done"), 400, "bad_request")
    assert_error(httpx.get(f"{api.url}/api/jobs?limit=0"), 400, "bad_request")


def test_events_route_is_the_same_stream(api: Server) -> None:
    (job,) = post_jobs(api, ("e.xml", b"<e/>")).json()["jobs"]
    api.wait_finished(job["id"])
    with httpx.Client(timeout=30) as client:
        with connect_sse(client, "GET", api.url + job["events_url"]) as source:
            events = [(e.id, e.event, e.json()) for e in source.iter_sse() if e.data]
    assert events == [(str(e.id), e.event, e.data) for e in api.events(job["id"])]
    assert events[-1][1] == "end"


def test_pipelines_lists_names_and_steps(api: Server) -> None:
    body = httpx.get(f"{api.url}/api/pipelines").json()
    assert body["default"] == "default"
    steps = {p["name"]: [s["id"] for s in p["steps"]] for p in body["pipelines"]}
    assert steps == {"default": ["shout", "cleanup"], "slow": ["shout"], "raising": ["explode"]}
    slow = next(p for p in body["pipelines"] if p["name"] == "slow")
    assert slow["steps"][0] == {
        "id": "shout",
        "name": "Shout",
        "delay": 30.0,
        "error_chance": 0.0,
        "options": {"suffix": "!"},
        "upload_options": [
            {"name": "suffix", "type": "string", "default": "!", "help": "added to the text"}
        ],
    }


def test_health_is_ok_and_says_what_it_checked(api: Server) -> None:
    response = httpx.get(f"{api.url}/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["failed"] == [] and body["degraded"] == []
    assert set(body["checks"]) == {"store", "queue", "data_dir", "workers"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["workers"]["runner_threads"] == 4  # XMLFLOW_WORKERS


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    raise AssertionError(f"no sample {name} {labels} in:\n{text}")


def test_metrics_count_jobs_steps_bytes_and_open_streams(api: Server) -> None:
    before = httpx.get(f"{api.url}/metrics").text
    (job,) = post_jobs(api, ("m.xml", b"<m>12345</m>")).json()["jobs"]
    api.wait_finished(job["id"])
    (slow,) = post_jobs(api, ("w.xml", b"<w/>"), pipeline="slow").json()["jobs"]
    with httpx.Client(timeout=30) as client, client.stream("GET", api.url + slow["stream_url"]):
        time.sleep(0.2)
        during = httpx.get(f"{api.url}/metrics")
        httpx.post(f"{api.url}/api/jobs/{slow['id']}/cancel")
    assert during.headers["content-type"].startswith("text/plain")
    after = during.text
    assert metric(after, "xmlflow_open_streams") >= 1
    assert metric(after, "xmlflow_jobs", status="running") >= 1
    assert metric(after, "xmlflow_store_up") == 1
    for name, labels in [
        ("xmlflow_jobs", {"status": "succeeded"}),
        ("xmlflow_step_duration_seconds_count", {"step": "shout", "status": "succeeded"}),
        ("xmlflow_jobs_finished_total", {"pipeline": "default", "status": "succeeded"}),
    ]:
        assert metric(after, name, **labels) == _or_zero(before, name, labels) + 1
    bytes_name = "xmlflow_processed_bytes_total"
    grown = metric(after, bytes_name, status="succeeded") - _or_zero(
        before, bytes_name, {"status": "succeeded"}
    )
    assert grown == len(b"<m>12345</m>")


def _or_zero(text: str, name: str, labels: dict[str, str]) -> float:
    try:
        return metric(text, name, **labels)
    except AssertionError:
        return 0.0


def test_queue_full_is_503_with_retry_after_and_creates_no_job(tmp_path: Path) -> None:
    srv = start_server(tmp_path, XMLFLOW_WORKERS="1", XMLFLOW_MAX_QUEUED="1")
    try:
        running = post_jobs(srv, ("1.xml", b"<a/>"), pipeline="slow").json()["jobs"][0]
        _wait_status(srv, running["id"], "running")
        assert post_jobs(srv, ("2.xml", b"<a/>"), pipeline="slow").status_code == 202
        refused = post_jobs(srv, ("3.xml", b"<a/>"))
        assert_error(refused, 503, "queue_full")
        assert int(refused.headers["Retry-After"]) > 0
        assert job_count(srv) == 2
        health = httpx.get(f"{srv.url}/api/health")
        assert health.status_code == 503 and health.json()["failed"] == ["queue"]
        assert list((srv.data_dir / "incoming").iterdir()) == []  # the refused upload is gone
        # more files than can ever wait: not "try again", but "send fewer at a time"
        too_many = post_jobs(srv, ("4.xml", b"<a/>"), ("5.xml", b"<a/>"))
        assert_error(too_many, 413, "upload_too_large")
        assert "Retry-After" not in too_many.headers
        assert "uploads of 1 or fewer" in too_many.json()["error"]["message"]
        assert job_count(srv) == 2
        assert list((srv.data_dir / "incoming").iterdir()) == []
    finally:
        srv.stop()


def _wait_status(srv: Server, job_id: str, status: str) -> None:
    deadline = time.monotonic() + 10
    while srv.job(job_id)["status"] != status:
        assert time.monotonic() < deadline, srv.job(job_id)
        time.sleep(0.05)


def test_an_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    srv = start_server(tmp_path, XMLFLOW_MAX_UPLOAD_MB="0.01")
    try:
        response = post_jobs(srv, ("big.xml", b"<a>" + b"x" * 20_000 + b"</a>"))
        error = assert_error(response, 413, "request_entity_too_large")
        assert "XMLFLOW_MAX_UPLOAD_MB" in error["message"]
        assert job_count(srv) == 0
    finally:
        srv.stop()


def test_processing_steps_alone_is_the_default_pipeline(tmp_path: Path) -> None:
    config = """
        PROCESSING_STEPS = [
            {"id": "shout", "name": "Shout it", "module": "run_shout", "delay": 0,
             "error_chance": 0.0, "options": {"suffix": "."}},
        ]
    """
    srv = start_server(tmp_path, config)
    try:
        pipelines = httpx.get(f"{srv.url}/api/pipelines").json()["pipelines"]
        assert [(p["name"], [s["name"] for s in p["steps"]]) for p in pipelines] == [
            ("default", ["Shout it"])
        ]
        (job,) = post_jobs(srv, ("p.xml", b"<p/>")).json()["jobs"]
        finished = srv.wait_finished(job["id"])
        assert finished["pipeline"] == "default" and finished["status"] == "succeeded"
        assert httpx.get(srv.url + finished["outputs"][0]["url"]).content == b"<P/>."
    finally:
        srv.stop()
