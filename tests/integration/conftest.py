"""Fixtures of the built-in steps' end-to-end tests: a config with every step, its server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import Server, write_config

Outputs = dict[str, bytes]
"""A job's outputs by name: their bytes as downloaded."""

BOOKS = (
    b'<?xml version="1.0"?>'
    b'<catalog region="eu">'
    b'<book id="1"><title>Dune</title><price>9.5</price><genre>sf</genre></book>'
    b'<book id="2"><title>Emma</title><price>4</price><genre>novel</genre></book>'
    b'<book id="3"><title>Ubik</title><price>12</price><genre>sf</genre></book>'
    b"</catalog>"
)
XSD = """<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:element name="catalog"><xs:complexType><xs:sequence>
    <xs:element name="book" maxOccurs="unbounded"><xs:complexType><xs:sequence>
      <xs:element name="title" type="xs:string"/>
      <xs:element name="price" type="xs:decimal"/>
      <xs:element name="genre" type="xs:string"/>
    </xs:sequence><xs:attribute name="id" type="xs:int"/></xs:complexType></xs:element>
  </xs:sequence><xs:attribute name="region" type="xs:string"/></xs:complexType></xs:element>
</xs:schema>"""
# catalog/book -> shelf/item, without whitespace text, so xmltodict and xmlflow agree
XSLT = """<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:template match="/catalog"><shelf owner="{@region}"><xsl:for-each select="book">
    <item ref="{@id}"><name><xsl:value-of select="title"/></name><cost><xsl:value-of
      select="price"/></cost><kind><xsl:value-of select="genre"/></kind></item>
  </xsl:for-each></shelf></xsl:template>
</xsl:stylesheet>"""

VALIDATE = (
    '{"id": "validate", "name": "Validate", "module": "run_validate_step", '
    '"options": {"schema": "books.xsd"}}'
)
CONFIG = f"""
    VALIDATE = {VALIDATE}
    TRANSFORM = {{"id": "transform", "name": "Transform", "module": "run_transform_step",
                 "options": {{"stylesheet": "shelf.xsl"}}}}
    CHEAP = {{"id": "xpath_filter", "name": "Filter", "module": "run_xpath_filter_step",
             "options": {{"xpath": "cost > 5"}}}}
    CONVERT = {{"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"}}
    SPLIT = {{"id": "split", "name": "Split", "module": "run_split_step"}}
    CLEANUP = {{"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"}}
    PIPELINES = {{
        "default": [CONVERT],
        "process_xml": [CONVERT],
        "validate": [VALIDATE],
        "transform": [TRANSFORM],
        "xpath_filter": [{{"id": "xpath_filter", "name": "Filter",
                          "module": "run_xpath_filter_step",
                          "options": {{"xpath": "genre = 'sf'"}}}}],
        "split": [SPLIT],
        "cleanup": [CLEANUP],
        "chain": [VALIDATE, TRANSFORM, CHEAP, CONVERT, CLEANUP],
        "filter_split": [CHEAP, SPLIT],
        "transform_jsonl": [TRANSFORM, dict(CONVERT, options={{"mode": "jsonl"}})],
    }}
"""


def write_steps_config(folder: Path) -> Path:
    """``config.py`` with the pipelines above, its schema and its stylesheet."""
    config = write_config(folder, CONFIG)
    (folder / "books.xsd").write_text(XSD)
    (folder / "shelf.xsl").write_text(XSLT)
    return config


def start_steps_server(conf: Path) -> Server:
    data = conf.parent.parent / "data"
    return Server(config=conf, data_dir=data, env={"XMLFLOW_WORKERS": "2"}).start()


@pytest.fixture(scope="module")
def steps_conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_steps_config(tmp_path_factory.mktemp("steps-e2e") / "conf")


@pytest.fixture(scope="module")
def steps_srv(steps_conf: Path) -> Iterator[Server]:
    server = start_steps_server(steps_conf)
    yield server
    server.stop()


def run_on_server(srv: Server, pipeline: str, data: bytes, **form: str) -> tuple[Any, Outputs]:
    """Upload, follow the job's stream to its end, download every output it offers."""
    (job,) = srv.upload(("books.xml", data), pipeline=pipeline, **form)
    events = srv.events(job["id"])
    end = events[-1]
    assert end.event == "end", events
    outputs = {}
    for output in end.data["outputs"]:
        response = httpx.get(srv.url + output["url"], timeout=30)
        assert response.status_code == 200, response.text
        outputs[output["name"]] = response.content
    return events, outputs
