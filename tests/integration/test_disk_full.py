"""A full disk: an upload gets 507 with Retry-After and a message, nothing of it stays,
and the server goes on serving (with a data folder on a small tmpfs of its own)."""

from __future__ import annotations

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
