"""The application factory: settings, the service, blueprints and JSON errors."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .errors import QueueFull, XmlflowError
from .service import Service
from .settings import load_settings
from .web import api, auth, health, metrics, openapi, security, stream, ui
from .web.uploads import UploadRequest

log = logging.getLogger(__name__)


def create_app(test_config: dict[str, Any] | None = None, *, start: bool = True) -> Flask:
    """Build the app. ``test_config`` overrides settings by name (``data_dir``, ``workers``…).

    Settings are layered: defaults < ``XMLFLOW_*`` environment < ``test_config``.
    """
    settings = load_settings(**(test_config or {}))
    app = Flask(__name__, static_folder="web/static", template_folder="web/templates")
    app.request_class = UploadRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = 1024 * 1024
    service = Service(settings)
    app.extensions["xmlflow"] = service
    for blueprint in (ui.bp, api.bp, stream.bp, health.bp, openapi.bp):
        app.register_blueprint(blueprint)
    auth.init_app(app, settings)
    metrics.init_app(app, service)
    security.init_app(app)
    _register_errors(app)
    app.teardown_request(_discard_unclaimed_uploads)
    if start:
        service.start()
    return app


def _discard_unclaimed_uploads(exc: BaseException | None) -> None:
    if isinstance(request, UploadRequest):
        request.discard_incoming()


def _register_errors(app: Flask) -> None:
    @app.errorhandler(XmlflowError)
    def nice_error(exc: XmlflowError) -> tuple[dict[str, Any], int, dict[str, str]]:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull) else {}
        return exc.to_dict(), exc.status_code, headers

    @app.errorhandler(HTTPException)
    def http_error(
        exc: HTTPException,
    ) -> Response | tuple[dict[str, Any], int, list[tuple[str, str]]]:
        if exc.code == 413:
            mb = app.extensions["xmlflow"].settings.max_upload_mb
            message = f"the upload is larger than the limit of {mb:g} MB (XMLFLOW_MAX_UPLOAD_MB)"
        else:
            message = exc.description or exc.name
        code = exc.name.lower().replace(" ", "_")
        body = {"error": {"code": code, "message": message, "details": None}}
        # Keep werkzeug's own headers (Allow on 405, Retry-After...), not its HTML type.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return body, exc.code or 500, headers

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[dict[str, Any], int]:
        log.exception("unexpected error on %s %s", request.method, request.path)
        body = {"error": {"code": "internal_error", "message": "internal error", "details": None}}
        return body, 500
