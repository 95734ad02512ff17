"""The native XML → JSON path: ``convert_file`` on the C core, else the Python converter.

:func:`convert_file` has the signature of :func:`xmlflow.xml.convert.convert_file`
and gives the same bytes. It runs the C extension ``xmlflow.xml._native`` (expat
through CPython's ``pyexpat`` capsule, JSON written record by record in C) when

- the extension was built and imports, and the expat behind it is 2.4.1 or newer
  (older ones lack the amplification limits);
- ``XMLFLOW_NATIVE`` is not ``0`` (tests and the bench compare both paths);
- every option set is one the C core implements (:func:`unsupported` names the first
  that is not; ``docs/xml.md`` lists them).

Otherwise it hands the call to the Python converter, which it imports only then:
the native path loads neither lxml nor the converter, so ``xmlflow run`` reaches the
first byte sooner. When the extension is missing, one warning line says so, once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import orjson

from xmlflow.errors import JobCancelled, XmlError
from xmlflow.inputs import open_input, source_position
from xmlflow.xml.options import ConvertOptions
from xmlflow.xml.spool import Group
from xmlflow.xml.stats import ConvertStats

__all__ = ["MIN_EXPAT", "convert_file", "native_module", "unsupported"]

log = logging.getLogger(__name__)

MIN_EXPAT = (2, 4, 1)
CHUNK_SIZE = 64 * 1024
"""Bytes parsed per call into C: between two chunks come progress and cancellation
(64 KiB take well under a millisecond)."""
PEEK_BYTES = 1 << 20
PROGRESS_EVERY = 0.1
"""Seconds between progress reports (the bar wants at least four a second)."""

# The Python path's limits (libxml2's without XML_PARSE_HUGE, and tree.MAX_ATTRIBUTES).
MAX_DEPTH = 256
MAX_ATTRIBUTES = 10_000
MAX_NAME = 50_000
MAX_TEXT = 10_000_000

UNKNOWN_ENCODING = "unknown encoding"  # expat's messages for XML_ERROR_UNKNOWN_ENCODING
NO_ELEMENT = "no element found"  # and XML_ERROR_NO_ELEMENTS
_FRIENDLY = [  # expat's words, as the Python path (parser.expat_error) words them
    ("amplification factor", "entity expansion limit exceeded (entities expand too much)"),
    ("recursive entity reference", "entity reference loop (an entity refers to itself)"),
]
_MODES = {"json": 0, "jsonl": 1, "split": 2}
_PEEK = 3
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")
_state: dict[str, Any] = {}


def native_module() -> ModuleType | None:
    """The C extension if it can be used here, else ``None`` (warned about once)."""
    if "module" in _state:
        return _state["module"]  # type: ignore[no-any-return]
    module = None
    if os.environ.get("XMLFLOW_NATIVE", "1") != "0":
        module = _import_native()
    _state["module"] = module
    return module


def _import_native() -> ModuleType | None:
    try:
        from xmlflow.xml import _native  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        log.warning("native XML core unavailable (%s): using the pure-Python converter", exc)
        return None
    version = tuple(_native.expat_version())
    if version < MIN_EXPAT:
        log.warning(
            "native XML core needs expat %s or newer, pyexpat has %s: using the pure-Python "
            "converter",
            ".".join(map(str, MIN_EXPAT)),
            ".".join(map(str, version)),
        )
        return None
    return _native  # type: ignore[no-any-return]


def unsupported(options: ConvertOptions) -> str | None:
    """The first option the C core does not implement (``None``: it does them all)."""
    o = options
    checks = [
        (o.namespaces != "keep", "namespaces"),
        (o.coerce_types, "coerce_types"),
        (o.collapse_whitespace, "collapse_whitespace"),
        (not o.drop_comments, "drop_comments"),
        (not o.drop_pis, "drop_pis"),
        (bool(o.drop), "drop"),
        (bool(o.rename or o.rename_paths), "rename"),
        (bool(o.force_list.paths), "force_list (paths)"),
        (not _outside_names(o.attr_prefix), "attr_prefix"),
        (not _outside_names(o.text_key) or o.text_key.startswith(o.attr_prefix), "text_key"),
        (getattr(o, "xml_attribs", True) is not True, "xml_attribs"),
        (bool(getattr(o, "force_cdata", False)), "force_cdata"),
        (getattr(o, "cdata_separator", "") != "", "cdata_separator"),
        (getattr(o, "postprocessor", None) is not None, "postprocessor"),
    ]
    return next((name for failed, name in checks if failed), None)


def _outside_names(key: str) -> bool:
    """Whether ``key`` can never equal an element name (it starts like no XML name)."""
    return bool(key) and key[0] not in _NAME_START and key[0].isascii()


def convert_file(
    src: Path,
    out: BinaryIO,
    options: ConvertOptions,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> Any:
    """Convert ``src`` to JSON on ``out``, natively when possible (see the module doc)."""
    native = native_module()
    if native is not None and unsupported(options) is None:
        return _NativeRun(native, Path(src), out, options).run(on_progress, is_cancelled)
    from xmlflow.xml.convert import convert_file as python_convert_file

    return python_convert_file(
        src, out, options, on_progress=on_progress, is_cancelled=is_cancelled
    )


class _NativeRun:
    """One conversion on the C core: feed chunks, route the records to the sink."""

    def __init__(self, native: ModuleType, src: Path, out: BinaryIO, o: ConvertOptions) -> None:
        self.native = native
        self.src = src
        self.o = o
        tag = self._peek() if o.mode != "json" and o.record_path is None else None
        self.converter = self._converter(_MODES[o.mode], record_tag=tag)
        self.sink: Any = self._sink(out)

    def _converter(self, mode: int, record_tag: bytes | None = None) -> Any:
        o = self.o
        path = o.record_path if o.mode != "json" else None
        return self.native.Converter(
            mode,
            o.attr_prefix.encode(),
            o.text_key.encode(),
            o.strip_text,
            o.drop_empty,
            frozenset(name.encode() for name in o.force_list.names),
            tuple(p.encode() for p in path) if path else None,
            record_tag,
            None,
            bool(getattr(o, "disable_entities", False)),
            MAX_DEPTH,
            MAX_ATTRIBUTES,
            MAX_NAME,
            MAX_TEXT,
        )

    def _peek(self) -> bytes | None:
        """The root's first repeated child name in the first MiB (the default records)."""
        peek = self._converter(_PEEK)
        with open_input(self.src) as f:
            head = f.read(PEEK_BYTES)
        self._call(peek, head, len(head) < PEEK_BYTES)
        return peek.peeked()  # type: ignore[no-any-return]

    def _sink(self, out: BinaryIO) -> Any:
        if self.o.mode == "json":
            return _DocumentSink(out, self.converter, self.o)
        if self.o.mode == "jsonl":
            return _LinesSink(out)
        from xmlflow.xml.sinks import ZipSink

        return ZipSink(out)

    def _call(self, converter: Any, data: bytes, final: bool) -> Any:
        try:
            return converter.feed(data, final)
        except self.native.ParseError as exc:
            reason, line, column = exc.args
            if reason == UNKNOWN_ENCODING:
                reason += " (expat reads UTF-8, UTF-16 and single-byte encodings)"
            if reason == NO_ELEMENT and converter.stats()[1] == 0:
                reason = "the document is empty (no element found)"
            reason = next((nice for raw, nice in _FRIENDLY if raw in reason), reason)
            raise XmlError(reason, line=line, column=column, filename=self.src.name) from None

    def run(
        self,
        on_progress: Callable[[int, int], None] | None,
        is_cancelled: Callable[[], bool] | None,
    ) -> Any:
        consumed, reported = 0, time.monotonic()
        try:
            with open_input(self.src) as f:
                while True:
                    chunk = f.read(CHUNK_SIZE)
                    consumed += len(chunk)
                    self._route(self._call(self.converter, chunk, not chunk))
                    if not chunk:
                        break
                    if is_cancelled is not None and is_cancelled():
                        raise JobCancelled("conversion cancelled")
                    if on_progress is not None and time.monotonic() - reported >= PROGRESS_EVERY:
                        reported = time.monotonic()
                        on_progress(source_position(f, consumed), self.converter.stats()[0])
                consumed = source_position(f, consumed)
            self.sink.finish()
        except BaseException:
            self.sink.abort()
            raise
        return self._stats(consumed, on_progress)

    def _route(self, segments: Iterable[tuple[bytes, int, bytes]]) -> None:
        for name, count, data in segments:
            self.sink.add_encoded(name.decode(), count, data)

    def _stats(self, consumed: int, on_progress: Callable[[int, int], None] | None) -> Any:

        records, elements, skipped = self.converter.stats()
        if on_progress is not None:
            on_progress(consumed, records)
        return ConvertStats(bytes_in=consumed, records=records, elements=elements, skipped=skipped)


