"""Apply an operator's XSLT 1.0 stylesheet; later steps read the result.

Options: ``stylesheet`` (path relative to the folder of ``config.py``), ``output``
(file name, default ``<stem>.xml``). The stylesheet comes from the deployment, never
from an upload; even so it runs with ``XSLTAccessControl.DENY_ALL`` (no file or
network reads/writes through ``document()``, ``xsl:include`` at run time or
``exsl:document``) and is parsed with the hardened parser. Memory: XSLT needs the
whole input tree.
"""

from __future__ import annotations

from lxml import etree

from xmlflow.errors import ConfigError, JobCancelled, StepFailed
from xmlflow.step import StepContext, UploadOption
from xmlflow.steps.validate import resolve_option_path
from xmlflow.xml.parser import parse_document
from xmlflow.xml.schema import local_parser

__all__ = ["run_transform_step"]

UPLOAD_OPTIONS: list[UploadOption] = []
"""Nothing: the stylesheet is code and a path; the output name is the operator's."""


def check_options(ctx: StepContext) -> None:
    """At start-up: the stylesheet exists and compiles."""
    _stylesheet(ctx)


def _stylesheet(ctx: StepContext) -> etree.XSLT:
    path = resolve_option_path(ctx, "stylesheet")
    if not path.is_file():
        raise ConfigError(f"step {ctx.step_id!r}: stylesheet not found: {path}")
    try:
        parser, _ = local_parser(path.parent)  # xsl:import/include from its folder only
        xslt_doc = etree.parse(str(path), parser)
        return etree.XSLT(xslt_doc, access_control=etree.XSLTAccessControl.DENY_ALL)
    except (etree.XMLSyntaxError, etree.XSLTParseError) as exc:
        raise ConfigError(
            f"step {ctx.step_id!r}: cannot use stylesheet {path.name}: {exc}"
        ) from None


def run_transform_step(ctx: StepContext) -> None:
    """Transform ``ctx.input``; write ``<stem>.xml`` (or ``output``) and pass it on."""
    transform = _stylesheet(ctx)
    doc = parse_document(ctx.input)
    if ctx.cancelled:
        raise JobCancelled("cancelled")
    ctx.progress(0.5, "transforming")
    try:
        result = transform(doc)
    except etree.XSLTApplyError as exc:
        raise StepFailed(f"the stylesheet failed on {ctx.filename}: {exc}") from None
    name = str(ctx.options.get("output") or f"{ctx.stem}.xml")
    with ctx.open_output(name, "wb") as out:
        # bytes() honours <xsl:output> (method, encoding); write_output() trips over
        # file objects in lxml 6.1 ("unknown encoding: ''"), types-lxml lacks the buffer.
        out.write(bytes(result))  # type: ignore[call-overload]
    ctx.pass_on(ctx.outputs[-1].path)
    ctx.progress(1.0, "transformed")
