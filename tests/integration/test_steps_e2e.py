"""Every built-in step, alone and chained as users chain them, through ``xmlflow serve``
(real HTTP, the job's SSE stream, downloads) and through ``xmlflow run``.

Outputs are checked by content. The JSON of ``process_xml`` is compared with
``xmltodict.parse`` on documents without empty elements or whitespace-only text, where
xmlflow's defaults and xmltodict's agree whatever the converter's future defaults.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmltodict
from click.testing import CliRunner
from lxml import etree

from xmlflow.cli import main

from ..conftest import Server
from .conftest import BOOKS, Outputs, run_on_server


def xmltodict_json(xml: bytes) -> Any:
    """What a user migrating from xmltodict had, as JSON would carry it."""
    return json.loads(json.dumps(xmltodict.parse(xml)))


def books_as_shelf(*ids: str) -> bytes:
    """The transform's result for the books with these ids, as XML text."""
    items = {
        "1": b'<item ref="1"><name>Dune</name><cost>9.5</cost><kind>sf</kind></item>',
        "2": b'<item ref="2"><name>Emma</name><cost>4</cost><kind>novel</kind></item>',
        "3": b'<item ref="3"><name>Ubik</name><cost>12</cost><kind>sf</kind></item>',
    }
    return b'<shelf owner="eu">' + b"".join(items[i] for i in ids) + b"</shelf>"


def item_refs(xml: bytes) -> list[str | None]:
    return [e.get("ref") or e.get("id") for e in etree.fromstring(xml)]


def check_process_xml(out: Outputs) -> None:
    assert set(out) == {"books.json"}
    assert json.loads(out["books.json"]) == xmltodict_json(BOOKS)


def check_validate(out: Outputs) -> None:
    assert out == {}  # a valid document: nothing to report


def check_transform(out: Outputs) -> None:
    assert set(out) == {"books.xml"}
    assert etree.tostring(etree.fromstring(out["books.xml"])) == books_as_shelf("1", "2", "3")


def check_xpath_filter(out: Outputs) -> None:
    assert set(out) == {"books.filtered.xml"}
    root = etree.fromstring(out["books.filtered.xml"])
    assert root.tag == "catalog" and root.get("region") == "eu"
    assert [b.findtext("title") for b in root] == ["Dune", "Ubik"]


def check_split(out: Outputs) -> None:
    assert set(out) == {"books.zip"}
    with zipfile.ZipFile(io.BytesIO(out["books.zip"])) as zf:
        assert zf.namelist() == ["000001-book.xml", "000002-book.xml", "000003-book.xml"]
        titles = [etree.fromstring(zf.read(n)).findtext("title") for n in zf.namelist()]
    assert titles == ["Dune", "Emma", "Ubik"]


def check_cleanup(out: Outputs) -> None:
    assert out == {}


def check_chain(out: Outputs) -> None:
    assert set(out) == {"books.xml", "books.filtered.xml", "books.json"}
    assert item_refs(out["books.xml"]) == ["1", "2", "3"]
    assert item_refs(out["books.filtered.xml"]) == ["1", "3"]
    converted = json.loads(out["books.json"])
    assert converted == xmltodict_json(books_as_shelf("1", "3"))
    assert [i["name"] for i in converted["shelf"]["item"]] == ["Dune", "Ubik"]


def check_filter_split(out: Outputs) -> None:
    assert set(out) == {"books.filtered.xml", "books.zip"}
    with zipfile.ZipFile(io.BytesIO(out["books.zip"])) as zf:
        kept = [etree.fromstring(zf.read(n)) for n in zf.namelist()]
    assert [b.get("ref") for b in kept] == ["1", "3"]
    assert [b.findtext("name") for b in kept] == ["Dune", "Ubik"]


def check_transform_jsonl(out: Outputs) -> None:
    assert set(out) == {"books.xml", "books.jsonl"}
    lines = [json.loads(line) for line in out["books.jsonl"].splitlines()]
    expected = xmltodict_json(books_as_shelf("1", "2", "3"))["shelf"]["item"]
    assert lines == expected and len(lines) == 3


CHECKS: dict[str, Callable[[Outputs], None]] = {
    "process_xml": check_process_xml,
    "validate": check_validate,
    "transform": check_transform,
    "xpath_filter": check_xpath_filter,
    "split": check_split,
    "cleanup": check_cleanup,
    "chain": check_chain,
    "filter_split": check_filter_split,
    "transform_jsonl": check_transform_jsonl,
}
STEPS = {
    "chain": ["validate", "transform", "xpath_filter", "process_xml", "cleanup"],
    "filter_split": ["xpath_filter", "split"],
    "transform_jsonl": ["transform", "process_xml"],
}


