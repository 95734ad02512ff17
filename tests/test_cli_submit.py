"""``xmlflow submit`` and ``xmlflow jobs follow`` against a real server (``xmlflow serve``).

Through click's runner for most, and as real processes where the terminal matters
(80 columns, what reaches stderr). Results are checked by their downloaded content.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from xmlflow.cli import main

from .conftest import TEST_STEPS, Server, write_config
from .test_cli_jobs import error_line, run_cli, submit

CONFIG = """
    SHOUT = {"id": "shout", "name": "Shout", "module": "run_shout", "options": {"suffix": "!"}}
    CONVERT = {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"}
    PIPELINES = {
        "default": [SHOUT],
        "convert": [CONVERT],
        "raising": [{"id": "explode", "name": "Explode", "module": "run_explode"}],
        "slow": [dict(SHOUT, delay=1)],
    }
"""
TOKEN = "submit-cli-token"
BAD_XML = b"<a>\n  <b>\n    <c></b>\n</a>\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cli-submit")
    config = write_config(root / "conf", CONFIG, TEST_STEPS)
    env = {"XMLFLOW_API_TOKEN": TOKEN, "XMLFLOW_WORKERS": "4"}
    server = Server(config=config, data_dir=root / "data", env=env).start()
    yield server
    server.stop()


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Two inputs, named relative to the current folder as people type them."""
    monkeypatch.chdir(tmp_path)
    made = []
    for name, body in [("one.xml", b"<one>1</one>"), ("two.xml", b"<two>2</two>")]:
        Path(name).write_bytes(body)
        made.append(Path(name))
    return made


def cli(*args: str | Path, env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def server_args(srv: Server) -> list[str]:
    return ["--url", srv.url, "--token", TOKEN]


def test_submit_follows_each_job_and_saves_the_outputs(
    srv: Server, files: list[Path], tmp_path: Path
) -> None:
    out = Path("out")
    result = cli("submit", *files, "-O", "shout.suffix=?", "--out", out, *server_args(srv))
    assert result.exit_code == 0, result.output
    assert (out / "one.upper.txt").read_text() == "<ONE>1</ONE>?"
    assert (out / "two.upper.txt").read_text() == "<TWO>2</TWO>?"
    assert "one.xml: succeeded, 1 output" in result.output
    assert "2 files: 2 succeeded; 2 outputs" in result.output
    assert re.search(r"1/1 Shout succeeded \d+(\.\d+)? m?s", result.output)


def test_submit_exits_1_when_a_job_fails_and_says_why(srv: Server, files: list[Path]) -> None:
    result = cli("submit", files[0], "--pipeline", "raising", *server_args(srv))
    assert result.exit_code == 1
    assert "one.xml: failed" in result.output and "the disk of records is on fire" in result.output


def test_submit_bad_pipeline_or_option_exits_2_before_any_job(
    srv: Server, files: list[Path]
) -> None:
    before = httpx.get(f"{srv.url}/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    for args, named in [
        (["--pipeline", "nope"], "unknown pipeline 'nope'"),
        (["-O", "shout.loud=1"], "'loud'"),
        (["-O", "not-an-option"], "step.key=value"),
    ]:
        result = cli("submit", files[0], *args, *server_args(srv))
        assert result.exit_code == 2, result.output
        assert named in result.output
    after = httpx.get(f"{srv.url}/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert after.json()["total"] == before.json()["total"]


def test_a_malformed_file_is_named_file_line_col_within_80_columns(
    srv: Server, tmp_path: Path
) -> None:
    (tmp_path / "bad.xml").write_bytes(BAD_XML)
    long_name = "a-very-long-file-name-that-goes-on-and-on-" * 2 + ".xml"
    (tmp_path / long_name).write_bytes(b"<ok>fine</ok>")
    args = ("submit", "bad.xml", long_name, "--pipeline", "convert", *server_args(srv))
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^  bad\.xml:3:\d+: error: mismatched tag$", proc.stdout, re.M), proc.stdout
    assert "Traceback" not in proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80, proc.stdout
    assert "HTTP Request" not in proc.stderr  # httpx's INFO lines stay off by default


def test_run_names_a_malformed_file_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "bad.xml").write_bytes(BAD_XML)
    proc = run_cli("run", "bad.xml", cwd=tmp_path)
    assert proc.returncode == 1
    assert re.search(r"^  bad\.xml:3:\d+: error: mismatched tag$", proc.stdout, re.M), proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_url_and_token_go_after_the_subcommand_and_list_has_a_header(
    srv: Server, files: list[Path]
) -> None:
    assert cli("submit", files[0], *server_args(srv)).exit_code == 0
    listed = cli("jobs", "list", "--url", srv.url, "--token", TOKEN)
    assert listed.exit_code == 0, listed.output
    header, first = listed.stdout.splitlines()[:2]
    assert header.split() == ["JOB", "STATUS", "PIPELINE", "ELAPSED", "FILE"]
    assert re.search(r"succeeded\s+default\s+\d+(\.\d+)? m?s\s+one\.xml$", first), first
    # before the subcommand, and from the environment, as before
    env = {"XMLFLOW_API_TOKEN": TOKEN}
    assert cli("jobs", "--url", srv.url, "list", env=env).exit_code == 0
    refused = cli("jobs", "list", "--url", srv.url, "--token", "wrong")
    assert refused.exit_code == 1 and "401" in refused.output


def test_jobs_follow_shows_a_job_to_its_end(srv: Server, tmp_path: Path) -> None:
    ok = submit(srv, "followed.xml", b"<f/>", pipeline="slow", token=TOKEN)
    failed = submit(srv, "broken.xml", b"<b/>", pipeline="raising", token=TOKEN)
    result = cli("jobs", "follow", ok, "--out", tmp_path / "got", *server_args(srv))
    assert result.exit_code == 0, result.output
    assert "followed.xml: succeeded, 1 output" in result.output
    assert (tmp_path / "got" / "followed.upper.txt").read_text() == "<F/>!"
    result = cli("jobs", "follow", ok, failed, *server_args(srv))
    assert result.exit_code == 1
    assert "1 succeeded, 1 failed" in result.output


def test_unknown_or_misspelled_options_exit_2_in_one_line() -> None:
    for args, said in [
        (["jobs", "lst"], "Did you mean 'list'?"),
        (["submit", "--pipline", "x", "f.xml"], "No such option '--pipline'"),
        (["sbmit"], "Did you mean 'submit'?"),
    ]:
        proc = run_cli(*args)
        assert proc.returncode == 2
        assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert said in proc.stderr and "Traceback" not in proc.stderr


def test_a_dropped_stream_resumes_with_last_event_id(srv: Server, files: list[Path]) -> None:
    """A proxy cuts the first event stream after its first step event: nothing lost or twice."""
    proxy = CuttingProxy(srv.port)
    try:
        result = cli(
            "submit", files[0], "-p", "slow", "--json", "--url", proxy.url, "--token", TOKEN
        )
    finally:
        proxy.close()
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "succeeded"
    streams = [r for r in proxy.requests if r.startswith(b"GET /api/events")]
    assert len(streams) >= 2 and b"last-event-id:" in streams[1].lower()


class CuttingProxy:
    """A TCP proxy to the server that drops the first event stream once a step event passed."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.cut = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))
        streaming = threading.Event()  # this connection carries the stream to cut
        threading.Thread(
            target=self._requests, args=(client, upstream, streaming), daemon=True
        ).start()
        try:
            while chunk := upstream.recv(65536):
                client.sendall(chunk)
                if streaming.is_set() and b"event: step" in chunk:
                    break
        except OSError:
            pass
        _close(client, upstream)

    def _requests(
        self, client: socket.socket, upstream: socket.socket, streaming: threading.Event
    ) -> None:
        try:
            while chunk := client.recv(65536):
                if chunk[:1].isupper():  # a request's first line (the requests here have no body)
                    with self.lock:
                        self.requests.append(chunk)
                        if chunk.startswith(b"GET /api/events") and not self.cut:
                            self.cut = True
                            streaming.set()
                upstream.sendall(chunk)
        except OSError:
            pass
        _close(client, upstream)


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def test_two_inputs_of_one_name_keep_both_outputs(srv: Server, tmp_path: Path) -> None:
    """``d1/data.xml`` and ``d2/data.xml`` both give ``data.upper.txt``: the second gets
    its job's id in its name, as in ``xmlflow run``, instead of replacing the first; the
    files get the mode any new file gets (not the partial download's 0600)."""
    for folder, body in (("d1", b"<r>one</r>"), ("d2", b"<r>two</r>")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "data.xml").write_bytes(body)
    out = tmp_path / "out"
    result = run_cli(
        "submit", "d1/data.xml", "d2/data.xml", "--out", out, *server_args(srv), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    saved = sorted(out.iterdir())
    assert len(saved) == 2, saved
    assert sorted(p.read_text() for p in saved) == ["<R>ONE</R>!", "<R>TWO</R>!"]
    assert any(p.name == "data.upper.txt" for p in saved)
    mask = os.umask(0o022)
    os.umask(mask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~mask for p in saved)


def test_jobs_list_fits_the_terminal_and_keeps_names_whole_in_a_pipe(
    srv: Server, tmp_path: Path
) -> None:
    name = "a-rather-long-file-name-of-a-quarterly-filing-2026.xml"
    (tmp_path / name).write_bytes(b"<r>1</r>")
    submitted = run_cli("submit", name, *server_args(srv), cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    listed = run_cli("jobs", "list", "--limit", "5", *server_args(srv))  # COLUMNS=80
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert any(line.endswith("a-rathe…") for line in lines), lines
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    piped = subprocess.run(
        [sys.executable, "-m", "xmlflow", "jobs", "list", "--limit", "5", *server_args(srv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert any(line.endswith(name) for line in piped.stdout.splitlines()), piped.stdout


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server taking 3 files an upload and 7 waiting jobs; one job runs at a time."""
    root = tmp_path_factory.mktemp("cli-submit-small")
    held = '    PIPELINES["held"] = [dict(SHOUT, delay=30)]\n'
    config = write_config(root / "conf", CONFIG + held, TEST_STEPS)
    env = {"XMLFLOW_MAX_UPLOAD_FILES": "3", "XMLFLOW_MAX_QUEUED": "7", "XMLFLOW_WORKERS": "1"}
    server = Server(config=config, data_dir=root / "data", env=env).start()
    yield server
    server.stop()


def numbered(folder: Path, count: int) -> list[Path]:
    made = []
    for i in range(1, count + 1):
        (folder / f"f{i}.xml").write_bytes(f"<n>{i}</n>".encode())
        made.append(folder / f"f{i}.xml")
    return made


def test_more_files_than_one_upload_takes_go_in_several(small: Server, tmp_path: Path) -> None:
    """XMLFLOW_MAX_UPLOAD_FILES=3 and 7 files: uploads of 3, 3 and 1, followed as one run."""
    files = numbered(tmp_path, 7)
    out = tmp_path / "out"
    result = cli("submit", *files, "--out", out, "--url", small.url)
    assert result.exit_code == 0, result.output
    assert "7 files: 7 succeeded; 7 outputs" in result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"f{i}.upper.txt" for i in range(1, 8))
    assert all((out / f"f{i}.upper.txt").read_text() == f"<N>{i}</N>!" for i in range(1, 8))


def test_the_413_names_the_file_limit_for_older_clients_to_read(small: Server) -> None:
    """Without /api/health's word for it, the limit is read from the server's 413 (its
    ``details``, or an older server's words)."""
    from xmlflow.cli.client import ApiClient, ApiError

    with ApiClient(small.url) as client:
        assert client.upload_room().per_upload == 3
        with pytest.raises(ApiError) as refused:
            client.submit([Path(__file__)] * 4, None, {})
    assert refused.value.status == 413 and refused.value.details == {"limit": 3}
    assert refused.value.upload_limit == 3
    older = ApiError(refused.value.message, status=413)  # said in words only
    assert older.upload_limit == 3


def test_more_files_than_the_queue_has_room_for_are_not_sent(small: Server, tmp_path: Path) -> None:
    files = numbered(tmp_path, 8)
    never = run_cli("submit", *files, "--url", small.url)
    assert never.returncode == 1
    assert error_line(never, "submit") == (
        "8 files, but at most 7 jobs can wait on this server "
        "(XMLFLOW_MAX_QUEUED): nothing was sent; submit them 7 or fewer at a time"
    )
    held = [small.upload((f"held{i}.xml", b"<h/>"), pipeline="held")[0]["id"] for i in range(4)]
    try:
        full = run_cli("submit", *files[:5], "--url", small.url)
        assert full.returncode == 1
        assert re.fullmatch(  # the first held job may have started (3 waiting) or not (4)
            r"5 files, but the server's queue has room for [34] jobs "
            r"now \([34] waiting, XMLFLOW_MAX_QUEUED=7\): nothing was sent; "
            r"try again when it has drained",
            error_line(full, "submit"),
        ), full.stderr
    finally:
        for job_id in held:
            httpx.post(f"{small.url}/api/jobs/{job_id}/cancel")
    listed = httpx.get(f"{small.url}/api/jobs", params={"pipeline": "default", "limit": 500})
    assert not any(job["filename"] == "f8.xml" for job in listed.json()["jobs"])


def test_a_later_upload_refused_leaves_the_earlier_jobs_followed(
    small: Server, tmp_path: Path
) -> None:
    """The 4th file (a zip with no XML) is refused in the second upload: the first three
    run and are saved; the command names what was not sent and exits 1."""
    files = numbered(tmp_path, 3)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("readme.txt", "no XML here")
    out = tmp_path / "out"
    proc = run_cli("submit", *files, tmp_path / "empty.zip", "--out", out, "--url", small.url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "3 files: 3 succeeded; 3 outputs" in proc.stdout
    assert sorted(p.read_text() for p in out.iterdir()) == ["<N>1</N>!", "<N>2</N>!", "<N>3</N>!"]
    assert error_line(proc, "submit") == (
        f"1 of 4 files not sent (from {tmp_path / 'empty.zip'} on): "
        "empty.zip holds no XML document (members are recognised by their content; folders, "
        "dot files, __MACOSX/ and nested archives are skipped) (400 bad_request)"
    )


def xml_zip(path: Path, members: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(1, members + 1):
            archive.writestr(f"m{i}.xml", f"<m>{i}</m>")
    return path


def test_usage_errors_exit_2_and_refused_files_exit_1(small: Server, tmp_path: Path) -> None:
    """A pipeline or option the server refuses (400, 422) is the command line's mistake:
    2, as click's usage errors; a file it refuses (400 naming the file, 413) is not: 1."""
    (tmp_path / "f.xml").write_bytes(b"<f/>")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("readme.txt", "no XML here")
    xml_zip(tmp_path / "big.zip", 4)
    for args, status, said in [
        (["f.xml", "-p", "nope"], 2, "unknown pipeline 'nope' (400 bad_request) (see '"),
        (["f.xml", "-O", "shout.loud=1"], 2, "(422 unprocessable) (see '"),
        (["empty.zip"], 1, "empty.zip holds no XML document"),
        (["big.zip"], 1, "big.zip has 4 XML members; send them in several uploads, big.zip "),
    ]:
        proc = run_cli("submit", *args, "--url", small.url, cwd=tmp_path)
        assert proc.returncode == status, (args, proc.stderr)
        assert said in error_line(proc, "submit"), proc.stderr


def test_an_upload_over_the_limit_says_what_counts_against_it(small: Server) -> None:
    """XMLFLOW_MAX_UPLOAD_FILES=3: a file and a zip of 5 XML members are 6 documents. The
    413 says the limit (3, not the 2 left beside the file), the zip's members and the
    file; and the files after a zip count too (2 members and 2 files are 4: refused)."""
    five = io.BytesIO()
    with zipfile.ZipFile(five, "w") as archive:
        for i in range(1, 6):
            archive.writestr(f"m{i}.xml", f"<m>{i}</m>")
    pair = io.BytesIO()
    with zipfile.ZipFile(pair, "w") as archive:
        archive.writestr("p1.xml", "<p/>")
        archive.writestr("notes.txt", "not a document")
        archive.writestr("p2.xml", "<p/>")
    for files, said, total in [
        (
            [("s012.xml", b"<s/>"), ("five.zip", five.getvalue())],
            "five.zip has 5 XML members and s012.xml is 1 more; send them in several "
            "uploads, five.zip split into zips of at most 3 XML members",
            6,
        ),
        (
            [("pair.zip", pair.getvalue()), ("a.xml", b"<a/>"), ("b.xml", b"<b/>")],
            "pair.zip has 2 XML members and the 2 other files are 2 more; send them in "
            "several uploads",
            4,
        ),
    ]:
        before = httpx.get(f"{small.url}/api/jobs", params={"limit": 1}).json()["total"]
        parts = [("file", (name, body, "application/xml")) for name, body in files]
        refused = httpx.post(f"{small.url}/upload", files=parts, timeout=30)
        assert refused.status_code == 413, refused.text
        error = refused.json()["error"]
        assert error["message"] == (
            f"the upload holds {total} documents, more than 3, the limit "
            f"(XMLFLOW_MAX_UPLOAD_FILES): {said}"
        )
        assert error["details"]["limit"] == 3
        after = httpx.get(f"{small.url}/api/jobs", params={"limit": 1}).json()["total"]
        assert after == before  # all or nothing


def test_a_zip_counts_as_its_members_and_one_over_the_limit_goes_alone(
    small: Server, tmp_path: Path
) -> None:
    """A file and a zip of 5 XML members (the limit is 3): the file is sent and runs;
    the zip, alone, is refused in the server's words, naming the true limit."""
    files = [*numbered(tmp_path, 1), xml_zip(tmp_path / "five.zip", 5)]
    out = tmp_path / "out"
    proc = run_cli("submit", *files, "--out", out, "--url", small.url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "succeeded, 1 output" in proc.stdout
    assert [p.read_text() for p in out.iterdir()] == ["<N>1</N>!"]
    assert error_line(proc, "submit") == (
        f"1 of 2 files not sent (from {files[1]} on): the upload holds 5 documents, more "
        "than 3, the limit (XMLFLOW_MAX_UPLOAD_FILES): five.zip has 5 XML members; send "
        "them in several uploads, five.zip split into zips of at most 3 XML members "
        "(413 upload_too_large)"
    )


def test_zips_whose_members_overflow_an_upload_are_sent_again_apart(
    small: Server, tmp_path: Path
) -> None:
    """Two files and a zip of two XML members are 4 documents, over the 3 an upload
    takes: the zip is counted as its members, and goes in an upload of its own."""
    files = [*numbered(tmp_path, 2), xml_zip(tmp_path / "pair.zip", 2)]
    out = tmp_path / "out"
    proc = run_cli("submit", *files, "--out", out, "--url", small.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 files: 4 succeeded; 4 outputs" in proc.stdout
    saved = sorted(p.read_text() for p in out.iterdir())
    assert saved == ["<M>1</M>!", "<M>2</M>!", "<N>1</N>!", "<N>2</N>!"]


@pytest.mark.parametrize("signum", [15, 1])  # SIGTERM, SIGHUP
def test_submit_stopped_by_a_signal_says_how_to_follow_on(
    small: Server, tmp_path: Path, signum: int
) -> None:
    """``timeout``, systemd or a closed terminal: as Ctrl-C, the display ends with what
    became of each file and the command that follows the jobs on (it died silently,
    leaving the terminal's cursor hidden)."""
    (tmp_path / "held.xml").write_bytes(b"<held/>")
    before = httpx.get(f"{small.url}/api/jobs", params={"limit": 1}).json()["total"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "xmlflow", "submit", "held.xml", "-p", "held", "--url", small.url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while httpx.get(f"{small.url}/api/jobs", params={"limit": 1}).json()["total"] == before:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)  # following now
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    job_id = httpx.get(f"{small.url}/api/jobs", params={"limit": 1}).json()["jobs"][0]["id"]
    httpx.post(f"{small.url}/api/jobs/{job_id}/cancel")  # the module's one runner, back
    assert proc.returncode == 128 + signum, err
    assert "held.xml: not ended" in out
    assert err.strip().endswith(f"stopped following; the jobs go on: xmlflow jobs follow {job_id}")
