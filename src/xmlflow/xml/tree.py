"""XML events → xmltodict-shaped Python values, with the cleaning rules.

The converter runs on expat, the parser xmltodict runs on, with xmltodict's own
settings (``ordered_attributes``, ``buffer_text``, no namespace processing unless a
``namespaces`` mapping asks for it). That is what makes the default output
*exactly* ``xmltodict.parse``'s: attribute order, ``xmlns`` declarations as ordinary
attributes in document order (redundant re-declarations included), DTD attribute
defaults from the internal subset, text pieces around child elements, all come from
the same parser making the same calls. The handlers below are xmltodict's
``_DictSAXHandler`` rewritten for speed (one list per open element, no per-element
method calls beyond expat's two) plus xmlflow's options.

>>> from xmlflow.xml.options import ConvertOptions
>>> b = TreeBuilder(ConvertOptions(), emit_depth=0)
>>> b.feed_string('<a x="1">t<b/><b>2</b></a>')
{'a': {'@x': '1', 'b': [None, '2'], '#text': 't'}}

Each open element is a frame ``[name, item, data, raw_attrs]``: ``item`` the dict of
attributes and children (``None`` until there is one), ``data`` the text pieces.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from xmlflow.errors import XmlError
from xmlflow.xml.options import ConvertOptions, PathSet
from xmlflow.xml.parser import MAX_ATTRIBUTES, MAX_DEPTH, expat_error, make_expat_parser

__all__ = ["DROP", "TreeBuilder", "coerce"]

DROP: Any = object()
"""Returned for an element that cleaning removes (empty, or listed in ``drop``)."""

_WS = re.compile(r"\s+")
_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+([eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)")

EXPANSION_FLOOR = 8 << 20
EXPANSION_RATIO = 10
"""In a document that declares entities, text beyond ``EXPANSION_FLOOR`` characters
plus ``EXPANSION_RATIO`` per byte read is refused: expat's own amplification check
allows 100× after 8 MiB, which would let a 10 MB upload fill 1 GB of memory."""

Emit = Callable[[str, Any, bool], None]
"""``emit(key, value, forced)``: a finished element at the emit depth."""


def coerce(text: str) -> Any:
    """``"42"`` → 42, ``"4.2"`` → 4.2, ``"true"`` → True; anything else unchanged.

    Leading zeros (``"007"``, zip codes, ids), integers beyond 18 digits and overflowing
    floats stay strings on purpose: coercion must not lose information.
    """
    if text == "true":
        return True
    if text == "false":
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else text  # "1e999" stays a string
    return text


def _push(item: dict[str, Any], key: str, value: Any, forced: bool = False) -> None:
    """xmltodict's rule: a second value under a key turns it into a list."""
    if key in item:
        old = item[key]
        if type(old) is list:
            old.append(value)
        else:
            item[key] = [old, value]
    else:
        item[key] = [value] if forced else value