def upload_for(pipeline: str) -> bytes:
    """The document a pipeline is fed: the catalog, or for filter_split a shelf."""
    return books_as_shelf("1", "2", "3") if pipeline == "filter_split" else BOOKS


@pytest.mark.parametrize("pipeline", list(CHECKS))
def test_every_step_alone_and_chained_through_the_server(steps_srv: Server, pipeline: str) -> None:
    events, outputs = run_on_server(steps_srv, pipeline, upload_for(pipeline))
    assert events[-1].data["status"] == "succeeded", events[-1].data
    finished = [
        e.data["id"] for e in events if e.event == "step" and e.data["status"] == "succeeded"
    ]
    assert finished == STEPS.get(pipeline, [pipeline])
    CHECKS[pipeline](outputs)


def run_cli(conf: Path, pipeline: str, source: Path, out: Path) -> Outputs:
    result = CliRunner().invoke(
        main,
        ["run", "--config", str(conf), "--pipeline", pipeline, "-o", str(out), str(source)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else {}


@pytest.mark.parametrize("pipeline", list(CHECKS))
def test_every_step_alone_and_chained_through_xmlflow_run(
    steps_conf: Path, tmp_path: Path, pipeline: str
) -> None:
    source = tmp_path / "in" / "books.xml"
    source.parent.mkdir()
    source.write_bytes(upload_for(pipeline))
    CHECKS[pipeline](run_cli(steps_conf, pipeline, source, tmp_path / "out"))
    assert source.read_bytes() == upload_for(pipeline)  # the input is left as it was


def test_the_chain_as_a_real_xmlflow_run_process(steps_conf: Path, tmp_path: Path) -> None:
    source = tmp_path / "books.xml"
    source.write_bytes(BOOKS)
    done = subprocess.run(
        [sys.executable, "-m", "xmlflow", "run", "--json", "--pipeline", "chain", "-o"]
        + [str(tmp_path / "out"), str(source)],
        env={**os.environ, "XMLFLOW_CONFIG": str(steps_conf)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ends = [json.loads(line) for line in done.stdout.splitlines()]
    assert ends[-1]["event"] == "end" and ends[-1]["data"]["status"] == "succeeded"
    check_chain({p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()})


def test_invalid_document_fails_with_a_short_error_and_a_full_report(steps_srv: Server) -> None:
    bad = BOOKS.replace(b"<price>4</price>", b"<price>four</price>")
    more = b"".join(
        b'<book id="%d"><title>t</title><price>p%d</price><genre>g</genre></book>' % (n, n)
        for n in range(4, 304)
    )
    many = bad.replace(b"</catalog>", more + b"</catalog>")
    events, outputs = run_on_server(steps_srv, "chain", many)
    end = events[-1].data
    assert end["status"] == "failed"
    assert "301 violation(s), listed in books.errors.jsonl" in end["error"]
    assert "line 1, column" in end["error"] and "… and 291 more" in end["error"]
    assert len(end["error"]) < 5000  # the first ten, not all 301
    failed = [e.data for e in events if e.event == "step" and e.data["status"] == "failed"]
    assert [s["id"] for s in failed] == ["validate"]
    skipped = [e.data["id"] for e in events if e.event == "step" and e.data["status"] == "skipped"]
    assert skipped == ["transform", "xpath_filter", "process_xml", "cleanup"]
    assert set(outputs) == {"books.errors.jsonl"}
    report = [json.loads(line) for line in outputs["books.errors.jsonl"].splitlines()]
    assert len(report) == 301
    assert "'four' is not a valid value" in report[0]["message"]
    assert all(v["line"] == 1 and v["column"] >= 0 for v in report)
    assert "'p303' is not a valid value" in report[-1]["message"]
    # the zip of a job's outputs holds what the failed job offers, as the list says
    job_id = events[0].data["job"]
    zipped = httpx.get(f"{steps_srv.url}/api/jobs/{job_id}/outputs.zip", timeout=30)
    assert zipped.status_code == 200, zipped.text
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert archive.read("books.errors.jsonl") == outputs["books.errors.jsonl"]


def test_an_upload_may_lower_validate_s_report(steps_srv: Server) -> None:
    bad = BOOKS.replace(b"<price>4</price>", b"<price>four</price>").replace(
        b"<price>12</price>", b"<price>twelve</price>"
    )
    options = json.dumps({"validate": {"max_errors": 1}})
    events, outputs = run_on_server(steps_srv, "validate", bad, options=options)
    assert "2 violation(s)" in events[-1].data["error"]
    report = outputs["books.errors.jsonl"].splitlines()
    assert len(report) == 1 and b"four" in report[0]
