"""The XML steps through the public step contract, with a real work folder."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from xmlflow.errors import ConfigError, JobCancelled, StepFailed, XmlError
from xmlflow.step import StepContext
from xmlflow.steps.process_xml import run_xml_processing_step
from xmlflow.steps.split import run_split_step
from xmlflow.steps.transform import run_transform_step
from xmlflow.steps.validate import run_validate_step
from xmlflow.steps.xpath_filter import run_xpath_filter_step

BOOKS = b"""<?xml version="1.0"?>
<!-- catalogue -->
<catalog xmlns:x="urn:x" region="eu">
  <book id="1"><title>Dune</title><price>9.5</price><x:tag>sf</x:tag></book>
  <book id="2"><title>Emma</title><price>4</price></book>
  <book id="3"><title>Ubik</title><price>12</price><x:tag>sf</x:tag></book>
</catalog>
"""


def make_ctx(tmp_path: Path, data: bytes = BOOKS, **options: Any) -> StepContext:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    out = tmp_path / "out"  # a folder of its own, as the runner gives it
    out.mkdir(exist_ok=True)
    src = tmp_path / "books.xml"
    src.write_bytes(data)
    events: list[tuple[float, str | None]] = []
    ctx = StepContext(
        job_id="j1",
        step_id="step",
        input=src,
        workdir=work,
        outdir=out,
        filename="books.xml",
        options=options,
        config_dir=tmp_path,
        _report=lambda fraction, message, *_bytes: events.append((fraction, message)),
    )
    ctx.events = events  # type: ignore[attr-defined]
    return ctx


def files_in(ctx: StepContext) -> list[str]:
    """The outputs (the scratch folder must be left empty by these steps)."""
    assert list(ctx.workdir.iterdir()) == []
    return sorted(p.name for p in ctx.output_dir.iterdir())


def test_process_xml_writes_json(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    run_xml_processing_step(ctx)
    assert files_in(ctx) == ["books.json"]
    doc = json.loads((ctx.output_dir / "books.json").read_text())
    assert doc["catalog"]["@region"] == "eu"
    assert doc["catalog"]["@xmlns:x"] == "urn:x"
    assert [b["title"] for b in doc["catalog"]["book"]] == ["Dune", "Emma", "Ubik"]
    assert doc["catalog"]["book"][0]["x:tag"] == "sf"
    size = ctx.input.stat().st_size
    assert ctx.events[-1] == (1.0, f"{size} B of {size} B read, 3 records")  # type: ignore[attr-defined]


def test_process_xml_jsonl_and_split(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, mode="jsonl", coerce_types=True)
    run_xml_processing_step(ctx)
    lines = (ctx.output_dir / "books.jsonl").read_text().splitlines()
    assert [json.loads(line)["price"] for line in lines] == [9.5, 4, 12]
    (tmp_path / "s").mkdir()
    ctx = make_ctx(tmp_path / "s", mode="split")
    run_xml_processing_step(ctx)
    with zipfile.ZipFile(ctx.output_dir / "books.zip") as zf:
        assert zf.namelist() == ["000001-book.json", "000002-book.json", "000003-book.json"]
        assert json.loads(zf.read("000002-book.json"))["title"] == "Emma"


def test_process_xml_bad_option_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="force_lists"):
        run_xml_processing_step(make_ctx(tmp_path, force_lists=["book"]))


def test_process_xml_error_leaves_no_output(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, data=b"<a>\n<b>text</a>")
    with pytest.raises(XmlError, match=r"^line 2, column \d+: "):
        run_xml_processing_step(ctx)
    assert files_in(ctx) == []


def test_process_xml_cancel_leaves_no_output(tmp_path: Path) -> None:
    big = b"<r>" + b"<i><v>x</v></i>" * 20_000 + b"</r>"
    ctx = make_ctx(tmp_path, data=big, mode="jsonl")
    ctx._is_cancelled = lambda: True
    with pytest.raises(JobCancelled):
        run_xml_processing_step(ctx)
    assert files_in(ctx) == []


XSD = b"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:include schemaLocation="types.xsd"/>
  <xs:element name="catalog"><xs:complexType><xs:sequence>
    <xs:element name="book" maxOccurs="unbounded"><xs:complexType><xs:sequence>
      <xs:element name="title" type="xs:string"/>
      <xs:element name="price" type="money"/>
      <xs:any namespace="##other" processContents="skip" minOccurs="0"/>
    </xs:sequence><xs:attribute name="id" type="xs:int"/></xs:complexType></xs:element>
  </xs:sequence><xs:attribute name="region" type="xs:string"/></xs:complexType></xs:element>
</xs:schema>"""
TYPES = b"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:simpleType name="money"><xs:restriction base="xs:decimal"/></xs:simpleType>
</xs:schema>"""


def test_validate_accepts_valid_and_lists_violations(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "books.xsd").write_bytes(XSD)
    (tmp_path / "schemas" / "types.xsd").write_bytes(TYPES)
    run_validate_step(make_ctx(tmp_path, schema="books.xsd", schema_dir="schemas"))
    bad = BOOKS.replace(b"<price>4</price>", b"<price>cheap</price>").replace(b'id="3"', b'id="x"')
    with pytest.raises(StepFailed) as info:
        run_validate_step(make_ctx(tmp_path, data=bad, schema="books.xsd", schema_dir="schemas"))
    assert "2 violation(s)" in info.value.message
    assert "line 5, column" in info.value.message and "line 6, column" in info.value.message


def test_validate_schema_never_fetches_outside_its_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.xsd").write_bytes(TYPES)
    (tmp_path / "schemas").mkdir()
    evil = XSD.replace(b"types.xsd", b"../secret.xsd")
    (tmp_path / "schemas" / "evil.xsd").write_bytes(evil)
    remote = XSD.replace(b"types.xsd", b"http://127.0.0.1:9/types.xsd")
    (tmp_path / "schemas" / "remote.xsd").write_bytes(remote)
    for name in ("evil.xsd", "remote.xsd"):
        with pytest.raises(ConfigError, match="not loaded"):
            run_validate_step(make_ctx(tmp_path, schema=name, schema_dir="schemas"))


XSLT = b"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/catalog"><titles><xsl:for-each select="book">
    <t><xsl:value-of select="title"/></t></xsl:for-each></titles></xsl:template>
</xsl:stylesheet>"""


