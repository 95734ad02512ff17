"""The whole shared corpus through the HTTP API, as hostile users would send it.

Every W3C xmltest document and every attack (payload lists split into one upload a
line) is uploaded to a real server. Each job must end as the manifests say, within
the time limit, while a control job keeps moving; no canary may show up in outputs,
events or errors, and nothing may connect to the ports the attacks aim at.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import Server, write_config
from ..test_xml_corpus import (
    ATTACKS,
    EDITION_SENSITIVE,
    NAMESPACE_ILLFORMED_REJECTED,
    XMLCONF,
    _assert_nobody_connected,
    _manifest,
    canaries,
    listeners,
)

__all__ = ["canaries", "listeners"]  # module-scoped fixtures shared with the converter tests
POSITION = re.compile(r"^line \d+, column \d+: \S")
JOB_TIME_LIMIT = 60.0


@dataclass
class Case:
    name: str
    body: bytes
    expected: str  # accept | reject | reject_or_neutralize | either
    job_id: str = ""


def corpus_cases() -> list[Case]:
    cases = []
    for test in _manifest(XMLCONF)["tests"]:
        expected = "accept" if test["expected"] == "wf" else "reject"
        if test["id"] in EDITION_SENSITIVE | NAMESPACE_ILLFORMED_REJECTED:
            expected = "either"
        cases.append(Case(test["id"], (XMLCONF / test["file"]).read_bytes(), expected))
    for entry in _manifest(ATTACKS)["files"]:
        path = ATTACKS / entry["file"]
        if entry["role"] == "document":
            cases.append(Case(entry["file"], path.read_bytes(), entry["expected"]))
        elif entry["role"] == "payload-list":
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for n, line in enumerate(lines, 1):
                if line.strip():
                    cases.append(Case(f"{path.name}:{n}", line.encode(), entry["expected"]))
    return cases


CORPUS_CONFIG = """
    PIPELINES = {
        "default": [
            {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"},
        ],
        "control": [{"id": "cleanup", "name": "Control", "module": "run_cleanup_step"}],
    }
"""
CORPUS_ENV = {"XMLFLOW_STEP_TIMEOUT": str(JOB_TIME_LIMIT), "XMLFLOW_MAX_QUEUED": "5000"}


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Iterator[Server]:
    """The embedded server; ``tests/redis`` runs this module again on a Redis cluster."""
    root = tmp_path_factory.mktemp("corpus-http")
    config = write_config(root / "conf", CORPUS_CONFIG)
    server = Server(config=config, data_dir=root / "data", env=dict(CORPUS_ENV)).start()
    yield server
    server.stop()


def upload_all(server: Server, cases: list[Case], batch: int = 40) -> None:
    for start in range(0, len(cases), batch):
        chunk = cases[start : start + batch]
        jobs = server.upload(*[(f"case{start + i}.xml", c.body) for i, c in enumerate(chunk)])
        for case, job in zip(chunk, jobs, strict=True):
            case.job_id = job["id"]


def finished(server: Server, cases: list[Case], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    states: dict[str, dict[str, Any]] = {}
    while True:
        for case in cases:
            if case.job_id not in states:
                state = server.job(case.job_id)
                if state["status"] not in ("queued", "running"):
                    states[case.job_id] = state
        if len(states) == len(cases):
            return states
        assert time.monotonic() < deadline, f"{len(cases) - len(states)} jobs never ended"
        time.sleep(0.5)


def check(case: Case, state: dict[str, Any], text: str, forbidden: list[str]) -> None:
    status, error = state["status"], state["error"] or ""
    if case.expected == "accept":
        assert status == "succeeded", f"{case.name}: {error}"
    elif case.expected == "reject":
        assert status == "failed", f"{case.name} was accepted"
    else:
        assert status in ("succeeded", "failed"), f"{case.name}: {status}"
    if status == "failed":
        assert POSITION.match(error), f"{case.name}: {error!r} names no line and column"
    step = state["steps"][0]
    assert step["elapsed"] is not None and step["elapsed"] < JOB_TIME_LIMIT, case.name
    for canary in forbidden:
        assert canary not in text, f"{case.name}: {canary!r} leaked"


@pytest.mark.timeout(360)  # ~400 jobs on 2 cores: about a minute alone, longer on a busy machine
def test_every_corpus_document_through_http(
    corpus_server: Server, canaries: list[str], listeners: list[socket.socket]
) -> None:
    cases = corpus_cases()
    assert len(cases) > 400
    upload_all(corpus_server, cases[: len(cases) // 2])
    (control,) = corpus_server.upload(("control.xml", b"<a/>"), pipeline="control")
    upload_all(corpus_server, cases[len(cases) // 2 :])
    # Other jobs keep moving: the control job, queued amid hostile ones, ends well.
    assert corpus_server.wait_finished(control["id"], timeout=120)["status"] == "succeeded"
    states = finished(corpus_server, cases, timeout=600)
    for case in cases:
        state = states[case.job_id]
        text = httpx.get(f"{corpus_server.url}/stream/{case.job_id}", timeout=30).text
        for output in state["outputs"]:
            text += httpx.get(corpus_server.url + output["url"], timeout=30).text
        check(case, state, text, canaries)
    _assert_nobody_connected(listeners)
    assert httpx.get(corpus_server.url + "/api/health").status_code == 200
    leftovers = [p for p in (corpus_server.data_dir / "jobs").rglob("*") if p.name == "source"]
    assert leftovers == [], "sources left behind"
    assert list((corpus_server.data_dir / "incoming").iterdir()) == []
