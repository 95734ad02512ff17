"""Differential suite: xmlflow's converter against ``xmltodict.parse``, byte for byte.

Hypothesis writes documents with what makes converters disagree (prefixes declared,
re-declared and shared by two prefixes, default namespaces, ``xmlns`` among other
attributes, mixed content, CDATA, comments, PIs, empty elements, whitespace-only
text, DTD attribute defaults, attributes named like the text key, repeated
siblings, unicode), converts each through :func:`convert_file` with the defaults and
with every xmltodict-equivalent option, and compares ``json.dumps`` of both: same
keys, values and key order.

Deliberate differences, each tested below by name and explained in ``docs/xml.md``:

- ``ENTITIES_EXPANDED``: xmltodict refuses a document that declares entities unless
  ``disable_entities=False``; xmlflow expands internal entities unless
  ``disable_entities: true`` (then it refuses them too).
- ``DEPTH_LIMIT``: elements nested deeper than 256 levels are refused.
- ``EXPANSION_LIMIT``: entity text beyond 8 MiB + 10 characters per byte is refused.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
import xmltodict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmlflow.errors import ConfigError, XmlError
from xmlflow.xml import ConvertOptions, convert_file

# xmlflow options → the xmltodict.parse keyword arguments that must give the same JSON.
EQUIVALENT: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({"strip_text": False}, {"strip_whitespace": False}),
    ({"attr_prefix": "_", "text_key": "$"}, {"attr_prefix": "_", "cdata_key": "$"}),
    ({"attr_prefix": "", "text_key": "text"}, {"attr_prefix": "", "cdata_key": "text"}),
    ({"force_list": ["a", "p:b", "text"]}, {"force_list": ("a", "p:b", "text")}),
    ({"xml_attribs": False}, {"xml_attribs": False}),
    ({"force_cdata": True}, {"force_cdata": True}),
    ({"force_cdata": ["a", "c"]}, {"force_cdata": ("a", "c")}),
    ({"cdata_separator": "|"}, {"cdata_separator": "|"}),
    (
        {"cdata_separator": " ", "strip_text": False},
        {"cdata_separator": " ", "strip_whitespace": False},
    ),
    ({"drop_comments": False}, {"process_comments": True}),
    (
        {"drop_comments": False, "strip_text": False},
        {"process_comments": True, "strip_whitespace": False},
    ),
    ({"namespaces": {}}, {"process_namespaces": True}),
    (
        {"namespaces": {"urn:p": "pp", "urn:d": None, "urn:q": ""}},
        {"process_namespaces": True, "namespaces": {"urn:p": "pp", "urn:d": None, "urn:q": ""}},
    ),
    ({"disable_entities": True}, {}),
]

NAMES = ["a", "b", "c", "p:b", "q:c", "item"]
ATTRS = ["k", "m", "p:k", "text", "xml:lang"]
URIS = ["urn:p", "urn:q", "urn:d"]
WHITESPACE = st.sampled_from([" ", "\n", "\n  ", "\t", " \n\t ", "\xa0"])
CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_categories=("Cs",))
TEXTS = st.one_of(st.text(CHARS, max_size=6), WHITESPACE, st.just("caf\u00e9 \u20ac \U0001f600"))


@st.composite
def declarations(draw: st.DrawFn, root: bool) -> list[str]:
    """``xmlns`` attributes: on the root both prefixes are bound (maybe to one URI)."""
    out = []
    if root:
        shared = draw(st.booleans())
        out.append('xmlns:p="urn:p"')
        out.append(f'xmlns:q="{"urn:p" if shared else "urn:q"}"')
    else:
        for prefix in draw(st.lists(st.sampled_from(["p", "q"]), unique=True, max_size=2)):
            out.append(f'xmlns:{prefix}="{draw(st.sampled_from(URIS))}"')  # often redundant
    if draw(st.booleans()):
        out.append(f'xmlns="{draw(st.sampled_from(URIS))}"')
    return out


@st.composite
def start_tag(draw: st.DrawFn, name: str, root: bool) -> str:
    attrs = [
        f"{key}={quoteattr(draw(TEXTS))}"
        for key in draw(st.lists(st.sampled_from(ATTRS), unique=True, max_size=3))
    ]
    mixed = draw(st.permutations(attrs + draw(declarations(root))))
    return "<" + " ".join([name, *mixed]) + ">"


KINDS = ["text", "text", "cdata", "comment", "pi", "el", "el", "empty"]


@st.composite
def content(draw: st.DrawFn, depth: int) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 5 if depth < 3 else 2))):
        kind = draw(
            st.sampled_from(["text", "text", "cdata", "comment", "pi", "el", "el", "empty"])
        )
        if kind == "text":
            parts.append(escape(draw(TEXTS)))
        elif kind == "cdata":
            parts.append(f"<![CDATA[{draw(TEXTS).replace(']]>', '')}]]>")
        elif kind == "comment":
            parts.append(f"<!--{draw(TEXTS).replace('-', '')}-->")
        elif kind == "pi":
            parts.append(f"<?app {draw(TEXTS).replace('?>', '')}?>")
        elif kind == "empty" or depth >= 3:
            parts.append(f"<{draw(st.sampled_from(NAMES))}/>")
        else:
            parts.append(draw(element(depth + 1)))
    return "".join(parts)


@st.composite
def element(draw: st.DrawFn, depth: int = 0) -> str:
    name = draw(st.sampled_from(NAMES))
    return draw(start_tag(name, depth == 0)) + draw(content(depth)) + f"</{name}>"


@st.composite
def documents(draw: st.DrawFn) -> str:
    prolog = draw(st.sampled_from(["", '<?xml version="1.0" encoding="UTF-8"?>\n']))
    if draw(st.booleans()):  # DTD attribute defaults, applied by expat as xmltodict sees them
        prolog += '<!DOCTYPE x [<!ATTLIST b dflt CDATA "d1"><!ATTLIST a k CDATA "kd">]>'
    if draw(st.booleans()):
        prolog += "<!-- before -->"
    epilog = draw(st.sampled_from(["", "<!-- after -->", "\n"]))
    return prolog + draw(element()) + epilog


def ours(tmp: Path, xml: str, options: dict[str, Any]) -> str:
    src = tmp / "in.xml"
    src.write_bytes(xml.encode())
    out = io.BytesIO()
    convert_file(src, out, ConvertOptions.from_dict(options))
    return json.dumps(json.loads(out.getvalue()))


def theirs(xml: str, kwargs: dict[str, Any]) -> str:
    return json.dumps(xmltodict.parse(xml.encode(), **kwargs))


def same_or_both_refuse(tmp: Path, xml: str, options: dict[str, Any], kw: dict[str, Any]) -> None:
    try:
        expected = theirs(xml, kw)
    except Exception:  # xmltodict refuses (unbound prefix, duplicate attribute ...)
        with pytest.raises(XmlError):
            ours(tmp, xml, options)
        return
    assert ours(tmp, xml, options) == expected, xml


@pytest.mark.parametrize(("options", "kwargs"), EQUIVALENT, ids=[str(o) for o, _ in EQUIVALENT])
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(xml=documents())
def test_generated_documents_match_xmltodict(
    tmp_path: Path, options: dict[str, Any], kwargs: dict[str, Any], xml: str
) -> None:
    same_or_both_refuse(tmp_path, xml, options, kwargs)


# -- the cases the issue names, by hand ----------------------------------------------

NAMED = [
    ("<a>abc<b/>def</a>", {}, {}),
    ('<r xmlns:a="u" xmlns:b="u"><x b:attr="1"/></r>', {}, {}),
    ('<r x="1" xmlns:p="u" y="2"><p:c xmlns:p="u">v</p:c></r>', {}, {}),
    ("<root> </root>", {"strip_text": False}, {"strip_whitespace": False}),
    ("<r> <b>1</b>x </r>", {"strip_text": False}, {"strip_whitespace": False}),
    ('<!DOCTYPE r [<!ATTLIST r d CDATA "def" e CDATA #IMPLIED>]><r a="1"/>', {}, {}),
    (
        '<r xmlns="urn:d" xmlns:p="urn:p"><p:i p:a="1"/></r>',
        {"namespaces": {"urn:d": None, "urn:p": "x"}},
        {"process_namespaces": True, "namespaces": {"urn:d": None, "urn:p": "x"}},
    ),
    ("<a>x<b>1</b>y<b>2</b>z</a>", {"cdata_separator": "\n"}, {"cdata_separator": "\n"}),
]


@pytest.mark.parametrize(("xml", "options", "kwargs"), NAMED)
def test_named_cases_match_xmltodict(
    tmp_path: Path, xml: str, options: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    assert ours(tmp_path, xml, options) == theirs(xml, kwargs)


def test_entities_expanded_is_a_deliberate_difference(tmp_path: Path) -> None:
    """ENTITIES_EXPANDED: xmltodict's default refuses; its opt-in output is ours."""
    xml = '<!DOCTYPE r [<!ENTITY e "ent">]><r>&e;<i>1</i></r>'
    with pytest.raises(ValueError, match="entities are disabled"):
        theirs(xml, {})
    assert ours(tmp_path, xml, {}) == theirs(xml, {"disable_entities": False})
    with pytest.raises(XmlError, match="declares an entity"):
        ours(tmp_path, xml, {"disable_entities": True})


