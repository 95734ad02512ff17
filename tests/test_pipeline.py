"""The runner and the step loader, without a server or a store."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from xmlflow.errors import ConfigError, StepLoadError
from xmlflow.models import EventType, JobStatus, StepSpec
from xmlflow.pipeline import JobRun, RunPlan, check_pipelines, load_step, upload_options
from xmlflow.step import JsonType, UploadOption

from .conftest import write_config


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[EventType, dict[str, Any]]] = []

    def __call__(self, type: EventType, data: dict[str, Any]) -> None:
        self.events.append((type, data))

    def steps(self) -> list[tuple[str, str]]:
        return [(d["id"], d["status"]) for t, d in self.events if t is EventType.STEP]


def make_run(
    tmp_path: Path,
    specs: list[StepSpec],
    steps_dir: Path | None = None,
    step_timeout: float | None = None,
    **kwargs: Any,
) -> tuple[JobRun, Recorder]:
    source = tmp_path / "source"
    source.write_bytes(b"<a>hello</a>")
    recorder = Recorder()
    plan = RunPlan(
        job_id="j1",
        specs=specs,
        source=source,
        workdir=tmp_path / "work",
        outdir=tmp_path / "out",
        filename="doc.xml",
        steps_dir=steps_dir,
        step_timeout=step_timeout,
    )
    run = JobRun(plan, emit=recorder, **kwargs)
    return run, recorder


def user_steps(tmp_path: Path, **files: str) -> Path:
    write_config(tmp_path / "conf", "PROCESSING_STEPS = []", files)
    return tmp_path / "conf" / "processing_steps"


COPY = """
def run(ctx):
    with ctx.open_output(ctx.stem + ".copy", "wb") as out:
        out.write(ctx.input.read_bytes())
"""
BOOM = """
def run(ctx):
    raise ValueError("record 7 has no id")