class _LinesSink:
    """JSON Lines: the C core already wrote one line per record."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def add_encoded(self, name: str, count: int, data: bytes) -> None:
        self.out.write(data)

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _key(name: str) -> bytes:
    """An element name as a JSON key: XML names hold no character JSON escapes."""
    return b'"' + name.encode() + b'":'


class _DocumentSink:
    """The whole document as one JSON object, as the Python path's ``JsonDocumentSink``.

    The root's first key streams straight to ``out`` once it is a list; keys first
    seen later (a trailing root-level element too) spool to temporary files, appended
    at the end in order of first appearance, so memory holds one record.
    """

    def __init__(self, out: BinaryIO, converter: Any, o: ConvertOptions) -> None:
        self.out = out
        self.converter = converter
        self.forced = o.force_list.names
        self.text_key = o.text_key
        self.first: str | None = None
        self.pending: bytes | None = None
        self.streaming = False
        self.spools: dict[str, Group] = {}

    def add_encoded(self, name: str, count: int, data: bytes) -> None:
        if self.first is None:
            self.first = name
        if name != self.first:
            spool = self.spools.get(name) or self.spools.setdefault(name, Group())
            spool.add(data, count)
        elif self.streaming:
            self.out.write(b",")  # apart: `b"," + data` would copy a whole feed's records
            self.out.write(data)
        elif self.pending is None and count == 1 and name not in self.forced:
            self.pending = data
        else:
            self._start_stream(data)

    def _open_root(self) -> None:
        root_name, attrs, _ = self.converter.root()
        self.out.write(self._root_key(root_name) + b"{" + attrs)
        self.comma = bool(attrs)

    def _root_key(self, root_name: bytes) -> bytes:
        """``{"root":``, or ``{"root":[`` when ``force_list`` names the root (xmltodict's)."""
        forced = root_name.decode() in self.forced
        self.close = b"]}" if forced else b"}"
        return b"{" + _key(root_name.decode()) + (b"[" if forced else b"")

    def _start_stream(self, data: bytes) -> None:
        assert self.first is not None
        self._open_root()
        self.out.write((b"," if self.comma else b"") + _key(self.first) + b"[")
        self.out.write(self.pending + b"," + data if self.pending is not None else data)
        self.pending = None
        self.streaming = True

    def finish(self) -> None:
        if self.streaming:
            self.out.write(b"]")
            self.comma = True
        elif self._only_text():
            return
        else:
            self._open_root()
            if self.pending is not None and self.first is not None:
                self.out.write((b"," if self.comma else b"") + _key(self.first) + self.pending)
                self.comma = True
        self._members()
        self.out.write(b"}" + self.close)

    def _only_text(self) -> bool:
        """No attributes, no child kept: the root's value is its text or null."""
        root_name, attrs, text = self.converter.root()
        if attrs or self.pending is not None or self.spools:
            return False
        self.out.write(self._root_key(root_name) + (text or b"null") + self.close)
        return True

    def _members(self) -> None:
        for name, spool in self.spools.items():
            self.out.write((b"," if self.comma else b"") + _key(name))
            spool.copy_to(self.out, as_list=spool.count > 1 or name in self.forced)
            self.comma = True
        text = self.converter.root()[2]
        if text is not None:
            key = orjson.dumps(self.text_key) + b":"
            self.out.write((b"," if self.comma else b"") + key + text)

    def abort(self) -> None:
        for spool in self.spools.values():
            spool.spool.close()
