"""``xmlflow run`` on compressed files: the document inside is converted, bombs are stopped.

``run`` submits files directly (no upload probe), so the caps on decompressing are the
job's own here: they stop the conversion mid-file and no half output is written.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from xmlflow.cli import main

from .conftest import write_config

CONFIG = """
    PROCESSING_STEPS = [{"id": "process_xml", "name": "Convert",
                         "module": "run_xml_processing_step"}]
"""
BOOKS = b'<?xml version="1.0"?><catalog><book id="1">Dune</book><book id="2">Emma</book></catalog>'


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "conf", CONFIG)


def run(config: Path, *files: Path, env: dict[str, str] | None = None) -> Result:
    args = ["run", "--config", str(config), "--out", str(files[0].parent / "out")]
    return CliRunner().invoke(main, [*args, *map(str, files)], env=env, catch_exceptions=False)


def test_run_converts_the_document_inside_a_gz_and_a_bz2(config: Path, tmp_path: Path) -> None:
    gz, bz = tmp_path / "books.xml.gz", tmp_path / "novels.osm.bz2"
    gz.write_bytes(gzip.compress(BOOKS))
    bz.write_bytes(bz2.compress(BOOKS))
    result = run(config, gz, bz)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["books.json", "novels.json"]
    expected = {"catalog": {"book": [{"@id": "1", "#text": "Dune"}, {"@id": "2", "#text": "Emma"}]}}
    assert json.loads((out / "books.json").read_bytes()) == expected
    assert json.loads((out / "novels.json").read_bytes()) == expected


def test_run_stops_a_bomb_at_the_cap_and_writes_nothing(config: Path, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.xml.gz"
    bomb.write_bytes(gzip.compress(b"<a>" + b" " * (8 * 1024 * 1024) + b"</a>", 9))
    result = run(config, bomb, env={"XMLFLOW_MAX_EXPANSION_RATIO": "50"})
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "bomb.xml.gz expands to more than" in said
    assert "XMLFLOW_MAX_EXPANSION_RATIO" in said
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_run_stops_at_the_total_cap_too(config: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.xml.gz"
    big.write_bytes(gzip.compress(b"<a>" + b"x" * (3 * 1024 * 1024) + b"</a>"))
    env = {"XMLFLOW_MAX_DECOMPRESSED_MB": "2", "XMLFLOW_MAX_EXPANSION_RATIO": "100000"}
    result = run(config, big, env=env)
    assert result.exit_code == 1, result.output
    assert "XMLFLOW_MAX_DECOMPRESSED_MB" in " ".join(result.output.split())


def test_run_says_a_zip_is_to_be_uploaded(config: Path, tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("a.xml", BOOKS)
    archive.write_bytes(buffer.getvalue())
    result = run(config, archive)
    assert result.exit_code == 1, result.output
    assert "many.zip is a zip archive" in " ".join(result.output.split())


def test_decompressing_holds_a_chunk_not_the_document(config: Path, tmp_path: Path) -> None:
    """72 MB of XML inside 70 kB of gzip, converted by a job whose process may map only
    64 MB (XMLFLOW_JOB_MEMORY_MB): a reader holding the document could not even read it."""
    source = tmp_path / "wide.xml.gz"
    with gzip.open(source, "wb", 6) as f:
        f.write(b"<wide>")
        for _ in range(72):
            f.write(b" " * (1024 * 1024))
        f.write(b"</wide>")
    env = {"XMLFLOW_JOB_MEMORY_MB": "64", "XMLFLOW_MAX_EXPANSION_RATIO": "5000"}
    result = run(config, source, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "wide.json").read_bytes()) == {"wide": None}


def test_a_user_step_reads_the_document_inside_with_open_input(tmp_path: Path) -> None:
    """The shipped example step opens ``ctx.open_input()``: an .xz upload counts as XML."""
    example = Path(__file__).parents[1] / "processing_steps" / "count_elements.py"
    config = write_config(
        tmp_path / "conf",
        """
        PROCESSING_STEPS = [{"id": "count_elements", "name": "Count",
                             "module": "run_count_elements_step"}]
        """,
        {"count_elements": example.read_text()},
    )
    source = tmp_path / "books.xml.xz"
    source.write_bytes(lzma.compress(BOOKS))
    result = run(config, source)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "books.counts.json").read_bytes()) == {
        "book": 2,
        "catalog": 1,
    }
