"""A zip archive produced as a stream of chunks, never whole in memory or on disk.

:mod:`zipfile` can write to a stream it cannot seek: it then puts each entry's CRC
and sizes in a data descriptor after the entry's data instead of going back to patch
the local header. So a sink that hands over whatever was written so far is all it
takes; no third-party library is needed. Memory stays at about one read chunk plus
what the compressor holds back, whatever the size of the outputs.

It serves the download of a job's outputs (a few files, any size); a step that writes
millions of small entries uses :class:`xmlflow.xml.zipwriter.ZipWriter` instead.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK_SIZE = 64 * 1024


class _Sink(io.RawIOBase):
    """A write-only, non-seekable stream that keeps written bytes until they are taken."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def stream_zip(files: Iterable[tuple[str, Path]], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the bytes of a zip holding each ``(name in archive, file on disk)``, in order."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in files:
            with path.open("rb") as source, archive.open(_entry(name, path), "w") as entry:
                while block := source.read(chunk_size):
                    entry.write(block)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    yield sink.take()


def _entry(name: str, path: Path) -> zipfile.ZipInfo:
    """The entry's header: the file's time and size (so zip64 is used when it must be)."""
    stat = path.stat()
    info = zipfile.ZipInfo(name, date_time=time.localtime(stat.st_mtime)[:6])
    info.file_size = stat.st_size
    # Always deflated: a stored entry behind a data descriptor trips streaming unzippers.
    info.compress_type = zipfile.ZIP_DEFLATED
    return info
