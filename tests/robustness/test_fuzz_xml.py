"""Random XML written as text (names, namespaces, attributes, every allowed character,
character references, CDATA, comments, PIs): converting keeps every value, exactly."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmlflow.xml import ConvertOptions, convert_file

NAME_START = st.sampled_from("abcxyzABC_ÀÉñé")
NAME_REST = st.text(st.sampled_from("abc09-._·éÀ"), max_size=6)
names = st.builds(lambda a, b: a + b, NAME_START, NAME_REST)
# Every character XML 1.0 allows (no surrogates, no C0 controls but tab, LF, CR).
chars = st.characters(
    codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00\ufffe\uffff"
).filter(lambda c: c >= " " or c in "\t\n\r")
texts = st.text(chars, max_size=12)


def escape(value: str, *, attribute: bool) -> str:
    """Write ``value`` so that a parser gives it back unchanged (normalisation included)."""
    out = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace("\r", "&#13;")
    if attribute:
        out = out.replace('"', "&quot;").replace("\t", "&#9;").replace("\n", "&#10;")
    return out


class Doc:
    """Builds one document's text while recording the values it must keep."""

    def __init__(self) -> None:
        self.attrs: list[str] = []
        self.text: list[str] = []

    def element(self, draw: st.DrawFn, depth: int) -> str:
        prefix = draw(st.sampled_from(["", "p:"]))
        name = prefix + draw(names)
        attrs = draw(st.dictionaries(names, texts, max_size=3))
        head = "".join(f' {k}="{escape(v, attribute=True)}"' for k, v in attrs.items())
        self.attrs += attrs.values()
        parts = [self.content(draw, depth) for _ in range(draw(st.integers(0, 3)))]
        return f"<{name}{head}>{''.join(parts)}</{name}>"

    def content(self, draw: st.DrawFn, depth: int) -> str:
        kind = draw(st.sampled_from(["text", "cdata", "comment", "pi", "element"]))
        if kind == "element" and depth < 3:
            return self.element(draw, depth + 1)
        value = draw(texts)
        if kind == "cdata":
            value = value.replace("]]>", "]]")
            self.text.append(value.replace("\r\n", "\n").replace("\r", "\n"))
            return f"<![CDATA[{value}]]>"
        if kind == "comment":
            return f"<!--{value.replace('-', '_')}_-->"
        if kind == "pi":
            return f"<?pi {value.replace('?>', '?')}?>"
        self.text.append(value)
        return escape(value, attribute=False)


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, Doc]:
    doc = Doc()
    body = doc.element(draw, 0)
    root_end = body.index(">")  # declare the prefix on the root
    xml = body[:root_end] + ' xmlns:p="urn:p"' + body[root_end:]
    doc.attrs.append("urn:p")
    return xml, doc


def values(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for item in node.values() for v in values(item)]
    if isinstance(node, list):
        return [v for item in node for v in values(item)]
    return [node] if isinstance(node, str) else []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tmp_path_factory.mktemp("fuzz-xml")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(documents())
def test_every_value_survives_conversion(workdir: Any, case: tuple[str, Doc]) -> None:
    xml, doc = case
    src = workdir / "in.xml"
    src.write_bytes(xml.encode())
    out = io.BytesIO()
    options = ConvertOptions.from_dict({"strip_text": False, "drop_empty": False})
    convert_file(src, out, options)
    got = values(orjson.loads(out.getvalue()))
    for value in doc.attrs:
        assert value in got, (value, xml)
    # Text pieces of one element are joined, so compare characters, not pieces; no
    # character of a comment or PI may slip in, none of the text may go missing.
    assert Counter("".join(got)) == Counter("".join(doc.text) + "".join(doc.attrs)), xml
