"""What people see from ``xmlflow run`` and ``xmlflow serve``: progress they can plan with,
words in the singular when there is one, durations with units, a taken port explained.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from xmlflow.cli import main

from .conftest import REPO, write_config

CRAWL = """
    import time

    def run_crawl(ctx):
        for i in range(1, 6):
            time.sleep(0.25)
            if ctx.filename == "told.xml":  # a streaming step says its bytes itself
                ctx.progress(i / 6, done=i * 1_000_000, total=6_000_000)
            else:
                ctx.progress(i / 6)
        with ctx.open_output(ctx.stem + ".txt", "w") as out:
            out.write("crawled")
"""
CONFIG = """
    PIPELINES = {"default": [{"id": "crawl", "name": "Crawl", "module": "run_crawl"}]}
"""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def xmlflow(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xmlflow", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "80", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_shows_bytes_rate_and_eta_inside_a_step_within_80_columns(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG, {"crawl": CRAWL})
    (tmp_path / "big.xml").write_bytes(b"<r>" + b"x" * 3_000_000 + b"</r>")
    (tmp_path / "told.xml").write_bytes(b"<r/>")
    (tmp_path / "small.xml").write_bytes(b"<r/>")
    # a terminal that refreshes the live display, as people have it
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    files = ["big.xml", "told.xml", "small.xml"]
    proc = xmlflow("run", *files, "--workers", "3", "-o", "out", cwd=tmp_path, env=terminal)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    screen = ANSI.sub("", proc.stdout)
    rate = r" \d+(\.\d+)? [kM]B/s ETA \d+(\.\d+)? m?s"
    assert re.search(r"\d\.\d MB/3\.0 MB" + rate, screen), screen  # fraction of the size
    assert re.search(r"\d\.\d MB/6\.0 MB" + rate, screen), screen  # the bytes the step said
    lines = re.split(r"[\r\n]", screen)
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert re.search(r"1/1 Crawl succeeded 1\.\d\d s", screen)
    assert "big.xml: succeeded, 1 output\n" in screen
    assert "3 files: 3 succeeded; 3 outputs" in screen


def test_counts_are_worded_in_the_singular_for_one(tmp_path: Path) -> None:
    (tmp_path / "one.xml").write_bytes(b"<r><a>1</a></r>")
    proc = xmlflow("run", "one.xml", "--json", "-o", "out", cwd=tmp_path)  # built-in pipeline
    assert proc.returncode == 0, proc.stderr
    messages = [
        event["data"]["message"]
        for event in map(json.loads, proc.stdout.splitlines())
        if event["event"] == "progress"
    ]
    assert messages[-2:] == ["15 B of 15 B read, 1 record", "1 output ready"], messages


def test_serve_help_lists_the_environment_variables() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for name in ["XMLFLOW_PORT", "XMLFLOW_HOST", "XMLFLOW_DATA_DIR", "XMLFLOW_REDIS_URL"]:
        assert name in result.output, name


def test_a_taken_port_says_how_to_choose_another(tmp_path: Path) -> None:
    """``make run`` is ``python app.py``: a taken port fails at once, saying what to do."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "XMLFLOW_PORT": str(port), "XMLFLOW_DATA_DIR": str(tmp_path / "d")}
        proc = subprocess.run(
            [sys.executable, str(REPO / "app.py")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in proc.stderr
    assert f"XMLFLOW_PORT={port + 1} make run" in proc.stderr
    assert not (tmp_path / "d").exists()  # nothing created on the way out


def test_quick_start_keeps_two_commands_and_names_the_port_variable() -> None:
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick.split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in block.strip().splitlines()] == [
        ["make", "run"],
        ["make", "test"],
    ]
    assert "XMLFLOW_PORT=" in quick


def test_no_subcommand_shows_the_help_not_an_error() -> None:
    for args in ([], ["jobs"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2
        assert "Commands:" in result.output and "error:" not in result.output


def test_the_wording_helpers_do_what_their_examples_say() -> None:
    import doctest

    import xmlflow.cli.display
    import xmlflow.units

    for module in (xmlflow.units, xmlflow.cli.display):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_submit_and_follow_list_their_environment_variables() -> None:
    for args, names in [
        (["submit", "--help"], ["XMLFLOW_URL", "XMLFLOW_API_TOKEN", "XMLFLOW_PIPELINE"]),
        (["jobs", "follow", "--help"], ["XMLFLOW_URL", "XMLFLOW_OUT", "XMLFLOW_JSON"]),
    ]:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0
        assert all(name in result.output for name in names), result.output


def test_run_outputs_are_files_of_the_user_as_any_new_file(tmp_path: Path) -> None:
    """The outputs are moved out of the run's private folder, not copied: they still get
    the mode a new file gets under the user's umask, not the job's private 0600."""
    src = tmp_path / "a.xml"
    src.write_bytes(b"<r><i>1</i><i>2</i></r>")
    for umask, mode in ((0o022, 0o644), (0o077, 0o600)):
        out = tmp_path / f"out-{umask:o}"
        result = subprocess.run(
            [sys.executable, "-m", "xmlflow", "run", str(src), "--out", str(out)],
            capture_output=True,
            timeout=60,
            preexec_fn=lambda umask=umask: os.umask(umask),
        )
        assert result.returncode == 0, result.stderr
        assert json.loads((out / "a.json").read_bytes()) == {"r": {"i": ["1", "2"]}}
        assert (out / "a.json").stat().st_mode & 0o777 == mode


def test_a_run_that_cannot_start_says_so_in_one_line_as_submit_does(tmp_path: Path) -> None:
    """A config whose step does not exist: ``xmlflow run: error: …``, exit 1, no usage."""
    config = write_config(
        tmp_path / "conf",
        'PIPELINES = {"default": [{"id": "nowhere", "name": "Gone", "module": "run"}]}',
    )
    source = tmp_path / "a.xml"
    source.write_text("<a/>")
    done = subprocess.run(
        [sys.executable, "-m", "xmlflow", "run", "--config", str(config), str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and " run: error: " in lines[0], done.stderr
    assert "'nowhere'" in lines[0]


def test_a_file_name_with_control_characters_is_shown_escaped(tmp_path: Path) -> None:
    """A newline or an escape sequence in a file's name would break the display's lines
    or restyle the terminal: the live lines and the summary show it as ``\\n``, ``\\x1b``."""
    names = ["new\nline.xml", "esc\x1b[31mred.xml"]
    for name in names:
        (tmp_path / name).write_text("<a/>")
    done = xmlflow("run", *names, "--out", "out", cwd=tmp_path)  # into a pipe: plain lines
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    assert not any(line.startswith("line.xml") for line in lines), done.stdout
    for shown in ("new\\nline.xml", "esc\\x1b[31mred.xml"):
        assert f"✔ {shown}: 1/2 " in done.stdout  # a finished step's line
        assert f"✔ {shown}: succeeded, 1 output" in lines  # the summary
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}  # the live display
    live = xmlflow("run", *names, "--out", "out2", cwd=tmp_path, env=terminal)
    assert live.returncode == 0, live.stderr
    assert "esc\x1b[31mred" not in live.stdout and "new\nline" not in live.stdout
    lines = ANSI.sub("", live.stdout).splitlines()
    for shown in ("new\\nline.xml", "esc\\x1b[31mred.xml"):
        assert f"✔ {shown}: succeeded, 1 output" in lines  # the summary
        assert any(line.startswith(f"{shown} ") for line in lines)  # the live bar


def test_a_setting_out_of_range_says_the_range_and_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_text("<a/>")
    for env, said in [
        (
            {"XMLFLOW_JOB_MEMORY_MB": "32"},
            "XMLFLOW_JOB_MEMORY_MB is 32, out of range: it must be 64 to 16777216",
        ),
        (
            {"XMLFLOW_STEP_TIMEOUT": "0"},
            "XMLFLOW_STEP_TIMEOUT is 0, out of range: it must be more than 0 and at most "
            "604800 seconds (unset: no timeout)",
        ),
        (  # setrlimit's OverflowError in every job's process
            {"XMLFLOW_JOB_MEMORY_MB": "99999999999999999999999999"},
            "XMLFLOW_JOB_MEMORY_MB is 1e+26, out of range: it must be 64 to 16777216",
        ),
        (  # a sweeper thread dead of time_t's overflow; 0 spun at 100 % CPU
            {"XMLFLOW_SWEEP_INTERVAL": "0"},
            "XMLFLOW_SWEEP_INTERVAL is 0, out of range: it must be 0.1 to 86400 seconds",
        ),
        (  # every job failed "internal error: OverflowError"
            {"XMLFLOW_MAX_UPLOAD_MB": "inf"},
            "XMLFLOW_MAX_UPLOAD_MB is inf: it must be a finite number, "
            "more than 0 and at most 1048576",
        ),
    ]:
        done = xmlflow("run", "a.xml", cwd=tmp_path, env=env)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            f"python -m xmlflow run: error: {said} (see 'python -m xmlflow run --help')\n"
        )


def test_a_url_that_is_not_a_server_address_is_a_usage_error_naming_url(tmp_path: Path) -> None:
    """Not "the connection … broke" (exit 1) at the first request: exit 2 at once."""
    (tmp_path / "a.xml").write_text("<a/>")
    for args, env, where in [
        (["jobs", "--url", "notaurl", "list"], {}, "jobs"),
        (["jobs", "list", "--url", "notaurl"], {}, "jobs list"),
        (["submit", "a.xml", "--url", "notaurl"], {}, "submit"),
        (["jobs", "list"], {"XMLFLOW_URL": "notaurl"}, "jobs"),
    ]:
        done = xmlflow(*args, cwd=tmp_path, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert f"xmlflow {where}: error: Invalid value for '--url'" in done.stderr
        assert "'notaurl' is not a server address: give http(s)://host[:port]" in done.stderr
    for url in ("ftp://host", "localhost:5000", "http://", "http://host:port"):
        done = xmlflow("jobs", "--url", url, "list", cwd=tmp_path)
        assert done.returncode == 2 and "is not a server address" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
