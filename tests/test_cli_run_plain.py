"""``xmlflow run`` into a pipe or a log file: the display's lasting lines as plain text.

A live display redrawn ten times a second has nobody to show it to there; rich left its
last frame of bars, padded with spaces to 80 columns, in the file.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from xmlflow.cli.display import FileJob, PlainReporter
from xmlflow.models import Event, EventType

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
