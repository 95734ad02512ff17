"""The native XML → JSON core against xmltodict and the Python converter, byte for byte.

Hypothesis writes documents (prefixes and namespace declarations, mixed content,
CDATA, internal entities, comments, PIs, DTD attribute defaults, every XML character
class, long text, deep nesting); the C core's output must equal ``xmltodict.parse``
dumped compactly (``drop_empty: false``, xmltodict's own defaults) and, on documents
both read alike, the Python converter's bytes in every mode. Then the limits, the
fallback, ``xmlflow run`` and the server.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import xmltodict
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xmlflow.errors import XmlError
from xmlflow.xml import native
from xmlflow.xml.options import ConvertOptions

from .conftest import Server, write_config
from .native_helpers import (
    XMLTODICT_LIKE,
    needs_native,
    run_native,
    run_python,
    xmltodict_json,
)
from .test_xmltodict_compat import EQUIVALENT
from .test_xmltodict_compat import documents as compat_documents

pytestmark = needs_native

# -- generated documents ---------------------------------------------------------------


def _xml_char(c: str) -> bool:
    n = ord(c)
    return n in (9, 10, 13) or 0x20 <= n <= 0xD7FF or 0xE000 <= n <= 0xFFFD or n >= 0x10000


TEXT = st.text(st.characters(exclude_categories=("Cs",)).filter(_xml_char), max_size=30).map(
    lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
)
SPACE = st.sampled_from(["", " ", "\n  ", "\t", "\u00a0", " \u3000 "])
NAMES = st.sampled_from(["a", "b", "c", "item", "x-y", "\u00e9l\u00e9ment", "p:a", "q:b"])
ATTR_VALUE = TEXT.map(lambda s: s.replace('"', "&quot;"))


@st.composite
def elements(draw: Any, depth: int = 0, namespaces: bool = True) -> str:
    name = draw(NAMES if namespaces else NAMES.filter(lambda n: ":" not in n))
    attrs = draw(st.lists(st.sampled_from(["id", "k", "p:z", "xmlns:p", "xmlns"]), max_size=3))
    if not namespaces:
        attrs = [a for a in attrs if ":" not in a and a != "xmlns"]
    attr_text = "".join(f' {a}="{draw(ATTR_VALUE)}"' for a in dict.fromkeys(attrs))
    parts = []
    for _ in range(draw(st.integers(0, 4 if depth < 6 else 0))):
        parts.append(draw(_piece(depth, namespaces)))
    if not parts and draw(st.booleans()):
        return f"<{name}{attr_text}/>"
    return f"<{name}{attr_text}>{''.join(parts)}</{name}>"


def _piece(depth: int, namespaces: bool) -> st.SearchStrategy[str]:
    return st.one_of(
        TEXT,
        SPACE,
        elements(depth + 1, namespaces),
        TEXT.map(lambda s: f"<![CDATA[{s.replace(']]>', '')}]]>"),
        st.just("&e;"),
        st.just("&#x1F600;&#233;&#10;"),
        st.just("<!-- c -->"),
        st.just("<?pi data?>"),
    )


PROLOG = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE {root} [\n'
    '<!ENTITY e "ent &amp; <b>ity</b>">\n<!ATTLIST c def CDATA "dflt">\n]>\n'
)


def documents(namespaces: bool = True) -> st.SearchStrategy[bytes]:
    def build(root: str) -> bytes:
        name = root[1 : root.find(">")].split()[0].rstrip("/")
        return (PROLOG.replace("{root}", name) + root).encode()

    return elements(0, namespaces).map(build)


SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _write(tmp_path: Path, data: bytes, name: str = "doc.xml") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@SETTINGS
@given(doc=documents())
def test_native_equals_xmltodict_on_generated_documents(tmp_path: Path, doc: bytes) -> None:
    path = _write(tmp_path, doc)
    assert run_native(path, **XMLTODICT_LIKE) == xmltodict_json(doc)


@SETTINGS
@given(doc=documents(), strip=st.booleans())
def test_native_equals_xmltodict_with_its_options(tmp_path: Path, doc: bytes, strip: bool) -> None:
    assume(b"]>\n<a" not in doc)  # xmltodict also forces the root into a list; we do not
    path = _write(tmp_path, doc)
    got = run_native(
        path, drop_empty=False, strip_text=strip, attr_prefix="-", text_key="$t", force_list=["a"]
    )
    want = xmltodict_json(
        doc, strip_whitespace=strip, attr_prefix="-", cdata_key="$t", force_list=("a",)
    )
    assert got == want


@SETTINGS
@given(doc=documents(), mode=st.sampled_from(["json", "jsonl", "split"]))
def test_native_equals_python_path(tmp_path: Path, doc: bytes, mode: str) -> None:
    path = _write(tmp_path, doc)
    for options in (
        {"mode": mode},
        {"mode": mode, "drop_empty": True, "force_list": ["b"], "strip_text": False},
        {"mode": mode, "attr_prefix": "-", "text_key": "$"},
    ):
        assert run_native(path, **options) == run_python(path, **options), options


def test_huge_text_and_deep_nesting_equal_xmltodict(tmp_path: Path) -> None:
    text = "x\u00e9\U0001f600 " * 300_000
    deep = (
        "".join(f"<d{i}>" for i in range(200))
        + "t"
        + "".join(f"</d{i}>" for i in reversed(range(200)))
    )
    doc = f"<r><big>{text}</big>{deep}<big>{text}</big></r>".encode()
    path = _write(tmp_path, doc)
    assert run_native(path, **XMLTODICT_LIKE) == xmltodict_json(doc)


@pytest.mark.parametrize(
    "doc",
    [
        "<r/>",
        "<r>  </r>",
        "<r a='1'> t </r>",
        "<r><a>1</a>x<b/><a>2</a>y</r>",
        '<r xmlns="u" xmlns:p="v"><p:a p:x="1"/><a xmlns:p="v"/></r>',
        '<r xmlns:a="u" xmlns:b="u"><x b:attr="1"/></r>',
        "<r><![CDATA[<not> & markup]]></r>",
        '<?xml version="1.0" encoding="ISO-8859-1"?><r>\xe9t\xe9</r>',
        "<r>\u2028\u0085tab\there\r\nline</r>",
        "<r>a<!--c-->b<?pi x?>c</r>",
    ],
)
def test_hand_written_cases_equal_xmltodict(tmp_path: Path, doc: str) -> None:
    encoding = "latin-1" if "ISO-8859-1" in doc else "utf-8"
    data = doc.encode(encoding)
    path = _write(tmp_path, data)
    assert run_native(path, **XMLTODICT_LIKE) == xmltodict_json(data)


@pytest.mark.parametrize("bom", [True, False])
def test_utf16_with_and_without_bom(tmp_path: Path, bom: bool) -> None:
    data = "<r><a>\u00e9\U0001f600</a><a>2</a></r>".encode("utf-16" if bom else "utf-16-le")
    path = _write(tmp_path, data)
    assert json.loads(run_native(path)) == {"r": {"a": ["\u00e9\U0001f600", "2"]}}


def test_disable_entities_rejects_a_declaration_as_the_python_path(tmp_path: Path) -> None:
    path = _write(tmp_path, b'<!DOCTYPE r [<!ENTITY e "x">]>\n<r>&e;</r>')
    with pytest.raises(XmlError) as native_error:
        run_native(path, disable_entities=True)
    with pytest.raises(XmlError) as python_error:
        run_python(path, disable_entities=True)
    assert native_error.value.reason == python_error.value.reason
    assert "entities are disabled" in native_error.value.message
    plain = _write(tmp_path, b"<r>&amp;</r>", "plain.xml")
    assert run_native(plain, disable_entities=True) == b'{"r":"&"}'


# -- modes and records -----------------------------------------------------------------

RECORDS = (
    b'<catalog n="2"><meta>m</meta>'
    + b"".join(
        b'<book id="%d"><t>T%d</t><tag>a</tag><tag>b</tag></book>' % (i, i) for i in range(5)
    )
    + b"<empty/><trailer>end</trailer></catalog>"
)


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "json"},
        {"mode": "jsonl"},
        {"mode": "jsonl", "record_path": "catalog/book"},
        {"mode": "jsonl", "record_path": "/catalog/book/tag"},
        {"mode": "split"},
        {"mode": "split", "record_path": "catalog/book", "drop_empty": False},
        {"mode": "json", "force_list": ["t", "meta"], "drop_empty": False},
    ],
)
def test_modes_equal_the_python_path(tmp_path: Path, options: dict[str, Any]) -> None:
    path = _write(tmp_path, RECORDS)
    native_out, python_out = run_native(path, **options), run_python(path, **options)
    if options["mode"] == "split":
        assert _zip_entries(native_out) == _zip_entries(python_out)
        assert len(_zip_entries(native_out)) >= 5
    else:
        assert native_out == python_out


def _zip_entries(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(name, z.read(name)) for name in z.namelist()]


def test_many_records_stream_with_a_trailing_root_element(tmp_path: Path) -> None:
    body = b"".join(b"<rec><v>%d</v></rec>" % i for i in range(50_000))
    doc = b"<root a='1'><head>h</head>" + body + b"<tail>t</tail>after</root>"
    path = _write(tmp_path, doc)
    assert run_native(path, **XMLTODICT_LIKE) == xmltodict_json(doc)
    assert run_native(path) == run_python(path)


# -- limits and errors -----------------------------------------------------------------


def _error(tmp_path: Path, data: bytes) -> XmlError:
    path = _write(tmp_path, data)
    with pytest.raises(XmlError) as info:
        run_native(path)
    assert info.value.line is not None and info.value.column is not None
    return info.value


def test_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    error = _error(tmp_path, b"<r>\n  <a>1</b>\n</r>")
    assert (error.line, error.column) == (2, 9)
    assert error.message.startswith("line 2, column 9: mismatched tag")


def test_depth_limit(tmp_path: Path) -> None:
    ok = b"<a>" * 256 + b"</a>" * 256
    run_native(_write(tmp_path, ok, "ok.xml"))
    error = _error(tmp_path, b"<a>" * 257 + b"</a>" * 257)
    assert "nested deeper than 256" in error.message


def test_attribute_name_and_text_limits(tmp_path: Path) -> None:
    attrs = " ".join(f'a{i}="1"' for i in range(10_001))
    assert "more than 10000 attributes" in _error(tmp_path, f"<r {attrs}/>".encode()).message
    assert "longer than 50000" in _error(tmp_path, b"<" + b"n" * 50_001 + b"/>").message
    big = b"<r><a>" + b"x" * 10_000_001 + b"</a></r>"
    assert "text node is larger" in _error(tmp_path, big).message


def test_entity_expansion_ten_times_the_input_is_rejected(tmp_path: Path) -> None:
    """1 MB that expands to 10 MB: under expat's own limits, over ours."""
    entity = "x" * 1000
    refs = "<a>&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;</a>" * 1000
    doc = f'<!DOCTYPE r [<!ENTITY e "{entity}">]><r>{refs}</r>'.encode()
    padded = doc.replace(b"<r>", b"<r>" + b" " * (1_000_000 - len(doc)), 1)
    error = _error(tmp_path, padded)
    assert "entity expansion limit exceeded" in error.message


