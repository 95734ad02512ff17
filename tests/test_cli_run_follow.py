"""``xmlflow run`` follows its jobs by listening to the event log, as real processes.

The run hands every event of every job to the display once and in order, while several
files run at once and more files wait than there are listeners; Ctrl-C cancels what
runs and what waits, shows how each ended and exits 130; ``--json`` loads no rich.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import alive, write_config

CONFIG = """
    TICKS = {"id": "ticks", "name": "Ticks", "module": "run_ticks", "options": {"ticks": 4}}
    SLOW = {"id": "ticks", "name": "Ticks", "module": "run_ticks", "options": {"ticks": 600}}
    PIPELINES = {"default": [TICKS], "slow": [SLOW]}
"""
STEPS = {
    "ticks": """
        import os
        import time

        def run_ticks(ctx):
            if "XMLFLOW_TEST_PIDFILE" in os.environ:  # where a test looks for the job's process
                with open(os.environ["XMLFLOW_TEST_PIDFILE"], "a") as pids:
                    pids.write(f"{os.getpid()} ")
            count = ctx.options["ticks"]
            for tick in range(1, count + 1):
                if ctx.cancelled:
                    return
                ctx.progress(tick / count, f"tick {tick}")
                time.sleep(0.15)  # longer than the runner's throttle: every tick is an event
            with ctx.open_output(ctx.stem + ".ticks.txt", "w") as out:
                out.write(f"{ctx.input.read_text()} after {count} ticks")
    """,
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "conf", CONFIG, STEPS)


def _inputs(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    files = []
    for i in range(count):
        path = folder / f"in{i}.xml"
        path.write_text(f"<n>{i}</n>")
        files.append(path)
    return files


def _xmlflow_run(config: Path, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "xmlflow", "run", "--json", "--config", str(config)] + [
        str(a) for a in args
    ]


def _by_job(stdout: str) -> dict[str, list[dict[str, Any]]]:
    events: dict[str, list[dict[str, Any]]] = {}
    for line in stdout.splitlines():
        event = json.loads(line)
        events.setdefault(event["file"], []).append(event)
    return events


def test_every_event_of_every_job_reaches_the_display_once_and_in_order(
    config: Path, tmp_path: Path
) -> None:
    """Five files, two at a time: three listeners follow them in turn."""
    files = _inputs(tmp_path / "in", 5)
    out = tmp_path / "out"
    done = subprocess.run(
        [*_xmlflow_run(config, "--workers", "2", "--out", out), *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    events = _by_job(done.stdout)
    assert sorted(events) == sorted(map(str, files))
    for seen in events.values():
        assert [e["id"] for e in seen] == list(range(1, len(seen) + 1))
        ticks = [e["data"].get("message") for e in seen if e["event"] == "progress"]
        assert ticks == ["tick 1", "tick 2", "tick 3", "tick 4"]
        assert (seen[-1]["event"], seen[-1]["data"]["status"]) == ("end", "succeeded")
    for i in range(5):
        assert (out / f"in{i}.ticks.txt").read_text() == f"<n>{i}</n> after 4 ticks"


def test_ctrl_c_cancels_running_and_queued_jobs_shows_their_end_and_exits_130(
    config: Path, tmp_path: Path
) -> None:
    files = _inputs(tmp_path / "in", 3)
    out = tmp_path / "out"
    argv = _xmlflow_run(config, "--pipeline", "slow", "--workers", "1", "--out", out)
    run = subprocess.Popen(  # its own process group: Ctrl-C reaches all of it, as in a terminal
        [*argv, *files], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert run.stdout is not None
    lines = []
    for line in run.stdout:
        lines.append(line)
        if '"event":"progress"' in line:  # the first file's step is under way
            break
    os.killpg(run.pid, signal.SIGINT)
    rest, _ = run.communicate(timeout=30)
    assert run.returncode == 130
    events = _by_job("".join(lines) + rest)
    ends = {
        file: [e["data"]["status"] for e in seen if e["event"] == "end"]
        for file, seen in events.items()
    }
    assert ends == {str(f): ["cancelled"] for f in files}
    for seen in events.values():
        assert [e["id"] for e in seen] == list(range(1, len(seen) + 1))
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_stops_the_run_like_ctrl_c_and_leaves_no_process_or_file(
    config: Path, tmp_path: Path, signum: int
) -> None:
    """``timeout``, systemd or a closed terminal signal the run's process alone: its jobs
    are cancelled, their processes end, and the temporary folder (a copy of each input)
    goes too."""
    files = _inputs(tmp_path / "in", 2)
    temp, pidfile = tmp_path / "tmp", tmp_path / "pids"
    temp.mkdir()
    argv = _xmlflow_run(config, "--pipeline", "slow", "--workers", "1", "--out", tmp_path / "out")
    env = {**os.environ, "TMPDIR": str(temp), "XMLFLOW_TEST_PIDFILE": str(pidfile)}
    run = subprocess.Popen([*argv, *files], stdout=subprocess.PIPE, text=True, env=env)
    assert run.stdout is not None
    lines = []
    for line in run.stdout:
        lines.append(line)
        if '"event":"progress"' in line:
            break
    run.send_signal(signum)
    rest, _ = run.communicate(timeout=30)
    assert run.returncode == 128 + signum
    events = _by_job("".join(lines) + rest)
    ends = [e["data"]["status"] for seen in events.values() for e in seen if e["event"] == "end"]
    assert ends == ["cancelled", "cancelled"]
    job_pid = int(pidfile.read_text().split()[0])
    deadline = time.monotonic() + 10
    while alive(job_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(job_pid), "the job's process outlived the run"
    assert list(temp.iterdir()) == [], "the run's temporary folder was left behind"


def test_run_json_loads_no_rich(config: Path, tmp_path: Path) -> None:
    """``PYTHONPROFILEIMPORTTIME`` lists every module the run's processes imported."""
    files = _inputs(tmp_path / "in", 1)
    done = subprocess.run(
        [*_xmlflow_run(config, "--out", tmp_path / "out"), *files],
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "xmlflow.cli.localrun" in imported  # the listing is there
    assert not {name for name in imported if name.split(".")[0] == "rich"}