class TreeBuilder:
    """Builds values from expat's events; elements ending at ``emit_depth`` go to ``emit``.

    ``emit_depth`` is the number of open ancestors of an emitted element: 1 for the
    children of the root (``json`` mode streams them), the record depth for ``jsonl``,
    0 to build the whole document into :attr:`top` (as ``xmltodict.parse`` does).
    ``is_record(name, frames)`` picks the elements at that depth that are emitted; the
    others there are counted in :attr:`skipped` and dropped.
    """

    def __init__(
        self,
        options: ConvertOptions,
        *,
        emit_depth: int,
        emit: Emit | None = None,
        is_record: Callable[[str, list[list[Any]]], bool] | None = None,
    ) -> None:
        self.o = options
        self.emit_depth = emit_depth
        self.emit = emit
        self.is_record = is_record
        self.frames: list[list[Any]] = []
        self.top: dict[str, Any] = {}
        """The whole document when ``emit_depth`` is 0 (and top-level comments)."""
        self.elements = 0
        self.records = 0
        self.skipped = 0
        self.root: list[Any] | None = None
        """The root's frame, once it started (the ``json`` sink reads its attributes)."""
        self._ns = options.namespaces != "keep"
        self._names: dict[str, str] = {}
        self._declared: dict[str, str] = {}
        self._plain = not (
            options.postprocessor
            or options.force_list
            or options.force_cdata
            or options.rename
            or options.rename_paths
            or options.drop
            or options.coerce_types
            or options.collapse_whitespace
            or self._ns
            or not options.xml_attribs
            or options.cdata_separator
        )
        self._text_runs = bool(options.cdata_separator)
        self._last_was_text = False
        self._expanded = 0

    # -- the parser ------------------------------------------------------------

    def make_parser(self, encoding: str | None = None) -> Any:
        """An expat parser (hardened, see ``parser.py``) wired to this builder."""
        o = self.o
        parser = make_expat_parser(encoding, namespaces=self._ns)
        self.parser = parser
        parser.StartElementHandler = self._start_plain if self._plain else self._start
        parser.EndElementHandler = self._end_plain if self._plain else self._end
        parser.CharacterDataHandler = self._text_run if self._text_runs else self._text
        if self._ns:
            parser.StartNamespaceDeclHandler = self._declare
        if not o.drop_comments:
            parser.CommentHandler = self._comment
        if not o.drop_pis:
            parser.ProcessingInstructionHandler = self._pi
        parser.EntityDeclHandler = (
            self._forbid_entity if o.disable_entities else self._count_expansions
        )
        return parser

    def _count_expansions(self, *_args: Any) -> None:
        """A document declaring entities gets its text counted (see :data:`EXPANSION_RATIO`)."""
        self.parser.CharacterDataHandler = self._text_counted

    def _text_counted(self, data: str) -> None:
        self._expanded += len(data)
        if self._expanded > EXPANSION_FLOOR + EXPANSION_RATIO * self.parser.CurrentByteIndex:
            raise self._error("entity expansion limit exceeded (entities expand too much)")
        if self._text_runs:
            self._text_run(data)
        else:
            self._text(data)

    def feed_string(self, xml: str | bytes) -> Any:
        """Parse a whole small document; return :attr:`top` (tests and examples)."""
        parser = self.make_parser()
        try:
            parser.Parse(xml.encode() if isinstance(xml, str) else xml, True)
        except Exception as exc:
            raise expat_error(exc, parser) from None
        return self.top

    def _forbid_entity(self, *_args: Any) -> None:
        raise XmlError(
            "the document declares an entity (entities are disabled: option 'disable_entities')",
            line=self.parser.CurrentLineNumber,
            column=self.parser.CurrentColumnNumber + 1,
        )

    # -- start -----------------------------------------------------------------

    def _check_start(self, attrs: list[str]) -> None:
        if len(self.frames) >= MAX_DEPTH:
            raise self._error(f"elements nested deeper than {MAX_DEPTH} levels")
        if len(attrs) > 2 * MAX_ATTRIBUTES:
            raise self._error(f"more than {MAX_ATTRIBUTES} attributes on one element")

    def _error(self, message: str) -> XmlError:
        return XmlError(
            message,
            line=self.parser.CurrentLineNumber,
            column=self.parser.CurrentColumnNumber + 1,
        )

    def _start_plain(self, name: str, attrs: list[str]) -> None:
        """Default options: xmltodict's ``startElement`` with nothing to look up."""
        frames = self.frames
        if attrs:
            if len(attrs) > 2 * MAX_ATTRIBUTES or len(frames) >= MAX_DEPTH:
                self._check_start(attrs)
            prefix = self.o.attr_prefix
            item: dict[str, Any] | None = {
                prefix + attrs[i]: attrs[i + 1] for i in range(0, len(attrs), 2)
            }
        else:
            if len(frames) >= MAX_DEPTH:
                self._check_start(attrs)
            item = None
        frame: list[Any] = [name, item, [], None]
        if not frames and self.root is None:
            self.root = frame
        frames.append(frame)
        self._last_was_text = False

    def _start(self, name: str, attrs: list[str]) -> None:
        self._check_start(attrs)
        o = self.o
        name = self.name(name)
        raw: dict[str, Any] = dict(zip(attrs[0::2], attrs[1::2], strict=True))
        if self._declared:
            raw["xmlns"] = self._declared
            self._declared = {}
        frame: list[Any] = [name, None, [], raw or None]
        frames = self.frames
        if not frames and self.root is None:
            self.root = frame
        frames.append(frame)
        self._last_was_text = False
        if raw and o.xml_attribs:
            frame[1] = self._attributes(raw) or None

    def _attributes(self, raw: dict[str, Any]) -> dict[str, Any]:
        o = self.o
        prefix, coerce_types, pp = o.attr_prefix, o.coerce_types, o.postprocessor
        item: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "xmlns" and self._ns:
                if o.namespaces == "strip":
                    continue
                key = prefix + key
            else:
                key = prefix + self.name(key)
                value = coerce(value) if coerce_types else value
            if pp is not None:
                entry = pp(self._pp_path(), key, value)
                if entry:
                    item[entry[0]] = entry[1]
            else:
                item[key] = value
        return item

    def _declare(self, prefix: str | None, uri: str) -> None:
        self._declared[prefix or ""] = uri

    def name(self, name: str) -> str:
        """xmltodict's ``_build_name``: ``uri:local`` → mapped prefix (namespace mode)."""
        if not self._ns:
            return name
        built = self._names.get(name)
        if built is None:
            built = self._names[name] = self._build_name(name)
        return built

    def _build_name(self, name: str) -> str:
        uri, sep, local = name.rpartition(":")
        if not sep:
            return name
        ns = self.o.namespaces
        if ns == "strip":
            return local
        assert not isinstance(ns, str)
        short = ns.get(uri, uri)
        return f"{short}:{local}" if short else local

    # -- text, comments, PIs ---------------------------------------------------

    def _text(self, data: str) -> None:
        if self.frames:
            self.frames[-1][2].append(data)

    def _text_run(self, data: str) -> None:
        """With a ``cdata_separator``: pieces split only where xmltodict's are."""
        if not self.frames:
            return
        pieces = self.frames[-1][2]
        if self._last_was_text and pieces:
            pieces[-1] += data
        else:
            pieces.append(data)
        self._last_was_text = True

    def _comment(self, data: str) -> None:
        self._last_was_text = False
        if self.o.strip_text:
            data = data.strip()
        self._push_other("#comment", data)

    def _pi(self, target: str, data: str) -> None:
        self._last_was_text = False
        self._push_other(f"?{target}", data.strip() if self.o.strip_text else data)

    def _push_other(self, key: str, value: Any) -> None:
        if not self.frames:
            self._push_keyed(self.top, key, value, None)
            return
        frame = self.frames[-1]
        if frame[1] is None:
            frame[1] = {}
        self._push_keyed(frame[1], key, value, None)

    # -- end -------------------------------------------------------------------

    def _end_plain(self, _name: str) -> None:
        """Default options: xmltodict's ``endElement`` inlined."""
        frames = self.frames
        name, item, data, _ = frames.pop()
        self.elements += 1
        self._last_was_text = False
        if len(frames) < self.emit_depth:  # above the records (the json sink's root)
            return
        if data:
            text: str | None = "".join(data) if len(data) > 1 else data[0]
            if self.o.strip_text:
                text = text.strip() or None  # type: ignore[union-attr]
        else:
            text = None
        if item is None:
            if text is None and self.o.drop_empty:
                return
            value: Any = text
        else:
            if text:
                _push(item, self.o.text_key, text)
            value = item
        if len(frames) == self.emit_depth:
            self._emit(name, value, frames)
            return
        parent = frames[-1]
        pitem = parent[1]
        if pitem is None:
            parent[1] = {name: value}
        elif name in pitem:
            old = pitem[name]
            if type(old) is list:
                old.append(value)
            else:
                pitem[name] = [old, value]
        else:
            pitem[name] = value

    def _end(self, _name: str) -> None:
        frames = self.frames
        frame = frames[-1]
        self.elements += 1
        self._last_was_text = False
        if len(frames) <= self.emit_depth:  # above the records (the json sink's root)
            frames.pop()
            return
        name = frame[0]
        path = self._path() if self.o.needs_paths else None
        value = self._value(frame, path)
        frames.pop()
        if value is DROP or (self.o.drop and self.o.drop.matches(name, path)):
            return
        if len(frames) == self.emit_depth:
            frames.append(frame)  # the postprocessor's path still holds the element
            try:
                self._emit(name, value, frames[:-1])
            finally:
                frames.pop()
            return
        parent = frames[-1]
        if parent[1] is None:
            parent[1] = {}
        frames.append(frame)
        try:
            self._push_keyed(parent[1], self._renamed(name, path), value, path, name)
        finally:
            frames.pop()

    def _value(self, frame: list[Any], path: tuple[str, ...] | None) -> Any:
        """The finished value of an element (``DROP`` if cleaning removes it)."""
        o = self.o
        name, item, data = frame[0], frame[1], frame[2]
        text: Any = o.cdata_separator.join(data) if data else None
        if text:
            if o.collapse_whitespace:
                text = _WS.sub(" ", text).strip()
            elif o.strip_text:
                text = text.strip()
        text = text or None
        if text is not None:
            if item is None and _matches(o.force_cdata, name, path):
                item = {}
            if o.coerce_types:
                text = coerce(text)
        if item is None:
            return DROP if text is None and o.drop_empty else text
        if text is not None:
            self._push_keyed(item, o.text_key, text, path)
        return item

    def _push_keyed(
        self,
        item: dict[str, Any],
        key: str,
        value: Any,
        path: tuple[str, ...] | None,
        name: str | None = None,
    ) -> None:
        """xmltodict's ``push_data``: postprocessor, then ``force_list``, then push."""
        pp = self.o.postprocessor
        if pp is not None:
            result = pp(self._pp_path(), key, value)
            if result is None:
                return
            key, value = result
        if key in item:
            _push(item, key, value)
        else:
            _push(item, key, value, self.forced(key, name, path))

    def forced(self, key: str, name: str | None, path: tuple[str, ...] | None) -> bool:
        force = self.o.force_list
        return bool(force) and (
            force.matches(key, path) or (name is not None and name in force.names)
        )

    def _emit(self, name: str, value: Any, ancestors: list[list[Any]]) -> None:
        """An element at the emit depth: a record, or a child of the root in ``json``."""
        if self.is_record is not None and not self.is_record(name, ancestors):
            self.skipped += 1
            return
        if self.emit is None:
            self._push_keyed(self.top, name, value, (name,), name)
            return
        self.records += 1
        assert self.emit is not None
        path = (*(f[0] for f in ancestors), name) if self.o.needs_paths else None
        key = self._renamed(name, path)
        if self.o.postprocessor is not None:
            result = self.o.postprocessor(self._pp_path(), key, value)
            if result is None:
                return
            key, value = result
        self.emit(key, value, self.forced(key, name, path))

    # -- paths -----------------------------------------------------------------

    def _path(self) -> tuple[str, ...]:
        return tuple(f[0] for f in self.frames)

    def _pp_path(self) -> list[tuple[str, Any]]:
        """xmltodict's ``path`` argument: ``(name, raw attributes or None)`` per level."""
        return [(f[0], f[3]) for f in self.frames]

    def _renamed(self, name: str, path: tuple[str, ...] | None) -> str:
        o = self.o
        if path is not None and path in o.rename_paths:
            return o.rename_paths[path]
        return o.rename.get(name, name)

    def root_value(self, frame: list[Any]) -> Any:
        """The value of a root that has no attributes and no children (``json`` sink)."""
        value = self._value([frame[0], None, frame[2], None], (frame[0],))
        return None if value is DROP else value

    def finish_text(self, data: list[str]) -> Any:
        """The root's own text beside its attributes or children (``None``: none)."""
        value = self._value(["", {}, data, None], None)
        return value.get(self.o.text_key)


def _matches(spec: PathSet | bool, name: str, path: tuple[str, ...] | None) -> bool:
    if isinstance(spec, bool):
        return spec
    return spec.matches(name, path)