def test_billion_laughs_rejected_fast(tmp_path: Path) -> None:
    lol = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)
    )
    error = _error(tmp_path, f"<!DOCTYPE r [{lol}]><r>&l9;</r>".encode())
    assert "line 1" in error.message


def test_external_entities_are_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("NATIVE-SECRET")
    doc = (
        f'<!DOCTYPE r SYSTEM "{secret}" [<!ENTITY x SYSTEM "file://{secret}">]>'
        "<r><a>&x;</a><b>1</b></r>"
    ).encode()
    out = run_native(_write(tmp_path, doc))
    assert b"NATIVE-SECRET" not in out
    assert json.loads(out) == {"r": {"a": None, "b": "1"}}


def test_error_after_records_leaves_nothing_half_written(tmp_path: Path) -> None:
    from xmlflow.steps.process_xml import run_xml_processing_step

    from .test_steps_xml import files_in, make_ctx

    ctx = make_ctx(tmp_path, b"<r>" + b"<a>1</a>" * 200_000 + b"<a>2</b></r>", mode="jsonl")
    with pytest.raises(XmlError, match="mismatched tag"):
        run_xml_processing_step(ctx)
    assert files_in(ctx) == []


# -- selection and fallback ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"namespaces": "strip"}, "namespaces"),
        ({"coerce_types": True}, "coerce_types"),
        ({"drop_comments": False}, "drop_comments"),
        ({"drop": ["a"]}, "drop"),
        ({"rename": {"a": "b"}}, "rename"),
        ({"force_list": ["r/a"]}, "force_list (paths)"),
        ({"attr_prefix": ""}, "attr_prefix"),
        ({"text_key": "text"}, "text_key"),
        ({"attr_prefix": "#", "text_key": "#text"}, "text_key"),
        ({}, None),
    ],
)
def test_unsupported_options_name_themselves(options: dict[str, Any], reason: str | None) -> None:
    assert native.unsupported(ConvertOptions.from_dict(options)) == reason


