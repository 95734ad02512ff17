"""Cancel and the step timeout hold against a step stuck in C, and odd text never breaks a job.

The stuck step is the built-in ``xpath_filter`` with an EXSLT regular expression that
backtracks for ever (``^(a|aa)+$`` on 60 ``a`` and a ``!``): the regex engine holds the
interpreter, so the step never looks at ``ctx.cancelled`` again. The runner escalates
(SIGTERM, then SIGKILL) within 2 s of the cancel or of the timeout. The same tests run
in Redis mode (``tests/redis/test_cancel_escalation_on_redis.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from ..conftest import Server, write_config

STEP_TIMEOUT = 3  # seconds (XMLFLOW_STEP_TIMEOUT)
ESCALATION = 2  # seconds the runner may take to stop a step that does not stop itself
MARGIN = 2  # seconds for a loaded machine: polling, the store, the stream
STUCK_CONFIG = """
    PIPELINES = {
        "default": [{"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"}],
        "backtrack": [
            {"id": "xpath_filter", "name": "Filter", "module": "run_xpath_filter_step",
             "options": {"xpath": 're:test(string(.), "^(a|aa)+$")',
                         "namespaces": {"re": "http://exslt.org/regular-expressions"}}},
            {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"},
        ],
        "odd_text": [{"id": "odd", "name": "Odd text", "module": "run"}],
    }
"""
STUCK_STEPS = {
    "odd": """
        import time
        def run(ctx):
            ctx.progress(0.5, "half of \\udcff records")
            time.sleep(0.3)
            raise RuntimeError("record \\ud800 is broken")
    """,
}
CATASTROPHIC = b"<r><n>" + b"a" * 60 + b"!</n></r>"


@pytest.fixture(scope="module")
def stuck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("stuck")
    config = write_config(root / "conf", STUCK_CONFIG, STUCK_STEPS)
    env = {"XMLFLOW_STEP_TIMEOUT": str(STEP_TIMEOUT), "XMLFLOW_WORKERS": "2"}
    server = Server(config=config, data_dir=root / "data", env=env).start()
    yield server
    server.stop()


def _start_stuck_job(server: Server) -> str:
    """Upload the backtracking job and wait until its filter step runs."""
    [job] = server.upload(("a.xml", CATASTROPHIC), pipeline="backtrack")
    deadline = time.monotonic() + 30
    while server.job(job["id"])["steps"][0]["status"] != "running":
        assert time.monotonic() < deadline, server.job(job["id"])
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the regular expression by now
    return str(job["id"])


def _assert_nothing_left(server: Server, job_id: str) -> None:
    job_dir = server.data_dir / "jobs" / job_id
    assert not job_dir.exists() or list(job_dir.iterdir()) == []


def test_cancel_stops_a_step_stuck_in_c(stuck: Server) -> None:
    job_id = _start_stuck_job(stuck)
    asked = time.monotonic()
    assert httpx.post(f"{stuck.url}/api/jobs/{job_id}/cancel", timeout=10).status_code == 202
    job = stuck.wait_finished(job_id, timeout=30)
    took = time.monotonic() - asked
    assert job["status"] == "cancelled" and job["error"] == "cancelled by request"
    assert took < ESCALATION + MARGIN, f"cancel took {took:.1f} s"
    events = stuck.events(job_id)
    steps = [(e.data["id"], e.data["status"]) for e in events if e.event == "step"]
    assert steps == [
        ("xpath_filter", "running"),
        ("xpath_filter", "skipped"),
        ("cleanup", "skipped"),
    ]
    assert [e.event for e in events].count("end") == 1 and events[-1].data["outputs"] == []
    _assert_nothing_left(stuck, job_id)


def test_the_step_timeout_stops_a_step_stuck_in_c(stuck: Server) -> None:
    job_id = _start_stuck_job(stuck)
    started = time.monotonic() - 0.5
    job = stuck.wait_finished(job_id, timeout=60)
    took = time.monotonic() - started
    assert job["status"] == "failed"
    assert f"timed out after {STEP_TIMEOUT} s" in job["error"]
    assert took < STEP_TIMEOUT + ESCALATION + MARGIN, f"the timeout took {took:.1f} s"
    assert [s["status"] for s in job["steps"]] == ["failed", "skipped"]
    stopped_after = job["steps"][0]["elapsed"]  # measured by the runner, from the step's start
    assert STEP_TIMEOUT <= stopped_after < STEP_TIMEOUT + ESCALATION, stopped_after
    _assert_nothing_left(stuck, job_id)


def test_a_lone_surrogate_in_a_message_or_error_is_replaced(stuck: Server) -> None:
    """Today's JSON encoders refuse lone surrogates: the job failed with "internal error:
    TypeError" and its step stayed ``running``."""
    [job] = stuck.upload(("a.xml", b"<a/>"), pipeline="odd_text")
    events = stuck.events(job["id"], timeout=30)
    [progress] = [e for e in events if e.event == "progress"]
    assert progress.data["message"] == "half of \ufffd records"
    end = events[-1]
    assert end.event == "end" and end.data["status"] == "failed"
    assert end.data["error"] == "RuntimeError: record \ufffd is broken"
    record = stuck.job(job["id"])
    assert record["steps"][0]["status"] == "failed"
    assert record["steps"][0]["error"] == "RuntimeError: record \ufffd is broken"
