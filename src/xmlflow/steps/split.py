"""One XML file per record, bundled into ``<stem>.zip``.

Options: ``record_path`` (default: the root's repeated child). Streaming: one record
in memory at a time; the zip is written entry by entry (see ``xmlflow.xml.zipwriter``).
Each entry is a standalone document ``NNNNNN-<tag>.xml`` with the namespace
declarations it needs.
"""

from __future__ import annotations

from typing import BinaryIO, cast

from lxml import etree

from xmlflow.errors import ConfigError, JobCancelled, StepFailed
from xmlflow.step import StepContext, UploadOption
from xmlflow.units import plural
from xmlflow.xml.options import split_path
from xmlflow.xml.records import iter_records
from xmlflow.xml.zipwriter import ZipWriter

__all__ = ["run_split_step"]

UPLOAD_OPTIONS = [
    UploadOption("record_path", "string", "the records' element path, e.g. catalog/book"),
]


def check_options(ctx: StepContext) -> None:
    """At start-up and upload: ``record_path`` is an element path."""
    record_path_option(ctx)


def record_path_option(ctx: StepContext) -> tuple[str, ...] | None:
    """The ``record_path`` option as path steps, or None (the root's repeated child)."""
    raw = ctx.options.get("record_path")
    if raw is None or raw == "":
        return None
    parts = split_path(raw) if isinstance(raw, str) else ()
    if not parts or not all(parts):
        raise ConfigError(
            f"step {ctx.step_id!r}: option 'record_path' must be an element path "
            f"such as catalog/book, not {raw!r}"
        )
    return parts


def run_split_step(ctx: StepContext) -> None:
    """Write every record as its own XML document into ``<stem>.zip``."""
    record_path = record_path_option(ctx)
    size = max(ctx.input.stat().st_size, 1)
    count = 0

    def on_chunk(consumed: int) -> None:
        if ctx.cancelled:
            raise JobCancelled("cancelled")
        ctx.progress(consumed / size, plural(count, "record"))

    with ctx.open_output(f"{ctx.stem}.zip", "wb") as out:
        archive = ZipWriter(cast(BinaryIO, out))
        try:
            for record in iter_records(ctx.input, record_path, on_chunk=on_chunk):
                count += 1
                local = etree.QName(record).localname
                data = etree.tostring(
                    record, encoding="utf-8", xml_declaration=True, with_tail=False
                )
                archive.add(f"{count:06d}-{local}.xml", data)
            if count == 0:
                raise StepFailed(f"{ctx.filename}: no records to split (set option 'record_path')")
        except BaseException:
            archive.abort()
            raise
        archive.close()
    ctx.log.info("split %s into %d records", ctx.filename, count)