def test_unsupported_option_falls_back_to_python_with_the_same_result(tmp_path: Path) -> None:
    path = _write(tmp_path, b"<r><a>1</a><a>2</a></r>")
    out = io.BytesIO()
    native.convert_file(path, out, ConvertOptions.from_dict({"coerce_types": True}))
    assert json.loads(out.getvalue()) == {"r": {"a": [1, 2]}}


def _child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
    )


def test_xmlflow_native_0_forces_python_and_a_missing_core_warns_once() -> None:
    code = (
        "import logging, sys; logging.basicConfig(); from xmlflow.xml import native; "
        "native.native_module(); native.native_module(); "
        "print(native.native_module() is None, 'lxml' in sys.modules)"
    )
    forced = _child(code, {"XMLFLOW_NATIVE": "0"})
    assert forced.stdout.split() == ["True", "False"] and forced.stderr == ""
    used = _child(code, {})
    assert used.stdout.split() == ["False", "False"] and used.stderr == ""
    # a core that cannot import: hide it behind a meta path finder that refuses it
    missing = _child(
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'xmlflow.xml._native': raise ImportError('not built')\n"
        "sys.meta_path.insert(0, Refuse())\n" + code.replace("; ", "\n"),
        {},
    )
    assert missing.stdout.split() == ["True", "False"]
    warnings = [line for line in missing.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "pure-Python converter" in warnings[0]


def test_progress_and_cancel_between_chunks(tmp_path: Path) -> None:
    from xmlflow.errors import JobCancelled

    path = _write(tmp_path, b"<r>" + b"<a>123456789</a>" * 200_000 + b"</r>")
    seen: list[tuple[int, int]] = []
    native.convert_file(
        path, io.BytesIO(), ConvertOptions(), on_progress=lambda b, r: seen.append((b, r))
    )
    assert seen[-1] == (path.stat().st_size, 200_000)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(JobCancelled):
        native.convert_file(path, io.BytesIO(), ConvertOptions(), is_cancelled=cancel)
    assert len(calls) == 4


# -- through the real entry points -----------------------------------------------------

CONFIG = """
    PIPELINES = {
        "default": [{"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step",
                     "options": {"mode": "json", "drop_empty": False}}],
        "lines": [{"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step",
                   "options": {"mode": "jsonl", "drop_empty": False}}],
    }
"""
DOC = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e "ent">]>'
    b'<r a="1"><i n="1">&e; one</i><i n="2"><![CDATA[<two>]]></i><i/>tail</r>'
)


