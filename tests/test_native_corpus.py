"""The shared corpus through the native core, driven by its manifests.

- xmltest (``wf`` and ``not-wf``): the native verdict is ``xmltodict.parse``'s (the
  same expat), and an accepted document gives xmltodict's JSON byte for byte; every
  rejection says ``line L, column C``.
- attacks (documents and every payload line): the manifest's expectation holds, no
  canary leaks, the output stays bounded, and the verdict and JSON are the Python
  path's (expat too), except for the expansions named in :data:`CAP_DIFFERS`.
- over HTTP: every attack document uploaded to a real server ends as it does in
  process.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Server, write_config
from .native_helpers import needs_native, outcome, run_native, run_python, xmltodict_outcome

CORPUS = Path(__file__).parents[1].parent / "shared" / "corpus"
XMLCONF = CORPUS / "xmlconf"
ATTACKS = CORPUS / "attacks"
ABSENT = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS}")
POSITION = re.compile(r"^line \d+, column \d+: \S")
FORBIDDEN = ["root:x:0:0", "xmlflow-canary-7f3a9c", "it_works", "TOP-SECRET"]

pytestmark = [needs_native, ABSENT]

CAP_DIFFERS = {
    # Text grows past 4x the input (a 1 MB -> 10 MB expansion must fail): the native
    # cap rejects these, the Python path's (10x + 8 MiB) lets them through. Both
    # verdicts are allowed by the manifest ("reject_or_neutralize").
    "rub-nds-dtd-attacks/xml_files_unix/dos/dos_entitySize.xml",
    "rub-nds-dtd-attacks/xml_files_unix/dos/dos_indirections.xml",
    "payloadsallthethings/XXE Injection/Files/Deny Of Service - Billion Laugh Attack",
}


def _manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        return {"tests": [], "files": []}
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _xmltest() -> list[Any]:
    return [pytest.param(t, id=t["id"]) for t in _manifest(XMLCONF)["tests"]] or [
        pytest.param(None)
    ]


@pytest.mark.parametrize("case", _xmltest())
def test_xmltest_same_verdict_and_json_as_xmltodict(case: dict[str, Any]) -> None:
    path = XMLCONF / case["file"]
    verdict, result = outcome(run_native, path, drop_empty=False)
    expected_verdict, expected = xmltodict_outcome(path.read_bytes())
    assert verdict == expected_verdict, result
    if verdict == "ok":
        assert result == expected
    else:
        assert isinstance(result, str) and POSITION.match(result), result


def _attack_cases() -> list[Any]:
    cases = []
    for entry in _manifest(ATTACKS)["files"]:
        if entry["role"] == "document":
            cases.append(pytest.param(entry, None, id=entry["file"]))
        elif entry["role"] == "payload-list":
            text = (ATTACKS / entry["file"]).read_text(encoding="utf-8", errors="replace")
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    cases.append(pytest.param(entry, line, id=f"{entry['file']}:{n}"))
    return cases or [pytest.param(None, None)]


@pytest.mark.parametrize(("entry", "payload"), _attack_cases())
def test_attack_same_verdict_as_python(
    tmp_path: Path, entry: dict[str, Any], payload: str | None
) -> None:
    path = ATTACKS / entry["file"]
    if payload is not None:
        path = tmp_path / "payload.xml"
        path.write_text(payload, encoding="utf-8")
    start = time.perf_counter()
    verdict, result = outcome(run_native, path)
    assert time.perf_counter() - start < 5
    allowed = {"reject": {"error"}, "accept": {"ok"}}.get(entry["expected"], {"ok", "error"})
    assert verdict in allowed, result
    text = result if isinstance(result, str) else result.decode("utf-8", "replace")
    assert not [c for c in FORBIDDEN if c in text]
    assert len(text) < 64_000 + 10 * path.stat().st_size, "output not bounded"
    if verdict == "error":
        assert POSITION.match(text), text
    python_verdict, python_result = outcome(run_python, path)
    if entry["file"] in CAP_DIFFERS and payload is None:
        assert verdict != python_verdict
        return
    assert verdict == python_verdict, (result, python_result)
    if verdict == "ok":
        assert isinstance(python_result, bytes) and isinstance(result, bytes)
        assert json.loads(result) == json.loads(python_result)


CONFIG = """
    PIPELINES = {"default": [{"id": "process_xml", "name": "Convert",
                              "module": "run_xml_processing_step", "options": {}}]}
"""


def test_attack_documents_over_http_end_as_in_process(tmp_path: Path) -> None:
    entries = [e for e in _manifest(ATTACKS)["files"] if e["role"] == "document"]
    server = Server(write_config(tmp_path / "conf", CONFIG), tmp_path / "data").start()
    try:
        files = [(f"{i}.xml", (ATTACKS / e["file"]).read_bytes()) for i, e in enumerate(entries)]
        jobs = server.upload(*files)
        for entry, job in zip(entries, jobs, strict=True):
            finished = server.wait_finished(job["id"], timeout=120)
            verdict, result = outcome(run_native, ATTACKS / entry["file"])
            assert finished["status"] == ("succeeded" if verdict == "ok" else "failed"), entry
            if verdict == "error":
                assert str(result).split(":")[0] in json.dumps(finished), entry
    finally:
        server.stop()
