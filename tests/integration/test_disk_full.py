"""A full disk: an upload gets 507 with Retry-After and a message, nothing of it stays,
and the server goes on serving (with a data folder on a small tmpfs of its own)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import Server


def _mounted(folder: Path, size: str) -> Path:
    folder.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    return folder


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    folder = _mounted(tmp_path / "disk", "70m")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _upload(server: Server, body: bytes) -> httpx.Response:
    files = [("file", ("big.xml", body, "application/xml"))]
    return httpx.post(server.url + "/upload", files=files, timeout=60)


def _assert_disk_full(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "insufficient_storage"
    assert "full" in error["message"]


def test_an_upload_that_fills_the_disk_gets_507_and_leaves_nothing(small_disk: Path) -> None:
    server = Server(config=None, data_dir=small_disk / "data").start()
    try:
        filler = small_disk / "filler"
        # 70 MB disk: about 66 MB free before the upload, which brings 68 MB
        filler.write_bytes(b"\0" * (3 * 1024 * 1024))
        body = b"<r>" + b"x" * (68 * 1024 * 1024) + b"</r>"
        _assert_disk_full(_upload(server, body))
        assert list((small_disk / "data" / "incoming").iterdir()) == []

        filler.unlink()  # room again: the same server takes uploads
        (job,) = server.upload(("a.xml", b"<a/>"))
        assert server.wait_finished(job["id"])["status"] == "succeeded"
    finally:
        server.stop()


def test_a_small_upload_to_a_full_disk_gets_507_and_health_leaves_nothing(
    small_disk: Path,
) -> None:
    """Not a byte free: a 23-byte upload fails when its file is closed, not while it is
    written. It got no answer at all (the cleanup raised the same error), and left a
    0-byte ``.part``; each ``/api/health`` left its probe file."""
    server = Server(config=None, data_dir=small_disk / "data").start()
    filler = small_disk / "filler"
    try:
        with filler.open("wb") as f:  # every block of the disk
            chunk = b"\0" * (1024 * 1024)
            try:
                while True:
                    f.write(chunk)
                    f.flush()
            except OSError:
                pass
        for _ in range(3):
            _assert_disk_full(_upload(server, b"<small>23 bytes</small>"))
            health = httpx.get(server.url + "/api/health", timeout=30)
            assert health.status_code == 503
            assert "data_dir" in health.json()["failed"]
        _nothing_kept_and_room_again(server, small_disk, filler)
    finally:
        filler.unlink(missing_ok=True)
        server.stop()


def test_an_upload_whose_job_record_does_not_fit_gets_507(small_disk: Path) -> None:
    """The file fits, the job store's (SQLite's) write of its record does not: 507 too,
    and nothing kept (it was a 500)."""
    server = Server(config=None, data_dir=small_disk / "data").start()
    filler = small_disk / "filler"
    try:
        free = shutil.disk_usage(small_disk).free
        filler.write_bytes(b"\0" * (free - 8 * 1024))  # 8 KB left: the upload, not its record
        refused = [_upload(server, b"<small>34 bytes of XML here</small>") for _ in range(3)]
        for response in refused:
            _assert_disk_full(response)
        _nothing_kept_and_room_again(server, small_disk, filler)
    finally:
        filler.unlink(missing_ok=True)
        server.stop()


def _nothing_kept_and_room_again(server: Server, disk: Path, filler: Path) -> None:
    """No upload's file is left, and once room is made the same server runs a job."""
    assert list((disk / "data" / "incoming").iterdir()) == []
    filler.unlink()
    (job,) = server.upload(("a.xml", b"<a/>"))
    assert server.wait_finished(job["id"])["status"] == "succeeded"
