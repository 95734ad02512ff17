"""Where a job's files live in ``XMLFLOW_DATA_DIR``, and where its outputs are served.

::

    data/incoming/<random>.part  an upload being received (renamed into place when complete)
    data/jobs/<id>/source        the uploaded file, deleted when the job ends
    data/jobs/<id>/attempt-<n>/  the n-th run's own folder (source link, work/, out/),
                                 deleted when that run ends
    data/jobs/<id>/out/          outputs of the run that succeeded, moved here from its
                                 attempt folder; kept until the retention period ends

A job that ended keeps its outputs and nothing else: one that kept none keeps no folder.

and the URL an output is downloaded from (:func:`output_url`). The service, the run,
the job process, the Redis lost-job monitor, start-up recovery and ``xmlflow run`` all
go through :class:`JobFiles`: a job's layout changes here or nowhere.
"""

from __future__ import annotations

import contextlib
import errno
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

from .errors import NotFound

INCOMING = "incoming"
JOBS = "jobs"
# a run's own folder, and what Context.open_output writes (in a run's folder, or before
# runs had folders, in the job's): what a killed run may leave behind
RUN_FILES = ("attempt-*", "out/.partial-*.tmp", "work/.partial-*.tmp")


def output_url(job_id: str, name: str) -> str:
    """The download path of an output, percent-encoded once: a name may hold ``#``, ``%``,
    spaces or any Unicode, and every client (browser, curl, httpx) must get it back intact."""
    return f"/api/jobs/{quote(job_id, safe='')}/outputs/{quote(name, safe='')}"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the data folder has no room: ``ENOSPC`` (or a quota) from a
    write, or SQLite's ``SQLITE_FULL`` ("database or disk is full"), known by its name so
    that only the SQLite backend imports sqlite3."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return getattr(exc, "sqlite_errorname", None) == "SQLITE_FULL"


def make_folders(data_dir: Path) -> None:
    """Create the folders every process expects (they may be shared by several)."""
    for sub in (INCOMING, JOBS):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)


def incoming_file(data_dir: Path) -> tuple[Path, IO[bytes]]:
    """A new, private file to receive an upload into."""
    path = data_dir / INCOMING / f"{secrets.token_hex(16)}.part"
    return path, open(path, "xb")  # noqa: SIM115 - the caller closes it


def all_jobs(data_dir: Path) -> Iterator[JobFiles]:
    """Every job folder there is, recorded or not (for start-up's leftover hunt)."""
    for folder in sorted((data_dir / JOBS).iterdir()):
        yield JobFiles(data_dir, folder.name)


@dataclass(frozen=True)
class JobFiles:
    """The folders of one job; nothing is created until asked."""

    data_dir: Path
    job_id: str

    @classmethod
    def checked(cls, data_dir: Path, job_id: str) -> JobFiles:
        """For an id that came from a client: only ours (hex) may become a path."""
        if not job_id.isalnum():
            raise NotFound(f"no job {job_id!r}")
        return cls(data_dir, job_id)

    @property
    def dir(self) -> Path:
        return self.data_dir / JOBS / self.job_id

    @property
    def source(self) -> Path:
        return self.dir / "source"

    @property
    def out(self) -> Path:
        """The published outputs (of the run that ended the job)."""
        return self.dir / "out"

    @property
    def work(self) -> Path:
        """Scratch of runs made before runs had folders of their own."""
        return self.dir / "work"

    def attempt(self, n: int) -> Path:
        """The folder of one run of the job: a superseded run writes only there."""
        return self.dir / f"attempt-{n}"

    def run_files(self) -> list[Path]:
        """What runs left here (their folders, partial outputs); see :data:`RUN_FILES`."""
        return [p for pattern in RUN_FILES for p in self.dir.glob(pattern)]

    def discard_inputs(self, *, outputs: bool = False) -> None:
        """What an ended job no longer needs: its source, scratch and runs' folders (and
        its published outputs too when ``outputs``: a job that ended without them); and
        its folder, when nothing is left in it."""
        with contextlib.suppress(FileNotFoundError):
            self.source.unlink()
        folders = [self.work, *([self.out] if outputs else []), *self.dir.glob("attempt-*")]
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        self.drop_if_empty()

    def drop_if_empty(self) -> bool:
        """Remove the job's folder if it holds nothing (an ended job that kept no
        outputs); a folder something is in, or that is gone, stays as it is."""
        try:
            self.dir.rmdir()
        except OSError:  # not empty (outputs, a later run's folder), or already gone
            return False
        return True

    def remove(self) -> None:
        """The whole folder: the job is forgotten."""
        shutil.rmtree(self.dir, ignore_errors=True)