def test_transform_writes_and_passes_on(tmp_path: Path) -> None:
    (tmp_path / "t.xsl").write_bytes(XSLT)
    ctx = make_ctx(tmp_path, stylesheet="t.xsl")
    run_transform_step(ctx)
    assert ctx.passed_on == (ctx.output_dir / "books.xml").resolve()
    root = etree.parse(str(ctx.passed_on)).getroot()
    assert [t.text for t in root] == ["Dune", "Emma", "Ubik"]


def test_transform_denies_file_access(tmp_path: Path) -> None:
    (tmp_path / "secret.xml").write_bytes(b"<s>TOP-SECRET</s>")
    spy = XSLT.replace(
        b'<xsl:value-of select="title"/>',
        b"<xsl:copy-of select=\"document('" + str(tmp_path / "secret.xml").encode() + b"')\"/>",
    )
    (tmp_path / "spy.xsl").write_bytes(spy)
    ctx = make_ctx(tmp_path, stylesheet="spy.xsl")
    with pytest.raises(StepFailed) as info:
        run_transform_step(ctx)
    assert "TOP-SECRET" not in info.value.message
    assert files_in(ctx) == []


def test_xpath_filter_keeps_matching_records(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, xpath="price > 5 and x:tag = 'sf'", namespaces={"x": "urn:x"})
    run_xpath_filter_step(ctx)
    out = etree.parse(str(ctx.passed_on)).getroot()
    assert out.tag == "catalog" and out.get("region") == "eu"
    assert [b.get("id") for b in out] == ["1", "3"]


def test_xpath_filter_with_record_path(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, xpath="title = 'Emma'", record_path="catalog/book")
    run_xpath_filter_step(ctx)
    assert [b.get("id") for b in etree.parse(str(ctx.passed_on)).getroot()] == ["2"]


def test_split_step_one_document_per_record(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    run_split_step(ctx)
    with zipfile.ZipFile(ctx.output_dir / "books.zip") as zf:
        names = zf.namelist()
        first = etree.fromstring(zf.read(names[0]))
    assert names == ["000001-book.xml", "000002-book.xml", "000003-book.xml"]
    assert first.findtext("title") == "Dune"
    assert first.find("{urn:x}tag") is not None


def test_split_zip_is_readable_by_zipfile_with_many_entries(tmp_path: Path) -> None:
    data = b"<r>" + b"".join(b"<i n='%d'/>" % n for n in range(70_000)) + b"</r>"
    ctx = make_ctx(tmp_path, data=data, mode="split", drop_empty=False)
    run_xml_processing_step(ctx)
    with zipfile.ZipFile(io.BytesIO((ctx.output_dir / "books.zip").read_bytes())) as zf:
        assert len(zf.namelist()) == 70_000  # beyond 65,535: needs the Zip64 records
        assert json.loads(zf.read("070000-i.json")) == {"@n": "69999"}


@pytest.mark.parametrize("mode", ["json", "jsonl", "split"])
def test_late_error_in_every_mode_leaves_nothing(tmp_path: Path, mode: str) -> None:
    data = b"<r><a>1</a><b>x</b><a>2</a>" + b"<a>3</a>" * 30_000 + b"<b>oops</r>"
    ctx = make_ctx(tmp_path, data=data, mode=mode)
    with pytest.raises(XmlError, match=r"^line 1, column \d+: "):
        run_xml_processing_step(ctx)
    assert files_in(ctx) == []


def test_split_step_error_leaves_nothing(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, data=b"<r>" + b"<a>1</a>" * 30_000 + b"<a>")
    with pytest.raises(XmlError):
        run_split_step(ctx)
    assert files_in(ctx) == []
