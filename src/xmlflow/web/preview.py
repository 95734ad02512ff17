"""A look inside an output without downloading it: the first records, or the first lines.

An output may be a gigabyte, so a preview never reads the whole file: every request reads
one bounded window (``bytes``, at most :data:`MAX_WINDOW`) from a cursor and returns the
records that lie whole inside it (at most ``limit``, at most :data:`MAX_LIMIT`), with a
``next`` cursor where the following page starts. What each kind of output holds:

- JSON Lines: a record per line; the cursor is the byte offset of a line.
- JSON: one document. The records are the items of its first array, found by walking
  into the document's first objects (``{"catalog": {"@region": "eu", "book": [...]}}``
  gives the books, at path ``catalog.book``); a document with no array in its window
  shows the members of its top object. Values are located with a regular expression
  over the window and only whole items are parsed, so nothing past the window is read.
- A zip of records (the ``split`` output): each member is a record, read from its local
  header in turn; the record count comes from the archive's end record.
- Text (``.txt``, ``.csv``, ``.xml``…): lines.

The record count is given when it is cheap to know: a JSON Lines file up to
:data:`COUNT_SCAN_LIMIT` is counted at once, a bigger one in the background for later
pages (both cached); a zip's end record has it; a JSON array or a text whose end lies in
the window is counted there. Otherwise ``count`` is null and ``count_at_least`` says how
many records exist for sure.
"""

from __future__ import annotations

import re
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from flask import Response, request

from ..errors import BadRequest, Unprocessable
from . import service
from .api import _int_arg, bp, get_job_or_404  # the API's one bounded-integer check

DEFAULT_LIMIT = 20
MAX_LIMIT = 200
DEFAULT_WINDOW = 256 * 1024
MIN_WINDOW = 1024
MAX_WINDOW = 4 * 1024 * 1024
COUNT_SCAN_LIMIT = 64 * 1024 * 1024
"""JSON Lines files up to this size are counted (a newline scan, ~20 ms from cache)."""
MAX_LINE_CHARS = 2000
"""A text line longer than this is cut: a preview is for reading, not for copying."""

TEXT_SUFFIXES = {".txt", ".csv", ".tsv", ".xml", ".log", ".md", ".html", ".yaml", ".yml"}

_CURSOR = re.compile(r"([ao]?)([0-9]{1,15}):([0-9]{1,12})")
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"')  # unrolled: ~5x faster
_SCALAR = re.compile(rb"[^,\]}\s]+")
_SPACE = re.compile(rb"[ \t\r\n]*")
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_LOCAL_SIG = 0x04034B50


@bp.get("/api/jobs/<job_id>/outputs/<name>/preview")
def preview_output(job_id: str, name: str) -> Response:
    """The first records (or lines) of one output from ``cursor``; see the module doc.

    Serialised with orjson, not Flask's ``jsonify``: that one sorts keys, and a record's
    keys are shown in the order the document has them.
    """
    job = get_job_or_404(job_id)
    path = service().output_path(job, name)
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    window = _int_arg("bytes", DEFAULT_WINDOW, MIN_WINDOW, MAX_WINDOW)
    kind = output_kind(name)
    size = path.stat().st_size
    cursor = _parse_cursor(request.args.get("cursor"), kind, size)
    page = PREVIEWERS[kind](path, size, cursor, limit, window)
    body = {"name": name, "kind": kind, "size": size, **page.to_json()}
    return Response(orjson.dumps(body), mimetype="application/json")


