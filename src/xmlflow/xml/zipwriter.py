"""A write-only zip (with Zip64) whose memory does not grow with the number of entries.

``zipfile.ZipFile`` keeps one ``ZipInfo`` per entry until ``close()`` and spends
~20 µs per ``writestr``: a million records cost hundreds of MB and most of the run.
Here each entry's central-directory record is appended to a temporary file as soon
as the entry is written, and copied after the last one. Entries are small and whole
in memory, so sizes and CRC go in the local header (no data descriptors). The
result is a standard archive that ``zipfile``, ``unzip`` and ``bsdtar`` read.

A step writes its output with it (``split`` mode); the download of a job's files as one
zip is another matter, streamed from files on disk: :mod:`xmlflow.web.zipstream`.
"""

from __future__ import annotations

import struct
import tempfile
import time
import zlib
from typing import BinaryIO

__all__ = ["ZipWriter"]

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_LOCAL_HEAD = struct.Struct("<IHHHHH")  # signature, version, flags, method, time, date
_LOCAL_TAIL = struct.Struct("<IIIHH")  # crc, sizes, name and extra lengths
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_CENTRAL_HEAD = struct.Struct("<IHHHHHH")
_CENTRAL_TAIL = struct.Struct("<IIIHHHHHII")
CENTRAL_BUFFER = 1 << 20  # bytes of central records gathered before they go to the file
_ZIP64_END = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")
_VERSION = 45  # 4.5: Zip64
_UTF8 = 0x800
_MAX32 = 0xFFFFFFFF


def _dos_time(now: float) -> tuple[int, int]:
    t = time.localtime(now)
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), (
        ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    )


class ZipWriter:
    """``add(name, data)`` entries one by one, then ``close()``; ``out`` need not seek."""

    def __init__(self, out: BinaryIO, level: int = 0) -> None:
        """``level`` 0 stores entries (the default: a deflate stream per small entry costs
        ~25 µs to set up, more than converting the record); 1-9 deflates them."""
        self.out = out
        self.level = level
        self.method = 8 if level else 0
        self.offset = 0
        self.count = 0
        self.central = tempfile.TemporaryFile()
        self.central_size = 0
        self.pending = bytearray()  # central records not yet in `central`
        self.time, self.date = _dos_time(time.time())
        fixed = (_UTF8, self.method, self.time, self.date)
        self._local_head = _LOCAL_HEAD.pack(0x04034B50, 20, *fixed)
        self._central_head = _CENTRAL_HEAD.pack(0x02014B50, _VERSION, 20, *fixed)

    def add(self, name: str, data: bytes) -> None:
        """One entry. The headers' fixed fields are packed once per archive and the
        central records gathered in memory up to :data:`CENTRAL_BUFFER`: a ``split``
        output adds an entry per record, so this is per-record cost (~3 µs)."""
        if self.level:
            packer = zlib.compressobj(self.level, zlib.DEFLATED, -15)
            body = packer.compress(data) + packer.flush()
        else:
            body = data
        crc, raw = zlib.crc32(data), name.encode()
        size, usize, name_len = len(body), len(data), len(raw)
        self.out.write(
            self._local_head + _LOCAL_TAIL.pack(crc, size, usize, name_len, 0) + raw + body
        )
        offset = self.offset
        if offset < _MAX32:
            record = self._central_head + _CENTRAL_TAIL.pack(
                crc, size, usize, name_len, 0, 0, 0, 0, 0, offset
            )
            self.pending += record + raw
        else:
            self.pending += self._central64(raw, crc, size, usize, offset)
        if len(self.pending) >= CENTRAL_BUFFER:
            self._spill()
        self.offset = offset + _LOCAL.size + name_len + size
        self.count += 1

    def _central64(self, raw: bytes, crc: int, size: int, usize: int, offset: int) -> bytes:
        """A central record whose local header is past 4 GiB: its offset in a Zip64 extra."""
        extra = struct.pack("<HHQ", 1, 8, offset)
        record = _CENTRAL.pack(
            0x02014B50,
            _VERSION,
            _VERSION,
            _UTF8,
            self.method,
            self.time,
            self.date,
            crc,
            size,
            usize,
            len(raw),
            len(extra),
            0,
            0,
            0,
            0,
            _MAX32,
        )
        return record + raw + extra

    def _spill(self) -> None:
        self.central.write(self.pending)
        self.central_size += len(self.pending)
        self.pending = bytearray()

    def abort(self) -> None:
        """Drop the spooled central directory (after a failure)."""
        self.central.close()

    def close(self) -> None:
        """Write the central directory and the (Zip64) end records."""
        self._spill()
        start = self.offset
        self.central.seek(0)
        while chunk := self.central.read(1 << 20):
            self.out.write(chunk)
        self.central.close()
        end64 = start + self.central_size
        self.out.write(
            _ZIP64_END.pack(
                0x06064B50,
                44,
                _VERSION,
                _VERSION,
                0,
                0,
                self.count,
                self.count,
                self.central_size,
                start,
            )
        )
        self.out.write(_ZIP64_LOCATOR.pack(0x07064B50, 0, end64, 1))
        count = min(self.count, 0xFFFF)
        self.out.write(
            _END.pack(
                0x06054B50,
                0,
                0,
                count,
                count,
                min(self.central_size, _MAX32),
                min(start, _MAX32),
                0,
            )
        )
