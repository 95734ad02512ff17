"""The hardened parser: encodings, positions in errors, and the resource limits."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from xmlflow.errors import XmlError
from xmlflow.xml import ConvertOptions, convert_file


def convert_bytes(tmp_path: Path, data: bytes, **options: Any) -> Any:
    src = tmp_path / "in.xml"
    src.write_bytes(data)
    out = io.BytesIO()
    convert_file(src, out, ConvertOptions.from_dict(options))
    return json.loads(out.getvalue())


TEXT = "h\u00e9 \u20ac \u4e2d"


@pytest.mark.parametrize(
    "data",
    [
        f"<a>{TEXT}</a>".encode(),
        b"\xef\xbb\xbf" + f"<a>{TEXT}</a>".encode(),
        f"<a>{TEXT}</a>".encode("utf-16"),  # with BOM
        f"<a>{TEXT}</a>".encode("utf-16-le"),  # no BOM, no declaration
        f"<a>{TEXT}</a>".encode("utf-16-be"),
        f"<?xml version='1.0' encoding='UTF-16'?><a>{TEXT}</a>".encode("utf-16-le"),
    ],
    ids=["utf8", "utf8-bom", "utf16-bom", "utf16le-nobom", "utf16be-nobom", "utf16-decl"],
)
def test_unicode_encodings(tmp_path: Path, data: bytes) -> None:
    assert convert_bytes(tmp_path, data) == {"a": TEXT}


@pytest.mark.parametrize("codec", ["iso-8859-1", "iso-8859-2", "iso-8859-15"])
def test_declared_iso_8859(tmp_path: Path, codec: str) -> None:
    text = {
        "iso-8859-1": "caf\u00e9 \u00bd",
        "iso-8859-2": "\u0141\u00f3d\u017a",
        "iso-8859-15": "\u20ac \u0153",
    }[codec]
    data = f"<?xml version='1.0' encoding='{codec.upper()}'?><a t='{text}'>{text}</a>"
    assert convert_bytes(tmp_path, data.encode(codec)) == {"a": {"@t": text, "#text": text}}


@pytest.mark.parametrize(
    ("data", "line", "column"),
    [
        (b"<a>\n  <b>\n</a>", 3, 3),
        (b"<a>\n<b x='1' x='2'/></a>", 2, 10),
        (b"", 1, 1),
        (b"<a>unclosed", 1, 12),
        (b"<a>&undefined;</a>", 1, 4),
        (b"<a>\n\n\x01</a>", 3, 1),
    ],
)
def test_errors_name_line_and_column(tmp_path: Path, data: bytes, line: int, column: int) -> None:
    with pytest.raises(XmlError) as info:
        convert_bytes(tmp_path, data)
    assert (info.value.line, info.value.column) == (line, column)
    assert info.value.message.startswith(f"line {line}, column {column}: ")


def test_depth_limit(tmp_path: Path) -> None:
    with pytest.raises(XmlError, match="nested deeper than 256"):
        convert_bytes(tmp_path, b"<a>" * 300 + b"</a>" * 300)
    assert convert_bytes(tmp_path, b"<a>" * 200 + b"x" + b"</a>" * 200)


def test_attribute_limit_is_fast(tmp_path: Path) -> None:
    many = b"<a " + b" ".join(b'x%d="1"' % i for i in range(100_000)) + b"/>"
    start = time.perf_counter()
    with pytest.raises(XmlError, match="attributes on one element"):
        convert_bytes(tmp_path, b"<r>" + many + b"</r>")
    assert time.perf_counter() - start < 2.0


def test_quadratic_blowup_is_bounded(tmp_path: Path) -> None:
    """One 100 KB entity referenced 400 times: 40 MB of text from a 100 KB file."""
    doc = b'<!DOCTYPE a [<!ENTITY e "' + b"x" * 100_000 + b'">]><a>' + b"&e;" * 400 + b"</a>"
    with pytest.raises(XmlError, match=r"^line 1, column \d+: entity expansion limit exceeded"):
        convert_bytes(tmp_path, doc)


def test_large_text_without_entities_converts(tmp_path: Path) -> None:
    """xmltodict has no text-node limit; the file size (upload limit) bounds it."""
    assert convert_bytes(tmp_path, b"<a>" + b"x" * (11 * 1024 * 1024) + b"</a>") == {
        "a": "x" * (11 * 1024 * 1024)
    }


def test_billion_laughs_ends_quickly(tmp_path: Path) -> None:
    levels = ['<!ENTITY l0 "lol">'] + [
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)
    ]
    data = f"<!DOCTYPE r [{''.join(levels)}]><r>&l9;</r>".encode()
    start = time.perf_counter()
    with pytest.raises(XmlError, match="entity expansion limit"):
        convert_bytes(tmp_path, data)
    assert time.perf_counter() - start < 2.0


def test_internal_entities_expand(tmp_path: Path) -> None:
    data = b'<!DOCTYPE r [<!ENTITY who "world"><!ENTITY % p "">%p;]><r a="&who;">hi &who;</r>'
    assert convert_bytes(tmp_path, data) == {"r": {"@a": "world", "#text": "hi world"}}


def test_xinclude_is_left_as_data(tmp_path: Path) -> None:
    (tmp_path / "inc.xml").write_text("<secret>INCLUDED</secret>")
    data = b'<r xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="inc.xml"/></r>'
    out = convert_bytes(tmp_path, data)
    assert out["r"]["xi:include"] == {"@href": "inc.xml"}
    assert "INCLUDED" not in json.dumps(out)


def test_comment_and_pi_before_root_with_records(tmp_path: Path) -> None:
    """The lxml trap: clearing previous siblings must not trip over top-level nodes."""
    data = b"<?pi x?><!--c--><r><i>1</i><!--in--><i>2</i></r><!--after-->"
    for mode in ("json", "jsonl"):
        options = {"mode": mode, "drop_comments": False, "drop_pis": False}
        src = tmp_path / "in.xml"
        src.write_bytes(data)
        out = io.BytesIO()
        convert_file(src, out, ConvertOptions.from_dict(options))
        assert b'"1"' in out.getvalue() and b'"2"' in out.getvalue()
