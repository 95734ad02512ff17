"""Where converted records go: one JSON document, JSON Lines, or a zip of JSON files.

Every sink writes as records arrive, so memory holds one record, never the output.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Protocol

import orjson

from xmlflow.xml.spool import Group
from xmlflow.xml.tree import TreeBuilder
from xmlflow.xml.zipwriter import ZipWriter

__all__ = ["JsonDocumentSink", "JsonLinesSink", "RecordSink", "WholeDocumentSink", "ZipSink"]


class RecordSink(Protocol):
    def add(self, name: str, value: Any, forced: bool) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None:
        """Release temporary files after a failure (the output is discarded)."""


class JsonLinesSink:
    """One line per record: the record's value, as xmltodict's ``item_callback`` sees it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def add(self, name: str, value: Any, forced: bool = False) -> None:
        self.out.write(orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE))

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


class ZipSink:
    """One ``NNNNNN-name.json`` per record in a zip, written entry by entry."""

    def __init__(self, out: BinaryIO) -> None:
        self.zip = ZipWriter(out)
        self.count = 0
        self.safe: dict[str, str] = {}  # record name -> its part of the entry names

    def add(self, name: str, value: Any, forced: bool = False) -> None:
        self.add_encoded(name, 1, orjson.dumps(value))

    def add_encoded(self, name: str, count: int, data: bytes) -> None:
        """One record already in JSON (the native path's); ``count`` is always 1 here."""
        self.count += 1
        safe = self.safe.get(name)
        if safe is None:  # records share a few names: each is made safe once
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
            if len(self.safe) < 1024:
                self.safe[name] = safe
        self.zip.add(f"{self.count:06d}-{safe}.json", data)

    def finish(self) -> None:
        self.zip.close()

    def abort(self) -> None:
        self.zip.abort()


class WholeDocumentSink:
    """The document built in memory by the builder, written once at the end."""

    def __init__(self, out: BinaryIO, builder: TreeBuilder) -> None:
        self.out = out
        self.builder = builder

    def add(self, name: str, value: Any, forced: bool = False) -> None:
        raise AssertionError("the whole-document builder emits nothing")

    def finish(self) -> None:
        top, root = self.builder.top, self.builder.root
        if not top and root is not None:  # an empty root that drop_empty removed
            top = {root[0]: None}
        self.out.write(orjson.dumps(top))

    def abort(self) -> None:
        pass


class JsonDocumentSink:
    """The whole document as one JSON object, streamed: ``{"root": {..., "rec": [...]}}``.

    Children of the root arrive one at a time, already converted. The first key under
    the root is streamed straight to ``out`` once it is known to be a list (its second
    value, or ``force_list``); keys first seen later are spooled to temporary files
    and appended at the end, which keeps xmltodict's key order (attributes, children
    by first appearance, ``#text``) without holding more than one record in memory.
    The root's attributes and text are read from the builder's root frame.
    """

    builder: TreeBuilder

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.first: str | None = None
        self.pending: bytes | None = None
        self.streaming = False
        self.groups: dict[str, Group] = {}
        self.forced: set[str] = set()

    def add(self, name: str, value: Any, forced: bool = False) -> None:
        data = orjson.dumps(value)
        if forced:
            self.forced.add(name)
        if self.first is None:
            self.first = name
        if name != self.first:
            group = self.groups.get(name)
            if group is None:
                group = self.groups[name] = Group()
            group.add(data)
        elif self.streaming:
            self.out.write(b"," + data)
        elif self.pending is None and not forced:
            self.pending = data
        else:
            self._start_stream()
            self.out.write(b"," + data if self.pending is not None else data)
            self.pending = None
            self.streaming = True

    def _root(self) -> list[Any]:
        root = self.builder.root
        assert root is not None
        return root

    def _open_root(self) -> bytes:
        """``{"name":`` (``[`` too when ``force_list`` names the root, as xmltodict)."""
        name = self._root()[0]
        forced = self.builder.forced(name, name, (name,))
        return b"{" + orjson.dumps(name) + (b":[" if forced else b":")

    def _close_root(self) -> bytes:
        name = self._root()[0]
        return b"]}" if self.builder.forced(name, name, (name,)) else b"}"

    def _attrs(self) -> list[bytes]:
        attrs = self._root()[1] or {}
        return [orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in attrs.items()]

    def _start_stream(self) -> None:
        self.out.write(self._open_root() + b"{")
        for member in self._attrs():
            self.out.write(member + b",")
        self.out.write(orjson.dumps(self.first) + b":[")
        if self.pending is not None:
            self.out.write(self.pending)

    def abort(self) -> None:
        for group in self.groups.values():
            group.spool.close()

    def finish(self) -> None:
        if self.streaming:
            self.out.write(b"]")
            self._finish_members(comma=True)
            self.out.write(b"}" + self._close_root())
            return
        self._finish_small()

    def _finish_members(self, *, comma: bool) -> None:
        for name, group in self.groups.items():
            self.out.write((b"," if comma else b"") + orjson.dumps(name) + b":")
            group.copy_to(self.out, as_list=group.count > 1 or name in self.forced)
            comma = True
        text = self.builder.finish_text(self._root()[2])
        if text is not None:
            key = orjson.dumps(self.builder.o.text_key)
            self.out.write((b"," if comma else b"") + key + b":" + orjson.dumps(text))

    def _finish_small(self) -> None:
        """Nothing was streamed: the root holds at most one value of its first key."""
        root = self._root()
        members = self._attrs()
        if not members and self.pending is None and not self.groups:
            value = self.builder.root_value(root)
            self.out.write(self._open_root() + orjson.dumps(value) + self._close_root())
            return
        if self.pending is not None:
            members.append(orjson.dumps(self.first) + b":" + self.pending)
        self.out.write(self._open_root() + b"{" + b",".join(members))
        self._finish_members(comma=bool(members))
        self.out.write(b"}" + self._close_root())
