"""The one way xmlflow parses untrusted XML: a hardened lxml pull parser.

Every upload is hostile until proven otherwise, so the parser is built here and
nowhere else:

- ``no_network=True`` and a resolver that answers *every* external fetch (external
  entities, external DTD subsets, external parameter entities) with an empty string:
  libxml2 never opens a file or a socket named by a document. External references are
  therefore neutralised (they expand to nothing) rather than rejected, which keeps
  standalone documents such as xmltest ``valid/sa/097`` (an external parameter entity
  in the DTD) convertible.
- ``resolve_entities=True`` so internal entities expand the way every XML tool expands
  them. lxml's ``resolve_entities="internal"`` would have been tidier but it rejects
  internal *parameter* entities (xmltest 070), so the resolver above does that job.
- ``huge_tree=False`` keeps libxml2's own limits on: entity amplification (billion
  laughs, quadratic blow-up), entity nesting, element depth (256), a text node (10 MB)
  and a name (50,000 chars). They end as :class:`XmlError` in milliseconds.
- XInclude is never processed (lxml only does it when asked with ``xinclude()``),
  ``xsi:schemaLocation`` hints are never read, DTD validation is off.
- :data:`MAX_ATTRIBUTES` bounds attributes per element; libxml2 parses 100,000
  attributes in ~60 ms, the limit exists so the converter never builds such a dict.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from pyexpat import ExpatError
from typing import Any, Literal
from xml.parsers import expat

from lxml import etree

from xmlflow.errors import XmlError
from xmlflow.inputs import open_input, source_position

__all__ = [
    "CHUNK_SIZE",
    "expat_error",
    "feed_expat",
    "make_expat_parser",
    "MAX_ATTRIBUTES",
    "MAX_DEPTH",
    "feed_file",
    "make_parser",
    "parse_document",
    "safe_parser",
    "sniff_encoding",
    "xml_error",
]

log = logging.getLogger(__name__)
Event = Literal["start", "end", "start-ns", "end-ns", "comment", "pi"]

CHUNK_SIZE = 32 * 1024
"""Bytes fed to libxml2 at a time: between two chunks we report progress and check
for cancellation, so a chunk holds at most ~8,000 elements (``<a/>`` is 4 bytes)."""

MAX_ATTRIBUTES = 10_000
"""Attributes allowed on one element before the document is refused."""

MAX_DEPTH = 256
"""libxml2's nesting limit without ``XML_PARSE_HUGE``; documented, not configurable."""


class _NoExternalResources(etree.Resolver):
    """Answer every external fetch with an empty document: nothing is ever read."""

    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:
        log.info("external resource %r not loaded (external references are disabled)", system_url)
        return self.resolve_string("", context)


def _hardened_options(keep_comments: bool, keep_pis: bool) -> dict[str, Any]:
    return {
        "resolve_entities": True,
        "no_network": True,
        "load_dtd": False,
        "dtd_validation": False,
        "attribute_defaults": False,
        "huge_tree": False,
        "collect_ids": False,
        "remove_comments": not keep_comments,
        "remove_pis": not keep_pis,
    }


def make_parser(
    *,
    events: tuple[Event, ...] = ("end",),
    tag: str | None = None,
    keep_comments: bool = False,
    keep_pis: bool = False,
    encoding: str | None = None,
) -> etree.XMLPullParser:
    """A pull parser with every protection on; ``tag`` filters events in C, not Python."""
    parser = etree.XMLPullParser(
        events=events,
        tag=tag,
        encoding=encoding,
        **_hardened_options(keep_comments, keep_pis),
    )
    parser.resolvers.add(_NoExternalResources())
    return parser


def safe_parser(*, target: Any = None, encoding: str | None = None) -> Any:
    """A whole-document parser with the same protections (stylesheets, schemas, XSD).

    With a parser ``target`` no element objects are created at all: the cheapest and
    safest way to glance at a document (see ``convert._peek_repeated_child``).
    """
    parser = etree.XMLParser(target=target, encoding=encoding, **_hardened_options(False, False))
    parser.resolvers.add(_NoExternalResources())
    return parser


def parse_document(path: Path) -> Any:
    """The whole document at ``path`` as a tree (for XSD and XSLT), hardened.

    Read through a file object: given a file *name*, lxml would route the document
    itself through the resolver that empties every external load.
    """
    try:
        with open_input(path) as f:
            return etree.parse(f, safe_parser())
    except etree.XMLSyntaxError as exc:
        raise xml_error(exc, path.name) from None


def sniff_encoding(head: bytes) -> str | None:
    """Name UTF-16 without a BOM, which libxml2 only detects after ``<?xml``.

    With a BOM or an XML declaration libxml2 finds the encoding itself (UTF-8, UTF-16,
    ISO-8859-x, ...): we return ``None`` and let it.
    """
    if len(head) < 4 or head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return None
    if head[0] == 0x3C and head[1] == 0 and head[2] != 0 and head[3] == 0:
        return "UTF-16LE"
    if head[0] == 0 and head[1] == 0x3C and head[2] == 0 and head[3] != 0:
        return "UTF-16BE"
    return None


