"""The example step shipped in ``processing_steps/`` works as its docstring says."""

from __future__ import annotations

import json
from pathlib import Path

from xmlflow.models import JobStatus, StepSpec
from xmlflow.pipeline import JobRun, RunPlan

from .conftest import REPO


def run_example(tmp_path: Path, xml: bytes) -> tuple[JobStatus, str | None, Path]:
    source = tmp_path / "source"
    source.write_bytes(xml)
    plan = RunPlan(
        job_id="j",
        specs=[StepSpec("count_elements", "Count", "run_count_elements_step")],
        source=source,
        workdir=tmp_path / "work",
        outdir=tmp_path / "out",
        filename="doc.xml",
        steps_dir=REPO / "processing_steps",
    )
    run = JobRun(plan, emit=lambda type, data: None)
    status, error = run.run()
    return status, error, tmp_path / "out" / "doc.counts.json"


def test_counts_elements_by_name(tmp_path: Path) -> None:
    xml = b'<r xmlns:p="urn:p"><a/><a><b/></a><p:b/></r>'
    status, error, out = run_example(tmp_path, xml)
    assert (status, error) == (JobStatus.SUCCEEDED, None)
    assert json.loads(out.read_bytes()) == {"a": 2, "b": 2, "r": 1}


def test_malformed_xml_fails_with_line_and_column(tmp_path: Path) -> None:
    status, error, out = run_example(tmp_path, b"<r>\n<a></r>")
    assert status is JobStatus.FAILED
    assert error is not None and error.startswith("line 2, column ")
    assert not out.exists()


def test_external_entities_are_never_read(tmp_path: Path) -> None:
    xml = b'<!DOCTYPE r [<!ENTITY x SYSTEM "/etc/passwd">]><r>&x;</r>'
    status, _, out = run_example(tmp_path, xml)
    assert status is JobStatus.SUCCEEDED
    assert json.loads(out.read_bytes()) == {"r": 1}
