"""Steps are user code: whatever they do, their job ends clearly and the server goes on."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import Server, alive, child_pids, cmdline, write_config

CONFIG = """
    PIPELINES = {
        "default": [{"id": "cleanup", "module": "run_cleanup_step"}],
        "exits": [
            {"id": "quitter", "name": "Quit", "module": "run"},
            {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"},
        ],
        "hangs": [{"id": "hanger", "name": "Hang", "module": "run"}],
        "greedy": [{"id": "greedy", "name": "Eat memory", "module": "run"}],
        "chatty": [{"id": "chatty", "name": "Chatter", "module": "run"}],
    }
"""
STEPS = {
    "chatty": """
        import time
        def run(ctx):
            for i in range(1_000_000):  # progress all the time, cancel looked at too
                ctx.progress(i / 1_000_000, f"{i} records")
                if ctx.cancelled:
                    return
                time.sleep(0.001)
    """,
    "quitter": """
        import os
        def run(ctx):
            os._exit(3)
    """,
    "hanger": """
        import time
        def run(ctx):
            while True:  # never looks at ctx.cancelled
                time.sleep(1)
    """,
    "greedy": """
        def run(ctx):
            hoard = []
            while True:
                hoard.append(bytearray(50 * 1024 * 1024))
    """,
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("isolation")
    config = write_config(root / "conf", CONFIG, STEPS)
    env = {"XMLFLOW_STEP_TIMEOUT": "1", "XMLFLOW_JOB_MEMORY_MB": "400", "XMLFLOW_WORKERS": "3"}
    server = Server(config=config, data_dir=root / "data", env=env).start()
    yield server
    server.stop()


def assert_still_serving(server: Server) -> None:
    (job,) = server.upload(("ok.xml", b"<a/>"))
    assert server.events(job["id"])[-1].data["status"] == "succeeded"


def test_a_step_calling_os_exit_fails_its_job_only(guarded: Server) -> None:
    (job,) = guarded.upload(("a.xml", b"<a/>"), pipeline="exits")
    events = guarded.events(job["id"])
    end = events[-1].data
    assert end["status"] == "failed"
    assert "exit status 3" in end["error"]
    steps = [(e.data["id"], e.data["status"]) for e in events if e.event == "step"]
    assert steps == [("quitter", "running"), ("quitter", "failed"), ("cleanup", "skipped")]
    assert not (guarded.data_dir / "jobs" / job["id"] / "source").exists()
    assert_still_serving(guarded)


def test_a_hanging_step_is_stopped_by_the_timeout(guarded: Server) -> None:
    (job,) = guarded.upload(("a.xml", b"<a/>"), pipeline="hangs")
    end = guarded.events(job["id"], timeout=30)[-1].data
    assert end["status"] == "failed"
    assert "timed out after 1 s" in end["error"]
    assert_still_serving(guarded)


def test_a_greedy_step_hits_the_memory_cap(guarded: Server) -> None:
    (job,) = guarded.upload(("a.xml", b"<a/>"), pipeline="greedy")
    end = guarded.events(job["id"], timeout=30)[-1].data
    assert end["status"] == "failed"
    assert "memory" in end["error"].lower()
    assert_still_serving(guarded)


def test_jobs_run_in_parallel_processes(guarded: Server, tmp_path: Path) -> None:
    jobs = guarded.upload(*[(f"{i}.xml", b"<a/>") for i in range(3)], pipeline="hangs")
    ends = [guarded.events(j["id"], timeout=30)[-1].data for j in jobs]
    assert all("timed out" in e["error"] for e in ends)


def test_cancel_reaches_a_step_that_reports_progress_all_the_time(guarded: Server) -> None:
    (job,) = guarded.upload(("a.xml", b"<a/>"), pipeline="chatty")
    deadline = time.monotonic() + 10
    while guarded.job(job["id"])["steps"][0]["fraction"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    assert httpx.post(f"{guarded.url}/api/jobs/{job['id']}/cancel").status_code == 202
    assert guarded.wait_finished(job["id"], timeout=10)["status"] == "cancelled"
    assert time.monotonic() - started < 2


SILENT = """
    import os
    import time
    def run(ctx):
        with open(os.environ["XMLFLOW_TEST_PIDFILE"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)  # says nothing to its parent all the while
"""


def test_a_killed_server_takes_its_silent_jobs_processes_along(tmp_path: Path) -> None:
    """kill -9 of the server's processes (gunicorn's master and worker): a job's process
    that is not talking to its parent ends too, at once, not when it next reports (the
    forkserver, its parent, outlives the server while any job holds it)."""
    config = write_config(
        tmp_path / "conf",
        'PIPELINES = {"default": [{"id": "silent", "name": "Silent", "module": "run"}]}',
        {"silent": SILENT},
    )
    pidfile = tmp_path / "job.pid"
    env = {"XMLFLOW_TEST_PIDFILE": str(pidfile)}
    server = Server(config=config, data_dir=tmp_path / "data", env=env).start()
    try:
        server.upload(("a.xml", b"<a/>"))
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        job = int(pidfile.read_text())
        assert server.proc is not None
        workers = [
            pid for pid in child_pids(server.proc.pid) if "multiprocessing" not in cmdline(pid)
        ]
        for pid in [server.proc.pid, *workers]:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(job) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(job), "the job's process outlived the server"
    finally:
        server.kill()
