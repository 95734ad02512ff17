"""The command line's edges, through the real ``xmlflow`` entry point: a bad setting is a
usage error for every command that reads settings; ``submit`` counts a zip as its XML
members against the queue's room; names are shown escaped in ``submit`` and ``jobs``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Server, free_port, write_config

XMLFLOW = Path(sys.executable).with_name("xmlflow")  # the console script pip installed
UNPRINTABLE = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]]


def xmlflow(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(XMLFLOW), *map(str, args)],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "80", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"XMLFLOW_MAX_UPLOAD_FILES": "-3"},
            "XMLFLOW_MAX_UPLOAD_FILES is -3, out of range: it must be 1 to 1000000",
        ),
        (
            {"XMLFLOW_MAX_UPLOAD_FILES": "many"},
            "XMLFLOW_MAX_UPLOAD_FILES='many' is not a whole number: it must be 1 to 1000000",
        ),
        (
            {"XMLFLOW_SSE_KEEPALIVE": "soon"},
            "XMLFLOW_SSE_KEEPALIVE='soon' is not a number: it must be more than 0 and at most 15",
        ),
        (  # no limit at all: gunicorn's workers failed to boot, every upload got 500
            {"XMLFLOW_MAX_UPLOAD_MB": "inf"},
            "XMLFLOW_MAX_UPLOAD_MB is inf: it must be a finite number, "
            "more than 0 and at most 1048576",
        ),
        (
            {"XMLFLOW_MAX_DECOMPRESSED_MB": "1e999"},
            "XMLFLOW_MAX_DECOMPRESSED_MB is inf: it must be a finite number, "
            "more than 0 and at most 16777216",
        ),
        (
            {"XMLFLOW_REDIS_URL": "localhost:6379"},
            "XMLFLOW_REDIS_URL is not a Redis URL (scheme 'localhost'): it must be "
            "redis://[:password@]host[:port][/db], rediss://... or unix:///path",
        ),
        (
            {"XMLFLOW_REDIS_URL": "redis://:secret@127.0.0.1:port/0"},
            "XMLFLOW_REDIS_URL is not a Redis URL (its port is not a number): it must be "
            "redis://[:password@]host[:port][/db], rediss://... or unix:///path",
        ),
    ],
)
@pytest.mark.parametrize("command", ["serve", "worker", "steps"])
def test_a_bad_setting_is_a_usage_error_in_one_line(
    command: str, env: dict[str, str], said: str, tmp_path: Path
) -> None:
    """Exit 2 and ``xmlflow serve: error: …`` naming the setting and what it may be, as
    ``xmlflow run`` does; never click's ``Error:``, never a traceback (nor a password)."""
    args = ["--port", str(free_port())] if command == "serve" else []
    done = xmlflow(command, *args, cwd=tmp_path, env={"XMLFLOW_DATA_DIR": "d", **env})
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"xmlflow {command}: error: {said} (see 'xmlflow {command} --help')\n"
    assert "secret" not in done.stderr and not done.stdout
    assert not (tmp_path / "d").exists()  # refused before anything was started


