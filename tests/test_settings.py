"""config.py validation: every broken entry stops start-up naming the entry and the reason."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from xmlflow.errors import ConfigError, StepLoadError
from xmlflow.pipeline import check_pipelines
from xmlflow.settings import load_settings

from .conftest import Server, write_config

CONVERT = "'id': 'process_xml', 'module': 'run_xml_processing_step'"
GOOD = {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"}


def settings_for(tmp_path: Path, steps: str, **env: str) -> object:
    config = write_config(tmp_path, f"PROCESSING_STEPS = {steps}\n")
    return load_settings({"XMLFLOW_CONFIG": str(config), **env}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("[{'id': 'a', 'name': 'A', 'module': 'f', 'colour': 'red'}]", "unknown key(s) ['colour']"),
        ("[{'id': 'a', 'name': 'A', 'module': 'f', 'error_chance': 1.5}]", "between 0 and 1"),
        ("[{'id': 'a', 'name': 'A', 'module': 'f', 'error_chance': -0.1}]", "between 0 and 1"),
        ("[{'id': 'a', 'name': 'A', 'module': 'f', 'delay': -1}]", "must not be negative"),
        ("[{'id': 'a', 'name': 'A', 'module': 'f', 'delay': 'soon'}]", "must be a number"),
        ("[{'id': 'a', 'module': 'f'}, {'id': 'a', 'module': 'g'}]", "duplicate id"),
        ("[{'name': 'A', 'module': 'f'}]", "'id' must be a Python identifier"),
        ("[{'id': '../etc', 'module': 'f'}]", "'id' must be a Python identifier"),
        ("[{'id': 'a', 'name': 'A'}]", "'module' must be a Python identifier"),
        ("[{'id': 'a', 'module': 'f', 'options': [1]}]", "'options' must be a dict"),
        ("[]", "non-empty list"),
        ("['process_xml']", "must be a dict"),
    ],
)
def test_broken_entries_name_the_entry_and_reason(tmp_path: Path, steps: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_for(tmp_path, steps)
    assert message in info.value.message
    assert "PROCESSING_STEPS" in info.value.message


def test_error_names_the_offending_index_and_id(tmp_path: Path) -> None:
    steps = f"[{GOOD!r}, {{'id': 'second', 'module': 'f', 'error_chance': 2}}]"
    with pytest.raises(ConfigError, match=r"PROCESSING_STEPS\[1\] \(id 'second'\)"):
        settings_for(tmp_path, steps)


def test_config_that_does_not_import_is_reported(tmp_path: Path) -> None:
    config = write_config(tmp_path, "PROCESSING_STEPS = [\n")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_settings({"XMLFLOW_CONFIG": str(config)}, cwd=tmp_path)


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings({"XMLFLOW_CONFIG": str(tmp_path / "nope.py")}, cwd=tmp_path)


def test_defaults_without_config_use_builtin_pipeline(tmp_path: Path) -> None:
    settings = load_settings({}, cwd=tmp_path)
    assert settings.config_path is None
    assert [s.id for s in settings.pipeline()] == ["process_xml", "cleanup"]


def test_config_in_working_directory_is_used(tmp_path: Path) -> None:
    write_config(tmp_path, "PROCESSING_STEPS = [{'id': 'cleanup', 'module': 'run_cleanup_step'}]")
    settings = load_settings({}, cwd=tmp_path)
    assert settings.config_path == (tmp_path / "config.py").resolve()
    assert [s.id for s in settings.pipeline()] == ["cleanup"]


def test_environment_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "XMLFLOW_DATA_DIR": str(tmp_path / "d"),
            "XMLFLOW_MAX_UPLOAD_MB": "2.5",
            "XMLFLOW_WORKERS": "3",
            "XMLFLOW_RETENTION_HOURS": "0.5",
        },
        cwd=tmp_path,
    )
    assert settings.data_dir == tmp_path / "d"
    assert settings.max_upload_bytes == int(2.5 * 1024 * 1024)
    assert settings.workers == 3
    assert settings.retention_hours == 0.5


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("XMLFLOW_WORKERS", "many"),
        ("XMLFLOW_WORKERS", "0"),
        ("XMLFLOW_MAX_UPLOAD_MB", "-1"),
        ("XMLFLOW_MAX_UPLOAD_FILES", "0"),
    ],
)
def test_bad_environment_values_are_refused(tmp_path: Path, var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        load_settings({var: value}, cwd=tmp_path)


def test_unknown_step_id_is_found_at_start_up(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "[{'id': 'no_such_step', 'module': 'run'}]")
    with pytest.raises(StepLoadError, match="unknown id") as info:
        check_pipelines(settings.pipelines, settings.steps_dir)  # type: ignore[attr-defined]
    assert "no_such_step.py" in info.value.message


def test_missing_function_is_found_at_start_up(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "[{'id': 'cleanup', 'module': 'run_nothing'}]")
    with pytest.raises(StepLoadError, match="no function 'run_nothing'"):
        check_pipelines(settings.pipelines, settings.steps_dir)  # type: ignore[attr-defined]


def test_named_pipelines(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
        PIPELINES = {
            "only-clean": [{"id": "cleanup", "module": "run_cleanup_step"}],
        }
        """,
    )
    settings = load_settings({"XMLFLOW_CONFIG": str(config)}, cwd=tmp_path)
    assert set(settings.pipelines) == {"only-clean", "default"}
    assert settings.pipeline("default") == settings.pipeline("only-clean")
    with pytest.raises(ConfigError, match="unknown pipeline"):
        settings.pipeline("nope")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (f"{{{CONVERT}, 'options': {{'mdoe': 'json'}}}}", "mdoe"),
        (f"{{{CONVERT}, 'options': {{'mode': 'csv'}}}}", "mode"),
        ("{'id': 'validate', 'module': 'run_validate_step', 'options': {}}", "'schema'"),
        (
            "{'id': 'validate', 'module': 'run_validate_step', 'options': {'schema': 'no.xsd'}}",
            "no.xsd",
        ),
        ("{'id': 'transform', 'module': 'run_transform_step', 'options': {}}", "'stylesheet'"),
        (
            "{'id': 'xpath_filter', 'module': 'run_xpath_filter_step', 'options': {'xpath': '(('}}",
            "bad xpath",
        ),
    ],
)
def test_step_options_are_checked_at_start_up(tmp_path: Path, entry: str, message: str) -> None:
    settings = settings_for(tmp_path, f"[{entry}]")
    with pytest.raises(ConfigError) as info:
        check_pipelines(settings.pipelines, settings.steps_dir, settings.config_dir)  # type: ignore[attr-defined]
    assert message in info.value.message
    assert "pipeline 'default', step 0" in info.value.message


