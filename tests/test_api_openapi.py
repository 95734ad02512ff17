"""The OpenAPI document describes exactly the routes Flask serves, and is served itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from xmlflow.app import create_app
from xmlflow.web.openapi import document

from .conftest import TEST_STEPS, write_config

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    config = write_config(
        tmp_path / "conf",
        'PROCESSING_STEPS = [{"id": "shout", "name": "Shout", "module": "run_shout"}]',
        TEST_STEPS,
    )
    app = create_app({"data_dir": tmp_path / "data", "config_path": config}, start=False)
    yield app
    app.extensions["xmlflow"].close()


def flask_operations(app: Flask) -> set[tuple[str, str]]:
    """(method, OpenAPI path) for every route: ``<path:name>`` becomes ``{name}``."""
    operations = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        operations |= {(m.lower(), path) for m in rule.methods or () if m.lower() in METHODS}
    return operations


def documented_operations() -> set[tuple[str, str]]:
    paths = document()["paths"]
    return {(m, path) for path, item in paths.items() for m in item if m in METHODS}


def test_every_flask_route_is_documented_and_nothing_else(app: Flask) -> None:
    assert flask_operations(app) - documented_operations() == set(), "routes missing from the doc"
    assert documented_operations() - flask_operations(app) == set(), "doc has routes Flask lacks"


def test_every_operation_says_its_responses_and_has_an_id() -> None:
    ids = []
    for path, item in document()["paths"].items():
        for method in METHODS & set(item):
            operation = item[method]
            ids.append(operation["operationId"])
            assert operation["responses"], f"{method} {path} documents no response"
    assert len(ids) == len(set(ids))


def test_the_document_is_served_as_json(app: Flask) -> None:
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == document()
    assert response.json["openapi"].startswith("3.1")
