"""Outputs of uploads with awkward names: every client downloads them by the ``url`` given.

An upload's name becomes its outputs' names, so ``#``, ``%``, spaces, Unicode, a path or
a name longer than a file system allows must all come back as a URL that httpx,
requests, curl and ``xmlflow jobs download`` fetch unchanged, with the right content.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from click.testing import CliRunner

from xmlflow.cli import main

from ..conftest import Server

LONG = "x" * 4096 + ".xml"
NAMES = {  # upload name -> the name of its JSON output
    "a#b.xml": "a#b.json",
    "%41%2e.xml": "%41%2e.json",
    "with space.xml": "with space.json",
    "ünïcødé.xml": "ünïcødé.json",
    "../../etc/passwd": "passwd.json",
    LONG: None,  # checked by its own rules below
}


@pytest.fixture(scope="module")
def outputs(server: Server) -> dict[str, dict[str, Any]]:
    """Upload name -> (job id, its one JSON output as the API lists it); each file unique."""
    files = [(name, f"<doc><n>{i}</n></doc>".encode()) for i, name in enumerate(NAMES)]
    jobs = server.upload(*files)
    found = {}
    for name, job in zip(NAMES, jobs, strict=True):
        finished = server.wait_finished(job["id"])
        assert finished["status"] == "succeeded", finished
        (output,) = finished["outputs"]
        found[name] = {"job": job["id"], **output}
    return found


def expected_body(name: str) -> dict[str, Any]:
    return {"doc": {"n": str(list(NAMES).index(name))}}


def test_output_names_keep_the_upload_name_and_a_json_extension(
    outputs: dict[str, dict[str, Any]],
) -> None:
    for upload, output in outputs.items():
        if NAMES[upload] is not None:
            assert output["name"] == NAMES[upload]
        assert output["media_type"] == "application/json"
        assert "#" not in output["url"] and " " not in output["url"]
    long_name = outputs[LONG]["name"]
    assert long_name.endswith(".json") and long_name.startswith("xxxx")
    assert len(long_name.encode()) <= 255 - len(".partial-12345678.tmp")


@pytest.mark.parametrize("upload", list(NAMES))
def test_httpx_and_requests_download_every_output(
    server: Server, outputs: dict[str, dict[str, Any]], upload: str
) -> None:
    url = server.url + outputs[upload]["url"]
    for response in (httpx.get(url), requests.get(url, timeout=10)):
        assert response.status_code == 200, (upload, response.text)
        assert json.loads(response.content) == expected_body(upload)
        assert response.headers["content-type"] == "application/json"
        assert "attachment" in response.headers["content-disposition"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_downloads_every_output(
    server: Server, outputs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    for upload, output in outputs.items():
        target = tmp_path / "out.json"
        done = subprocess.run(
            ["curl", "-sS", "--fail", "-o", target, server.url + output["url"]],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, (upload, done.stderr)
        assert json.loads(target.read_bytes()) == expected_body(upload)


def test_non_ascii_names_are_offered_as_rfc_5987_filename(
    server: Server, outputs: dict[str, dict[str, Any]]
) -> None:
    unicode = httpx.get(server.url + outputs["ünïcødé.xml"]["url"])
    disposition = unicode.headers["content-disposition"]
    assert "filename*=UTF-8''%C3%BCn%C3%AFc%C3%B8d%C3%A9.json" in disposition
    assert disposition.startswith('attachment; filename="')
    percent = httpx.get(server.url + outputs["%41%2e.xml"]["url"])
    assert "filename*=UTF-8''%2541%252e.json" in percent.headers["content-disposition"]
    plain = httpx.get(server.url + outputs["a#b.xml"]["url"])
    assert plain.headers["content-disposition"] == 'attachment; filename="a#b.json"'


def test_text_outputs_name_one_charset(server: Server) -> None:
    (job,) = server.upload(("shout me.txt", "grüß".encode()), pipeline="custom")
    (output,) = server.wait_finished(job["id"])["outputs"]
    response = httpx.get(server.url + output["url"])
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "GRÜSS!"


def test_jobs_download_saves_every_output_under_its_name(
    server: Server, outputs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    env = {"XMLFLOW_URL": server.url, "XMLFLOW_API_TOKEN": ""}
    for upload, output in outputs.items():
        out = tmp_path / f"job-{output['job']}"
        result = CliRunner().invoke(
            main, ["jobs", "download", output["job"], "--out", str(out)], env=env
        )
        assert result.exit_code == 0, (upload, result.output)
        saved = out / output["name"]
        assert result.output.strip() == str(saved)
        assert json.loads(saved.read_bytes()) == expected_body(upload)
        assert [p.name for p in out.iterdir()] == [output["name"]]
