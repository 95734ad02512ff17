"""The seed's step: convert the uploaded XML to JSON (one document, JSON Lines or a zip).

Options are :class:`~xmlflow.xml.ConvertOptions` (see ``docs/xml.md``); they are
checked before any byte is read. The output is written through ``ctx.open_output``,
so a failed or cancelled conversion never leaves a partial file behind.
"""

from __future__ import annotations

from typing import BinaryIO, cast

from xmlflow.errors import JobCancelled
from xmlflow.step import StepContext
from xmlflow.xml import ConvertOptions
from xmlflow.xml.native import convert_file, native_module

__all__ = ["run_xml_processing_step"]

SUFFIX = {"json": ".json", "jsonl": ".jsonl", "split": ".zip"}


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
        ctx.progress(consumed / size, progress_message(consumed, size, records))

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
    return f"{read}, {records} records" if records else read


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    return f"{n / 1e3:.1f} kB" if n < 1_000_000 else f"{n / 1e6:.1f} MB"
