"""An ended job keeps its outputs and nothing else in ``data/jobs/``: a job that kept no
outputs (cancelled, failed, killed, interrupted) leaves no folder behind, and start-up
removes the empty folders older versions left."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Server, write_config

CONFIG = """
    CONVERT = {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"}
    PIPELINES = {
        "default": [CONVERT],
        "slow": [{**CONVERT, "delay": 30}],
        "sleeper": [{"id": "sleeper", "name": "Sleep", "module": "run"}],
    }
"""
SLEEPER = """
    import os, time
    from pathlib import Path

    def run(ctx):  # says where it runs, then waits to be cancelled or killed
        Path(os.environ["XMLFLOW_TEST_PIDFILE"]).write_text(str(os.getpid()))
        for _ in range(600):
            if ctx.cancelled:
                return
            time.sleep(0.05)
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("folders")


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[Server]:
    config = write_config(root / "conf", CONFIG, {"sleeper": SLEEPER})
    env = {"XMLFLOW_WORKERS": "1", "XMLFLOW_TEST_PIDFILE": str(root / "job.pid")}
    srv = Server(config=config, data_dir=root / "data", env=env).start()
    yield srv
    srv.stop()


def _folder(server: Server, job_id: str) -> Path:
    return server.data_dir / "jobs" / job_id


def _contents(server: Server, job_id: str) -> list[str] | None:
    """What the job's folder holds, once its end is written (None: no folder)."""
    folder = _folder(server, job_id)
    if not folder.exists():
        return None
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _ended(server: Server, job_id: str, status: str) -> None:
    assert server.events(job_id, timeout=30)[-1].data["status"] == status


def _running(server: Server, job_id: str) -> None:
    deadline = time.monotonic() + 20
    while server.job(job_id)["status"] != "running":
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def test_a_job_with_outputs_keeps_only_them(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"))
    _ended(server, job["id"], "succeeded")
    assert _contents(server, job["id"]) == ["out", "out/a.json"]


def test_a_failed_job_leaves_no_folder(server: Server) -> None:
    (job,) = server.upload(("bad.xml", b"<a><b></a>"))
    _ended(server, job["id"], "failed")
    assert _contents(server, job["id"]) is None


def test_cancelled_jobs_leave_no_folder(server: Server) -> None:
    """One cancelled while it runs, one while it waits for the runner the first holds."""
    running, waiting = server.upload(("a.xml", b"<a/>"), ("b.xml", b"<b/>"), pipeline="slow")
    _running(server, running["id"])
    for job in (waiting, running):
        url = f"{server.url}/api/jobs/{job['id']}/cancel"
        assert httpx.post(url, timeout=10).status_code == 202
        _ended(server, job["id"], "cancelled")
        assert _contents(server, job["id"]) is None


def test_a_job_whose_process_is_killed_leaves_no_folder(server: Server, root: Path) -> None:
    pidfile = root / "job.pid"
    pidfile.unlink(missing_ok=True)
    (job,) = server.upload(("a.xml", b"<a/>"), pipeline="sleeper")
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    events = server.events(job["id"], timeout=30)
    assert "ended unexpectedly" in events[-1].data["error"]
    assert _contents(server, job["id"]) is None


def test_an_interrupted_job_leaves_no_folder_and_old_empty_ones_go(tmp_path: Path) -> None:
    """Killed with its server: the next start ends the job ``interrupted``, and removes
    the empty folder an ended job kept before this version."""
    config = write_config(tmp_path / "conf", CONFIG, {"sleeper": SLEEPER})
    server = Server(config=config, data_dir=tmp_path / "data").start()
    try:
        (job,) = server.upload(("a.xml", b"<a/>"), pipeline="slow")
        (old,) = server.upload(("b.xml", b"<b><c></b>"))
        _ended(server, old["id"], "failed")
        _running(server, job["id"])
        server.kill()
        _folder(server, old["id"]).mkdir()  # as an older version left it
        server.start()
        assert server.job(job["id"])["status"] == "interrupted"
        assert _contents(server, job["id"]) is None
        assert _contents(server, old["id"]) is None
    finally:
        server.stop()
