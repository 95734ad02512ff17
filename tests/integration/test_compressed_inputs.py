"""Compressed uploads through ``xmlflow serve``: .gz, .bz2, .xz and .zip as users have them.

Real files, a real server: each format converted with the right content, a zip's XML
members as jobs of one group, bombs and damaged files refused at once with the cap or
the damage named, and nothing left in the data folder.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from xmlflow.steps.process_xml import progress_message

from ..conftest import Server
from .conftest import BOOKS, start_steps_server, write_steps_config

EXPECTED = {
    "catalog": {
        "@region": "eu",
        "book": [
            {"@id": "1", "title": "Dune", "price": "9.5", "genre": "sf"},
            {"@id": "2", "title": "Emma", "price": "4", "genre": "novel"},
            {"@id": "3", "title": "Ubik", "price": "12", "genre": "sf"},
        ],
    }
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_steps_server(write_steps_config(tmp_path_factory.mktemp("inputs") / "conf"))
    yield server
    server.stop()


def post(srv: Server, name: str, body: bytes, **form: str) -> httpx.Response:
    return httpx.post(
        srv.url + "/api/jobs",
        files=[("file", (name, body, "application/octet-stream"))],
        data=form,
        timeout=60,
    )


def outputs_of(srv: Server, job: dict[str, Any]) -> dict[str, bytes]:
    done = srv.wait_finished(job["id"])
    assert done["status"] == "succeeded", done
    return {o["name"]: httpx.get(srv.url + o["url"], timeout=30).content for o in done["outputs"]}


def leftovers(srv: Server) -> list[str]:
    """Files in the data folder's incoming/ and job folders of jobs the store does not know."""
    known = {j["id"] for j in httpx.get(srv.url + "/api/jobs?limit=200", timeout=10).json()["jobs"]}
    incoming = [p.name for p in (srv.data_dir / "incoming").iterdir()]
    orphans = [p.name for p in (srv.data_dir / "jobs").iterdir() if p.name not in known]
    return incoming + orphans


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "books.xml.gz": gzip.compress,
    "books.xml.bz2": bz2.compress,
    "books.xml.xz": lzma.compress,
    # detected by content, not by name: a gzip called .xml is still read
    "books.xml": gzip.compress,
}


@pytest.mark.parametrize("name", list(COMPRESSORS))
def test_each_format_is_converted_from_the_document_inside(srv: Server, name: str) -> None:
    body = COMPRESSORS[name](BOOKS)
    (job,) = post(srv, name, body).json()["jobs"]
    outputs = outputs_of(srv, job)
    assert list(outputs) == ["books.json"]  # named after the inner document
    assert json.loads(outputs["books.json"]) == EXPECTED
    assert srv.job(job["id"])["size"] == len(body)  # the upload as sent, compressed


def test_a_multi_member_gzip_reads_as_one_document(srv: Server) -> None:
    half = len(BOOKS) // 2
    body = gzip.compress(BOOKS[:half]) + gzip.compress(BOOKS[half:])
    (job,) = post(srv, "split.xml.gz", body).json()["jobs"]
    assert json.loads(outputs_of(srv, job)["split.json"]) == EXPECTED


def test_whole_tree_steps_read_the_stream_too(srv: Server) -> None:
    """validate and transform parse with lxml: the same decompressing stream."""
    (job,) = post(srv, "books.xml.bz2", bz2.compress(BOOKS), pipeline="transform").json()["jobs"]
    shelf = outputs_of(srv, job)["books.xml"]
    assert b'<shelf owner="eu">' in shelf and b"<name>Ubik</name>" in shelf


