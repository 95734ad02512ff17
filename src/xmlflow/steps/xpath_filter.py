"""Keep only the records that match an XPath; later steps read the filtered document.

Options: ``xpath`` (XPath 1.0, evaluated with each record as the context node; a
record is kept when the result is true, a non-empty node-set, a non-empty string or
a non-zero number), ``record_path`` (default: the root's repeated child),
``namespaces`` ({prefix: URI} for the expression), ``output`` (default
``<stem>.filtered.xml``).

Streaming: one record in memory at a time. The output is the root element (its
attributes and namespace declarations) holding the kept records; elements between
the root and the records are not reproduced.
"""

from __future__ import annotations

import contextlib
from typing import Any

from lxml import etree

from xmlflow.errors import ConfigError, JobCancelled, StepFailed
from xmlflow.step import StepContext, UploadOption
from xmlflow.steps.split import record_path_option
from xmlflow.units import plural
from xmlflow.xml.records import iter_records

__all__ = ["run_xpath_filter_step"]

UPLOAD_OPTIONS = [
    UploadOption("record_path", "string", "the records' element path, e.g. catalog/book"),
]
"""Not ``xpath``: an expression is code. EXSLT regular expressions can backtrack
catastrophically and even plain XPath 1.0 can cost polynomial time over a record, in C,
where cancel does not reach; an operator who wants several filters configures several
pipelines."""


def check_options(ctx: StepContext) -> None:
    """At start-up and upload: the XPath compiles, ``record_path`` is a path."""
    _compile(ctx)
    record_path_option(ctx)


def _compile(ctx: StepContext) -> etree.XPath:
    expr = ctx.options.get("xpath")
    namespaces = ctx.options.get("namespaces") or {}
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(
            f"step {ctx.step_id!r}: option 'xpath' (an XPath 1.0 expression) is required"
        )
    if not isinstance(namespaces, dict):
        raise ConfigError(f"step {ctx.step_id!r}: option 'namespaces' must be {{prefix: URI}}")
    try:
        return etree.XPath(expr, namespaces=namespaces, smart_strings=False)
    except etree.XPathSyntaxError as exc:
        raise ConfigError(f"step {ctx.step_id!r}: bad xpath {expr!r}: {exc}") from None


def _matches(ctx: StepContext, xpath: etree.XPath, record: Any) -> bool:
    try:
        return bool(xpath(record))
    except etree.XPathEvalError as exc:
        raise ConfigError(f"step {ctx.step_id!r}: xpath failed: {exc}") from None


def run_xpath_filter_step(ctx: StepContext) -> None:
    """Write the records matching ``xpath`` as ``<stem>.filtered.xml`` and pass it on."""
    xpath = _compile(ctx)
    record_path = record_path_option(ctx)
    size = max(ctx.input.stat().st_size, 1)
    kept = seen = 0

    def on_chunk(consumed: int) -> None:
        if ctx.cancelled:
            raise JobCancelled("cancelled")
        ctx.progress(consumed / size, f"{kept} of {plural(seen, 'record')} kept")

    name = str(ctx.options.get("output") or f"{ctx.stem}.filtered.xml")
    with ctx.open_output(name, "wb") as out, etree.xmlfile(out, encoding="utf-8") as xf:
        xf.write_declaration()
        with contextlib.ExitStack() as root_element:
            for record in iter_records(ctx.input, record_path, on_chunk=on_chunk):
                if seen == 0:
                    root = record.getroottree().getroot()
                    root_element.enter_context(
                        xf.element(root.tag, dict(root.attrib), nsmap=root.nsmap)
                    )
                seen += 1
                if _matches(ctx, xpath, record):
                    kept += 1
                    xf.write(record)
            if seen == 0:
                raise StepFailed(f"{ctx.filename}: no records found (set option 'record_path')")
    ctx.pass_on(ctx.outputs[-1].path)
    ctx.log.info("xpath filter kept %d of %d records", kept, seen)
