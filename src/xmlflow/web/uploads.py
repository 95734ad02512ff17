"""Receiving uploads: multipart files go straight to ``data/incoming`` in chunks.

Werkzeug would spool each file to a temporary file of its own (or memory, when
small); we give it our own file instead, so an upload is written once, is never
whole in memory, and becomes the job's source by a rename.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO

from flask import Request

from . import service


class UploadRequest(Request):
    """A request that writes uploaded files into the data folder and tidies up after."""

    incoming: list[tuple[Path, IO[bytes]]]

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        path, stream = service().incoming_file()
        if not hasattr(self, "incoming"):
            self.incoming = []
        self.incoming.append((path, stream))
        return stream

    def discard_incoming(self) -> None:
        """Delete what was received and not turned into a job (errors, 413, disconnects)."""
        for path, stream in getattr(self, "incoming", []):
            stream.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.incoming = []


def take_uploads(request: UploadRequest, field: str = "file") -> list[tuple[Path, str | None]]:
    """The uploaded files of ``field``, closed and complete: (path on disk, client's name).

    Parts that are not files, or files sent under another field name, are discarded.
    """
    by_stream = {id(stream): path for path, stream in getattr(request, "incoming", [])}
    taken = []
    for storage in request.files.getlist(field):
        path = by_stream.pop(id(storage.stream), None)
        if path is not None:
            storage.stream.close()
            taken.append((path, storage.filename))
    request.incoming = [(p, s) for p, s in getattr(request, "incoming", []) if id(s) in by_stream]
    return taken
