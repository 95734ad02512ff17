"""The HTTP layer: thin views over :class:`xmlflow.service.Service`."""

from __future__ import annotations

from flask import current_app

from ..service import Service


def service() -> Service:
    """The process's service, as ``create_app`` registered it."""
    return current_app.extensions["xmlflow"]  # type: ignore[no-any-return]