def test_depth_limit_is_a_deliberate_difference(tmp_path: Path) -> None:
    """DEPTH_LIMIT: xmltodict converts 300 levels; xmlflow refuses beyond 256."""
    xml = "<a>" * 300 + "</a>" * 300
    assert json.loads(theirs(xml, {}))["a"]["a"]["a"] is not None
    with pytest.raises(XmlError, match="nested deeper than 256"):
        ours(tmp_path, xml, {})


def test_expansion_limit_is_a_deliberate_difference(tmp_path: Path) -> None:
    """EXPANSION_LIMIT: 20 MB of text from a 100 KB document is refused."""
    xml = '<!DOCTYPE a [<!ENTITY e "' + "x" * 100_000 + '">]><a>' + "&e;" * 200 + "</a>"
    with pytest.raises(XmlError, match="entity expansion limit exceeded"):
        ours(tmp_path, xml, {})


# -- postprocessor: a function in the user's processing_steps/ ------------------------

STEP_FILE = '''
def to_int(path, key, value):
    """xmltodict's documented example, plus a look at the path it is given."""
    if key == "skip":
        return None
    try:
        return key + ":int", int(value)
    except (ValueError, TypeError):
        return key, value
'''


def test_postprocessor_from_the_steps_folder_matches_xmltodict(tmp_path: Path) -> None:
    steps = tmp_path / "processing_steps"
    steps.mkdir()
    (steps / "shaping.py").write_text(STEP_FILE, encoding="utf-8")
    namespace: dict[str, Any] = {}
    exec(STEP_FILE, namespace)
    xml = '<a n="3"><b>1</b><b>2</b><b>x</b><skip>s</skip><c m="4">5</c>t</a>'
    for spelling in ("shaping:to_int", "shaping.to_int"):
        options = ConvertOptions.from_dict({"postprocessor": spelling}, base_dir=tmp_path)
        src = tmp_path / "in.xml"
        src.write_text(xml, encoding="utf-8")
        out = io.BytesIO()
        convert_file(src, out, options)
        expected = json.dumps(xmltodict.parse(xml, postprocessor=namespace["to_int"]))
        assert json.dumps(json.loads(out.getvalue())) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("os:system", "no step file"),
        ("../evil:f", "is not 'module:function'"),
        ("shaping:missing", "missing"),
        (42, "must be a non-empty string"),
    ],
)
def test_postprocessor_names_only_a_users_step_function(
    tmp_path: Path, value: Any, message: str
) -> None:
    steps = tmp_path / "processing_steps"
    steps.mkdir()
    (steps / "shaping.py").write_text(STEP_FILE, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        ConvertOptions.from_dict({"postprocessor": value}, base_dir=tmp_path)
