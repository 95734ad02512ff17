"""Streaming XML → JSON: the driver that ties parser, converter and sink together.

expat reads the file in 32 KiB chunks; :class:`~xmlflow.xml.tree.TreeBuilder` turns
its events into values and hands each finished record to a sink, which writes it and
forgets it: memory is bounded by the largest record. Between two chunks the driver
reports progress (bytes read, records written) and checks for cancellation, so a
document that is one big record shows progress as steadily as a list of records.

Which elements are records:

- ``json``: the children of the root (the document is rebuilt around them); with a
  ``postprocessor``, kept comments or processing instructions, or a ``text_key``
  that could name an attribute or element, the whole document is built in memory as
  ``xmltodict.parse`` builds it (those can reach the root's own key and the top
  level, which a stream could not revise);
- ``jsonl`` / ``split``: the elements at ``record_path``, or else the root's
  repeated child (found by a short look at the start of the file). Other elements
  at the records' depth are skipped and counted in :attr:`ConvertStats.skipped`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from xmlflow.errors import JobCancelled, XmlError
from xmlflow.inputs import open_input
from xmlflow.xml.options import ConvertOptions
from xmlflow.xml.parser import expat_error, feed_expat, make_expat_parser, read_head, sniff_encoding
from xmlflow.xml.sinks import (
    JsonDocumentSink,
    JsonLinesSink,
    RecordSink,
    WholeDocumentSink,
    ZipSink,
)
from xmlflow.xml.stats import ConvertStats
from xmlflow.xml.tree import TreeBuilder

__all__ = ["ConvertStats", "convert_file"]


def convert_file(
    src: Path,
    out: BinaryIO,
    options: ConvertOptions,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> ConvertStats:
    """Convert the XML file ``src`` to JSON written to ``out``, as ``options`` say.

    ``on_progress(bytes_consumed, records_done)`` and ``is_cancelled()`` are called
    between chunks of input (every 32 KiB). Raises :class:`~xmlflow.errors.XmlError`
    for XML that is not well-formed, forbidden or over a limit, and
    :class:`~xmlflow.errors.JobCancelled` when ``is_cancelled()`` turns true.
    """
    src = Path(src)
    stats = ConvertStats()
    encoding = sniff_encoding(read_head(src))
    builder, sink = _setup(src, out, options, encoding)

    def on_chunk(consumed: int) -> None:
        stats.bytes_in = consumed
        if is_cancelled is not None and is_cancelled():
            raise JobCancelled("conversion cancelled")
        if on_progress is not None:
            on_progress(consumed, builder.records)

    try:
        feed_expat(src, builder.make_parser(encoding), on_chunk=on_chunk)
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    stats.records, stats.elements, stats.skipped = (
        builder.records,
        builder.elements,
        builder.skipped,
    )
    if on_progress is not None:
        on_progress(stats.bytes_in, stats.records)
    return stats


def _whole_document(options: ConvertOptions) -> bool:
    """Options whose effect can reach the root's key or the top level (see above).

    Also a text key that an attribute or a child element could be named (``text``,
    or ``#text`` with ``attr_prefix: "#"``): xmltodict then turns the root's key into
    a list of both, which a stream that already wrote the first could not do.
    """
    key = options.text_key
    collides = key.startswith(options.attr_prefix) or key[0].isalpha() or key[0] in "_:"
    return bool(
        options.postprocessor or not options.drop_comments or not options.drop_pis or collides
    )


def _setup(
    src: Path, out: BinaryIO, options: ConvertOptions, encoding: str | None
) -> tuple[TreeBuilder, RecordSink]:
    if options.mode == "json":
        if _whole_document(options):
            builder = TreeBuilder(options, emit_depth=0)
            return builder, WholeDocumentSink(out, builder)
        document = JsonDocumentSink(out)
        builder = TreeBuilder(options, emit_depth=1, emit=document.add)
        document.builder = builder
        return builder, document
    wanted: tuple[str, ...]
    sink: RecordSink = JsonLinesSink(out) if options.mode == "jsonl" else ZipSink(out)
    path: tuple[str, ...] | None = options.record_path
    if path is None:
        tag = _peek_record_tag(src, encoding, options)
        path = ("", tag) if tag is not None else ("", "")
        wanted = path[1:]
    else:
        wanted = path

    def is_record(name: str, ancestors: list[list[Any]]) -> bool:
        if name != path[-1]:
            return False
        return all(f[0] == want for f, want in zip(ancestors, wanted[:-1], strict=False))

    builder = TreeBuilder(options, emit_depth=len(path) - 1, emit=sink.add, is_record=is_record)
    return builder, sink


PEEK_BYTES = 1 << 20


class _Found(Exception):
    """Ends the peek as soon as the root's repeated child is known."""


def _peek_record_tag(src: Path, encoding: str | None, options: ConvertOptions) -> str | None:
    """The root's first repeated child in the first MiB (else its first child).

    Names are built as the conversion builds them (namespace options included).
    """
    names = TreeBuilder(options, emit_depth=0)
    seen: list[str] = []
    repeated: list[str] = []
    depth = 0

    def start(name: str, attrs: Any) -> None:
        nonlocal depth
        depth += 1
        if depth == 2:
            built = names.name(name)
            if built in seen:
                repeated.append(built)
                raise _Found
            seen.append(built)

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    parser = make_expat_parser(encoding, namespaces=options.namespaces != "keep")
    parser.StartElementHandler, parser.EndElementHandler = start, end
    with open_input(src) as f:
        head = f.read(PEEK_BYTES)
    try:
        parser.Parse(head, len(head) < PEEK_BYTES)
    except _Found:
        pass
    except XmlError:
        raise
    except Exception as exc:
        raise expat_error(exc, parser, src.name) from None
    found = repeated or seen
    return found[0] if found else None
