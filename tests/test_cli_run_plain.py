"""``xmlflow run`` into a pipe or a log file: the display's lasting lines as plain text.

A live display redrawn ten times a second has nobody to show it to there; rich left its
last frame of bars, padded with spaces to 80 columns, in the file.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from xmlflow.cli.display import FileJob, PlainReporter
from xmlflow.models import Event, EventType

from .conftest import descendant_pids, write_config

BAR = "━"


def xmlflow(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xmlflow", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_run_into_a_log_file_has_its_lines_whole_and_no_bars(tmp_path: Path) -> None:
    long_name = "a-quarterly-filing-of-a-company-with-a-very-long-name-" * 2 + "2026.xml"
    (tmp_path / long_name).write_bytes(b"<filing><total>12</total></filing>")
    (tmp_path / "bad.xml").write_bytes(b"<r>\n  <a></b>\n</r>")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TTY_COMPATIBLE")}
    env.pop("FORCE_COLOR", None)
    done = xmlflow("run", long_name, "bad.xml", "--out", "out", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert BAR not in done.stdout and "\x1b" not in done.stdout, done.stdout
    assert all(line == line.rstrip() for line in lines), lines  # no padding to 80 columns
    stem = long_name.removesuffix(".xml")
    assert f"✔ {long_name}: succeeded, 1 output" in lines, lines
    assert f"    → out/{stem}.json" in lines, lines
    assert "  bad.xml:2:8: error: mismatched tag" in lines, lines
    assert lines[-1] == "2 files: 1 succeeded, 1 failed; 1 output", lines
    assert (tmp_path / "out" / f"{stem}.json").read_bytes() == b'{"filing":{"total":"12"}}'


def test_columns_cut_step_lines_and_fold_the_rest(tmp_path: Path) -> None:
    long_name = "n" * 100 + ".xml"
    (tmp_path / long_name).write_bytes(b"<r>1</r>")
    env = {**os.environ, "COLUMNS": "60"}
    env.pop("TTY_COMPATIBLE", None)
    env.pop("FORCE_COLOR", None)
    done = xmlflow("run", long_name, "--out", "out", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 60, lines
    assert any(line.startswith("✔ nnnn") and line.endswith("…") for line in lines), lines
    assert "".join(lines).count("n" * 100) == 2, lines  # the outcome and output, folded


def test_a_long_step_says_where_it_is_now_and_then() -> None:
    out = io.StringIO()
    reporter = PlainReporter(out, every=0.0)
    job = FileJob(Path("/data/big.xml"), size=40_000_000, job_id="j1")
    reporter.start([job], 1)
    step = {"index": 0, "total": 1, "name": "Convert", "status": "running"}
    reporter.event(job, Event("j1", 1, EventType.STEP, step))
    progress = {"index": 0, "fraction": 0.25, "message": "10 MB read"}
    reporter.event(job, Event("j1", 2, EventType.PROGRESS, progress))
    said = out.getvalue().splitlines()
    assert len(said) == 1 and said[0].startswith("  big.xml: 1/1 Convert 10.0 MB/40.0 MB"), said
    quiet = PlainReporter(io.StringIO())  # every 10 s: a short step says nothing meanwhile
    quiet.event(job, Event("j1", 1, EventType.STEP, step))
    quiet.event(job, Event("j1", 2, EventType.PROGRESS, progress))
    assert isinstance(quiet.out, io.StringIO) and quiet.out.getvalue() == ""


TICKS_CONFIG = """
    SLOW = {"id": "ticks", "name": "Ticks", "module": "run_ticks", "options": {"ticks": 600}}
    QUICK = {"id": "ticks", "name": "Ticks", "module": "run_ticks", "options": {"ticks": 1}}
    PIPELINES = {"slow": [SLOW], "default": [QUICK]}
"""
TICKS_STEP = """
    import time

    def run_ticks(ctx):
        count = ctx.options["ticks"]
        for tick in range(1, count + 1):
            if ctx.cancelled:
                return
            ctx.progress(tick / count, f"tick {tick}")
            time.sleep(0.05)
        with ctx.open_output(ctx.stem + ".txt", "w") as out:
            out.write(ctx.input.read_text().upper())
