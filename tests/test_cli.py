"""``xmlflow run`` and the command line's help, through click's runner and one real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from xmlflow.cli import main
from xmlflow.cli.localrun import parse_option

from .conftest import TEST_STEPS, write_config

CONFIG = """
    SHOUT = {"id": "shout", "name": "Shout", "module": "run_shout", "options": {"suffix": "!"}}
    PIPELINES = {
        "default": [SHOUT, {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"}],
        "raising": [{"id": "explode", "name": "Explode", "module": "run_explode"}, SHOUT],
    }
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "conf", CONFIG, TEST_STEPS)


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    files = []
    for name, body in [("one.xml", "<one>1</one>"), ("two.xml", "<two>2</two>")]:
        path = tmp_path / "in" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(body)
        files.append(path)
    return files


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def test_run_processes_every_file_and_copies_the_outputs(
    config: Path, inputs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = invoke("run", "--config", config, "--out", out, *inputs)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["one.upper.txt", "two.upper.txt"]
    assert (out / "two.upper.txt").read_text() == "<TWO>2</TWO>!"
    assert "one.xml" in result.output and "succeeded" in result.output
    assert inputs[0].read_text() == "<one>1</one>"  # the input is left as it was


def test_run_exits_1_when_a_job_fails_and_says_why(config: Path, inputs: list[Path]) -> None:
    result = invoke("run", "--config", config, "--pipeline", "raising", inputs[0])
    assert result.exit_code == 1
    assert "the disk of records is on fire" in result.output


def test_run_json_prints_the_stream_s_events(
    config: Path, inputs: list[Path], tmp_path: Path
) -> None:
    result = invoke("run", "--json", "--config", config, "-o", tmp_path / "o", inputs[0])
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {tuple(sorted(line)) for line in lines} == {("data", "event", "file", "id", "job")}
    assert [line["id"] for line in lines] == list(range(1, len(lines) + 1))
    kinds = [(line["event"], line["data"].get("status")) for line in lines]
    assert [k for k in kinds if k[0] != "progress"] == [
        ("job", "queued"),
        ("job", "running"),
        ("step", "running"),
        ("step", "succeeded"),
        ("step", "running"),
        ("step", "succeeded"),
        ("end", "succeeded"),
    ]
    assert lines[-1]["data"]["outputs"][0]["name"] == "one.upper.txt"


def test_run_options_reach_the_step_and_env_fills_in(
    config: Path, inputs: list[Path], tmp_path: Path
) -> None:
    env = {"XMLFLOW_OUT": str(tmp_path / "envout"), "XMLFLOW_CONFIG": str(config)}
    result = invoke("run", "--option", "shout.suffix=?", inputs[0], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "envout" / "one.upper.txt").read_text() == "<ONE>1</ONE>?"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--option", "nostep.x=1"], "nostep"),
        (["--option", "no-dot=1"], "step.key=value"),
        (["--pipeline", "nope"], "unknown pipeline 'nope'"),
    ],
)
def test_run_refuses_bad_options_before_running(
    config: Path, inputs: list[Path], args: list[str], message: str
) -> None:
    result = invoke("run", "--config", config, *args, inputs[0])
    assert result.exit_code == 2
    assert message in result.output


def test_outputs_of_same_named_inputs_do_not_overwrite_each_other(
    config: Path, tmp_path: Path
) -> None:
    for folder, text in [("a", "<x>a</x>"), ("b", "<x>b</x>")]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.xml").write_text(text)
    out = tmp_path / "out"
    result = invoke(
        "run", "--config", config, "-o", out, tmp_path / "a/x.xml", tmp_path / "b/x.xml"
    )
    assert result.exit_code == 0
    assert sorted(p.read_text() for p in out.iterdir()) == ["<X>A</X>!", "<X>B</X>!"]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("shout.suffix=?", ("shout", "suffix", "?")),
        ("process_xml.indent=2", ("process_xml", "indent", 2)),
        ('s.k={"a": [1]}', ("s", "k", {"a": [1]})),
        ("s.k=a=b", ("s", "k", "a=b")),
        ("s.k=", ("s", "k", "")),
    ],
)
def test_option_values_are_json_when_they_parse(text: str, parsed: tuple[str, str, object]) -> None:
    assert parse_option(text) == parsed


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += all_commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize("path", all_commands(main), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 3


def test_run_as_a_real_process(config: Path, inputs: list[Path], tmp_path: Path) -> None:
    env = {**os.environ, "XMLFLOW_CONFIG": str(config)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xmlflow",
            "run",
            "--json",
            "-o",
            str(tmp_path / "p"),
            *map(str, inputs),
        ],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ends = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["data"]["status"] for e in ends if e["event"] == "end"] == ["succeeded"] * 2
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["one.upper.txt", "two.upper.txt"]
