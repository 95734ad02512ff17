"""The sign-ins the server still honours, so that signing out ends a session for good.

A signed cookie alone cannot be taken back: a copy keeps working until it expires.
So each sign-in gets a random id, kept as an empty file ``<data>/signins/<id>`` whose
modification time is when it began; the cookie carries the id, and the server accepts
it only while the file exists and is younger than the session lifetime. Sign-out
deletes the file. Files rather than the job store: every web process of a deployment
already shares the data folder (in Redis mode too), and nothing here is a job.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path

SIGNIN_ID = re.compile(r"[A-Za-z0-9_-]{32}")


class SignIns:
    """Open, check and end sign-ins; expired ones are swept at each new sign-in."""

    def __init__(self, folder: Path, lifetime_seconds: float) -> None:
        self.folder = folder
        self.lifetime = lifetime_seconds

    def open(self) -> str:
        """A new sign-in's id, valid for the session lifetime from now."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sweep()
        signin_id = secrets.token_urlsafe(24)
        (self.folder / signin_id).touch(exist_ok=False)
        return signin_id

    def is_open(self, signin_id: object) -> bool:
        if not isinstance(signin_id, str) or not SIGNIN_ID.fullmatch(signin_id):
            return False
        try:
            began = (self.folder / signin_id).stat().st_mtime
        except FileNotFoundError:
            return False
        return time.time() - began < self.lifetime

    def close(self, signin_id: object) -> None:
        if isinstance(signin_id, str) and SIGNIN_ID.fullmatch(signin_id):
            with contextlib.suppress(FileNotFoundError):
                (self.folder / signin_id).unlink()

    def sweep(self) -> None:
        """Delete the sign-ins that have expired."""
        cutoff = time.time() - self.lifetime
        with os.scandir(self.folder) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
