"""One XML file per record, bundled into ``<stem>.zip``.

Options: ``record_path`` (default: the root's repeated child). Streaming: one record
in memory at a time; the zip is written entry by entry (see ``xmlflow.xml.zipstream``).
Each entry is a standalone document ``NNNNNN-<tag>.xml`` with the namespace
declarations it needs.
"""

from __future__ import annotations

from typing import BinaryIO, cast

from lxml import etree

from xmlflow.errors import JobCancelled, StepFailed
from xmlflow.step import StepContext
from xmlflow.xml.options import split_path
from xmlflow.xml.records import iter_records
from xmlflow.xml.zipstream import ZipWriter

__all__ = ["run_split_step"]


def run_split_step(ctx: StepContext) -> None:
    """Write every record as its own XML document into ``<stem>.zip``."""
    raw_path = ctx.options.get("record_path")
    record_path = split_path(raw_path) if isinstance(raw_path, str) and raw_path else None
    size = max(ctx.input.stat().st_size, 1)
    count = 0

    def on_chunk(consumed: int) -> None:
        if ctx.cancelled:
            raise JobCancelled("cancelled")
        ctx.progress(consumed / size, f"{count} records")

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
