"""All of the shared corpus through the converter, driven by its manifests.

- xmltest: every ``wf`` document converts, every ``not-wf`` one fails with an
  :class:`XmlError` whose message starts ``line L, column C:``.
- attacks: every document ends as its manifest's ``expected`` says, never reads a
  local file (canaries planted where the attacks look), never opens a connection
  (listeners on the ports the attacks target see nothing), and finishes quickly with
  a bounded output. Payload lists are split into one upload per line.
"""

from __future__ import annotations

import io
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xmlflow.errors import XmlError
from xmlflow.xml import ConvertOptions, convert_file

CORPUS = Path(__file__).parents[1].parent / "shared" / "corpus"
XMLCONF = CORPUS / "xmlconf"
ATTACKS = CORPUS / "attacks"
ABSENT = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS}")
POSITION = re.compile(r"^line \d+, column \d+: \S")
TMP_CANARY = "xmlflow-canary-7f3a9c"
ALWAYS_FORBIDDEN = ["root:x:0:0", TMP_CANARY, "it_works"]
TIME_LIMIT = 5.0

# Cases the manifest lets go either way, and the outcome xmlflow takes: expat's, the
# parser xmltodict runs on (4th-edition names, no namespace processing by default).
EDITION_SENSITIVE = {"not-wf-sa-140", "not-wf-sa-141"}  # 5th-edition names: refused
NAMESPACE_ILLFORMED_REJECTED: set[str] = set()  # valid-sa-012 (attribute ":"): accepted


def _manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        return {"tests": [], "files": []}
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def run(path: Path) -> tuple[bytes | None, XmlError | None, float]:
    """Convert ``path`` (json mode); return (output, error, seconds)."""
    out = io.BytesIO()
    start = time.perf_counter()
    try:
        convert_file(path, out, ConvertOptions())
    except XmlError as exc:
        return None, exc, time.perf_counter() - start
    return out.getvalue(), None, time.perf_counter() - start


# -- xmltest ------------------------------------------------------------------------


def _xmltest(expected: str) -> list[Any]:
    return [
        pytest.param(t, id=t["id"])
        for t in _manifest(XMLCONF)["tests"]
        if t["expected"] == expected
    ] or [pytest.param(None, marks=ABSENT)]


@ABSENT
@pytest.mark.parametrize("case", _xmltest("wf"))
def test_xmltest_wf_converts(case: dict[str, Any]) -> None:
    output, error, _ = run(XMLCONF / case["file"])
    if case["id"] in NAMESPACE_ILLFORMED_REJECTED:
        # Either outcome is allowed; xmlflow's parser is namespace-aware, so it rejects.
        assert error is not None and POSITION.match(error.message), error
        return
    assert error is None, error
    assert output is not None and json.loads(output)


@ABSENT
@pytest.mark.parametrize("case", _xmltest("not-wf"))
def test_xmltest_not_wf_fails_with_line_and_column(case: dict[str, Any]) -> None:
    output, error, _ = run(XMLCONF / case["file"])
    # Either outcome is allowed for EDITION_SENSITIVE; expat refuses them.
    assert error is not None, f"accepted: {output!r}"
    assert POSITION.match(error.message), error.message
    assert error.line is not None and error.line >= 1 and error.column is not None


@ABSENT
def test_xmltest_counts_match_the_manifest() -> None:
    manifest = _manifest(XMLCONF)
    counts = manifest["counts"]
    tests = manifest["tests"]
    assert sum(t["expected"] == "wf" for t in tests) == counts["wf"]
    assert sum(t["expected"] == "not-wf" for t in tests) == counts["not-wf"]


# -- attacks ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canaries() -> Iterator[list[str]]:
    """Plant the files the attacks reach for; yield every string that must never leak."""
    planted = {
        Path("/tmp/xxe.txt"): TMP_CANARY,
        Path("/tmp/xinclude_source.xml"): "<content>it_works</content>",
    }
    made = []
    for path, content in planted.items():
        if not path.exists():
            path.write_text(content, encoding="utf-8")
            made.append(path)
    forbidden = list(ALWAYS_FORBIDDEN)
    for entry in _manifest(ATTACKS)["files"]:
        forbidden += re.findall(r'"([^"]{6,})"', entry.get("canary", ""))
    yield sorted(set(forbidden))
    for path in made:
        path.unlink()