"""


def _ticks(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    config = write_config(tmp_path / "conf", TICKS_CONFIG, {"ticks": TICKS_STEP})
    names = [f"f{i}.xml" for i in range(count)]
    for name in names:
        (tmp_path / name).write_text(f"<{name[:2]}/>")
    return config, names


def _ticking(run: subprocess.Popen[Any]) -> None:
    """Wait until the run's first job is in its step: the run's zygote and its fork, the
    job's process, are there (then a moment for the step to start ticking)."""
    deadline = time.monotonic() + 20
    while len(descendant_pids(run.pid)) < 2:
        assert time.monotonic() < deadline, "no job's process"
        time.sleep(0.1)
    time.sleep(1)


def _plain_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TTY_COMPATIBLE")}
    env.pop("FORCE_COLOR", None)
    return env


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_still_says_what_became_of_each_file(tmp_path: Path, signum: int) -> None:
    """Into a log, the run that was stopped names each file's end (the queued one too)
    and the summary, as a finished run does."""
    config, names = _ticks(tmp_path, 3)
    argv = [sys.executable, "-m", "xmlflow", "run", "--config", str(config), "-p", "slow"]
    run = subprocess.Popen(
        [*argv, "--workers", "1", "--out", "out", *names],
        cwd=tmp_path,
        env=_plain_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _ticking(run)  # the first job is ticking, the others wait
    run.send_signal(signum)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 128 + signum, err
    lines = out.splitlines()
    for name in names:
        assert f"✖ {name}: cancelled" in lines or f"■ {name}: cancelled" in lines, out
    assert lines[-1] == "3 files: 3 cancelled; 0 outputs", out
    assert "Traceback" not in err


def test_a_stopped_run_gives_the_terminal_its_cursor_back(tmp_path: Path) -> None:
    config, names = _ticks(tmp_path, 2)
    terminal = {**_plain_env(), "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    argv = [sys.executable, "-m", "xmlflow", "run", "--config", str(config), "-p", "slow"]
    run = subprocess.Popen(
        [*argv, "--out", "out", *names],
        cwd=tmp_path,
        env=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _ticking(run)
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=30)
    assert run.returncode == 130
    assert b"\x1b[?25l" in out  # the live display hid the cursor...
    assert out.rindex(b"\x1b[?25h") > out.rindex(b"\x1b[?25l")  # ...and showed it again
    assert out.endswith(b"\n")


def _outputs(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())} if folder.exists() else {}


def test_when_the_reader_leaves_the_jobs_go_on_to_their_outputs(tmp_path: Path) -> None:
    """``xmlflow run *.xml | head -1``: the display stops at the first failed write, one
    line on stderr says so, and every file still gets its output (4 of 60 did)."""
    config, names = _ticks(tmp_path, 12)
    read, write = os.pipe()
    os.close(read)  # the reader has left before the first line
    try:
        done = subprocess.run(
            [sys.executable, "-m", "xmlflow", "run", "--config", str(config), "-o", "out", *names],
            cwd=tmp_path,
            env=_plain_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 0, done.stderr
    [said] = done.stderr.strip().splitlines()
    assert said.endswith(
        "xmlflow run: the display stopped, its output failed (Broken pipe); the jobs go on"
    )
    expected = {f"{n[:-4]}.txt": f"<{n[:2].upper()}/>" for n in names}
    assert _outputs(tmp_path / "out") == expected


@pytest.mark.parametrize("stdout", ["closed", "/dev/full"])
def test_a_run_whose_stdout_is_closed_or_full_still_runs(tmp_path: Path, stdout: str) -> None:
    config, names = _ticks(tmp_path, 3)
    argv = [sys.executable, "-m", "xmlflow", "run", "--config", str(config), "-o", "out"]
    target = "1>&-" if stdout == "closed" else "> /dev/full"
    command = " ".join([*argv, *names]) + f" {target}"
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=tmp_path,
        env=_plain_env(),
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 1, done.stderr
    assert len(_outputs(tmp_path / "out")) == 3
