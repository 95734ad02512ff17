"""The seed's step: convert the uploaded XML to JSON (one document, JSON Lines or a zip).

Options are :class:`~xmlflow.xml.ConvertOptions` (see ``docs/xml.md``); they are
checked before any byte is read. An upload may set the output mode and the options
that shape values and keys (:data:`UPLOAD_OPTIONS`), never a file (``force_list_xsd``),
code (``postprocessor``) or a safety setting it could loosen. The output is written
through ``ctx.open_output``, so a failed or cancelled conversion never leaves a partial file behind.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, BinaryIO, cast

from xmlflow.errors import JobCancelled
from xmlflow.step import StepContext, UploadOption
from xmlflow.units import plural
from xmlflow.xml import ConvertOptions
from xmlflow.xml.native import convert_file, native_module

__all__ = ["UPLOAD_OPTIONS", "run_xml_processing_step"]

SUFFIX = {"json": ".json", "jsonl": ".jsonl", "split": ".zip"}

_DEFAULTS = ConvertOptions()


def _flag(name: str, help: str, **kwargs: Any) -> UploadOption:
    """A true/false option, shown with the converter's own default."""
    return UploadOption(name, "boolean", help, default=getattr(_DEFAULTS, name, False), **kwargs)


_DECLARED = (
    UploadOption(
        "mode",
        "string",
        "json: one document; jsonl: one record per line; split: a zip of one file per record",
        default="json",
        choices=("json", "jsonl", "split"),
    ),
    UploadOption("record_path", "string", "the records' element path, e.g. catalog/book"),
    UploadOption("force_list", "array", "element names or paths always given as lists", []),
    UploadOption("attr_prefix", "string", "prefix of attribute keys", default="@"),
    UploadOption("text_key", "string", "key of the text of an element with attributes", "#text"),
    UploadOption(
        "namespaces",
        ("string", "object"),
        "'keep' prefixes as written, 'strip' them, or {namespace URI: prefix}",
        default="keep",
    ),
    _flag("coerce_types", "numbers and true/false as JSON values, not strings"),
    _flag("strip_text", "strip leading and trailing whitespace from text"),
    _flag("collapse_whitespace", "runs of whitespace in text become one space"),
    _flag("drop_empty", "leave out empty elements"),
    _flag("drop_comments", "leave out comments"),
    _flag("drop_pis", "leave out processing instructions"),
    UploadOption("drop", "array", "element names or paths left out", default=[]),
    UploadOption("rename", "object", "{element name or path: new key}", default={}),
    _flag("xml_attribs", "keep attributes (xmltodict's xml_attribs)"),
    UploadOption(
        "force_cdata", ("boolean", "array"), "text always under the text key", default=False
    ),
    UploadOption("cdata_separator", "string", "joins the text pieces of mixed content", ""),
    _flag(
        "disable_entities",
        "refuse documents that declare entities (an upload may only turn it on)",
        choices=(True,),
    ),
)
UPLOAD_OPTIONS = [o for o in _DECLARED if o.name in {f.name for f in fields(ConvertOptions)}]
"""What an upload may set: the declarations the converter in use knows."""


def check_options(ctx: StepContext) -> None:
    """At start-up: the conversion options are valid (unknown keys, bad values).

    Also loads the native core once, so that its absence is said at start-up.
    """
    ConvertOptions.from_dict(ctx.options, base_dir=ctx.config_dir)
    native_module()


def run_xml_processing_step(ctx: StepContext) -> None:
    """Convert ``ctx.input`` per ``ctx.options``; write ``<stem>.json|.jsonl|.zip``."""
    options = ConvertOptions.from_dict(ctx.options, base_dir=ctx.config_dir)
    size = max(ctx.input.stat().st_size, 1)

    def progress(consumed: int, records: int) -> None:
        message = progress_message(consumed, size, records)
        ctx.progress(consumed / size, message, done=consumed, total=size)

    with ctx.open_output(ctx.stem + SUFFIX[options.mode], "wb") as out:
        stats = convert_file(
            ctx.input,
            cast(BinaryIO, out),
            options,
            on_progress=progress,
            is_cancelled=lambda: ctx.cancelled,
        )
    if ctx.cancelled:
        raise JobCancelled("cancelled")
    ctx.log.info(
        "converted %s: %d bytes, %d records, %d elements, %d skipped",
        ctx.filename,
        stats.bytes_in,
        stats.records,
        stats.elements,
        stats.skipped,
    )


def progress_message(consumed: int, size: int, records: int) -> str:
    """Bytes read always (a one-record document moves too), records once there are some."""
    read = f"{_size(consumed)} of {_size(size)} read"
    return f"{read}, {plural(records, 'record')}" if records else read


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    return f"{n / 1e3:.1f} kB" if n < 1_000_000 else f"{n / 1e6:.1f} MB"
