"""Values of one key under the root, in document order, in a temporary file.

Shared by the two ``json`` sinks (the Python converter's and the native path's): a
key first seen after the root's first key is written at the end, so its values wait
here, in memory up to 1 MiB, then on disk.
"""

from __future__ import annotations

import tempfile
from typing import IO, BinaryIO

__all__ = ["Group", "SPOOL_IN_MEMORY"]

SPOOL_IN_MEMORY = 1 << 20


class Group:
    """Comma-joined JSON values of one key; ``count`` says whether they make a list."""

    def __init__(self) -> None:
        self.count = 0
        self.spool: IO[bytes] = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)

    def add(self, data: bytes, count: int = 1) -> None:
        """Append ``data``: one JSON value, or ``count`` of them already comma-joined."""
        if self.count:
            self.spool.write(b",")
        self.spool.write(data)
        self.count += count

    def copy_to(self, out: BinaryIO, as_list: bool) -> None:
        self.spool.seek(0)
        out.write(b"[" if as_list else b"")
        while chunk := self.spool.read(SPOOL_IN_MEMORY):
            out.write(chunk)
        out.write(b"]" if as_list else b"")
        self.spool.close()
