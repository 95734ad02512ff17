"""``GET /api/openapi.json``: the API's OpenAPI 3.1 description, kept as data beside this file.

The document is hand-written (``openapi.json``) rather than generated from the views:
it is the contract clients code against, and ``tests/test_api_openapi.py`` keeps it
true — every route Flask has is in it, and schemathesis checks that responses match.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import orjson
from flask import Blueprint, Response

bp = Blueprint("openapi", __name__)


@functools.cache
def document_bytes() -> bytes:
    return resources.files(__package__).joinpath("openapi.json").read_bytes()


def document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI document."""
    doc: dict[str, Any] = orjson.loads(document_bytes())
    return doc


@bp.get("/api/openapi.json")
def openapi_json() -> Response:
    return Response(document_bytes(), mimetype="application/json")
