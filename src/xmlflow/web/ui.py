"""The page: an upload form and every job's steps, live."""

from __future__ import annotations

from flask import Blueprint, render_template

from . import service

bp = Blueprint("ui", __name__)


@bp.get("/")
def index() -> str:
    settings = service().settings
    return render_template(
        "index.html",
        pipelines=sorted(settings.pipelines),
        max_upload_mb=settings.max_upload_mb,
    )
