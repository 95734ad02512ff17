"""The seed's promises: ``python app.py`` on 127.0.0.1:5000, and ``xmlflow steps``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import REPO, free_port, write_config


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("default_port", [True, False], ids=["port-5000", "XMLFLOW_PORT"])
def test_python_app_py_serves_the_seed_pipeline(tmp_path: Path, default_port: bool) -> None:
    if default_port and not port_is_free(5000):
        pytest.skip("port 5000 is taken on this machine")
    port = 5000 if default_port else free_port()
    env = {**os.environ, "XMLFLOW_DATA_DIR": str(tmp_path / "data")}
    env.pop("XMLFLOW_CONFIG", None)
    if not default_port:
        env["XMLFLOW_PORT"] = str(port)
    proc = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert page.status_code == 200
        assert page.headers["server"].startswith("gunicorn")  # the default, production server
        upload = httpx.post(
            f"http://127.0.0.1:{port}/upload", files={"file": ("a.xml", b"<a><b>1</b></a>")}
        )
        job = upload.json()["jobs"][0]
        state = httpx.get(f"http://127.0.0.1:{port}{job['url']}").json()
        assert [s["name"] for s in state["steps"]] == [
            "Processing XML and Generating JSON Structures",
            "Finalizing and Cleaning Up",
        ]
    finally:
        proc.terminate()
        proc.wait(10)


def serve_to_the_end(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``xmlflow serve ARGS`` on a free port with ``env`` added, run until it exits."""
    return subprocess.run(
        [sys.executable, "-m", "xmlflow", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def run_steps(config: Path | None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "xmlflow", "steps"]
    if config:
        args += ["--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "XMLFLOW_CONFIG"}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


def test_steps_lists_the_repository_pipeline() -> None:
    result = run_steps(None)
    assert result.returncode == 0, result.stderr
    assert "process_xml" in result.stdout and "run_xml_processing_step" in result.stdout
    assert "[ok]" in result.stdout


def test_steps_exits_1_on_a_missing_function(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "PROCESSING_STEPS = [{'id': 'mine', 'name': 'Mine', 'module': 'run_mine'}]",
        {"mine": "def run_other(ctx):\n    pass\n"},
    )
    result = run_steps(config)
    assert result.returncode == 1
    assert "no function 'run_mine'" in result.stdout


def test_steps_exits_1_on_a_bad_entry(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "PROCESSING_STEPS = [{'id': 'cleanup', 'module': 'run_cleanup_step', 'delay': -2}]",
    )
    result = run_steps(config)
    assert result.returncode == 1
    assert "'delay' must not be negative" in result.stderr


def test_broken_config_stops_the_server_with_the_reason(tmp_path: Path) -> None:
    config = write_config(tmp_path, "PROCESSING_STEPS = [{'id': 'nope', 'module': 'run'}]")
    result = serve_to_the_end(XMLFLOW_CONFIG=str(config), XMLFLOW_DATA_DIR=str(tmp_path / "d"))
    assert result.returncode != 0
    assert "step 'nope': unknown id" in result.stderr
