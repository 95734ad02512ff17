"""``xmlflow run`` and the user's files: inputs are never changed (not even by an output
of the same name), odd inputs are refused in one line, outputs are whole or absent, and
what a killed run left in TMPDIR goes at the next run."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BOOKS = b'<?xml version="1.0"?><books><book id="1"><title>Dune</title></book></books>'
CONVERTED = {"books": {"book": {"@id": "1", "title": "Dune"}}}


def xmlflow_run(*args: str | Path, cwd: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xmlflow", "run", "--json", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(tmpdir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def tmpdir_(tmp_path: Path) -> Path:
    folder = tmp_path / "T"
    folder.mkdir()
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_input_named_like_its_output_is_never_overwritten(tmp_path: Path, tmpdir_: Path) -> None:
    """``data.json`` holding XML, converted in its own folder: the output may not take
    the input's place; it gets the name two outputs of one name get."""
    source = tmp_path / "data.json"
    source.write_bytes(BOOKS)
    before = _sha(source)
    done = xmlflow_run("--out", tmp_path, source, cwd=tmp_path, tmpdir=tmpdir_)
    assert done.returncode == 0, done.stderr
    assert _sha(source) == before
    (output,) = [p for p in tmp_path.glob("data-*.json")]
    assert json.loads(output.read_text()) == CONVERTED
    end = json.loads(done.stdout.splitlines()[-1])
    assert end["data"]["status"] == "succeeded"


def test_a_relative_symlink_is_read_through(tmp_path: Path, tmpdir_: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "books.xml").write_bytes(BOOKS)
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "link.xml").symlink_to("../files/books.xml")
    done = xmlflow_run(
        "--out", tmp_path / "out", "link.xml", cwd=tmp_path / "links", tmpdir=tmpdir_
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "link.json").read_text()) == CONVERTED
    assert (tmp_path / "files" / "books.xml").read_bytes() == BOOKS
    assert (tmp_path / "files" / "books.xml").stat().st_nlink == 1


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_device_or_a_fifo_is_refused_in_one_line(
    tmp_path: Path, tmpdir_: Path, kind: str
) -> None:
    """``/dev/zero`` would fill the disk, a FIFO with no writer would hang the run."""
    if kind == "device":
        special = Path("/dev/zero")
    else:
        special = tmp_path / "pipe.xml"
        os.mkfifo(special)
    done = xmlflow_run("--out", tmp_path / "out", special, cwd=tmp_path, tmpdir=tmpdir_)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a regular file" in lines[0], done.stderr
    assert list(tmpdir_.iterdir()) == []


def test_an_out_folder_that_cannot_be_written_is_said_before_anything_runs(
    tmp_path: Path, tmpdir_: Path
) -> None:
    source = tmp_path / "books.xml"
    source.write_bytes(BOOKS)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = xmlflow_run("--out", blocker / "out", source, cwd=tmp_path, tmpdir=tmpdir_)
    assert done.returncode == 2
    assert done.stdout == ""  # no job ran
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write there" in lines[0], done.stderr


def test_outputs_moved_across_file_systems_are_whole_and_leave_nothing(
    tmp_path: Path, tmpdir_: Path
) -> None:
    """/dev/shm is another file system than the run's folder: the output is copied
    under a temporary name, then renamed."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmpdir_).st_dev:
        pytest.skip("no /dev/shm on another file system here")
    out = Path(tempfile.mkdtemp(dir=shm, prefix="xmlflow-test-"))
    try:
        source = tmp_path / "books.xml"
        source.write_bytes(BOOKS)
        done = xmlflow_run("--out", out, source, cwd=tmp_path, tmpdir=tmpdir_)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in out.iterdir()) == ["books.json"]
        assert json.loads((out / "books.json").read_text()) == CONVERTED
    finally:
        shutil.rmtree(out)


def test_a_full_out_folder_fails_the_job_in_one_line_and_leaves_no_half_file(
    tmp_path: Path, tmpdir_: Path
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        source = tmp_path / "big.xml"
        with open(source, "wb") as f:
            f.write(b"<r>")
            for i in range(20_000):
                f.write(b"<i>%d</i>" % i)
            f.write(b"</r>")
        done = xmlflow_run("--out", small, source, cwd=tmp_path, tmpdir=tmpdir_)
        assert done.returncode == 1
        assert list(small.iterdir()) == []
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and "could not be saved" in errors[0], done.stderr
        assert "No space left" in errors[0]
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_the_next_run_removes_what_a_killed_run_left_in_tmpdir(
    tmp_path: Path, tmpdir_: Path
) -> None:
    """Left: unlocked and untouched for a minute. Kept: a folder whose lock is held
    (a live run), and one touched just now (a run that is ending)."""
    folders = {}
    for name in ("left", "held", "recent"):
        folder = tmpdir_ / f"xmlflow-run-{name}"
        (folder / "jobs").mkdir(parents=True)
        (folder / "jobs" / "copy.xml").write_bytes(BOOKS)
        (folder / "xmlflow.lock").touch()
        folders[name] = folder
    old = time.time() - 3600
    for name in ("left", "held"):
        os.utime(folders[name], (old, old))
    source = tmp_path / "books.xml"
    source.write_bytes(BOOKS)
    with open(folders["held"] / "xmlflow.lock", "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = xmlflow_run("--out", tmp_path / "out", source, cwd=tmp_path, tmpdir=tmpdir_)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmpdir_.iterdir()) == [
        "xmlflow-run-held",
        "xmlflow-run-recent",
    ]
