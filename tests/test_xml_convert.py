"""The converter against xmltodict, the conventions users already know.

Each case converts with xmlflow's defaults and compares with ``xmltodict.parse`` of
the same document: the default output is xmltodict's, byte for byte (see also
``test_xmltodict_compat.py``, the differential suite).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import xmltodict
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from xmlflow.errors import ConfigError
from xmlflow.xml import ConvertOptions, convert_file

CORPUS = Path(__file__).parents[1].parent / "shared" / "corpus"
XMLCONF = CORPUS / "xmlconf"


def convert(tmp_path: Path, xml: str | bytes, **options: Any) -> Any:
    """Convert ``xml`` with ``options``; json/jsonl/split outputs decoded to Python."""
    src = tmp_path / "in.xml"
    src.write_bytes(xml.encode() if isinstance(xml, str) else xml)
    out = io.BytesIO()
    convert_file(src, out, ConvertOptions.from_dict(options))
    data = out.getvalue()
    mode = options.get("mode", "json")
    if mode == "json":
        return orjson.loads(data)
    if mode == "jsonl":
        return [orjson.loads(line) for line in data.splitlines()]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(name, orjson.loads(zf.read(name))) for name in zf.namelist()]


def like_xmltodict(xml: bytes) -> Any:
    return json.loads(json.dumps(xmltodict.parse(xml, disable_entities=False)))


VARIED = [
    "<a/>",
    "<a>text</a>",
    '<a x="1" y="2"/>',
    '<a x="1">t<b/><b>2</b></a>',
    "<r><i>1</i><i>2</i><j>x</j><i>3</i> tail <k>x</k></r>",
    "<r>  lead <b>1</b> mid <b>2</b> end  </r>",
    '<r xmlns="urn:d" xmlns:p="urn:p"><p:i p:a="1">1</p:i><i xml:lang="en">2</i></r>',
    '<r><s xmlns:q="urn:q"><q:t q:x="y">v</q:t></s><s>w</s></r>',
    "<!--c--><?pi x?><r><i>1</i><!--x--><i>2<!--y-->3</i></r><!--e-->",
    "<r><t>only</t></r>",
    "<r><a><b><c><d>deep</d></c></b></a><a><b>1</b></a></r>",
    "<r><e/><e></e><e>  </e><f><g/></f></r>",
    "<r>&lt;&amp;&gt;&quot;&apos;<![CDATA[<raw & text>]]></r>",
    "<r><x>caf\u00e9 \u20ac \U0001f600</x></r>",
    '<!DOCTYPE r [<!ENTITY e "ent"><!ENTITY m "<i>in</i>">]><r>&e;<i>1</i>&m;</r>',
    "<r>\n  <rec id='1'><n>a</n></rec>\n  <rec id='2'><n>b</n><n>c</n></rec>\n</r>",
]


@pytest.mark.parametrize("xml", VARIED)
def test_matches_xmltodict(tmp_path: Path, xml: str) -> None:
    assert convert(tmp_path, xml) == like_xmltodict(xml.encode())


def _xmltest_wf() -> list[Any]:
    if not XMLCONF.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"corpus absent: {XMLCONF}"))]
    tests = json.loads((XMLCONF / "manifest.json").read_text())["tests"]
    # All of them: the one document that is not namespace-well-formed (valid-sa-012,
    # an attribute named ":") used to be left out because lxml, namespace-aware,
    # rejected it; the converter now reads XML as xmltodict does, without namespace
    # processing, so it is compared like the others.
    return [pytest.param(t, id=t["id"]) for t in tests if t["expected"] == "wf"]


@pytest.mark.parametrize("case", _xmltest_wf())
def test_xmltest_wf_matches_xmltodict(tmp_path: Path, case: dict[str, Any]) -> None:
    """Every xmltest wf document converts exactly as xmltodict reads it, key order too."""
    xml = (XMLCONF / case["file"]).read_bytes()
    src = tmp_path / "in.xml"
    src.write_bytes(xml)
    out = io.BytesIO()
    convert_file(src, out, ConvertOptions())
    expected = json.dumps(xmltodict.parse(xml, disable_entities=False))
    assert json.dumps(json.loads(out.getvalue())) == expected


# -- options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"mdoe": "json"}, "mdoe"),
        ({"mode": "xml"}, "mode"),
        ({"strip_text": "yes"}, "strip_text"),
        ({"force_list": [1]}, "force_list"),
        ({"namespaces": "drop"}, "namespaces"),
        ({"rename": ["a"]}, "rename"),
        ({"drop": ["a//b"]}, "drop"),
        ({"record_path": ""}, "record_path"),
        ({"force_list_xsd": "missing.xsd"}, "force_list_xsd"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ConvertOptions.from_dict(options)


def test_unknown_option_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match="did you mean 'force_list'"):
        ConvertOptions.from_dict({"forcelist": ["a"]})


DOC = '<r xmlns:p="urn:p"><i n="1"><v>1</v></i><i n="2"><v>2.5</v><p:w>true</p:w></i><e/></r>'


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"force_list": ["v"], "drop_empty": True},
            {
                "r": {
                    "@xmlns:p": "urn:p",
                    "i": [{"@n": "1", "v": ["1"]}, {"@n": "2", "v": ["2.5"], "p:w": "true"}],
                }
            },
        ),
        (
            {"force_list": ["r/i/v"], "drop": ["p:w", "e"], "attr_prefix": "_"},
            {"r": {"_xmlns:p": "urn:p", "i": [{"_n": "1", "v": ["1"]}, {"_n": "2", "v": ["2.5"]}]}},
        ),
        (
            {"namespaces": "strip", "coerce_types": True, "drop_empty": True},
            {"r": {"i": [{"@n": 1, "v": 1}, {"@n": 2, "v": 2.5, "w": True}]}},
        ),
        (
            {"namespaces": {"urn:p": "pp"}, "rename": {"i": "item", "r/i/v": "value"}},
            {
                "r": {
                    "@xmlns": {"p": "urn:p"},
                    "e": None,
                    "item": [
                        {"@n": "1", "value": "1"},
                        {"@n": "2", "value": "2.5", "pp:w": "true"},
                    ],
                }
            },
        ),
        ({"drop_empty": False, "drop": ["i"]}, {"r": {"@xmlns:p": "urn:p", "e": None}}),
    ],
)
def test_options(tmp_path: Path, options: dict[str, Any], expected: Any) -> None:
    assert convert(tmp_path, DOC, **options) == expected


def test_coerce_types_keeps_what_is_not_a_plain_number(tmp_path: Path) -> None:
    xml = "<r><a>007</a><b>-0.5</b><c>1e999</c><d>True</d><e>12345678901234567890</e></r>"
    assert convert(tmp_path, xml, coerce_types=True) == {
        "r": {"a": "007", "b": -0.5, "c": "1e999", "d": "True", "e": "12345678901234567890"}
    }


def test_text_options(tmp_path: Path) -> None:
    xml = "<r><t>  a \n\t b  </t><u>  </u></r>"
    assert convert(tmp_path, xml, collapse_whitespace=True) == {"r": {"t": "a b", "u": None}}
    assert convert(tmp_path, xml, drop_empty=True) == {"r": {"t": "a \n\t b"}}
    raw = convert(tmp_path, xml, strip_text=False, drop_empty=False)
    assert raw == {"r": {"t": "  a \n\t b  ", "u": "  "}}
    assert convert(tmp_path, '<r a="1">x</r>', text_key="value") == {"r": {"@a": "1", "value": "x"}}


def test_comments_and_pis_kept_on_request(tmp_path: Path) -> None:
    xml = "<r><!-- note --><?app run?><i>1</i></r>"
    assert convert(tmp_path, xml, drop_comments=False, drop_pis=False) == {
        "r": {"#comment": "note", "?app": "run", "i": "1"}
    }


def test_force_list_from_xsd(tmp_path: Path) -> None:
    (tmp_path / "s.xsd").write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:element name="r">'
        '<xs:complexType><xs:sequence><xs:element name="i" maxOccurs="unbounded"/>'
        '<xs:element name="one"/><xs:sequence maxOccurs="9"><xs:element name="j"/>'
        "</xs:sequence></xs:sequence></xs:complexType></xs:element></xs:schema>"
    )
    options = ConvertOptions.from_dict({"force_list_xsd": "s.xsd"}, base_dir=tmp_path)
    assert options.force_list.names == {"i", "j"}
    src = tmp_path / "in.xml"
    src.write_text("<r><i>1</i><one>x</one></r>")
    out = io.BytesIO()
    convert_file(src, out, options)
    assert orjson.loads(out.getvalue()) == {"r": {"i": ["1"], "one": "x"}}


# -- modes ----------------------------------------------------------------------------

FEED = (
    "<feed><title>News</title>"
    "<entry><id>1</id></entry><entry><id>2</id></entry><entry><id>3</id></entry></feed>"
)


def test_modes_agree(tmp_path: Path) -> None:
    whole = convert(tmp_path, FEED)
    assert whole == {"feed": {"title": "News", "entry": [{"id": "1"}, {"id": "2"}, {"id": "3"}]}}
    lines = convert(tmp_path, FEED, mode="jsonl")
    assert lines == whole["feed"]["entry"]  # the repeated child, title skipped
    split = convert(tmp_path, FEED, mode="split")
    assert [name for name, _ in split] == [
        "000001-entry.json",
        "000002-entry.json",
        "000003-entry.json",
    ]
    assert [value for _, value in split] == lines


def test_record_path_selects_nested_records(tmp_path: Path) -> None:
    xml = "<a><meta><i>no</i></meta><b><i>1</i><i>2</i></b><b><i>3</i></b></a>"
    assert convert(tmp_path, xml, mode="jsonl", record_path="a/b/i") == ["1", "2", "3"]
    assert convert(tmp_path, xml, mode="jsonl", record_path="/a") == [
        {"meta": {"i": "no"}, "b": [{"i": ["1", "2"]}, {"i": "3"}]}
    ]


def test_stats_and_progress(tmp_path: Path) -> None:
    src = tmp_path / "in.xml"
    src.write_text("<r>" + "<i><v>x</v></i>" * 50_000 + "</r>")
    seen: list[tuple[int, int]] = []
    stats = convert_file(
        src, io.BytesIO(), ConvertOptions(), on_progress=lambda b, r: seen.append((b, r))
    )
    assert (stats.bytes_in, stats.records, stats.elements) == (src.stat().st_size, 50_000, 100_001)
    assert len(seen) > 5 and seen == sorted(seen) and seen[-1] == (stats.bytes_in, 50_000)


def test_interleaved_children_of_the_root(tmp_path: Path) -> None:
    xml = "<r a='1'>t1<x>1</x><y>2</y><x>3</x><z>4</z><y>5</y>t2</r>"
    assert convert(tmp_path, xml) == like_xmltodict(xml.encode())


# -- property: no text or attribute value is ever lost --------------------------------

NAMES = st.sampled_from(["a", "b", "c", "item", "p:q"])
TEXTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> Any:
    el = etree.Element(draw(NAMES).replace("p:", "{urn:p}"), nsmap={"p": "urn:p"})
    for key in draw(st.lists(st.sampled_from(["k", "m", "n"]), unique=True, max_size=3)):
        el.set(key, draw(TEXTS))
    el.text = draw(TEXTS)
    if depth < 3:
        for _ in range(draw(st.integers(0, 3))):
            child = draw(trees(depth + 1))
            child.tail = draw(TEXTS)
            el.append(child)
    return el


def _values(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [v for item in value.values() for v in _values(item)]
    if isinstance(value, list):
        return [v for item in value for v in _values(item)]
    return [value] if isinstance(value, str) else []


@settings(max_examples=60, deadline=None)
@given(trees())
def test_every_text_and_attribute_value_is_kept(tmp_path_factory: Any, tree: Any) -> None:
    tmp = tmp_path_factory.mktemp("h")
    xml = etree.tostring(tree, encoding="utf-8")
    got = _values(convert(tmp, xml, strip_text=False, drop_empty=False))
    attrs = [v for el in tree.iter() for v in el.attrib.values()]
    for value in attrs:
        assert value in got
    all_text = "".join(
        t for el in tree.iter() for t in (el.text, el.tail if el is not tree else "") if t
    )
    assert sorted("".join(got)) == sorted(all_text + "".join(attrs) + "urn:p")


def test_one_big_record_reports_every_chunk(tmp_path: Path) -> None:
    """A document that is one record reports bytes read per 32 KiB chunk, not 0 then all."""
    src = tmp_path / "book.xml"
    src.write_text("<book><body>" + "<p>some words in a paragraph</p>" * 40_000 + "</body></book>")
    seen: list[tuple[int, int]] = []
    convert_file(src, io.BytesIO(), ConvertOptions(), on_progress=lambda b, r: seen.append((b, r)))
    size = src.stat().st_size
    before_end = [(b, r) for b, r in seen if b < size]
    assert len(before_end) >= size // (32 * 1024) - 1
    assert [b for b, _ in seen] == sorted(b for b, _ in seen)
    assert all(r == 0 for _, r in before_end) and seen[-1] == (size, 1)
