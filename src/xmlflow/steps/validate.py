"""Validate the document against an XML Schema (XSD 1.0) from the deployment's config.

Options: ``schema`` (path relative to ``schema_dir`` if given, else to the folder of
``config.py``), ``schema_dir`` (optional), ``max_errors`` (how many violations the
report ``<stem>.errors.jsonl`` lists, default 10,000). An upload may lower
``max_errors``, nothing else: the schema is the operator's.

Memory: libxml2's XSD validator needs the whole document as a tree, so this step
holds the parsed document in memory (roughly 3-5× the file size for record-shaped
XML). lxml's streaming validation (``XMLSchema`` as an ``iterparse`` ``schema=``
argument) exists but reports only the first error and disables our hardened
options, so we parse with the hardened parser and validate the tree. Put this step
behind the service's upload size limit.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson

from xmlflow.errors import ConfigError, JobCancelled, StepFailed
from xmlflow.step import StepContext, UploadOption
from xmlflow.xml.parser import parse_document
from xmlflow.xml.schema import load_schema

__all__ = ["run_validate_step", "resolve_option_path"]

MAX_ERRORS = 10_000
"""Violations listed in the report file, unless ``config.py`` says otherwise."""
SHOWN = 10
"""Violations in the step's error message (and so in the job's record and events)."""
MESSAGE_CHARS = 300
"""A violation's message in the error is cut here (element names can be long)."""

UPLOAD_OPTIONS = [
    UploadOption(
        "max_errors",
        "integer",
        "how many violations the report <stem>.errors.jsonl lists (may only be lowered)",
        default=MAX_ERRORS,
        minimum=1,
        at_most_configured=True,
    ),
]


def check_options(ctx: StepContext) -> None:
    """At start-up: the schema exists and compiles."""
    load_schema(resolve_option_path(ctx, "schema", "schema_dir"))


def resolve_option_path(ctx: StepContext, key: str, folder_key: str | None = None) -> Path:
    """The file named by option ``key``, relative to ``folder_key`` or ``config_dir``."""
    value = ctx.options.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"step {ctx.step_id!r}: option {key!r} (a file name) is required")
    base = ctx.options.get(folder_key) if folder_key else None
    folder = Path(base) if isinstance(base, str) else ctx.config_dir or Path.cwd()
    if not folder.is_absolute() and ctx.config_dir is not None:
        folder = ctx.config_dir / folder
    return folder / value


def run_validate_step(ctx: StepContext) -> None:
    """Fail if invalid: the message shows the first violations, a report file lists them all.

    The report ``<stem>.errors.jsonl`` (one ``{"line", "column", "message"}`` per line, at
    most ``max_errors``) is the place for long lists: the step's error, and so the
    job's record and its events, carries only the first :data:`SHOWN` and the total.
    """
    schema = load_schema(resolve_option_path(ctx, "schema", "schema_dir"))
    limit = int(ctx.options.get("max_errors", MAX_ERRORS))
    ctx.progress(0.1, "parsing")
    doc = parse_document(ctx.input)
    if ctx.cancelled:
        raise JobCancelled("cancelled")
    ctx.progress(0.6, "validating")
    if schema.validate(doc):
        ctx.progress(1.0, "valid")
        return
    errors = schema.error_log
    report = f"{ctx.stem}.errors.jsonl"
    with ctx.open_output(report, "wb") as out:
        for e in itertools.islice(errors, limit):
            out.write(orjson.dumps(_violation(e, None)) + b"\n")
    shown = [_violation(e, MESSAGE_CHARS) for e in itertools.islice(errors, SHOWN)]
    lines = [f"line {v['line']}, column {v['column']}: {v['message']}" for v in shown]
    more = f"\n… and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
    raise StepFailed(
        f"{ctx.filename} is not valid against {ctx.options['schema']}: "
        f"{len(errors)} violation(s), listed in {report}\n" + "\n".join(lines) + more,
        details={"violations": shown, "total": len(errors), "report": report},
    )


def _violation(error: Any, chars: int | None) -> dict[str, Any]:
    message = str(error.message)
    if chars is not None and len(message) > chars:
        message = message[:chars] + "…"
    return {"line": error.line, "column": error.column, "message": message}
