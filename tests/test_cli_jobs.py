"""``xmlflow jobs list|show|cancel|download`` against a real server, with and without a token."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from xmlflow.cli import main

from .conftest import TEST_STEPS, Server, free_port, write_config

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


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``xmlflow`` as a real process, in an 80-column terminal."""
    return subprocess.run(
        [sys.executable, "-m", "xmlflow", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def error_line(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The message of the one line a failed ``xmlflow`` process wrote on stderr:
    ``python -m xmlflow jobs show: error: <message>``, no traceback, nothing else."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    prefix = f"xmlflow {command}: error: "
    assert prefix in lines[0], lines[0]
    return lines[0].split(prefix, 1)[1]


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


def test_each_refusal_is_one_line_and_exit_1(srv: Server) -> None:
    """401 (no token, a wrong one: said in the command line's terms, not the page's
    "sign in"), 404, 409: the request failed, exit 1, ``xmlflow jobs X: error: …``."""
    ended = submit(srv, "ended.xml", b"<e/>")
    wait_done(srv, ended)
    url = ["--url", srv.url]
    for args, said in [
        (
            ["jobs", "list", *url],
            "this server needs its API token: pass --token TOKEN or set XMLFLOW_API_TOKEN "
            "(401 unauthorized)",
        ),
        (
            ["jobs", "list", *url, "--token", "wrong"],
            "the server refused the API token given (--token or XMLFLOW_API_TOKEN) "
            "(401 unauthorized)",
        ),
        (["jobs", "show", "f" * 32, *url, "--token", TOKEN], "(404 not_found)"),
        (["jobs", "cancel", ended, *url, "--token", TOKEN], "(409 conflict)"),
    ]:
        proc = run_cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert said in error_line(proc, " ".join(args[:2])), args
        assert proc.stdout == ""


def test_a_server_that_is_down_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "f.xml").write_bytes(b"<f/>")
    for args in (["jobs", "list"], ["submit", "f.xml"], ["jobs", "follow", "abc"]):
        proc = run_cli(*args, "--url", url, cwd=tmp_path)
        assert proc.returncode == 1
        assert error_line(proc, " ".join(args[:-1] if args[0] == "submit" else args[:2])) == (
            f"cannot reach {url}: [Errno 111] Connection refused"
        )


def test_an_address_that_is_not_an_xmlflow_server_is_said_so(tmp_path: Path) -> None:
    """A plain ``python -m http.server``: its redirect, 404 and 501 pages, and a file it
    serves at a job's address (200, not JSON: a traceback before), each one line, exit 1."""
    (tmp_path / "api" / "jobs").mkdir(parents=True)
    (tmp_path / "api" / "jobs" / "abc").write_text("not a job")
    (tmp_path / "f.xml").write_bytes(b"<f/>")
    port = free_port()
    static = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(port)
        for args, command, answered in [
            (["jobs", "list"], "jobs list", "GET {url}/api/jobs?limit=50&offset=0 answered 301"),
            (["jobs", "show", "abc"], "jobs show", "GET {url}/api/jobs/abc answered 200 OK"),
            (["jobs", "show", "xyz"], "jobs show", "GET {url}/api/jobs/xyz answered 404"),
            (["jobs", "follow", "abc"], "jobs follow", "GET {url}/api/jobs/abc answered 200 OK"),
            (["submit", "f.xml"], "submit", "POST {url}/api/jobs answered 501"),
        ]:
            proc = run_cli(*args, "--url", url, cwd=tmp_path)
            assert proc.returncode == 1, proc.stderr
            message = error_line(proc, command)
            assert message.startswith(answered.format(url=url)), message
            assert message.endswith(f"not xmlflow's JSON: is {url} an xmlflow server?"), message
    finally:
        static.terminate()
        static.wait(10)


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_server_closing_the_connection_mid_answer_is_one_line(tmp_path: Path) -> None:
    """The answer is cut after its headers and a few bytes of its body (a process that
    died, a proxy that timed out): said as a broken connection, not "cannot reach"."""
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    threading.Thread(target=_cut_answers, args=(listener,), daemon=True).start()
    (tmp_path / "f.xml").write_bytes(b"<f/>")
    try:
        for args in (["jobs", "list"], ["jobs", "show", "abc"], ["submit", "f.xml"]):
            proc = run_cli(*args, "--url", url, cwd=tmp_path)
            assert proc.returncode == 1, proc.stderr
            command = "submit" if args[0] == "submit" else " ".join(args[:2])
            assert error_line(proc, command) == (
                f"the connection to {url} broke: peer closed connection without sending "
                "complete message body (received 9 bytes, expected 100)"
            )
    finally:
        listener.close()


def _cut_answers(listener: socket.socket) -> None:
    """Each request gets a JSON answer's headers and its first 9 bytes, then the close."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            request = b""
            while b"\r\n\r\n" not in request and (chunk := conn.recv(65536)):
                request += chunk
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"jobs": '
            )
