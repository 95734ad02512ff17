"""Streaming XML → JSON: the driver that ties parser, converter and sink together.

Speed comes from keeping Python out of the per-element loop: libxml2 builds each
record's subtree in C, the pull parser's ``tag`` filter delivers only the *end* of
record elements to Python (everything else never crosses into the interpreter),
and :class:`~xmlflow.xml.tree.TreeConverter` walks one finished record at a time.
Memory stays bounded by the largest record because each record is deleted from the
tree as soon as it is written.

Which elements are records:

- ``json``: the children of the root (the document is rebuilt around them);
- ``jsonl`` / ``split``: the elements at ``record_path``, or else the root's
  repeated child (found by a short look at the start of the file). Other children
  of the root are skipped and counted in :attr:`ConvertStats.skipped`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from xmlflow.errors import JobCancelled
from xmlflow.xml.options import ConvertOptions
from xmlflow.xml.parser import (
    feed_file,
    make_parser,
    read_head,
    sniff_encoding,
)
from xmlflow.xml.records import peek_repeated_child
from xmlflow.xml.sinks import JsonDocumentSink, JsonLinesSink, RecordSink, ZipSink
from xmlflow.xml.stats import ConvertStats
from xmlflow.xml.tree import DROP, TreeConverter

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
    conv = TreeConverter(options)
    encoding = sniff_encoding(read_head(src))
    tag = _record_tag(src, options, encoding)
    sink = _make_sink(options, out, conv)

    def on_chunk(consumed: int) -> None:
        stats.bytes_in = consumed
        if is_cancelled is not None and is_cancelled():
            raise JobCancelled("conversion cancelled")
        if on_progress is not None:
            on_progress(consumed, stats.records)

    parser = make_parser(
        events=("end", "start-ns"),
        tag=tag,
        keep_comments=not options.drop_comments,
        keep_pis=not options.drop_pis,
        encoding=encoding,
    )
    try:
        _Run(conv, sink, stats, options, tag).consume(feed_file(src, parser, on_chunk=on_chunk))
    except BaseException:
        sink.abort()
        raise
    stats.elements = conv.elements
    if on_progress is not None:
        on_progress(stats.bytes_in, stats.records)
    return stats


def _make_sink(options: ConvertOptions, out: BinaryIO, conv: TreeConverter) -> RecordSink:
    if options.mode == "json":
        return JsonDocumentSink(out, conv)
    if options.mode == "jsonl":
        return JsonLinesSink(out)
    return ZipSink(out)


class _Run:
    """The event loop of one conversion, split out so each rule is a short method."""

    def __init__(
        self,
        conv: TreeConverter,
        sink: RecordSink,
        stats: ConvertStats,
        options: ConvertOptions,
        record_tag: str | None,
    ) -> None:
        self.record_tag = record_tag
        self.conv = conv
        self.sink = sink
        self.stats = stats
        self.document = sink if isinstance(sink, JsonDocumentSink) else None
        self.record_path = options.record_path
        self.root_name: str | None = None
        self.o = options

    def consume(self, events: Iterator[tuple[str, Any]]) -> None:
        for event, el in events:
            if event == "end":
                self._end(el)
            elif event == "start-ns":
                self.conv.has_namespaces = True
            elif event == "close":
                self._close(el)

    def _end(self, el: Any) -> None:
        parent = el.getparent()
        if self.document is not None or self.record_path is None:
            if parent is not None and parent.getparent() is None:
                self._take_children_until(parent, el)
        elif self._at_record_path(el):
            self._take_record(parent, el)

    def _take_children_until(self, root: Any, last: Any) -> None:
        """Convert and delete the root's children up to and including ``last``."""
        document = self.document
        if self.root_name is None:
            self.root_name = self.conv.name(root)
            if document is not None:
                document.set_root(root)
                document.add_text(root.text)
        while True:
            child = root[0]
            if document is not None:
                document.add_text(child.tail)
            if type(child.tag) is str:
                self._child_of_root(child)
            elif document is not None:
                self._other_of_root(child, document)
            del root[0]
            if child is last:
                return

    def _other_of_root(self, node: Any, document: JsonDocumentSink) -> None:
        """A comment or PI directly in the root, when the options keep them."""
        kept: dict[str, Any] = {}
        self.conv.other_node(node, kept)
        for key, value in kept.items():
            document.add(key, value, False)

    def _child_of_root(self, child: Any) -> None:
        if self.document is None and child.tag != self.record_tag:
            self.stats.skipped += 1
            return
        name = self.conv.name(child)
        assert self.root_name is not None
        self._emit(child, name, (self.root_name, name) if self.o.needs_paths else None)

    def _emit(self, el: Any, name: str, path: tuple[str, ...] | None) -> None:
        conv, o = self.conv, self.o
        if o.drop and o.drop.matches(name, path):
            return
        parent = el.getparent() if conv.has_namespaces else None
        value = conv.convert(el, path, parent.nsmap if parent is not None else None)
        if value is DROP:
            return
        self.stats.records += 1
        if o.force_list or o.rename or o.rename_paths:
            self.sink.add(conv.renamed(name, path), value, o.force_list.matches(name, path))
        else:
            self.sink.add(name, value, False)

    def _at_record_path(self, el: Any) -> bool:
        assert self.record_path is not None
        names = [self.conv.name(a) for a in itertools.chain([el], el.iterancestors())]
        return tuple(reversed(names)) == self.record_path

    def _take_record(self, parent: Any, el: Any) -> None:
        if parent is None:  # the record is the root itself: no siblings to drop
            self._emit(el, self.conv.name(el), self.record_path if self.o.needs_paths else None)
            return
        while parent[0] is not el:
            if type(parent[0].tag) is str:
                self.stats.skipped += 1
            del parent[0]
        self._emit(el, self.conv.name(el), self.record_path if self.o.needs_paths else None)
        del parent[0]

    def _close(self, root: Any) -> None:
        if self.document is not None or self.record_path is None:
            if len(root):
                self._take_children_until(root, root[len(root) - 1])
            elif self.document is not None and self.root_name is None:
                self.document.add_text(root.text)
        self.sink.finish(root)


def _record_tag(src: Path, options: ConvertOptions, encoding: str | None) -> str | None:
    """The tag whose end events reach Python (``None``: all of them, small documents)."""
    if options.record_path is not None and options.mode != "json":
        local = options.record_path[-1].rpartition(":")[2]
        return "{*}" + local
    return peek_repeated_child(src, encoding)
