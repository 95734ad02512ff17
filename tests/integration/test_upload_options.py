"""An upload's ``options`` may set only what a step declares: through the real server.

Every refusal is a 4xx that names the step and the key, made before any job or file
exists; an allowed option really changes the output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from xmlflow.cli import main

from ..conftest import Server
from .conftest import BOOKS, run_on_server


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def post(steps_srv: Server, options: str, pipeline: str = "chain") -> httpx.Response:
    return httpx.post(
        f"{steps_srv.url}/api/jobs",
        files=[("file", ("books.xml", BOOKS, "application/xml"))],
        data={"pipeline": pipeline, "options": options},
        timeout=30,
    )


def assert_refused(steps_srv: Server, options: Any, *named: str, pipeline: str = "chain") -> str:
    """The upload is refused with 422 naming ``named``; no job, no file is left."""
    jobs_before = httpx.get(f"{steps_srv.url}/api/jobs?limit=1").json()["total"]
    files_before = files_under(steps_srv.data_dir)
    text = options if isinstance(options, str) else json.dumps(options)
    response = post(steps_srv, text, pipeline)
    assert response.status_code == 422, response.text
    message: str = response.json()["error"]["message"]
    for word in named:
        assert word in message, message
    assert httpx.get(f"{steps_srv.url}/api/jobs?limit=1").json()["total"] == jobs_before
    assert files_under(steps_srv.data_dir) == files_before  # nothing under incoming/ or jobs/
    return message


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"process_xml": {"force_list_xsd": "/etc/passwd"}}, ["'force_list_xsd'"]),
        ({"process_xml": {"postprocessor": "os.system"}}, ["'postprocessor'"]),
        ({"validate": {"schema": "/etc/passwd"}}, ["'validate'", "'schema'"]),
        ({"validate": {"schema_dir": "/"}}, ["'validate'", "'schema_dir'"]),
        ({"transform": {"stylesheet": "/etc/passwd"}}, ["'transform'", "'stylesheet'"]),
        ({"transform": {"output": "../x.xml"}}, ["'transform'", "'output'"]),
        ({"xpath_filter": {"xpath": "true()"}}, ["'xpath_filter'", "'xpath'"]),
        ({"cleanup": {"anything": 1}}, ["'cleanup'", "'anything'", "may set: none"]),
    ],
)
def test_paths_code_and_undeclared_options_are_refused(
    steps_srv: Server, options: dict[str, Any], named: list[str]
) -> None:
    message = assert_refused(steps_srv, options, *named)
    assert "an upload may not set option" in message
    assert "/etc/passwd" not in message  # never says whether a path exists


def test_a_limit_may_be_lowered_never_raised(steps_srv: Server) -> None:
    message = assert_refused(steps_srv, {"validate": {"max_errors": 100_000_000}}, "'max_errors'")
    assert "may only lower the configured limit of 10000" in message
    assert_refused(steps_srv, {"validate": {"max_errors": 0}}, "'max_errors'", "at least 1")


def test_a_misspelled_key_is_refused_with_the_close_match(steps_srv: Server) -> None:
    message = assert_refused(
        steps_srv, {"process_xml": {"moed": "jsonl"}}, "'process_xml'", "'moed'"
    )
    assert "did you mean 'mode'?" in message


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"process_xml": {"mode": 5}}, ["'mode'", "must be a string"]),
        (
            {"process_xml": {"mode": "xml"}},
            ["'mode'", 'must be one of "json", "jsonl", "split", not "xml"'],
        ),
        ({"process_xml": {"coerce_types": "yes"}}, ["'coerce_types'", "true or false"]),
        ({"process_xml": {"force_list": [1, 2]}}, ["'force_list'", "a list of strings"]),
        ({"validate": {"max_errors": "10"}}, ["'max_errors'", "a whole number"]),
        ({"validate": {"max_errors": True}}, ["'max_errors'", "a whole number"]),
        ({"process_xml": {"record_path": "a//b"}}, ["'process_xml'", "record_path"]),
        ({"split": {"record_path": "/"}}, ["'split'", "record_path"]),
    ],
)
def test_values_of_the_wrong_type_or_shape_are_refused(
    steps_srv: Server, options: dict[str, Any], named: list[str]
) -> None:
    pipeline = "split" if "split" in options else "chain"
    assert_refused(steps_srv, options, *named, pipeline=pipeline)


def test_an_options_field_over_16k_characters_is_refused(steps_srv: Server) -> None:
    huge = json.dumps({"process_xml": {"record_path": "a" * 20_000}})
    message = assert_refused(steps_srv, huge, "options field", "16384")
    assert str(len(huge)) in message


def test_a_step_not_in_the_pipeline_is_refused(steps_srv: Server) -> None:
    assert_refused(steps_srv, {"split": {"record_path": "catalog/book"}}, "split", pipeline="chain")


def test_mode_jsonl_set_at_upload_changes_the_output(steps_srv: Server) -> None:
    events, outputs = run_on_server(
        steps_srv, "process_xml", BOOKS, options=json.dumps({"process_xml": {"mode": "jsonl"}})
    )
    assert events[-1].data["status"] == "succeeded"
    assert set(outputs) == {"books.jsonl"}
    lines = [json.loads(line) for line in outputs["books.jsonl"].splitlines()]
    assert [b["title"] for b in lines] == ["Dune", "Emma", "Ubik"]
    assert lines[0] == {"@id": "1", "title": "Dune", "price": "9.5", "genre": "sf"}


def test_value_shaping_options_reach_the_converter(steps_srv: Server) -> None:
    options = {"process_xml": {"coerce_types": True, "attr_prefix": "_", "force_list": ["genre"]}}
    events, outputs = run_on_server(steps_srv, "process_xml", BOOKS, options=json.dumps(options))
    assert events[-1].data["status"] == "succeeded"
    books = json.loads(outputs["books.json"])["catalog"]["book"]
    assert books[0] == {"_id": 1, "title": "Dune", "price": 9.5, "genre": ["sf"]}


def test_pipelines_list_what_an_upload_may_set(steps_srv: Server) -> None:
    body = httpx.get(f"{steps_srv.url}/api/pipelines").json()
    chain = next(p for p in body["pipelines"] if p["name"] == "chain")
    settable = {s["id"]: {o["name"]: o for o in s["upload_options"]} for s in chain["steps"]}
    assert settable["validate"] == {
        "max_errors": {
            "name": "max_errors",
            "type": "integer",
            "default": 10_000,
            "minimum": 1,
            "maximum": 10_000,
            "help": settable["validate"]["max_errors"]["help"],
        }
    }
    assert settable["transform"] == {} and settable["cleanup"] == {}
    assert list(settable["xpath_filter"]) == ["record_path"]
    mode = settable["process_xml"]["mode"]
    assert mode["choices"] == ["json", "jsonl", "split"] and mode["default"] == "json"
    assert settable["process_xml"]["namespaces"]["type"] == ["string", "object"]
    never = {"force_list_xsd", "postprocessor", "schema", "schema_dir", "stylesheet", "xpath"}
    assert never.isdisjoint(settable["process_xml"])


def test_xmlflow_run_options_go_through_the_same_check(steps_conf: Path, tmp_path: Path) -> None:
    source = tmp_path / "books.xml"
    source.write_bytes(BOOKS)
    out = tmp_path / "out"

    def run(*option: str) -> Any:
        args = ["run", "--config", str(steps_conf), "--pipeline", "process_xml", "-o", str(out)]
        return CliRunner().invoke(main, [*args, *option, str(source)], catch_exceptions=False)

    refused = run("--option", "process_xml.force_list_xsd=/etc/passwd")
    assert refused.exit_code == 2 and "'force_list_xsd'" in refused.output
    assert not out.exists()
    done = run("--option", "process_xml.mode=jsonl")
    assert done.exit_code == 0, done.output
    assert [p.name for p in out.iterdir()] == ["books.jsonl"]
    assert len((out / "books.jsonl").read_text().splitlines()) == 3


def test_options_sent_twice_are_refused_and_create_nothing(steps_srv: Server) -> None:
    """Two ``options`` parts (an array, to a schema) must not leave the choice to a guess."""
    files_before = files_under(steps_srv.data_dir)
    fields = {"options": ['{"process_xml": {"mode": "jsonl"}}', "{}"]}
    with httpx.Client() as client:
        r = client.post(
            steps_srv.url + "/api/jobs",
            data=fields,
            files={"file": ("a.xml", b"<a>1</a>", "application/xml")},
        )
    assert r.status_code == 422, r.text
    assert "'options' was sent 2 times" in r.json()["error"]["message"]
    assert files_under(steps_srv.data_dir) == files_before


@pytest.mark.parametrize(
    ("data", "files", "named"),
    [
        # a misspelt field would be ignored and the job run with the defaults
        ({"option": '{"process_xml": {"mode": "jsonl"}}'}, [], "form field 'option'"),
        ({"pipline": "chain"}, [], "form field 'pipline'"),
        # options sent as a file part (curl -F options=@o.json) used to be ignored
        ({}, [("options", ("o.json", b'{"process_xml": {"mode": "jsonl"}}', "x"))], "'options'"),
        # a file under another name would be dropped without a word
        ({}, [("files", ("b.xml", b"<b/>", "application/xml"))], "file part 'files'"),
    ],
)
def test_unknown_or_misplaced_upload_fields_are_refused(
    steps_srv: Server, data: dict[str, str], files: list[Any], named: str
) -> None:
    jobs_before = httpx.get(f"{steps_srv.url}/api/jobs?limit=1").json()["total"]
    files_before = files_under(steps_srv.data_dir)
    r = httpx.post(
        f"{steps_srv.url}/api/jobs",
        data=data,
        files=[("file", ("a.xml", b"<a>1</a>", "application/xml")), *files],
        timeout=30,
    )
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert named in message and "'file' (a file part)" in message, message
    assert httpx.get(f"{steps_srv.url}/api/jobs?limit=1").json()["total"] == jobs_before
    assert files_under(steps_srv.data_dir) == files_before
