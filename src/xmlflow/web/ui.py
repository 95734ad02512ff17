"""The page: an upload form and every job's steps, live.

Everything dynamic happens in ``static/*.js`` (no inline script or style, so a strict
Content-Security-Policy fits); the template only gets what the form needs up front.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, render_template

from ..models import StepSpec
from . import service

bp = Blueprint("ui", __name__)


@dataclass(frozen=True)
class PipelineChoice:
    """One option of the pipeline picker: its name and the labels of its steps."""

    name: str
    steps: list[str]


def pipeline_choices(pipelines: dict[str, list[StepSpec]]) -> list[PipelineChoice]:
    """``default`` first (it is what an upload gets without a choice), then by name."""
    names = sorted(pipelines, key=lambda name: (name != "default", name))
    return [PipelineChoice(name, [spec.name for spec in pipelines[name]]) for name in names]


def upload_limit(mb: float) -> str:
    """The per-file limit as people write it: ``"100 MB"``, ``"1 GB"``, ``"1.5 GB"``."""
    return f"{mb / 1024:g} GB" if mb >= 1024 else f"{mb:g} MB"


@bp.get("/")
def index() -> str:
    settings = service().settings
    return render_template(
        "index.html",
        pipelines=pipeline_choices(settings.pipelines),
        max_upload=upload_limit(settings.max_upload_mb),
        max_upload_bytes=settings.max_upload_bytes,
        auth_enabled=bool(settings.api_token),
    )
