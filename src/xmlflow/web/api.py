"""Uploads, job status, cancel and downloads: the JSON side of the service."""

from __future__ import annotations

import re
import time
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from flask import Blueprint, Response, request, send_file
from werkzeug.utils import secure_filename

from ..backends.base import MAX_QUERY_CHARS
from ..errors import BadRequest, Conflict, NotFound, Unprocessable, UnsupportedMediaType
from ..jobfiles import output_url
from ..models import Job, JobStatus, StepSpec
from ..service import Upload
from ..settings import Settings
from ..upload_options import MAX_OPTIONS_CHARS, upload_options_json
from . import service
from .uploads import UploadRequest, expand_archives, take_uploads
from .zipstream import stream_zip

bp = Blueprint("api", __name__)


def job_urls(job: Job) -> dict[str, str]:
    return {
        "id": job.id,
        "url": f"/api/jobs/{job.id}",
        "stream_url": f"/stream/{job.id}",
        "events_url": f"/api/jobs/{job.id}/events",
    }


def job_json(job: Job) -> dict[str, Any]:
    d = job.to_dict()
    del d["pipeline"], d["last_event_id"]
    d["pipeline"] = job.pipeline_name
    del d["pipeline_name"]
    d.update(job_urls(job))
    d["outputs"] = [{**o, "url": output_url(job.id, o["name"])} for o in d["outputs"]]
    d["elapsed"] = _elapsed(job)
    d["last_event_id"] = job.last_event_id
    return d


def _elapsed(job: Job) -> float | None:
    if job.started_at is None:
        return None
    return round((job.ended_at or time.time()) - job.started_at, 3)


@bp.post("/upload")
@bp.post("/api/jobs")
def upload() -> tuple[dict[str, Any], int]:
    """Create one job per uploaded file (multipart field ``file``)."""
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType(
            f"send the files as multipart/form-data, not {request.mimetype or 'no body'}"
        )
    req: UploadRequest = request  # type: ignore[assignment]
    svc = service()
    _refuse_unknown_fields()
    pipeline = _single_field("pipeline") or None
    options = parse_options(_single_field("options"))
    files = take_uploads(req)
    if not files:
        raise BadRequest("no file: send one or more files in the multipart field 'file'")
    uploads: list[Upload] = []
    try:
        uploads = expand_archives(svc, req, files)  # a zip's XML members replace it
        jobs = svc.submit_many(uploads, pipeline=pipeline, options=options)
    finally:  # not turned into jobs (refused, queue full, a bomb): leave nothing behind
        for path in [p for p, _ in files] + [u.path for u in uploads]:
            path.unlink(missing_ok=True)
    return {"jobs": [job_urls(j) for j in jobs]}, 202


UPLOAD_FIELDS = {"file": "a file part", "pipeline": "a form field", "options": "a form field"}


def _refuse_unknown_fields() -> None:
    """Only ``file`` parts and the ``pipeline``/``options`` fields: a misspelt field
    (``option``, ``pipline``) or ``options`` sent as a file would otherwise be ignored
    and the job run with settings the client did not ask for. (A ``file`` part with an
    empty file name reaches the form, not the files: it is still the file.)"""
    sent = [(name, "a file part") for name in request.files] + [
        (name, "a form field") for name in request.form if name != "file"
    ]
    for name, kind in sent:
        if UPLOAD_FIELDS.get(name) != kind:
            expected = ", ".join(f"{n!r} ({k})" for n, k in UPLOAD_FIELDS.items())
            raise BadRequest(
                f"the upload has {kind} {name!r} it does not take; it takes {expected}",
                details={"field": name},
            )


def _single_field(name: str) -> str | None:
    """A form field that may appear once: two values would leave the choice to a guess."""
    values = request.form.getlist(name)
    if len(values) > 1:
        raise Unprocessable(f"the field {name!r} was sent {len(values)} times; send it once")
    return values[0] if values else None


def parse_options(raw: str | None) -> dict[str, dict[str, Any]]:
    """The form field ``options``: JSON ``{"step_id": {"key": value}}`` (empty: none).

    Capped at :data:`MAX_OPTIONS_CHARS`: every job of the upload keeps a copy.
    """
    if not raw or not raw.strip():
        return {}
    if len(raw) > MAX_OPTIONS_CHARS:
        raise Unprocessable(
            f"the options field is {len(raw)} characters long; "
            f"the limit is {MAX_OPTIONS_CHARS} characters",
            details={"field": "options", "length": len(raw), "limit": MAX_OPTIONS_CHARS},
        )
    try:
        options = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"options is not valid JSON: {exc}") from None
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise Unprocessable('options must be a JSON object like {"step_id": {"key": value}}')
    return options