def test_good_step_options_pass_the_start_up_check(tmp_path: Path) -> None:
    (tmp_path / "s.xsd").write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        '<xs:element name="a" type="xs:string"/></xs:schema>'
    )
    settings = settings_for(
        tmp_path,
        "[{'id': 'validate', 'module': 'run_validate_step', 'options': {'schema': 's.xsd'}},"
        " {'id': 'process_xml', 'module': 'run_xml_processing_step',"
        "  'options': {'mode': 'jsonl', 'force_list': ['a']}}]",
    )
    check_pipelines(settings.pipelines, settings.steps_dir, settings.config_dir)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("env", "limit"), [({}, 1000), ({"XMLFLOW_MAX_UPLOAD_FILES": "3"}, 3)])
def test_too_many_files_are_refused_naming_the_file_limit(
    tmp_path: Path, env: dict[str, str], limit: int
) -> None:
    """More files than XMLFLOW_MAX_UPLOAD_FILES: a 413 that says so (not "larger than
    1024 MB", werkzeug's part limit did), and nothing received is kept."""
    server = Server(config=None, data_dir=tmp_path / "data", env=env).start()
    try:
        files = [("file", (f"{i}.xml", b"<a/>", "application/xml")) for i in range(limit + 1)]
        response = httpx.post(server.url + "/upload", files=files, timeout=60)
        assert response.status_code == 413
        message = response.json()["error"]["message"]
        assert f"more than {limit} files" in message and "XMLFLOW_MAX_UPLOAD_FILES" in message
        assert list((server.data_dir / "incoming").iterdir()) == []
        assert list((server.data_dir / "jobs").iterdir()) == []

        if limit < 10:  # at the limit it passes (1,000 jobs would only load the machine)
            ok = httpx.post(server.url + "/upload", files=files[:limit], timeout=60)
            assert ok.status_code == 202 and len(ok.json()["jobs"]) == limit
    finally:
        server.stop()