def output_kind(name: str) -> str:
    """How an output is previewed, from its extension (the one that chose its media type)."""
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix == ".zip":
        return "zip"
    return "text" if suffix in TEXT_SUFFIXES else "binary"


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: a byte offset, the index of its first record, and for JSON
    whether the records are an array's items (``a``) or an object's members (``o``)."""

    offset: int = 0
    index: int = 0
    container: str = ""


def _parse_cursor(raw: str | None, kind: str, size: int) -> Cursor | None:
    if raw is None or raw == "":
        return None
    match = _CURSOR.fullmatch(raw)
    if not match or (kind == "json") != bool(match[1]) or int(match[2]) > size:
        raise BadRequest(
            f"cursor {raw[:40]!r} is not one this output gave: "
            "use the 'next' value of the previous page",
            details={"parameter": "cursor"},
        )
    return Cursor(int(match[2]), int(match[3]), match[1])


@dataclass
class Page:
    items: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] | None = None
    next: str | None = None
    count: int | None = None
    seen: int = 0
    oversized: bool = False
    path: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "count": self.count,
            "count_at_least": self.count if self.count is not None else self.seen,
            "next": self.next,
            "oversized": self.oversized,
        }
        if self.lines is not None:
            d["lines"] = self.lines
        else:
            d["items"] = self.items
        if self.path is not None:
            d["path"] = self.path
        return d


def _read(path: Path, offset: int, window: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(window)


# -- JSON Lines and text ---------------------------------------------------------------------


def _lines(buf: bytes, at_end: bool, limit: int) -> tuple[list[bytes], int]:
    """Whole lines of ``buf`` (the last one only if the file ends there), and bytes used."""
    out: list[bytes] = []
    used = 0
    while len(out) < limit:
        nl = buf.find(b"\n", used)
        if nl < 0:
            if at_end and used < len(buf):
                out.append(buf[used:])
                used = len(buf)
            break
        out.append(buf[used:nl])
        used = nl + 1
    return out, used


def preview_jsonl(path: Path, size: int, cursor: Cursor | None, limit: int, window: int) -> Page:
    start = cursor or Cursor()
    buf = _read(path, start.offset, window)
    at_end = start.offset + len(buf) >= size
    raw_lines, used = _lines(buf, at_end, limit)
    page = Page()
    index = start.index
    for line in raw_lines:
        if not line.strip():
            continue
        try:
            page.items.append({"index": index, "value": orjson.loads(line)})
        except orjson.JSONDecodeError as exc:
            text = line[:200].decode("utf-8", "replace")
            page.items.append({"index": index, "error": f"not JSON: {exc}", "text": text})
        index += 1
    end = start.offset + used
    page.oversized = not raw_lines and not at_end
    page.next = f"{end}:{index}" if end < size and not page.oversized else None
    page.seen = index
    page.count = index if page.next is None and not page.oversized else _jsonl_count(path, size)
    return page


_counts: OrderedDict[tuple[str, int, int], int] = OrderedDict()
_counts_lock = threading.Lock()
_counting = threading.Semaphore(1)
"""One background count at a time per process: a burst of previews never scans in parallel."""


def _jsonl_count(path: Path, size: int) -> int | None:
    """Lines in a JSON Lines file, cached by (path, size, mtime).

    Up to :data:`COUNT_SCAN_LIMIT` the file is counted in the request; a bigger one is
    counted in a background thread (if none is running) and this request gets None: a
    later page, "Show more", gets the count.
    """
    key = (str(path), size, path.stat().st_mtime_ns)
    with _counts_lock:
        if key in _counts:
            _counts.move_to_end(key)
            return _counts[key]
    if size <= COUNT_SCAN_LIMIT:
        return _count_lines(path, key)
    if _counting.acquire(blocking=False):
        threading.Thread(target=_count_in_background, args=(path, key), daemon=True).start()
    return None


def _count_in_background(path: Path, key: tuple[str, int, int]) -> None:
    try:
        _count_lines(path, key)
    except OSError:
        pass  # the output was removed meanwhile: nothing to count
    finally:
        _counting.release()


def _count_lines(path: Path, key: tuple[str, int, int]) -> int:
    count = 0
    last = b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    count += last != b"\n"
    with _counts_lock:
        _counts[key] = count
        while len(_counts) > 256:
            _counts.popitem(last=False)
    return count


def preview_text(path: Path, size: int, cursor: Cursor | None, limit: int, window: int) -> Page:
    start = cursor or Cursor()
    buf = _read(path, start.offset, window)
    at_end = start.offset + len(buf) >= size
    raw_lines, used = _lines(buf, at_end, limit)
    if not raw_lines and buf:  # one line longer than the window: show its start
        raw_lines, used = [buf], len(buf)
    lines = [_shorten(line.rstrip(b"\r").decode("utf-8", "replace")) for line in raw_lines]
    end = start.offset + used
    index = start.index + len(lines)
    count = None
    if at_end:  # the rest of the file is in the window: its lines are counted for free
        rest = buf[used:]
        count = index + rest.count(b"\n") + (bool(rest) and not rest.endswith(b"\n"))
    more = end < size
    return Page(lines=lines, next=f"{end}:{index}" if more else None, seen=index, count=count)


def _shorten(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "…"


# -- a zip of records ----------------------------------------------------------------------------


def preview_zip(path: Path, size: int, cursor: Cursor | None, limit: int, window: int) -> Page:
    """Members in archive order, each from its local header: no central directory read."""
    start = cursor or Cursor()
    page = Page(count=_zip_count(path, size))
    offset, index = start.offset, start.index
    with path.open("rb") as f:
        while len(page.items) < limit:
            f.seek(offset)
            head = f.read(_LOCAL.size)
            if len(head) < _LOCAL.size or _LOCAL.unpack(head)[0] != _LOCAL_SIG:
                offset = size  # the central directory: no more members
                break
            _, _, flags, method, _, _, _, csize, usize, nlen, xlen = _LOCAL.unpack(head)
            if flags & 0x8 or method not in (0, 8) or max(csize, usize) > window:
                page.oversized = not page.items
                if not page.items:
                    offset = size
                break
            name = f.read(nlen).decode("utf-8", "replace")
            f.seek(xlen, 1)
            body = f.read(csize)
            data = zlib.decompressobj(-15).decompress(body, window) if method == 8 else body
            page.items.append({"index": index, "key": name, **_member_value(name, data)})
            index += 1
            offset += _LOCAL.size + nlen + xlen + csize
    page.seen = index
    page.next = f"{offset}:{index}" if offset < size else None
    if page.next is None and not page.oversized and page.count is None:
        page.count = index
    return page


def _member_value(name: str, data: bytes) -> dict[str, Any]:
    if name.lower().endswith(".json"):
        try:
            return {"value": orjson.loads(data)}
        except orjson.JSONDecodeError as exc:
            return {"error": f"not JSON: {exc}", "text": data[:200].decode("utf-8", "replace")}
    return {"value": _shorten(data.decode("utf-8", "replace"))}


def _zip_count(path: Path, size: int) -> int | None:
    """The entry count of the end record (Zip64's when the plain one overflowed)."""
    tail_size = min(size, 98)
    with path.open("rb") as f:
        f.seek(size - tail_size)
        tail = f.read(tail_size)
    end = tail[-22:]
    if len(end) < 22 or end[:4] != b"PK\x05\x06":
        return None
    count: int = struct.unpack("<H", end[10:12])[0]
    if count != 0xFFFF:
        return count
    z64 = tail[:-42][-56:] if len(tail) >= 98 else b""
    if z64[:4] != b"PK\x06\x06":
        return None
    total: int = struct.unpack("<Q", z64[32:40])[0]
    return total


# -- one JSON document ---------------------------------------------------------------------------


class _Cut(Exception):
    """The value runs past the window."""


def _skip_space(buf: bytes, pos: int) -> int:
    match = _SPACE.match(buf, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _value_end(buf: bytes, pos: int) -> int:
    """Where the JSON value starting at ``pos`` ends; :class:`_Cut` if past the window."""
    if pos >= len(buf):
        raise _Cut
    first = buf[pos : pos + 1]
    if first == b'"' or first in (b"[", b"{"):
        depth = 0
        for match in _TOKEN.finditer(buf, pos):
            token = match[0]
            if token == b'"':
                raise _Cut  # a string cut by the window
            if token in (b"[", b"{"):
                depth += 1
            elif token in (b"]", b"}"):
                depth -= 1
            if depth == 0:
                return match.end()
        raise _Cut
    scalar = _SCALAR.match(buf, pos)
    if scalar is None:
        raise ValueError(f"unexpected {first!r} at byte {pos}")
    if scalar.end() >= len(buf):
        raise _Cut  # a number may go on past the window
    return scalar.end()


def _next_item(buf: bytes, pos: int, container: str) -> tuple[str | None, int, int] | None:
    """The next item of a container from ``pos`` (after ``[``, ``{`` or an item):
    ``(key, value start, value end)``, or None at the container's end."""
    pos = _skip_space(buf, pos)
    if buf[pos : pos + 1] == b",":
        pos = _skip_space(buf, pos + 1)
    if pos >= len(buf):
        raise _Cut
    if buf[pos : pos + 1] in (b"]", b"}"):
        return None
    key = None
    if container == "o":
        key_end = _value_end(buf, pos)
        key = orjson.loads(buf[pos:key_end])
        pos = _skip_space(buf, key_end)
        if buf[pos : pos + 1] != b":":
            raise _Cut if pos >= len(buf) else ValueError(f"expected ':' at byte {pos}")
        pos = _skip_space(buf, pos + 1)
    return key, pos, _value_end(buf, pos)


def _find_records(buf: bytes) -> tuple[list[str], str, int]:
    """Walk into the document to its first array: its path, ``a`` and where its items start.

    Objects are walked member by member; a member that is an object is walked into, one
    that is a scalar is passed over. With no array in the window, the records are the
    top object's members (``o``), or the document itself when it is not a container.
    """
    top = _skip_space(buf, 0)
    kind = buf[top : top + 1]
    if kind == b"[":
        return [], "a", top + 1
    if kind != b"{":
        return [], "", top
    found = _array_in(buf, top + 1, [])
    return found if found is not None else ([], "o", top + 1)


def _array_in(buf: bytes, pos: int, path: list[str]) -> tuple[list[str], str, int] | None:
    try:
        while (item := _next_item_start(buf, pos)) is not None:
            key, start = item
            first = buf[start : start + 1]
            if first == b"[":
                return [*path, key], "a", start + 1
            if first == b"{":
                found = _array_in(buf, start + 1, [*path, key])
                if found is not None:
                    return found
            pos = _value_end(buf, start)
    except _Cut:
        return None
    return None


def _next_item_start(buf: bytes, pos: int) -> tuple[str, int] | None:
    """Like :func:`_next_item` for an object, without finding the value's end first
    (a member holding the records may be far larger than the window)."""
    pos = _skip_space(buf, pos)
    if buf[pos : pos + 1] == b",":
        pos = _skip_space(buf, pos + 1)
    if pos >= len(buf):
        raise _Cut
    if buf[pos : pos + 1] == b"}":
        return None
    key_end = _value_end(buf, pos)
    key = str(orjson.loads(buf[pos:key_end]))
    pos = _skip_space(buf, key_end)
    if buf[pos : pos + 1] != b":":
        raise _Cut
    return key, _skip_space(buf, pos + 1)


def preview_json(path: Path, size: int, cursor: Cursor | None, limit: int, window: int) -> Page:
    base = cursor.offset if cursor else 0
    buf = _read(path, base, window)
    at_end = base + len(buf) >= size
    page = Page()
    try:
        if cursor is None:
            page.path, container, pos = _find_records(buf)
            index = 0
            if not container:  # a scalar document: one record
                page.count, page.oversized = 1, not at_end
                if at_end:
                    page.items.append({"index": 0, "value": orjson.loads(buf)})
                return page
        else:
            container, pos, index = cursor.container, 0, cursor.index
        return _json_items(page, buf, base, (pos, container, index), limit, at_end)
    except (ValueError, orjson.JSONDecodeError) as exc:
        message = f"{path.name} is not valid JSON where the preview read it: {exc}"
        raise Unprocessable(message) from None


def _json_items(
    page: Page, buf: bytes, base: int, at: tuple[int, str, int], limit: int, at_end: bool
) -> Page:
    """Up to ``limit`` items from ``at`` (position in the window, container, index)."""
    pos, container, index = at
    ended = False
    try:
        while len(page.items) < limit:
            item = _next_item(buf, pos, container)
            if item is None:
                ended = True
                break
            key, start, end = item
            entry: dict[str, Any] = {"index": index, "value": orjson.loads(buf[start:end])}
            if key is not None:
                entry["key"] = key
            page.items.append(entry)
            index, pos = index + 1, end
        ended = _closes(buf, pos)
    except _Cut:
        page.oversized = not page.items
    page.seen = index
    if ended:
        page.count = index
    elif not page.oversized:
        page.next = f"{container}{base + pos}:{index}"
        if at_end:  # the rest of the file is in the window: count it
            page.count = _count_rest(buf, pos, container, index)
    return page


def _count_rest(buf: bytes, pos: int, container: str, index: int) -> int | None:
    """The container's item count when the window holds the rest of the file (values
    located, not parsed: one more regular-expression pass over the window)."""
    try:
        while (item := _next_item(buf, pos, container)) is not None:
            index, pos = index + 1, item[2]
    except (_Cut, ValueError):
        return None
    return index


def preview_binary(path: Path, size: int, cursor: Cursor | None, limit: int, window: int) -> Page:
    """Nothing to show but the size: the page offers the download."""
    return Page()


def _closes(buf: bytes, pos: int) -> bool:
    """True when the container ends right after ``pos``: the count is then known."""
    pos = _skip_space(buf, pos)
    return buf[pos : pos + 1] in (b"]", b"}")


PREVIEWERS = {
    "jsonl": preview_jsonl,
    "json": preview_json,
    "zip": preview_zip,
    "text": preview_text,
    "binary": preview_binary,
}