@bp.get("/api/jobs")
def list_jobs() -> dict[str, Any]:
    """Newest first, one page; filters: ``status`` (repeated or comma-separated: any of
    them), ``pipeline``, ``q`` (a case-insensitive substring of the file name)."""
    limit = _int_arg("limit", 50, 1, 500)
    offset = _int_arg("offset", 0, 0, 10**9)
    q = request.args.get("q", "")
    if len(q) > MAX_QUERY_CHARS:
        raise BadRequest(
            f"q is {len(q)} characters long; the limit is {MAX_QUERY_CHARS}",
            details={"field": "q", "length": len(q), "limit": MAX_QUERY_CHARS},
        )
    jobs, total = service().store.list_jobs(
        status=_statuses(),
        pipeline=request.args.get("pipeline") or None,
        q=q or None,
        limit=limit,
        offset=offset,
    )
    return {"jobs": [job_json(j) for j in jobs], "total": total, "limit": limit, "offset": offset}


def _statuses() -> set[JobStatus]:
    """``?status=a&status=b`` or ``?status=a,b``: any of them (none: every status)."""
    names = {n for raw in request.args.getlist("status") if raw for n in raw.split(",")}
    try:
        return {JobStatus(n) for n in names}
    except ValueError:
        unknown = sorted(n for n in names if n not in set(JobStatus))
        raise BadRequest(
            f"unknown status {', '.join(map(repr, unknown))}",
            details={"allowed": [str(s) for s in JobStatus]},
        ) from None


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def get_job_or_404(job_id: str) -> Job:
    job = service().store.get(job_id) if job_id.isalnum() else None
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


@bp.get("/api/jobs/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    return job_json(get_job_or_404(job_id))


@bp.delete("/api/jobs/<job_id>")
def delete_job(job_id: str) -> tuple[str, int]:
    get_job_or_404(job_id)
    service().delete(job_id)
    return "", 204


@bp.post("/api/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> tuple[dict[str, Any], int]:
    get_job_or_404(job_id)
    service().cancel(job_id)
    return job_json(get_job_or_404(job_id)), 202


@bp.get("/api/jobs/<job_id>/outputs")
def list_outputs(job_id: str) -> dict[str, Any]:
    return {"outputs": job_json(get_job_or_404(job_id))["outputs"]}


@bp.get("/api/jobs/<job_id>/outputs/<name>")
def download(job_id: str, name: str) -> Response:
    """One output; ``name`` arrives decoded once from the URL that :func:`output_url` made."""
    job = get_job_or_404(job_id)
    path = service().output_path(job, name)
    media = next(o.media_type for o in job.outputs if o.name == name)
    response = send_file(path, mimetype=media)
    # the media type already names its charset; send_file would add a second one
    response.headers["Content-Type"] = media
    response.headers["Content-Disposition"] = content_disposition(name)
    return response


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII ``filename`` for old clients and, when the name is not
    plain ASCII, the exact name as RFC 5987 ``filename*`` (RFC 6266 section 4.3)."""
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fallback = re.sub(r"[^A-Za-z0-9!#$&+.^_`|~ -]", "_", fallback).strip(" .") or "download"
    header = f'attachment; filename="{fallback}"'
    if fallback != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


@bp.get("/api/jobs/<job_id>/outputs.zip")
def download_zip(job_id: str) -> Response:
    """Every output the job offers in one zip, streamed as it is compressed: a succeeded
    job's, or the complete files a failed one keeps (such as validate's report)."""
    job = get_job_or_404(job_id)
    if not job.status.finished:
        raise Conflict(f"job {job_id} has not ended yet (it is {job.status}): no outputs yet")
    if not job.outputs:
        raise Conflict(f"job {job_id} ended {job.status} and offers no outputs")
    svc = service()
    files = [(o.name, svc.output_path(job, o.name)) for o in job.outputs]
    name = f"{secure_filename(Path(job.filename).stem) or 'outputs'}-{job.id[:8]}.zip"
    headers = {"Content-Disposition": content_disposition(name)}
    return Response(stream_zip(files), mimetype="application/zip", headers=headers)


@bp.get("/api/pipelines")
def list_pipelines() -> dict[str, Any]:
    """The pipelines an upload may name, with their steps, so clients need not read config.py."""
    settings = service().settings
    return {
        "default": "default",
        "pipelines": [
            {"name": name, "steps": [_step_json(s, settings) for s in specs]}
            for name, specs in settings.pipelines.items()
        ],
    }


def _step_json(spec: StepSpec, settings: Settings) -> dict[str, Any]:
    """A step with its configured options and the ones an upload may set."""
    return {
        "id": spec.id,
        "name": spec.name,
        "delay": spec.delay,
        "error_chance": spec.error_chance,
        "options": spec.options,
        "upload_options": upload_options_json(spec, settings),
    }


from . import preview as _preview  # noqa: E402, F401  (registers its route on bp)
