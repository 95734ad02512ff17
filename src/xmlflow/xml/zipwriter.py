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
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
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
        self.time, self.date = _dos_time(time.time())

    def add(self, name: str, data: bytes) -> None:
        if self.level:
            packer = zlib.compressobj(self.level, zlib.DEFLATED, -15)
            body = packer.compress(data) + packer.flush()
        else:
            body = data
        crc, raw = zlib.crc32(data), name.encode()
        header = _LOCAL.pack(
            0x04034B50,
            20,
            _UTF8,
            self.method,
            self.time,
            self.date,
            crc,
            len(body),
            len(data),
            len(raw),
            0,
        )
        self.out.write(header + raw + body)
        self._central(raw, crc, len(body), len(data))
        self.offset += len(header) + len(raw) + len(body)
        self.count += 1

    def _central(self, raw: bytes, crc: int, size: int, usize: int) -> None:
        extra = b""
        offset = self.offset
        if offset >= _MAX32:
            extra, offset = struct.pack("<HHQ", 1, 8, offset), _MAX32
        record = _CENTRAL.pack(
            0x02014B50,
            _VERSION,
            _VERSION if extra else 20,
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
            offset,
        )
        self.central.write(record + raw + extra)
        self.central_size += len(record) + len(raw) + len(extra)

    def abort(self) -> None:
        """Drop the spooled central directory (after a failure)."""
        self.central.close()

    def close(self) -> None:
        """Write the central directory and the (Zip64) end records."""
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