_FRIENDLY = [
    ("amplification factor", "entity expansion limit exceeded (entities expand too much)"),
    ("entity reference loop", "entity reference loop (an entity refers to itself)"),
    ("entity nesting depth", "entity expansion limit exceeded (entities nested too deeply)"),
    ("Excessive depth", f"elements nested deeper than {MAX_DEPTH} levels"),
    ("huge text node", "a text node is larger than 10 MB"),
    ("Huge input lookup", "a single token is too large"),
]
_POSITION_SUFFIX = re.compile(r"[,:]\s*line \d+, column \d+\s*$")


def xml_error(exc: etree.XMLSyntaxError, filename: str | None = None) -> XmlError:
    """Turn libxml2's error into an :class:`XmlError` with line and column.

    libxml2 sometimes reports column 0 or no line (errors found at the end of input);
    we then point at column 1 of the reported line, or line 1, so the message always
    starts with ``line L, column C``.
    """
    raw = str(exc.msg or exc).strip()
    reason = _POSITION_SUFFIX.sub("", raw).replace("\n", " ").strip()
    for needle, friendly in _FRIENDLY:
        if needle in raw:
            reason = friendly
            break
    line, column = exc.position if exc.position else (exc.lineno or 1, 1)
    return XmlError(
        reason or "not well-formed XML", line=max(line, 1), column=max(column, 1), filename=filename
    )


def feed_file(
    path: Path,
    parser: etree.XMLPullParser,
    *,
    on_chunk: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, Any]]:
    """Feed ``path`` to ``parser`` in chunks and yield its events, ending with ``close()``.

    ``on_chunk(bytes_consumed)`` runs between chunks (progress, cancellation). Parse
    errors surface as :class:`XmlError`. The root element is the last event's
    ``("close", root)`` pseudo-event so callers can finish the document.
    """
    consumed = 0
    try:
        with open_input(path) as f:
            while chunk := f.read(CHUNK_SIZE):
                consumed += len(chunk)
                parser.feed(chunk)
                yield from parser.read_events()
                if on_chunk is not None:
                    on_chunk(source_position(f, consumed))
        root = parser.close()
        yield from parser.read_events()
    except etree.XMLSyntaxError as exc:
        raise xml_error(exc, path.name) from None
    yield ("close", root)


# -- expat: the converter's parser ----------------------------------------------------


def make_expat_parser(encoding: str | None = None, *, namespaces: bool = False) -> Any:
    """An expat parser set up as ``xmltodict.parse`` sets up its own, and hardened.

    expat itself never opens a file or a socket: external entities, external DTD
    subsets and external parameter entities are only read when an
    ``ExternalEntityRefHandler`` fetches them, and xmlflow installs none (they are
    skipped, as xmltodict skips them). Parameter entities are never parsed. expat
    (>= 2.4) stops billion-laughs style amplification on its own; the converter adds
    a tighter bound on expanded text (``TreeBuilder``) and the depth and attribute
    limits.
    """
    parser = expat.ParserCreate(encoding, ":" if namespaces else None)
    parser.ordered_attributes = True
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return parser


_EXPAT_FRIENDLY = [
    ("amplification factor", "entity expansion limit exceeded (entities expand too much)"),
    ("recursive entity reference", "entity reference loop (an entity refers to itself)"),
]


def expat_error(exc: BaseException, parser: Any, filename: str | None = None) -> BaseException:
    """expat's error as an :class:`XmlError` starting ``line L, column C``.

    Errors xmlflow raised itself from a handler (limits, cancellation) pass through.
    """
    if not isinstance(exc, ExpatError):
        return exc
    reason = _POSITION_SUFFIX.sub("", str(exc)).strip()
    for needle, friendly in _EXPAT_FRIENDLY:
        if needle in reason:
            reason = friendly
    line = exc.lineno or parser.ErrorLineNumber or 1
    column = (exc.offset if exc.offset is not None else parser.ErrorColumnNumber) + 1
    return XmlError(
        reason or "not well-formed XML", line=max(line, 1), column=column, filename=filename
    )


def feed_expat(path: Path, parser: Any, *, on_chunk: Callable[[int], None] | None = None) -> int:
    """Feed ``path`` to the expat ``parser`` in chunks; return the bytes read.

    ``on_chunk(bytes_consumed)`` runs between chunks (progress, cancellation), so a
    document that is one big element reports progress as often as a list of records.
    """
    consumed = 0
    try:
        with open_input(path) as f:
            while chunk := f.read(CHUNK_SIZE):
                consumed += len(chunk)
                parser.Parse(chunk, False)
                if on_chunk is not None:
                    on_chunk(source_position(f, consumed))
        if not consumed:
            raise XmlError("the document is empty (no element found)", line=1, column=1)
        parser.Parse(b"", True)
    except ExpatError as exc:
        raise expat_error(exc, parser, path.name) from None
    return consumed


def read_head(path: Path, size: int = 4) -> bytes:
    """The first bytes of ``path`` (for :func:`sniff_encoding`)."""
    with open_input(path) as f:
        return f.read(size)
