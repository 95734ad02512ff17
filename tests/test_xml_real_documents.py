"""Real documents through the converter, ``xmlflow run`` and ``xmlflow serve``, against xmltodict.

The documents are public files already on the machine (Debian packages: the MIME
database, ISO code lists, keyboard rules, D-Bus interfaces, the XML 1.0
recommendation in Latin-1, Maven site descriptors; an OpenDocument file shipped with
docutils), each skipped with a message when absent. UTF-16 and Latin-1 copies of a
real document check the encodings. The comparison is on ``json.dumps``: keys, values
and key order.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from glob import glob
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmltodict

from xmlflow.xml import ConvertOptions, convert_file

from .conftest import Server, write_config

CANDIDATES = [
    "/usr/share/mime/packages/freedesktop.org.xml",
    "/usr/share/xml/iso-codes/iso_3166-1.xml",
    "/usr/share/xml/iso-codes/iso_4217.xml",
    "/usr/share/X11/xkb/rules/evdev.xml",
    "/usr/share/dbus-1/interfaces/org.freedesktop.UPower.Device.xml",
    "/usr/share/doc/libxml-parser-perl/examples/REC-xml-19980210.xml",
    "/usr/share/maven-repo/org/apache/commons/commons-parent/*/commons-parent-*-site.xml",
    "/usr/share/metainfo/*.xml",
    "/usr/share/gdb/syscalls/amd64-linux.xml",
    "/usr/share/fontconfig/conf.avail/10-autohint.conf",
]
ODT_PLACES = [
    f"{sys.prefix}/lib/python3*/site-packages/docutils/writers/odf_odt/styles.odt",
    f"{sys.base_prefix}/lib/python3*/site-packages/docutils/writers/odf_odt/styles.odt",
    "/usr/lib/python3/dist-packages/docutils/writers/odf_odt/styles.odt",
]


def _found(pattern: str) -> Path | None:
    matches = sorted(glob(pattern))
    return Path(matches[0]) if matches else None


def real_documents() -> list[Any]:
    params = []
    for pattern in CANDIDATES:
        path = _found(pattern)
        mark = pytest.mark.skip(reason=f"{pattern} is not on this machine") if not path else ()
        params.append(pytest.param(path, id=Path(pattern).name, marks=mark))
    return params


def odt_parts() -> dict[str, bytes]:
    """``content.xml`` and ``styles.xml`` of a real OpenDocument text (namespace-heavy)."""
    for pattern in ODT_PLACES:
        path = _found(pattern)
        if path is not None:
            with zipfile.ZipFile(path) as zf:
                return {name: zf.read(name) for name in ("content.xml", "styles.xml")}
    pytest.skip(f"no OpenDocument file found in {ODT_PLACES}")


def expected_json(data: bytes) -> str:
    return json.dumps(xmltodict.parse(data, disable_entities=False))


def converted_json(tmp_path: Path, data: bytes, **options: Any) -> str:
    src = tmp_path / "doc.xml"
    src.write_bytes(data)
    out = io.BytesIO()
    convert_file(src, out, ConvertOptions.from_dict(options))
    return json.dumps(json.loads(out.getvalue()))


@pytest.mark.parametrize("path", real_documents())
def test_real_document_matches_xmltodict(tmp_path: Path, path: Path) -> None:
    data = path.read_bytes()
    assert converted_json(tmp_path, data) == expected_json(data)


@pytest.mark.parametrize("part", ["content.xml", "styles.xml"])
def test_office_document_matches_xmltodict(tmp_path: Path, part: str) -> None:
    data = odt_parts()[part]
    assert b'xmlns:office="urn:oasis:names:tc:opendocument' in data  # namespaced, as promised
    assert converted_json(tmp_path, data) == expected_json(data)


def _reencoded(codec: str, declared: str) -> bytes:
    path = _found(CANDIDATES[1]) or _found(CANDIDATES[0])
    if path is None:
        pytest.skip("no real document to re-encode")
    text = path.read_text(encoding="utf-8")
    if text.startswith("<?xml"):
        text = text[text.index("?>") + 2 :]
    text = f'<?xml version="1.0" encoding="{declared}"?>' + text
    if codec == "utf-16":
        return text.encode("utf-16")  # with a BOM
    return text.encode(codec, errors="xmlcharrefreplace")


@pytest.mark.parametrize(
    ("codec", "declared"), [("utf-16", "UTF-16"), ("latin-1", "ISO-8859-1"), ("cp1252", "cp1252")]
)
def test_real_document_in_other_encodings(tmp_path: Path, codec: str, declared: str) -> None:
    data = _reencoded(codec, declared)
    assert converted_json(tmp_path, data) == expected_json(data)


def test_real_latin1_document_is_read_as_latin1(tmp_path: Path) -> None:
    path = _found(CANDIDATES[5])
    if path is None:
        pytest.skip(f"{CANDIDATES[5]} is not on this machine")
    data = path.read_bytes()
    assert data.startswith(b"<?xml version='1.0' encoding='ISO-8859-1'")
    assert converted_json(tmp_path, data) == expected_json(data)


# -- through the real entry points ---------------------------------------------------


def test_xmlflow_run_output_matches_xmltodict(tmp_path: Path) -> None:
    parts = {name: odt_parts()[name] for name in ("content.xml",)}
    mime = _found(CANDIDATES[0])
    files = []
    for name, data in parts.items():
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    if mime is not None:
        files.append(mime)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "xmlflow", "run", "--out", str(out), "--json", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "XMLFLOW_DATA_DIR": str(tmp_path / "data")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for src in files:
        got = json.loads((out / (src.stem + ".json")).read_text(encoding="utf-8"))
        assert json.dumps(got) == expected_json(src.read_bytes()), src


CONFIG = """
    PIPELINES = {
        "default": [
            {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"},
        ],
    }
"""


@pytest.fixture(scope="module")
def convert_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("real-docs")
    server = Server(config=write_config(root / "conf", CONFIG), data_dir=root / "data").start()
    yield server
    server.stop()


def download_json(server: Server, job: dict[str, Any], stem: str) -> Any:
    assert server.wait_finished(job["id"], timeout=120)["status"] == "succeeded"
    response = httpx.get(f"{server.url}/api/jobs/{job['id']}/outputs/{stem}.json", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_server_download_matches_xmltodict(convert_server: Server) -> None:
    data = odt_parts()["styles.xml"]
    (job,) = convert_server.upload(("styles.xml", data))
    assert json.dumps(download_json(convert_server, job, "styles")) == expected_json(data)


def word_body(paragraphs: int) -> bytes:
    """One big record: a word-processing body of ``paragraphs`` paragraphs."""
    para = (
        '<w:p><w:pPr><w:pStyle w:val="Body"/></w:pPr><w:r><w:rPr><w:b/></w:rPr>'
        "<w:t>Paragraph {i} of the one big record, caf\u00e9 \u20ac.</w:t></w:r>"
        '<w:r><w:t xml:space="preserve"> and more words after it </w:t></w:r></w:p>'
    )
    body = "".join(para.format(i=i) for i in range(paragraphs))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
        ' xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        f"<w:body>{body}</w:body></w:document>"
    ).encode()


@pytest.fixture(scope="module")
def python_path_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The pure-Python converter (the native core, ten times faster, converts 10 MB in a
    few tenths of a second: its own progress is tested in tests/test_native.py)."""
    root = tmp_path_factory.mktemp("real-docs-python")
    config = write_config(root / "conf", CONFIG)
    server = Server(config=config, data_dir=root / "data", env={"XMLFLOW_NATIVE": "0"}).start()
    yield server
    server.stop()


def test_one_big_record_reports_progress_while_converting(python_path_server: Server) -> None:
    """10 MB in one element: the stream shows progress by bytes read, not 0 then 100 %.

    The runner sends at most ~10 progress events a second; converting 10 MB in Python
    takes well over half a second on any machine this runs on, hence at least 3 events.
    """
    convert_server = python_path_server
    paragraphs = 50_000
    data = word_body(paragraphs)
    assert len(data) > 10_000_000
    (job,) = convert_server.upload(("body.xml", data))
    events = convert_server.events(job["id"], timeout=120)
    progress = [e.data for e in events if e.event == "progress" and e.data.get("fraction", 1) < 1]
    fractions = [p["fraction"] for p in progress]
    assert len(progress) >= 3, events
    assert fractions == sorted(fractions) and len(set(fractions)) == len(fractions)
    assert all("MB read" in p["message"] for p in progress), progress
    doc = download_json(convert_server, job, "body")
    body = doc["w:document"]["w:body"]["w:p"]
    assert len(body) == paragraphs
    assert (
        body[-1]["w:r"][0]["w:t"]
        == f"Paragraph {paragraphs - 1} of the one big record, caf\u00e9 \u20ac."
    )