def test_progress_is_measured_in_compressed_bytes(srv: Server) -> None:
    records = b"".join(b"<r><v>%d</v></r>" % i for i in range(200_000))
    body = gzip.compress(b"<rows>" + records + b"</rows>", 1)
    (job,) = post(srv, "rows.xml.gz", body, pipeline="process_xml").json()["jobs"]
    progress = [e.data for e in srv.events(job["id"]) if e.event == "progress"]
    assert progress and all(0 <= p["fraction"] <= 1 for p in progress)
    of_total = progress_message(0, len(body), 0).removeprefix("0 B ")  # "of 513.1 kB read"
    assert all(of_total in p["message"] for p in progress), progress


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_s_xml_members_become_jobs_of_one_group(srv: Server) -> None:
    body = make_zip(
        {
            "2024/": b"",
            "2024/a.xml": BOOKS,
            "2024/b.xml": BOOKS.replace(b"Dune", b"Solaris"),
            "c.xml.gz": gzip.compress(BOOKS),  # a compressed member is read as well
            "__MACOSX/2024/._a.xml": b"<resource fork>",
            ".DS_Store": b"<junk>",
            "readme.txt": b"not xml at all",
            "nested.zip": make_zip({"d.xml": BOOKS}),  # never opened
            "../../up.xml": b"<up/>",  # a name climbing out: skipped
            "/etc/evil.xml": b"<evil/>",  # a name never chooses a path
        }
    )
    response = post(srv, "filings 2024.zip", body)
    assert response.status_code == 202, response.text
    jobs = [srv.job(j["id"]) for j in response.json()["jobs"]]
    assert sorted(j["filename"] for j in jobs) == ["a.xml", "b.xml", "c.xml.gz", "evil.xml"]
    assert {j["group"] for j in jobs} == {"filings 2024.zip"}
    by_name = {j["filename"]: outputs_of(srv, j) for j in jobs}
    assert json.loads(by_name["b.xml"]["b.json"])["catalog"]["book"][0]["title"] == "Solaris"
    assert json.loads(by_name["c.xml.gz"]["c.json"]) == EXPECTED
    assert by_name["evil.xml"] == {"evil.json": b'{"evil":null}'}
    assert not list((srv.data_dir / "incoming").iterdir())  # the zip itself is gone
    listed = httpx.get(srv.url + "/api/jobs?limit=200", timeout=10).json()["jobs"]
    assert {j["group"] for j in listed if j["id"] in {x["id"] for x in jobs}} == {
        "filings 2024.zip"
    }


def test_a_plain_upload_has_no_group(srv: Server) -> None:
    (job,) = srv.upload(("plain.xml", BOOKS))
    assert srv.job(job["id"])["group"] is None


def refused(srv: Server, name: str, body: bytes, status: int) -> str:
    before = time.monotonic()
    response = post(srv, name, body)
    assert response.status_code == status, response.text
    assert time.monotonic() - before < 5  # fails fast: never decompresses the whole bomb
    assert leftovers(srv) == []
    message: str = response.json()["error"]["message"]
    return message


def test_a_gzip_bomb_is_refused_naming_the_file_and_the_cap(srv: Server) -> None:
    bomb = gzip.compress(bytes(10 * 1024 * 1024), 9)  # 10 MB of zeros in ~10 kB
    message = refused(srv, "bomb.xml.gz", bomb, 413)
    assert "bomb.xml.gz" in message and "XMLFLOW_MAX_EXPANSION_RATIO" in message
    (job,) = srv.upload(("after.xml", BOOKS))  # other uploads are unaffected
    assert srv.wait_finished(job["id"])["status"] == "succeeded"


def test_a_zip_bomb_is_refused_naming_the_member_and_the_cap(srv: Server) -> None:
    bomb = make_zip({"ok.xml": BOOKS, "zeros.xml": b"<a>" + bytes(20 * 1024 * 1024)})
    message = refused(srv, "bomb.zip", bomb, 413)
    assert "bomb.zip" in message and "zeros.xml" in message
    assert "XMLFLOW_MAX_EXPANSION_RATIO" in message


def lying_zip() -> bytes:
    """A member whose headers claim 1 kB while its data expands to 5 MB."""
    body = bytearray(make_zip({"liar.xml": b"<a>" + b" " * (5 * 1024 * 1024) + b"</a>"}))
    real = struct.pack("<I", 5 * 1024 * 1024 + 7)
    claimed = struct.pack("<I", 1024)
    assert body.count(real) == 2  # the local header and the central directory
    return bytes(body.replace(real, claimed))


def test_a_zip_member_that_expands_past_its_claimed_size_is_refused(srv: Server) -> None:
    message = refused(srv, "liar.zip", lying_zip(), 422)
    assert "liar.zip" in message and "liar.xml" in message


def test_nested_archives_are_not_opened(srv: Server) -> None:
    inner = make_zip({f"{i}.zip": make_zip({"x.xml": b"<x/>"}) for i in range(4)})
    message = refused(srv, "42.zip", make_zip({"layer.zip": inner}), 400)
    assert "42.zip" in message and "nested archives" in message


@pytest.mark.parametrize(
    ("name", "body", "words"),
    [
        ("cut.xml.gz", gzip.compress(BOOKS)[:-20], "truncated"),
        ("cut.xml.xz", lzma.compress(BOOKS)[:-20], "truncated"),
        ("cut.zip", make_zip({"a.xml": BOOKS})[:-30], "not a readable zip"),
    ],
)
def test_a_damaged_file_gives_a_clear_error(
    srv: Server, name: str, body: bytes, words: str
) -> None:
    message = refused(srv, name, body, 422)
    assert name in message and words in message