def test_xmlflow_run_native_and_python_give_the_same_bytes(tmp_path: Path) -> None:
    config = write_config(tmp_path / "conf", CONFIG)
    path = _write(tmp_path, DOC)
    outputs = {}
    for flag in ("1", "0"):
        out = tmp_path / f"out{flag}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "xmlflow",
                "run",
                "--config",
                str(config),
                "--out",
                str(out),
                str(path),
            ],
            env={**os.environ, "XMLFLOW_NATIVE": flag},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outputs[flag] = (out / "doc.json").read_bytes()
    assert outputs["1"] == xmltodict_json(DOC)
    assert outputs["1"] == outputs["0"]


def test_server_converts_natively_and_rejects_with_position(tmp_path: Path) -> None:
    config = write_config(tmp_path / "conf", CONFIG)
    server = Server(config, tmp_path / "data").start()
    try:
        good, bad = server.upload(("doc.xml", DOC), ("bad.xml", b"<r>\n<a></r>"))
        job = server.wait_finished(good["id"])
        assert job["status"] == "succeeded", job
        name = next(o["name"] for o in job["outputs"] if o["name"].endswith(".json"))
        response = server_download(server, good["id"], name)
        assert response == xmltodict_json(DOC)
        failed = server.wait_finished(bad["id"])
        assert failed["status"] == "failed"
        assert "line 2, column 6: mismatched tag" in json.dumps(failed)
    finally:
        server.stop()


