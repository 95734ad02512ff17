"""Records of a document, one at a time: for the steps that keep XML as XML.

:func:`iter_records` yields each record element complete, then deletes it (and the
elements before it) from the tree, so memory holds one record. :func:`peek_repeated_child`
finds the default record tag: the root's first repeated child.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lxml import etree

from xmlflow.inputs import open_input
from xmlflow.xml.parser import (
    feed_file,
    make_parser,
    read_head,
    safe_parser,
    sniff_encoding,
    xml_error,
)

__all__ = ["iter_records", "peek_repeated_child"]

PEEK_BYTES = 1 << 20


def _local(name: str) -> str:
    return name.rpartition(":")[2].rpartition("}")[2]


def iter_records(
    src: Path,
    record_path: tuple[str, ...] | None,
    *,
    on_chunk: Callable[[int], None] | None = None,
) -> Iterator[Any]:
    """Yield the elements at ``record_path`` (local names), or the root's repeated child.

    The caller must be done with each element before asking for the next.
    """
    encoding = sniff_encoding(read_head(src))
    if record_path:
        tag: str | None = "{*}" + _local(record_path[-1])
        wanted = [_local(p) for p in record_path]
    else:
        tag = peek_repeated_child(src, encoding)
        wanted = []
    if tag is None:
        return
    parser = make_parser(events=("end",), tag=tag, encoding=encoding)
    for event, el in feed_file(src, parser, on_chunk=on_chunk):
        if event != "end":
            continue
        parent = el.getparent()
        if not _is_record(el, parent, wanted):
            continue
        yield el
        if parent is not None:
            while parent[0] is not el:
                del parent[0]
            del parent[0]


def _is_record(el: Any, parent: Any, wanted: list[str]) -> bool:
    if not wanted:
        return parent is not None and parent.getparent() is None
    names = [etree.QName(el).localname] + [etree.QName(a).localname for a in el.iterancestors()]
    return names[::-1] == wanted


class _ChildTags:
    """Parser target that notes the root's child tags; creates no elements at all.

    A target rather than pull events because lxml's event proxies for elements inside
    a broken entity's replacement text outlive the nodes libxml2 frees on the error
    ("Tried to unregister unknown proxy"). Syntax errors in the first MiB are thus
    found here, where no element object exists, and reported from here.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.seen: list[str] = []
        self.repeated: str | None = None

    def start(self, tag: str, attrib: Any, nsmap: Any = None) -> None:
        self.depth += 1
        if self.depth == 2 and self.repeated is None:
            if tag in self.seen:
                self.repeated = tag
            else:
                self.seen.append(tag)

    def end(self, tag: str) -> None:
        self.depth -= 1

    def close(self) -> None:
        pass


def peek_repeated_child(src: Path, encoding: str | None) -> str | None:
    """The root's first repeated child tag in the first MiB (else its first child)."""
    target = _ChildTags()
    parser = safe_parser(target=target, encoding=encoding)
    with open_input(src) as f:
        head = f.read(PEEK_BYTES)
        complete = len(head) < PEEK_BYTES
    try:
        parser.feed(head)
        if complete:
            parser.close()
    except etree.XMLSyntaxError as exc:
        raise xml_error(exc, src.name) from None
    return target.repeated or (target.seen[0] if target.seen else None)
