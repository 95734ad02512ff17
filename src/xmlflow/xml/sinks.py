"""Where converted records go: one JSON document, JSON Lines, or a zip of JSON files.

Every sink writes as records arrive, so memory holds one record, never the output.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Protocol

import orjson

from xmlflow.xml.spool import Group
from xmlflow.xml.tree import DROP, TreeConverter
from xmlflow.xml.zipstream import ZipWriter

__all__ = ["JsonDocumentSink", "JsonLinesSink", "RecordSink", "ZipSink"]


class RecordSink(Protocol):
    def add(self, name: str, value: Any, forced: bool) -> None: ...
    def finish(self, root: Any) -> None: ...
    def abort(self) -> None:
        """Release temporary files after a failure (the output is discarded)."""


class JsonLinesSink:
    """One line per record: the record's value, as xmltodict's ``item_callback`` sees it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def add(self, name: str, value: Any, forced: bool = False) -> None:
        self.out.write(orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE))

    def finish(self, root: Any) -> None:
        pass

    def abort(self) -> None:
        pass


class ZipSink:
    """One ``NNNNNN-name.json`` per record in a zip, written entry by entry."""

    def __init__(self, out: BinaryIO) -> None:
        self.zip = ZipWriter(out)
        self.count = 0

    def add(self, name: str, value: Any, forced: bool = False) -> None:
        self.add_encoded(name, 1, orjson.dumps(value))

    def add_encoded(self, name: str, count: int, data: bytes) -> None:
        """One record already in JSON (the native path's); ``count`` is always 1 here."""
        self.count += 1
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
        self.zip.add(f"{self.count:06d}-{safe}.json", data)

    def finish(self, root: Any) -> None:
        self.zip.close()

    def abort(self) -> None:
        self.zip.abort()


class JsonDocumentSink:
    """The whole document as one JSON object, streamed: ``{"root": {..., "rec": [...]}}``.

    Children of the root arrive one at a time (the driver deletes each after
    conversion). The first key under the root is streamed straight to ``out`` once it
    is known to be a list (its second value, or ``force_list``); keys first seen later
    are spooled to temporary files and appended at the end, which keeps xmltodict's
    key order (attributes, children by first appearance, ``#text``) without holding
    more than one record in memory.
    """

    def __init__(self, out: BinaryIO, conv: TreeConverter) -> None:
        self.out = out
        self.conv = conv
        self.first: str | None = None
        self.pending: bytes | None = None
        self.streaming = False
        self.groups: dict[str, Group] = {}
        self.forced: set[str] = set()
        self.text: list[str] = []
        self.root: Any = None

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

    def add_text(self, text: str | None) -> None:
        """Text directly inside the root (``root.text`` and the children's tails)."""
        if text and (not text.isspace() or self.text):
            self.text.append(text)

    def set_root(self, root: Any) -> None:
        self.root = root

    def _root_name(self) -> str:
        return self.conv.name(self.root)

    def _start_stream(self) -> None:
        self.out.write(b"{" + orjson.dumps(self._root_name()) + b":{")
        attrs = self.conv.attributes(self.root, self.root.attrib, None) if self._has_attrs() else {}
        for key, value in attrs.items():
            self.out.write(orjson.dumps(key) + b":" + orjson.dumps(value) + b",")
        self.out.write(orjson.dumps(self.first) + b":[")
        if self.pending is not None:
            self.out.write(self.pending)

    def _has_attrs(self) -> bool:
        return bool(self.root.attrib) or self.conv.has_namespaces

    def abort(self) -> None:
        for group in self.groups.values():
            group.spool.close()

    def finish(self, root: Any) -> None:
        self.root = root
        if self.streaming:
            self.out.write(b"]")
            self._finish_members(comma=True)
            self.out.write(b"}}")
            return
        self._finish_small()

    def _finish_members(self, *, comma: bool) -> None:
        for name, group in self.groups.items():
            self.out.write((b"," if comma else b"") + orjson.dumps(name) + b":")
            group.copy_to(self.out, as_list=group.count > 1 or name in self.forced)
            comma = True
        text = self.conv.finish_value(None, "".join(self.text))
        if text is not DROP and text is not None:
            key = orjson.dumps(self.conv.o.text_key)
            self.out.write((b"," if comma else b"") + key + b":" + orjson.dumps(text))

    def _finish_small(self) -> None:
        """Nothing was streamed: the root holds at most one value of its first key."""
        attrs = self.conv.attributes(self.root, self.root.attrib, None) if self._has_attrs() else {}
        name = orjson.dumps(self._root_name())
        if not attrs and self.pending is None and not self.groups:
            text = self.conv.finish_value(None, "".join(self.text))
            value = None if text is DROP else text
            self.out.write(b"{" + name + b":" + orjson.dumps(value) + b"}")
            return
        members = [orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in attrs.items()]
        if self.pending is not None:
            members.append(orjson.dumps(self.first) + b":" + self.pending)
        self.out.write(b"{" + name + b":{" + b",".join(members))
        self._finish_members(comma=bool(members))
        self.out.write(b"}}")
