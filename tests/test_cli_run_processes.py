"""``xmlflow run``'s processes and files, seen from outside: the job's process comes from
a zygote (a fork of the run's own process, see :mod:`xmlflow.zygote`), dies with the
run however the run ends, keeps its memory cap, and never changes the user's input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import alive, cmdline, descendant_pids, parent_pid, write_config

STEPS = {
    "hold": """
        import os
        import time

        def run_hold(ctx):
            with open(os.environ["XMLFLOW_TEST_PIDFILE"], "a") as pids:
                pids.write(f"{os.getpid()} ")
            while not ctx.cancelled:
                time.sleep(0.05)
    """,
    "greedy": """
        def run_greedy(ctx):
            block = bytearray(ctx.options["mb"] * 1024 * 1024)
            with ctx.open_output(ctx.stem + ".txt", "w") as out:
                out.write(str(len(block)))
    """,
    "scribble": """
        def run_scribble(ctx):  # breaks the rule "never modify ctx.input in place"
            with open(ctx.input, "r+b") as f:
                f.write(b"<!--scribbled-->")
    """,
}
CONFIG = """
    HOLD = {"id": "hold", "name": "Hold", "module": "run_hold"}
    CONVERT_SLOWLY = {"id": "process_xml", "name": "Convert",
                      "module": "run_xml_processing_step", "delay": 1.5}
    PIPELINES = {
        "default": [HOLD],
        "small": [{"id": "greedy", "name": "Greedy", "module": "run_greedy",
                   "options": {"mb": 24}}],
        "big": [{"id": "greedy", "name": "Greedy", "module": "run_greedy",
                 "options": {"mb": 400}}],
        "builtin": [CONVERT_SLOWLY],
        "scribble": [{"id": "scribble", "name": "Scribble", "module": "run_scribble"}],
    }
"""


def _run_argv(config: Path, out: Path, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "xmlflow", "run", "--json", "--config", str(config)] + [
        str(a) for a in ("--out", out, *args)
    ]


def _start_holding(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """A run whose job holds until cancelled; returns it and its job's pid."""
    config = write_config(tmp_path / "conf", CONFIG, STEPS)
    source = tmp_path / "in.xml"
    source.write_text("<a/>")
    pidfile = tmp_path / "pids"
    env = {**os.environ, "XMLFLOW_TEST_PIDFILE": str(pidfile)}
    argv = _run_argv(config, tmp_path / "out", source)
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    return run, int(pidfile.read_text().split()[0])


def test_the_job_runs_in_a_fork_of_the_run_with_no_other_interpreter(tmp_path: Path) -> None:
    """No forkserver and no resource tracker: the run's process tree is the run, its
    zygote and the job, all the same program (forks, not new interpreters)."""
    run, job = _start_holding(tmp_path)
    try:
        tree = descendant_pids(run.pid)
        assert job in tree
        assert len(tree) == 2, [cmdline(pid) for pid in tree]  # the zygote and the job
        assert {cmdline(pid) for pid in tree} == {cmdline(run.pid)}
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=30)
    assert run.returncode == 130
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in tree if alive(pid)], "a process outlived the run"


def test_kill_9_of_the_run_takes_its_zygote_and_job_along(tmp_path: Path) -> None:
    run, job = _start_holding(tmp_path)
    tree = descendant_pids(run.pid)
    run.kill()
    run.communicate(timeout=10)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in tree if alive(pid)], "the zygote or the job outlived kill -9"


def _run(tmp_path: Path, pipeline: str, source: Path, **env: str) -> tuple[int, list[dict]]:
    config = write_config(tmp_path / "conf", CONFIG, STEPS)
    done = subprocess.run(
        _run_argv(config, tmp_path / "out", "--pipeline", pipeline, source),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def test_the_memory_cap_leaves_the_step_its_share_and_stops_a_greedy_one(
    tmp_path: Path,
) -> None:
    """64 MB for the step, beyond what its process started with: 24 MB fit, 400 do not."""
    source = tmp_path / "in.xml"
    source.write_text("<a/>")
    code, events = _run(tmp_path, "small", source, XMLFLOW_JOB_MEMORY_MB="64")
    assert code == 0, events
    assert (tmp_path / "out" / "in.txt").read_text() == str(24 * 1024 * 1024)
    code, events = _run(tmp_path, "big", source, XMLFLOW_JOB_MEMORY_MB="64")
    assert code == 1
    assert "out of memory" in events[-1]["data"]["error"]


def test_a_builtin_pipeline_reads_the_input_in_place_and_leaves_it_as_it_was(
    tmp_path: Path,
) -> None:
    """The job gets a link to the file, not a copy (xmlflow's steps only read it), and
    drops the link when it ends: the file keeps its inode, its content, one link."""
    source = tmp_path / "in.xml"
    source.write_text('<r a="1"><b>x</b></r>')
    inode = source.stat().st_ino
    config = write_config(tmp_path / "conf", CONFIG, STEPS)
    argv = _run_argv(config, tmp_path / "out", "--pipeline", "builtin", source)
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while source.stat().st_nlink == 1:  # the step waits 1.5 s before it reads
        assert time.monotonic() < deadline and run.poll() is None, "no link was made"
        time.sleep(0.02)
    run.communicate(timeout=30)
    assert run.returncode == 0
    assert json.loads((tmp_path / "out" / "in.json").read_text()) == {"r": {"@a": "1", "b": "x"}}
    assert (source.stat().st_ino, source.stat().st_nlink) == (inode, 1)
    assert source.read_text() == '<r a="1"><b>x</b></r>'


def test_a_user_step_that_writes_its_input_never_reaches_the_users_file(
    tmp_path: Path,
) -> None:
    """A user step gets a copy: breaking the rule changes the job's copy only."""
    source = tmp_path / "in.xml"
    source.write_text("<a>precious</a>")
    code, events = _run(tmp_path, "scribble", source)
    assert code == 0, events
    assert source.read_text() == "<a>precious</a>"
    assert source.stat().st_nlink == 1


def test_when_the_zygote_is_killed_the_next_jobs_start_from_a_forkserver(
    tmp_path: Path,
) -> None:
    """kill -9 of the zygote fails the job it was running (its process dies with it);
    the run goes on with multiprocessing's forkserver and ends the other file."""
    config = write_config(tmp_path / "conf", CONFIG, STEPS)
    first, second = tmp_path / "a.xml", tmp_path / "b.xml"
    first.write_text("<a/>")
    second.write_text("<b/>")
    pidfile = tmp_path / "pids"
    env = {**os.environ, "XMLFLOW_TEST_PIDFILE": str(pidfile), "XMLFLOW_WORKERS": "1"}
    argv = _run_argv(config, tmp_path / "out", first, second)
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    job = int(pidfile.read_text().split()[0])
    zygote = parent_pid(job)
    assert cmdline(zygote) == cmdline(run.pid) and zygote != run.pid
    os.kill(zygote, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(pidfile.read_text().split()) < 2:  # the second job started, elsewhere
        assert time.monotonic() < deadline and run.poll() is None, "no second job"
        time.sleep(0.05)
    second_job = int(pidfile.read_text().split()[1])
    parent = parent_pid(second_job)
    assert "forkserver" in cmdline(parent)
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=30)
    ends = {
        event["file"]: event["data"]
        for event in map(json.loads, out.splitlines())
        if event["event"] == "end"
    }
    assert ends[str(first)]["status"] == "failed"
    assert "killed by SIGKILL" in ends[str(first)]["error"]
    assert ends[str(second)]["status"] == "cancelled"
