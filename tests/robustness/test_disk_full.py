"""The disk fills up while a step writes its output: the job fails, nothing half-written
is offered, and the server goes on once the space is back."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import Server, write_config

FILL = """
    def run_fill(ctx):
        block = b"x" * (1 << 20)
        with ctx.open_output(ctx.stem + ".big", "wb") as out:
            for _ in range(64):  # 64 MiB into a 16 MiB disk
                out.write(block)
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_disk_full_fails_the_job_and_offers_nothing(tmp_path: Path, small_disk: Path) -> None:
    config = write_config(
        tmp_path / "conf",
        """
        PIPELINES = {
            "default": [{"id": "cleanup", "module": "run_cleanup_step"}],
            "fill": [{"id": "fill", "name": "Fill the disk", "module": "run_fill"}],
        }
        """,
        {"fill": FILL},
    )
    server = Server(config=config, data_dir=small_disk / "data").start()
    try:
        (job,) = server.upload(("a.xml", b"<a/>"), pipeline="fill")
        end = server.events(job["id"])[-1].data
        assert end["status"] == "failed"
        assert end["error"] == "no space left in the data folder while writing a.big"
        assert end["outputs"] == []
        job_dir = server.data_dir / "jobs" / job["id"]
        leftovers = list(job_dir.rglob("*")) if job_dir.exists() else []
        assert [p for p in leftovers if p.is_file()] == []
        (ok,) = server.upload(("b.xml", b"<b/>"))
        assert server.events(ok["id"])[-1].data["status"] == "succeeded"
        health = httpx.get(server.url + "/api/health")  # a 16 MiB disk is too small to run on
        assert health.status_code == 503 and "data_dir" in health.json()["failed"]
    finally:
        server.stop()