"""


def test_steps_run_in_order_and_outputs_are_kept(tmp_path: Path) -> None:
    steps_dir = user_steps(tmp_path, copy=COPY)
    specs = [StepSpec("copy", "Copy", "run"), StepSpec("cleanup", "Clean", "run_cleanup_step")]
    run, rec = make_run(tmp_path, specs, steps_dir)
    assert run.run() == (JobStatus.SUCCEEDED, None)
    assert rec.steps() == [
        ("copy", "running"),
        ("copy", "succeeded"),
        ("cleanup", "running"),
        ("cleanup", "succeeded"),
    ]
    assert (tmp_path / "out" / "doc.copy").read_bytes() == b"<a>hello</a>"
    assert list(run.outputs) == ["doc.copy"]


def test_source_and_scratch_are_deleted_after_success_and_failure(tmp_path: Path) -> None:
    steps_dir = user_steps(tmp_path, boom=BOOM)
    for specs in ([StepSpec("cleanup", "C", "run_cleanup_step")], [StepSpec("boom", "B", "run")]):
        run, _ = make_run(tmp_path, specs, steps_dir)
        run.run()
        assert not run.plan.source.exists()
        assert not run.plan.workdir.exists()


def test_a_raising_step_fails_the_job_and_skips_the_rest(tmp_path: Path) -> None:
    steps_dir = user_steps(tmp_path, boom=BOOM)
    specs = [StepSpec("boom", "Boom", "run"), StepSpec("cleanup", "Clean", "run_cleanup_step")]
    run, rec = make_run(tmp_path, specs, steps_dir)
    status, error = run.run()
    assert status is JobStatus.FAILED
    assert error == "ValueError: record 7 has no id"
    assert rec.steps() == [("boom", "running"), ("boom", "failed"), ("cleanup", "skipped")]
    failed = [d for t, d in rec.events if t is EventType.STEP and d["status"] == "failed"][0]
    assert failed["error"] == error and failed["elapsed"] >= 0


def test_error_chance_one_always_fails_with_injected(tmp_path: Path) -> None:
    specs = [StepSpec("cleanup", "Clean", "run_cleanup_step", error_chance=1.0)]
    run, rec = make_run(tmp_path, specs)
    status, error = run.run()
    assert status is JobStatus.FAILED
    assert error is not None and "injected" in error


def test_error_chance_zero_never_fails(tmp_path: Path) -> None:
    for seed in range(20):
        specs = [StepSpec("cleanup", "Clean", "run_cleanup_step", error_chance=0.0)]
        run, _ = make_run(tmp_path, specs, rng=random.Random(seed))
        assert run.run()[0] is JobStatus.SUCCEEDED


def test_error_chance_between_follows_the_random_source(tmp_path: Path) -> None:
    outcomes = []
    for seed in range(40):
        specs = [StepSpec("cleanup", "Clean", "run_cleanup_step", error_chance=0.5)]
        run, _ = make_run(tmp_path, specs, rng=random.Random(seed))
        outcomes.append(run.run()[0])
    assert JobStatus.FAILED in outcomes and JobStatus.SUCCEEDED in outcomes


def test_delay_is_waited_and_counted_in_elapsed(tmp_path: Path) -> None:
    specs = [StepSpec("cleanup", "Clean", "run_cleanup_step", delay=0.3)]
    run, rec = make_run(tmp_path, specs)
    started = time.monotonic()
    run.run()
    assert time.monotonic() - started >= 0.3
    done = [d for t, d in rec.events if t is EventType.STEP and d["status"] == "succeeded"][0]
    assert done["elapsed"] >= 0.3


def test_cancel_during_delay_stops_quickly(tmp_path: Path) -> None:
    cancelled = threading.Event()
    specs = [
        StepSpec("cleanup", "Clean", "run_cleanup_step", delay=30),
        StepSpec("copy", "Copy", "run"),
    ]
    run, rec = make_run(
        tmp_path, specs, user_steps(tmp_path, copy=COPY), is_cancelled=cancelled.is_set
    )
    threading.Timer(0.2, cancelled.set).start()
    started = time.monotonic()
    assert run.run() == (JobStatus.CANCELLED, "cancelled by request")
    assert time.monotonic() - started < 2
    assert rec.steps() == [("cleanup", "running"), ("cleanup", "skipped"), ("copy", "skipped")]


def test_step_timeout_counts_the_delay(tmp_path: Path) -> None:
    specs = [StepSpec("cleanup", "Clean", "run_cleanup_step", delay=30)]
    run, _ = make_run(tmp_path, specs, step_timeout=0.2)
    status, error = run.run()
    assert status is JobStatus.FAILED
    assert error is not None and "timed out" in error


def test_progress_is_throttled(tmp_path: Path) -> None:
    chatty = """
def run(ctx):
    for i in range(100000):
        ctx.progress(i / 100000, f"{i} records")
"""
    run, rec = make_run(
        tmp_path, [StepSpec("chatty", "C", "run")], user_steps(tmp_path, chatty=chatty)
    )
    started = time.monotonic()
    run.run()
    elapsed = time.monotonic() - started
    progress = [d for t, d in rec.events if t is EventType.PROGRESS]
    assert 1 <= len(progress) <= elapsed * 10 + 2
    assert progress[0] == {"index": 0, "fraction": 0.0, "message": "0 records"}


def test_pass_on_feeds_the_next_step(tmp_path: Path) -> None:
    upper = """
def run(ctx):
    target = ctx.workdir / "upper.xml"
    target.write_bytes(ctx.input.read_bytes().upper())
    ctx.pass_on(target)
"""
    steps_dir = user_steps(tmp_path, upper=upper, copy=COPY)
    specs = [StepSpec("upper", "Upper", "run"), StepSpec("copy", "Copy", "run")]
    run, _ = make_run(tmp_path, specs, steps_dir)
    assert run.run()[0] is JobStatus.SUCCEEDED
    assert (tmp_path / "out" / "doc.copy").read_bytes() == b"<A>HELLO</A>"


def test_failed_output_leaves_no_partial_file(tmp_path: Path) -> None:
    half = """
