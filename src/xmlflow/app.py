"""The application factory: settings, the service, blueprints and JSON errors."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .errors import BackendUnavailable, DiskFull, XmlflowError, is_backend_outage
from .jobfiles import is_disk_full
from .service import Service
from .settings import load_settings
from .web import api, auth, health, metrics, openapi, security, stream, ui
from .web.uploads import UploadRequest

log = logging.getLogger(__name__)
MAX_FIELD_BYTES = 1024 * 1024  # a form field that is not a file (pipeline, options)
MAX_FIELDS = 20  # form parts that are not files, beyond XMLFLOW_MAX_UPLOAD_FILES files


def create_app(test_config: dict[str, Any] | None = None, *, start: bool = True) -> Flask:
    """Build the app. ``test_config`` overrides settings by name (``data_dir``, ``workers``…).

    Settings are layered: defaults < ``XMLFLOW_*`` environment < ``test_config``.
    """
    settings = load_settings(**(test_config or {}))
    app = Flask(__name__, static_folder="web/static", template_folder="web/templates")
    app.request_class = UploadRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_FIELD_BYTES
    app.config["MAX_FORM_PARTS"] = settings.max_upload_files + MAX_FIELDS
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
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        return exc.to_dict(), exc.status_code, headers

    @app.errorhandler(HTTPException)
    def http_error(
        exc: HTTPException,
    ) -> Response | tuple[dict[str, Any], int, list[tuple[str, str]]]:
        if exc.code == 413:
            message = _too_large_message(app.extensions["xmlflow"].settings.max_upload_mb)
        else:
            message = exc.description or exc.name
        code = exc.name.lower().replace(" ", "_")
        body = {"error": {"code": code, "message": message, "details": None}}
        # Keep werkzeug's own headers (Allow on 405, Retry-After...), not its HTML type.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return body, exc.code or 500, headers

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[dict[str, Any], int, dict[str, str]]:
        if is_backend_outage(exc):
            log.warning("Redis unavailable on %s %s: %s", request.method, request.path, exc)
            return nice_error(BackendUnavailable.of_redis(exc))
        if is_disk_full(exc):  # the upload's file, or the job store's own (SQLite) write
            log.warning("no space left on %s %s: %s", request.method, request.path, exc)
            return nice_error(DiskFull("the server's data folder is full; try again later"))
        log.exception("unexpected error on %s %s", request.method, request.path)
        body = {"error": {"code": "internal_error", "message": "internal error", "details": None}}
        return body, 500, {}


def _too_large_message(max_upload_mb: float) -> str:
    """Werkzeug's 413 says nothing of which limit: the body's size, or its form's parts."""
    declared = request.content_length
    if declared is None or declared > max_upload_mb * 1024 * 1024:
        limit = f"{max_upload_mb:g} MB (XMLFLOW_MAX_UPLOAD_MB)"
        return f"the upload is larger than the limit of {limit}"
    return (
        f"the form has more than {MAX_FIELDS} fields besides its files, "
        f"or a field larger than {MAX_FIELD_BYTES // 1024} KB"
    )
