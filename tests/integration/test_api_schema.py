"""Schemathesis against the served OpenAPI document: no 5xx, every answer as documented."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import positive_data_acceptance

from xmlflow.web.openapi import document

from ..conftest import Server
from .test_api import start_server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("schema"), XMLFLOW_WORKERS="2")
    yield srv
    srv.stop()


# Where a schema-valid request may still be refused, for reasons the document cannot
# state: pipeline names and step ids are the deployment's; /stream needs one of two
# optional parameters. Every other check (no 5xx, documented status, body, headers,
# content type, negative data refused) still applies to them.
CONTEXT_DEPENDENT = {"POST /api/jobs", "POST /upload", "GET /stream"}

# Schema-violating data must be refused; refused for its size (a query over gunicorn's
# request line, 414; a body over a limit, 413) counts as refused, as the default 4xx do.
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [*REFUSED, "429", "5xx"]}}}
)

# The document as shipped; the test below checks the server serves this same document.
schema = schemathesis.openapi.from_dict(document(), config=CONFIG)


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_matches_its_document(case: Case[Any], live: Server) -> None:
    excluded: list[Any] = (
        [positive_data_acceptance] if case.operation.label in CONTEXT_DEPENDENT else []
    )
    case.call_and_validate(base_url=live.url, timeout=15, excluded_checks=excluded)


def test_the_server_serves_the_document_tested_here(live: Server) -> None:
    assert httpx.get(f"{live.url}/api/openapi.json").json() == document()
