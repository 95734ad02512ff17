"""The C core's fast paths give the same bytes as the Python converter and xmltodict.

Escaping scans eight bytes at a time and the tail as one padded word; element names go
through a 256-slot cache keyed by length and first eight bytes; ``strip`` skips texts
with printable ASCII at both ends. Each is pinned where it could go wrong: an escape at
every offset around the word boundaries, names that share their first eight bytes or
collide in the cache, whitespace and non-ASCII at the ends. And ``xmlflow run`` on a
``process_xml`` pipeline loads none of the server's or the other steps' libraries, in
any of its processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import write_config
from .native_helpers import XMLTODICT_LIKE, needs_native, run_native, run_python, xmltodict_json

pytestmark = needs_native

ESCAPES = ['"', "\\", "\t", "\n", "\r", "&lt;", "\u00e9", "\u20ac"]


def _same_everywhere(tmp_path: Path, xml: str) -> None:
    path = tmp_path / "doc.xml"
    path.write_bytes(xml.encode())
    native_bytes = run_native(path, **XMLTODICT_LIKE)
    assert native_bytes == run_python(path, **XMLTODICT_LIKE)
    assert native_bytes == xmltodict_json(xml.encode())
    for mode in ("json", "jsonl"):
        assert run_native(path, mode=mode) == run_python(path, mode=mode)


def _char_ref(c: str) -> str:
    """A carriage return reaches the text only as a reference (a literal one is a newline)."""
    return "&#13;" if c == "\r" else c


def test_an_escape_at_every_offset_around_the_word_boundaries(tmp_path: Path) -> None:
    items = []
    for length in range(0, 19):
        for at in range(length):
            for escape in ESCAPES:
                text = "a" * at + _char_ref(escape) + "b" * (length - at - 1)
                items.append(f'<i v="{text.replace(chr(34), "&quot;")}">{text}</i>')
    _same_everywhere(tmp_path, f"<r>{''.join(items)}</r>")


def test_names_sharing_their_first_eight_bytes_and_many_names(tmp_path: Path) -> None:
    shared = ["abcdefgh", "abcdefghi", "abcdefghij", "abcdefghik", "abcdefgi", "abcdefg"]
    many = [f"n{i}" for i in range(600)]  # more names than the cache's 256 slots
    records = []
    for round_ in range(3):
        body = "".join(f"<{n}>{round_}</{n}>" for n in shared + many[round_ * 100 :])
        records.append(f"<rec>{body}</rec>")
    _same_everywhere(tmp_path, f"<r>{''.join(records)}</r>")


def test_strip_at_the_ends_with_and_without_non_ascii(tmp_path: Path) -> None:
    texts = ["x", " x", "x ", "\u00a0x", "x\u00a0", "\u3000x\u3000", "\u00e9", "x\u00e9",
             "\u00e9x", "~", "\x7f", "a b", "  ", "\u2028x"]  # fmt: skip
    items = "".join(f"<i>{_char_ref(t)}</i>" for t in texts)
    _same_everywhere(tmp_path, f"<r>{items}</r>")


SERVER_LIBRARIES = ("flask", "werkzeug", "httpx", "gevent", "gunicorn", "prometheus_client",
                    "lxml", "jinja2", "redis", "rq")  # fmt: skip


def test_xmlflow_run_loads_no_server_library_in_any_process(tmp_path: Path) -> None:
    """``PYTHONPROFILEIMPORTTIME`` is inherited by the forkserver and the job's process:
    stderr lists every module any of them imported."""
    config = write_config(
        tmp_path / "conf",
        'PIPELINES = {"default": [{"id": "process_xml", "name": "Convert",'
        ' "module": "run_xml_processing_step"}]}\n',
    )
    src = tmp_path / "doc.xml"
    src.write_bytes(b'<r><i n="1">one</i><i n="2">two</i></r>')
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "xmlflow", "run", "--config", str(config), "--out", str(out)]
    result = subprocess.run(
        [*argv, str(src)],
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "doc.json").read_bytes() == xmltodict_json(src.read_bytes())
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "xmlflow" in imported  # the listing is there
    assert imported.isdisjoint(SERVER_LIBRARIES), sorted(imported & set(SERVER_LIBRARIES))
