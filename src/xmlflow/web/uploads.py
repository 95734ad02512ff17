"""Receiving uploads: multipart files go straight to ``data/incoming`` in chunks.

Werkzeug would spool each file to a temporary file of its own (or memory, when
small); we give it our own file instead, so an upload is written once, is never
whole in memory, and becomes the job's source by a rename.

Each ``incoming/*.part`` file is ``flock``ed by the request receiving it until the
request ends, so start-up recovery (:mod:`xmlflow.leftovers`) can tell the file of a
killed process from one that another live process is still receiving.

Compressed uploads are taken as they are (:mod:`xmlflow.inputs` reads them while
decompressing) once their first megabytes passed the expansion caps; a zip is opened
here, and each XML member becomes a file (and then a job) of its own, grouped under
the zip's name (:func:`expand_archives`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO

from flask import Request

from ..errors import UploadTooLarge
from ..inputs import check_compressed, count_xml_members, extract_zip
from ..leftovers import hold
from ..service import Service, Upload, display_name
from ..units import plural
from . import service


class UploadRequest(Request):
    """A request that writes uploaded files into the data folder and tidies up after."""

    incoming: list[tuple[Path, IO[bytes]]]
    held: list[IO[bytes]]  # the incoming files' locks, released when the request ends

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        svc = service()
        if not hasattr(self, "incoming"):
            self.incoming, self.held = [], []
        limit = svc.settings.max_upload_files
        if len(self.incoming) >= limit:
            raise UploadTooLarge(
                f"the upload has more than {limit} files, the limit "
                "(XMLFLOW_MAX_UPLOAD_FILES): send them in several uploads",
                details={"limit": limit},
            )
        path, stream = svc.incoming_file()
        self.incoming.append((path, stream))
        self.held.append(hold(path))
        return stream

    def discard_incoming(self) -> None:
        """Delete what was received and not turned into a job (errors, 413, disconnects)."""
        for path, stream in getattr(self, "incoming", []):
            with contextlib.suppress(OSError):  # ENOSPC flushing a full disk's last bytes
                stream.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.incoming = []
        for lock in getattr(self, "held", []):
            lock.close()
        self.held = []


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


def expand_archives(
    svc: Service, request: UploadRequest, files: list[tuple[Path, str | None]]
) -> list[Upload]:
    """The uploaded files as documents: a zip gives its XML members, each in a new file.

    A compressed document is probed (:func:`~xmlflow.inputs.check_compressed`): a bomb
    or a damaged small file is refused here, before any job exists; so is an upload
    whose documents (a zip's XML members each, counted first) are more than
    ``XMLFLOW_MAX_UPLOAD_FILES``. All or nothing: on an error every member file written
    so far is deleted (the uploads themselves are the caller's to delete).
    """
    limits = svc.settings.input_limits
    limit = svc.settings.max_upload_files
    uploads: list[Upload] = []

    def new_file() -> tuple[Path, IO[bytes]]:
        path, stream = svc.incoming_file()
        request.held.append(hold(path))  # a live request's file: recovery leaves it alone
        members.append(path)
        return path, stream

    counted = []  # (path, client's name, shown name, XML members or None when not a zip)
    for path, name in files:
        shown = display_name(name)
        is_zip = check_compressed(path, shown, limits) == "zip"
        counted.append(
            (path, name, shown, count_xml_members(path, shown, limit) if is_zip else None)
        )
    _check_documents(limit, [(shown, count) for _, _, shown, count in counted])
    members: list[Path] = []
    try:
        for path, name, shown, count in counted:
            if count is None:
                uploads.append(Upload(path, name))
                continue
            found = extract_zip(path, shown, limits, limit, new_file)
            uploads += [Upload(m.path, m.name, group=shown) for m in found]
    except BaseException:
        for path in members:
            path.unlink(missing_ok=True)
        raise
    return uploads


def _check_documents(limit: int, counted: list[tuple[str, int | None]]) -> None:
    """Refuse an upload of more documents than ``limit``, saying what counts: each zip's
    XML members (a count of None: a file that is one document) and the files beside them."""
    total = sum(1 if count is None else count for _, count in counted)
    if total <= limit:
        return
    zips = [(name, count) for name, count in counted if count is not None]
    singles = [name for name, count in counted if count is None]
    parts = [f"{name} has {plural(count, 'XML member')}" for name, count in zips]
    if len(singles) == 1:
        parts.append(f"{singles[0]} is 1 more")
    elif singles:
        parts.append(f"the {len(singles)} other files are {len(singles)} more")
    advice = "send them in several uploads"
    name, most = max(zips, key=lambda zipped: zipped[1])
    if most > limit:
        advice += f", {name} split into zips of at most {limit} XML members"
    raise UploadTooLarge(
        f"the upload holds {total} documents, more than {limit}, the limit "
        f"(XMLFLOW_MAX_UPLOAD_FILES): {' and '.join(parts)}; {advice}",
        details={"file": name, "limit": limit, "documents": total},
    )
