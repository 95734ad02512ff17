"""A data folder that fills while a job runs: the job ends ``failed`` saying so in one
line, keeps nothing half-written (nothing offered, nothing left on the disk), its event
stream ends, and once there is room again the next job runs (a data folder on a small
tmpfs of its own; ``xmlflow run`` with its TMPDIR on one)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import Event, Server, write_config
from ..test_cli_run_files import xmlflow_run
from .test_disk_full import _mounted

NO_SPACE = "no space left in the data folder"
# Backslashes double in JSON: 5 MiB of XML becomes 10 MiB of JSON, more than is left.
BIG = b"<r>" + b"\\" * (5 * 1024 * 1024) + b"</r>"
TICKER = """
    import time

    def run(ctx):  # reports progress until cancelled: an event to record every 0.05 s
        for i in range(600):
            ctx.progress(i / 600, f"tick {i}")
            if ctx.cancelled:
                return
            time.sleep(0.05)
"""
CONFIG = """
    PIPELINES = {
        "default": [{"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"}],
        "ticking": [{"id": "ticker", "name": "Tick", "module": "run"}],
    }
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    folder = _mounted(tmp_path / "disk", "14m")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def server(small_disk: Path, tmp_path: Path) -> Iterator[Server]:
    config = write_config(tmp_path / "conf", CONFIG, {"ticker": TICKER})
    # the data folder is the tmpfs itself: the server's log goes beside it, not on it
    srv = Server(config=config, data_dir=small_disk).start()
    yield srv
    srv.stop()


def _files(data_dir: Path) -> list[str]:
    """Every file and folder the data folder holds, but the store's and the lock."""
    kept = {"xmlflow.db", "xmlflow.db-wal", "xmlflow.db-shm", "xmlflow.lock", "incoming", "jobs"}
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.name not in kept)


def _assert_failed_for_space(server: Server, job_id: str, events: list[Event]) -> str:
    end = events[-1]
    assert end.event == "end", events
    assert end.data["status"] == "failed"
    error: str = end.data["error"]
    assert error.startswith(NO_SPACE) and "\n" not in error, error
    assert end.data["outputs"] == []
    job = server.job(job_id)
    assert (job["status"], job["error"], job["outputs"]) == ("failed", error, [])
    listed = httpx.get(f"{server.url}/api/jobs/{job_id}/outputs", timeout=10)
    assert listed.json() == {"outputs": []}
    return error


def test_a_job_that_fills_the_disk_fails_in_one_line_and_keeps_nothing(
    server: Server, small_disk: Path
) -> None:
    (job,) = server.upload(("big.xml", BIG))
    events = server.events(job["id"], timeout=30)
    error = _assert_failed_for_space(server, job["id"], events)
    assert error == f"{NO_SPACE} while writing big.json", error
    assert httpx.get(f"{server.url}/api/jobs/{job['id']}/outputs/big.json").status_code == 404
    assert _files(small_disk) == []  # no partial output, no empty job folder

    (small,) = server.upload(("a.xml", b"<a>1</a>"))
    assert server.events(small["id"])[-1].data["status"] == "succeeded"


def _fill(disk: Path) -> Path:
    """A file that takes every byte left on ``disk``."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def _wait_ticking(server: Server, job_id: str) -> None:
    deadline = time.monotonic() + 20
    while server.job(job_id)["steps"][0]["fraction"] is None:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def test_a_job_whose_events_cannot_be_recorded_ends_once_there_is_room(
    server: Server, small_disk: Path
) -> None:
    """The store itself cannot write (SQLite: "database or disk is full"): the job's
    process is stopped and its files removed; the end, which cannot be written either
    while the disk stays full, is written as soon as there is room, and the stream ends."""
    (job,) = server.upload(("a.xml", b"<a/>"), pipeline="ticking")
    _wait_ticking(server, job["id"])
    streamed: list[list[Event]] = []
    reader = threading.Thread(target=lambda: streamed.append(server.events(job["id"])))
    reader.start()
    filler = _fill(small_disk)
    time.sleep(1.0)  # the job's next events meet a full disk
    assert server.job(job["id"])["status"] == "running"  # its end is not written yet
    filler.unlink()
    reader.join(20)
    assert streamed, "the stream did not end"
    _assert_failed_for_space(server, job["id"], streamed[0])
    assert _files(small_disk) == []

    (small,) = server.upload(("a.xml", b"<a>1</a>"))
    assert server.events(small["id"])[-1].data["status"] == "succeeded"


def test_xmlflow_run_with_a_full_tmpdir_says_so_and_leaves_nothing(
    small_disk: Path, tmp_path: Path
) -> None:
    (out := tmp_path / "out").mkdir()
    (tmp_path / "big.xml").write_bytes(BIG)
    done = xmlflow_run("--out", out, tmp_path / "big.xml", cwd=tmp_path, tmpdir=small_disk)
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    (end,) = [line["data"] for line in lines if line.get("event") == "end"]
    assert end == {"status": "failed", "error": f"{NO_SPACE} while writing big.json", "outputs": []}
    assert list(out.iterdir()) == [] and list(small_disk.iterdir()) == []  # TMPDIR: nothing
