"""``xmlflow jobs list|show|cancel|download`` against a real server, with and without a token."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from xmlflow.cli import main

from .conftest import TEST_STEPS, Server, write_config

CONFIG = """
    SHOUT = {"id": "shout", "name": "Shout", "module": "run_shout", "options": {"suffix": "!"}}
    PIPELINES = {"default": [SHOUT], "slow": [dict(SHOUT, delay=30)]}
"""
TOKEN = "jobs-cli-token"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cli-jobs")
    config = write_config(root / "conf", CONFIG, TEST_STEPS)
    server = Server(config=config, data_dir=root / "data", env={"XMLFLOW_API_TOKEN": TOKEN})
    server.start()
    yield server
    server.stop()


def jobs_cli(srv: Server, *args: str | Path, token: str | None = TOKEN) -> click.testing.Result:
    env = {"XMLFLOW_URL": srv.url, "XMLFLOW_API_TOKEN": token or ""}
    return CliRunner().invoke(main, ["jobs", *map(str, args)], env=env, catch_exceptions=False)


def submit(
    srv: Server, name: str, body: bytes, pipeline: str = "default", token: str = TOKEN
) -> str:
    """Upload one file over the API, as a client with ``token``; its job's id."""
    response = httpx.post(
        f"{srv.url}/api/jobs",
        files={"file": (name, body)},
        data={"pipeline": pipeline},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["jobs"][0]["id"]
    return job_id


def wait_done(srv: Server, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job: dict[str, object] = json.loads(jobs_cli(srv, "show", "--json", job_id).output)
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def test_list_and_show(srv: Server) -> None:
    job_id = submit(srv, "listed.xml", b"<l/>")
    wait_done(srv, job_id)
    listed = jobs_cli(srv, "list", "--status", "succeeded")
    assert listed.exit_code == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith(job_id))
    assert row.split()[1:3] == ["succeeded", "default"] and row.endswith("listed.xml")
    shown = jobs_cli(srv, "show", job_id)
    assert shown.exit_code == 0
    assert f"job {job_id}: succeeded" in shown.output
    assert "1. ✔ Shout (shout) succeeded" in shown.output
    assert "output: listed.upper.txt (5 bytes)" in shown.output


def test_download_each_output_or_one_zip(srv: Server, tmp_path: Path) -> None:
    job_id = submit(srv, "dl.xml", b"<dl/>")
    wait_done(srv, job_id)
    saved = jobs_cli(srv, "download", job_id, "--out", tmp_path)
    assert saved.exit_code == 0
    assert (tmp_path / "dl.upper.txt").read_bytes() == b"<DL/>!"
    zipped = jobs_cli(srv, "download", job_id, "--zip", "-o", tmp_path / "z")
    archive = zipfile.ZipFile(io.BytesIO((tmp_path / "z" / f"{job_id}.zip").read_bytes()))
    assert zipped.exit_code == 0 and archive.read("dl.upper.txt") == b"<DL/>!"


def test_cancel_a_running_job(srv: Server, tmp_path: Path) -> None:
    job_id = submit(srv, "slow.xml", b"<s/>", pipeline="slow")
    result = jobs_cli(srv, "cancel", job_id)
    assert result.exit_code == 0 and job_id in result.output
    assert wait_done(srv, job_id)["status"] == "cancelled"
    again = jobs_cli(srv, "cancel", job_id)
    assert again.exit_code == 1 and "has already ended" in again.output
    nothing = jobs_cli(srv, "download", job_id, "-o", tmp_path)
    assert nothing.exit_code == 1 and "cancelled" in nothing.output
    assert list(tmp_path.iterdir()) == []


def test_errors_are_the_server_s_messages(srv: Server) -> None:
    missing = jobs_cli(srv, "show", "0" * 32)
    assert missing.exit_code == 1 and "no job" in missing.output and "404" in missing.output
    refused = jobs_cli(srv, "list", token=None)
    assert refused.exit_code == 1 and "API token" in refused.output
    down = CliRunner().invoke(main, ["jobs", "--url", "http://127.0.0.1:9", "list"])
    assert down.exit_code == 1 and "cannot reach" in down.output