def run(ctx):
    with ctx.open_output("half.json", "w") as out:
        out.write('{"records": [')
        raise OSError(28, "No space left on device")
"""
    run, _ = make_run(tmp_path, [StepSpec("half", "H", "run")], user_steps(tmp_path, half=half))
    status, error = run.run()
    assert status is JobStatus.FAILED
    assert error == "no space left in the data folder while writing half.json"
    assert list((tmp_path / "out").glob("*")) == []  # (nor the folder: the room is freed)


def test_user_step_is_found_before_the_builtin(tmp_path: Path) -> None:
    mine = "def run_cleanup_step(ctx):\n    return 'mine'\n"
    steps_dir = user_steps(tmp_path, cleanup=mine)
    func = load_step(StepSpec("cleanup", "C", "run_cleanup_step"), steps_dir)
    assert func(None) == "mine"  # type: ignore[arg-type]
    builtin = load_step(StepSpec("cleanup", "C", "run_cleanup_step"), None)
    assert builtin.__module__ == "xmlflow.steps.cleanup"


def test_loader_errors_say_what_was_looked_for(tmp_path: Path) -> None:
    steps_dir = user_steps(tmp_path, broken="import no_such_module_here\n")
    with pytest.raises(StepLoadError, match="unknown id") as info:
        load_step(StepSpec("missing", "M", "run"), steps_dir)
    assert str(steps_dir / "missing.py") in info.value.message
    with pytest.raises(StepLoadError, match="cannot import .*broken.py"):
        load_step(StepSpec("broken", "B", "run"), steps_dir)
    with pytest.raises(StepLoadError, match="no function 'nope'"):
        load_step(StepSpec("cleanup", "C", "nope"), steps_dir)


def test_a_malformed_upload_options_declaration_stops_start_up(tmp_path: Path) -> None:
    bad = "UPLOAD_OPTIONS = [{'name': 'x'}]\ndef run(ctx):\n    pass\n"
    steps_dir = user_steps(tmp_path, loose=bad)
    with pytest.raises(ConfigError, match="'loose': UPLOAD_OPTIONS must be a list of"):
        check_pipelines({"p": [StepSpec("loose", "L", "run")]}, steps_dir)


def test_a_user_step_declares_its_upload_options(tmp_path: Path) -> None:
    code = (
        "from xmlflow.step import UploadOption\n"
        "UPLOAD_OPTIONS = [UploadOption('top', 'integer', 'how many', 10, minimum=1,"
        " at_most_configured=True)]\n"
        "def run(ctx):\n    pass\n"
    )
    steps_dir = user_steps(tmp_path, counted=code)
    (top,) = upload_options(StepSpec("counted", "C", "run"), steps_dir).values()
    assert top.problem(5, 10) is None
    assert top.problem(11, 10) == "may only lower the configured limit of 10, not raise it"
    assert top.problem(0, 10) == "must be at least 1, not 0"
    assert top.problem(True, 10) == "must be a whole number, not true"
    assert top.to_dict(20) == {
        "name": "top",
        "type": "integer",
        "default": 20,
        "help": "how many",
        "minimum": 1,
        "maximum": 20,
    }
    assert upload_options(StepSpec("cleanup", "C", "run_cleanup_step"), None) == {}


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("boolean", False, 0),
        ("number", 1.5, "1.5"),
        ("string", "", None),
        ("array", ["a", "b/c"], ["a", 1]),
        ("object", {"u": "p", "v": None}, {"u": 1}),
    ],
)
def test_upload_option_types_are_json_types(kind: JsonType, good: object, bad: object) -> None:
    option = UploadOption("k", kind, "help")
    assert option.problem(good, None) is None
    assert (option.problem(bad, None) or "").startswith("must be ")
