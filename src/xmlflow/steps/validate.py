"""Validate the document against an XML Schema (XSD 1.0) from the deployment's config.

Options: ``schema`` (path relative to ``schema_dir`` if given, else to the folder of
``config.py``), ``schema_dir`` (optional), ``max_errors`` (default 50).

Memory: libxml2's XSD validator needs the whole document as a tree, so this step
holds the parsed document in memory (roughly 3-5× the file size for record-shaped
XML). lxml's streaming validation (``XMLSchema`` as an ``iterparse`` ``schema=``
argument) exists but reports only the first error and disables our hardened
options, so we parse with the hardened parser and validate the tree. Put this step
behind the service's upload size limit.
"""

from __future__ import annotations

from pathlib import Path

from xmlflow.errors import ConfigError, JobCancelled, StepFailed
from xmlflow.step import StepContext
from xmlflow.xml.parser import parse_document
from xmlflow.xml.schema import load_schema

__all__ = ["run_validate_step", "resolve_option_path"]

MAX_ERRORS = 50


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
    """Fail with the violations (line numbers, at most ``max_errors``) if invalid."""
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
    errors = list(schema.error_log)
    lines = [f"line {e.line}, column {e.column}: {e.message}" for e in errors[:limit]]
    more = f"\n… and {len(errors) - limit} more" if len(errors) > limit else ""
    raise StepFailed(
        f"{ctx.filename} is not valid against {ctx.options['schema']}: "
        f"{len(errors)} violation(s)\n" + "\n".join(lines) + more,
        details={
            "violations": [
                {"line": e.line, "column": e.column, "message": e.message} for e in errors[:limit]
            ],
            "total": len(errors),
        },
    )