def xml_zip(path: Path, members: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(1, members + 1):
            archive.writestr(f"m{i}.xml", f"<m>{i}</m>")
    return path


CONVERT = {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"}
CONFIG = f"""
    PIPELINES = {{"default": [{CONVERT!r}], "held": [dict({CONVERT!r}, delay=30)]}}
"""


@pytest.fixture(scope="module")
def small_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """10 jobs may wait, 5 files (or XML members) go in one upload, so a zip of 50 is
    read (10 x 5 entries); one job runs at a time."""
    root = tmp_path_factory.mktemp("cli-nits")
    config = write_config(root / "conf", CONFIG)
    env = {"XMLFLOW_MAX_QUEUED": "10", "XMLFLOW_MAX_UPLOAD_FILES": "5", "XMLFLOW_WORKERS": "1"}
    server = Server(config=config, data_dir=root / "data", env=env).start()
    yield server
    server.stop()


def job_total(server: Server) -> int:
    total: int = httpx.get(f"{server.url}/api/jobs", params={"limit": 1}).json()["total"]
    return total


def test_a_zip_counts_as_its_members_against_the_queue(small_queue: Server, tmp_path: Path) -> None:
    """A file and a zip of 50 XML members are 51 jobs, more than the 10 that may wait:
    refused before anything is sent, saying how many jobs the files make."""
    (tmp_path / "a.xml").write_bytes(b"<a/>")
    xml_zip(tmp_path / "fifty.zip", 50)
    before = job_total(small_queue)
    done = xmlflow("submit", "a.xml", "fifty.zip", "--url", small_queue.url, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        "xmlflow submit: error: 2 files make 51 jobs, but at most 10 jobs can wait on this "
        "server (XMLFLOW_MAX_QUEUED): nothing was sent; submit files that make 10 or fewer "
        "at a time\n"
    )
    assert job_total(small_queue) == before


def test_a_zip_over_the_room_left_is_not_sent(small_queue: Server, tmp_path: Path) -> None:
    """6 held jobs: 5 or 6 wait (the first may have started), room for 4 or 5; a zip of
    8 members is 8 jobs, too many now though not for the queue's size."""
    xml_zip(tmp_path / "eight.zip", 8)
    held = [small_queue.upload((f"h{i}.xml", b"<h/>"), pipeline="held")[0]["id"] for i in range(6)]
    try:
        before = job_total(small_queue)
        done = xmlflow("submit", "eight.zip", "--url", small_queue.url, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert re.fullmatch(
            r"xmlflow submit: error: 1 file makes 8 jobs, but the server's queue has room "
            r"for [45] jobs now \([56] waiting, XMLFLOW_MAX_QUEUED=10\): nothing was sent; "
            r"try again when it has drained\n",
            done.stderr,
        ), done.stderr
        assert job_total(small_queue) == before
    finally:
        for job_id in held:
            httpx.post(f"{small_queue.url}/api/jobs/{job_id}/cancel")


def assert_escaped(text: str, *shown: str) -> None:
    """No control character reaches the terminal but the line ends; each name is shown
    escaped."""
    assert not set(text.replace("\n", "")) & set(UNPRINTABLE), repr(text)
    for name in shown:
        assert name in text, (name, text)


def test_submit_shows_names_escaped(small_queue: Server, tmp_path: Path) -> None:
    """Names with a newline or an escape sequence, in the live display and in the line
    naming what was not sent (5 files go in one upload; the 6th, a zip with no XML, in
    a second, refused): escaped as ``xmlflow run`` shows them, no raw control byte."""
    names = ["new\nline.xml", "esc\x1b[31mred.xml", "c.xml", "d.xml", "e.xml"]
    for name in names:
        (tmp_path / name).write_bytes(b"<a>1</a>")
    with zipfile.ZipFile(tmp_path / "no\n\x1b[2Jxml.zip", "w") as archive:
        archive.writestr("readme.txt", "no XML here")
    done = xmlflow("submit", *names, "no\n\x1b[2Jxml.zip", "--url", small_queue.url, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert_escaped(done.stdout, "✔ new\\nline.xml: succeeded", "✔ esc\\x1b[31mred.xml: succeeded")
    assert_escaped(done.stderr, "1 of 6 files not sent (from no\\n\\x1b[2Jxml.zip on): ")
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_jobs_show_escapes_names_a_server_sends() -> None:
    """This server cleans the names it stores; an older one, or another path, may not:
    ``jobs show`` and ``jobs list`` escape every name they print."""
    from xmlflow.cli.jobs import describe_job, job_row

    job = {
        "id": "j1",
        "status": "failed",
        "filename": "a\nb\x1b[2J.xml",
        "size": 3,
        "pipeline": "default",
        "created_at": 0,
        "elapsed": 1.0,
        "steps": [{"id": "s", "name": "S", "status": "failed", "error": "bad \x1b]0;x\x07"}],
        "error": "line 1, column 2: \x9b31m",
        "outputs": [{"name": "o\x1b.json", "size": 2, "url": "/api/jobs/j1/outputs/o"}],
    }
    lines = [*describe_job(job), job_row(job, None), job_row(job, 12)]
    assert_escaped("\n".join(lines), "file: a\\nb\\x1b[2J.xml", "output: o\\x1b.json")
    assert "  a\\nb\\x1b[2J.xml:1:2: error: \\x9b31m" in lines
    assert lines[-1].endswith(" a\\nb\\x1b[2J…")  # cut after escaping: fits its column