@pytest.fixture(scope="module")
def listeners() -> Iterator[list[socket.socket]]:
    """Listen where the attacks try to connect; the test asserts nobody came."""
    ports = set()
    for entry in _manifest(ATTACKS)["files"]:
        ports.update(int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", entry.get("canary", "")))
    ports.update({5000, 8088, 2121})
    socks = []
    for port in sorted(ports):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue  # port taken by something else: that port just goes unwatched
        sock.listen(8)
        sock.setblocking(False)
        socks.append(sock)
    yield socks
    for sock in socks:
        sock.close()


def _assert_nobody_connected(socks: list[socket.socket]) -> None:
    for sock in socks:
        with pytest.raises(BlockingIOError):
            conn, addr = sock.accept()
            conn.close()
            pytest.fail(f"connection to {sock.getsockname()} from {addr}")


def _check_outcome(
    path: Path, expected: str, forbidden: list[str], size_in: int
) -> tuple[bytes | None, XmlError | None]:
    output, error, seconds = run(path)
    assert seconds < TIME_LIMIT, f"took {seconds:.1f}s"
    if expected == "reject":
        assert error is not None, f"accepted: {output!r}"
    if expected == "accept":
        assert error is None, error
    if error is not None:
        assert POSITION.match(error.message), error.message
    text = (output or b"").decode("utf-8", "replace") + (error.message if error else "")
    for canary in forbidden:
        assert canary not in text, f"{canary!r} leaked"
    assert len(output or b"") < 64_000 + 10 * size_in, "output not bounded"
    return output, error


def _documents(role: str) -> list[Any]:
    return [
        pytest.param(e, id=e["file"]) for e in _manifest(ATTACKS)["files"] if e["role"] == role
    ] or [pytest.param(None, marks=ABSENT)]


@ABSENT
@pytest.mark.parametrize("entry", _documents("document"))
def test_attack_document(
    entry: dict[str, Any], canaries: list[str], listeners: list[socket.socket]
) -> None:
    path = ATTACKS / entry["file"]
    _check_outcome(path, entry["expected"], canaries, path.stat().st_size)
    _assert_nobody_connected(listeners)


def _payloads() -> list[Any]:
    cases = []
    for entry in _manifest(ATTACKS)["files"]:
        if entry["role"] != "payload-list":
            continue
        lines = (ATTACKS / entry["file"]).read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(lines.splitlines(), 1):
            if line.strip():
                cases.append(pytest.param(entry, line, id=f"{Path(entry['file']).name}:{n}"))
    return cases or [pytest.param(None, "", marks=ABSENT)]


@ABSENT
@pytest.mark.parametrize(("entry", "payload"), _payloads())
def test_attack_payload_line(
    tmp_path: Path,
    entry: dict[str, Any],
    payload: str,
    canaries: list[str],
    listeners: list[socket.socket],
) -> None:
    path = tmp_path / "payload.xml"
    path.write_text(payload, encoding="utf-8")
    _check_outcome(path, entry["expected"], canaries, path.stat().st_size)
    _assert_nobody_connected(listeners)


@ABSENT
def test_canary_file_referenced_by_absolute_path_is_not_read(
    tmp_path: Path, canaries: list[str]
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CANARY", encoding="utf-8")
    doc = tmp_path / "doc.xml"
    doc.write_text(
        f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}"><!ENTITY y SYSTEM "secret.txt">]>'
        "<r><a>&x;</a><b>&y;</b><c>/etc/passwd</c></r>",
        encoding="utf-8",
    )
    output, error = _check_outcome(doc, "reject_or_neutralize", [*canaries, "TOP-SECRET"], 200)
    assert error is None and output is not None
    assert json.loads(output) == {"r": {"a": None, "b": None, "c": "/etc/passwd"}}
