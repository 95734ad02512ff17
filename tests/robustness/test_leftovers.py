"""kill -9 leaves nothing behind: start-up recovery removes half-received uploads and
half-written outputs (embedded mode: everything; Redis mode: what no live process holds)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import Server, write_config
from ..redis.test_chaos import descendants, signal_all

SLOW_WRITE = """
    import time
    def run_slow_write(ctx):
        with ctx.open_output(ctx.stem + ".out", "wb") as out:
            for _ in range(600):
                out.write(b"x" * 4096)
                out.flush()
                time.sleep(0.05)
"""
CONFIG = """
    PIPELINES = {
        "default": [{"id": "cleanup", "module": "run_cleanup_step"}],
        "slow_write": [{"id": "slow_write", "name": "Write slowly", "module": "run_slow_write"}],
    }
"""
BOUNDARY = "leftoverboundary"


def slow_body(stop: threading.Event) -> Iterator[bytes]:
    """A multipart upload that sends its file a chunk at a time and never finishes."""
    yield (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=file; filename=a.xml\r\n"
        "Content-Type: application/xml\r\n\r\n<a>"
    ).encode()
    while not stop.is_set():
        yield b"<b>slow</b>" * 1000
        time.sleep(0.05)


def start_slow_upload(url: str) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()

    def send() -> None:
        try:
            httpx.post(
                url + "/upload",
                content=slow_body(stop),
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                timeout=30,
            )
        except httpx.TransportError:
            pass  # the server was killed under it: expected

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, stop


def wait_for(paths: object, timeout: float = 20) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(paths())  # type: ignore[operator]
        if found and all(p.stat().st_size > 0 for p in found):
            return found
        time.sleep(0.05)
    raise AssertionError("the file being written never appeared")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    config = write_config(tmp_path / "conf", CONFIG, {"slow_write": SLOW_WRITE})
    srv = Server(config=config, data_dir=tmp_path / "data").start()
    yield srv
    srv.stop()


def kill_mid_upload(server: Server) -> Path:
    """kill -9 the server while it receives a slow upload; the file it leaves."""
    thread, stop = start_slow_upload(server.url)
    [part] = wait_for(lambda: (server.data_dir / "incoming").glob("*.part"))
    server.kill()
    stop.set()
    thread.join(10)
    assert part.exists() and part.stat().st_size > 0  # what kill -9 leaves
    return part


def test_upload_cut_by_kill_9_is_removed_at_restart(server: Server) -> None:
    kill_mid_upload(server)
    server.start()
    assert list((server.data_dir / "incoming").iterdir()) == []
    (job,) = server.upload(("b.xml", b"<b/>"))  # and the server works as before
    assert server.events(job["id"])[-1].data["status"] == "succeeded"


def test_output_cut_by_kill_9_is_removed_at_restart(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a/>"), pipeline="slow_write")
    job_dir = server.data_dir / "jobs" / job["id"]
    [partial] = wait_for(lambda: job_dir.rglob(".partial-*.tmp"))
    assert server.proc
    helpers = descendants(server.proc.pid)
    server.kill()
    time.sleep(0.2)  # the job's process dies with the server (PR_SET_PDEATHSIG)
    # multiprocessing's forkserver and resource tracker outlive a kill -9 (idle, no
    # files): end them here so that the suite leaves no process behind
    signal_all(helpers, signal.SIGKILL)
    assert partial.exists()

    server.start()
    assert not partial.exists()
    assert not job_dir.exists()  # no run folder, no source: no folder at all
    end = server.events(job["id"])[-1]
    assert end.event == "end" and end.data["status"] == "interrupted"


def test_job_folder_without_a_record_is_removed_at_restart(server: Server) -> None:
    """What a failed submission used to leave: a source no job record points to."""
    orphan = server.data_dir / "jobs" / ("0" * 32)
    orphan.mkdir()
    (orphan / "source").write_bytes(b"<a/>")
    server.stop()
    server.start()
    assert not orphan.exists()


def test_upload_received_by_another_live_process_is_kept(tmp_path: Path) -> None:
    """Redis mode shares the folder: a .part that someone holds, or a fresh one, stays.

    Run on real files, locks and a real store; the shared-mode rule is the same code
    whichever store answers.
    """
    from xmlflow.leftovers import STALE_AFTER, hold, remove_leftovers
    from xmlflow.service import Service
    from xmlflow.settings import load_settings

    svc = Service(load_settings({}, cwd=tmp_path, data_dir=tmp_path / "data"))
    incoming = svc.data_dir / "incoming"
    old = time.time() - STALE_AFTER - 10
    held, dead, fresh = (incoming / f"{n}.part" for n in ("held", "dead", "fresh"))
    for path in (held, dead, fresh):
        path.write_bytes(b"<a")
    for path in (held, dead):
        os.utime(path, (old, old))
    try:
        with hold(held):
            assert remove_leftovers(svc.data_dir, svc.store, exclusive=False) == 1
    finally:
        svc.close()
    assert sorted(p.name for p in incoming.iterdir()) == ["fresh.part", "held.part"]