def server_download(server: Server, job_id: str, name: str) -> bytes:
    import httpx

    response = httpx.get(f"{server.url}/api/jobs/{job_id}/outputs/{name}", timeout=30)
    assert response.status_code == 200, response.text
    return response.content


@pytest.mark.parametrize("mode", ["json", "jsonl"])
def test_encoding_expat_lacks_is_a_clear_error(tmp_path: Path, mode: str) -> None:
    text = '<?xml version="1.0" encoding="Shift_JIS"?><r><a>\u65e5\u672c</a></r>'
    with pytest.raises(XmlError, match="line 1, column 31: unknown encoding"):
        run_native(_write(tmp_path, text.encode("shift_jis")), mode=mode)


@pytest.mark.parametrize("mode", ["json", "jsonl"])
def test_empty_document_says_so(tmp_path: Path, mode: str) -> None:
    with pytest.raises(
        XmlError, match="line 1, column 1: the document is empty \\(no element found\\)"
    ):
        run_native(_write(tmp_path, b""), mode=mode)


# -- the steps-and-compatibility differential suite, on the native path -----------------

NATIVE_EQUIVALENT = [
    (o, kw) for o, kw in EQUIVALENT if native.unsupported(ConvertOptions.from_dict(o)) is None
]


@pytest.mark.parametrize(
    ("options", "kwargs"), NATIVE_EQUIVALENT, ids=[str(o) for o, _ in NATIVE_EQUIVALENT]
)
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(xml=compat_documents())
def test_compat_suite_documents_native_equals_python_and_xmltodict(
    tmp_path: Path, options: dict[str, Any], kwargs: dict[str, Any], xml: str
) -> None:
    path = _write(tmp_path, xml.encode())
    try:
        expected = json.dumps(xmltodict.parse(xml.encode(), **kwargs))
    except Exception:  # xmltodict refuses: both paths must too
        with pytest.raises(XmlError):
            run_native(path, **options)
        with pytest.raises(XmlError):
            run_python(path, **options)
        return
    got = run_native(path, **options)
    assert got == run_python(path, **options)
    assert json.dumps(json.loads(got)) == expected
