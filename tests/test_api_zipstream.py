"""The streamed zip: a valid archive, produced in small pieces whatever the file sizes."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from xmlflow.web.zipstream import stream_zip


def test_the_archive_holds_each_file_under_its_name(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"a": 1}')
    (tmp_path / "b.txt").write_bytes(b"")
    (tmp_path / "c.bin").write_bytes(os.urandom(200_000))
    files = [("a.json", tmp_path / "a.json"), ("b.txt", tmp_path / "b.txt")]
    files.append(("renamed.bin", tmp_path / "c.bin"))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip(files))))
    assert archive.testzip() is None
    assert archive.namelist() == ["a.json", "b.txt", "renamed.bin"]
    assert archive.read("a.json") == b'{"a": 1}'
    assert archive.read("b.txt") == b""
    assert archive.read("renamed.bin") == (tmp_path / "c.bin").read_bytes()


def test_no_piece_is_much_bigger_than_a_read_chunk(tmp_path: Path) -> None:
    """Incompressible 8 MB come out in pieces of about 64 KiB: never the whole archive."""
    (tmp_path / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    pieces = list(stream_zip([("big.bin", tmp_path / "big.bin")], chunk_size=64 * 1024))
    assert len(pieces) > 100
    assert max(len(p) for p in pieces) < 256 * 1024


def test_no_files_is_an_empty_archive() -> None:
    archive = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip([]))))
    assert archive.namelist() == []
