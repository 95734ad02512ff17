"""Files a killed process left in the data folder, and which of them are safe to remove.

A process killed with ``kill -9`` runs no cleanup, so three kinds of file outlive it:
an upload being received (``incoming/*.part``), the folder of a run with its
half-written outputs (``jobs/<id>/attempt-<n>/``, ``.partial-*.tmp`` files), and a job
folder whose record was never written (killed, or the store refused the record,
between the rename and the record).

In embedded mode the process starting up holds the data folder's lock: no one else
writes there, so every such file is a leftover. In Redis mode several web processes
and workers share the folder, so a file is removed only when it cannot belong to a
live process:

- an incoming file when no process holds its ``flock`` (the receiving request holds
  it until it ends; the kernel drops it when the process dies) *and* it is older than
  :data:`STALE_AFTER` (which covers the instant between creating and locking it);
- a run's folder or partial output when its job is not running, and it is older than
  the moment that was read (a later attempt of the job makes newer ones);
- a job folder without a job record when it is older than :data:`STALE_AFTER` (a
  submission writes the record within a Redis timeout of making the folder).

And an ended job's folder left empty (by a version that kept them) goes too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import time
from pathlib import Path
from typing import IO

from .backends import JobStore
from .jobfiles import INCOMING, JobFiles, all_jobs
from .models import JobStatus

log = logging.getLogger(__name__)

STALE_AFTER = 120.0  # seconds; longer than any Redis timeout a live submission waits


def hold(path: Path) -> IO[bytes]:
    """Lock ``path`` for as long as the returned file stays open (or this process lives)."""
    lock = open(path, "rb")  # noqa: SIM115 - the caller closes it when the request ends
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def remove_leftovers(data_dir: Path, store: JobStore, *, exclusive: bool) -> int:
    """Remove what killed processes left behind; ``exclusive``: no other process is here.

    Returns how many files or folders were removed.
    """
    cutoff = time.time() - (0 if exclusive else STALE_AFTER)
    removed = _incoming(data_dir / INCOMING, cutoff)
    for files in all_jobs(data_dir):
        # another process starting beside this one may clean the same folder first
        with contextlib.suppress(FileNotFoundError):
            removed += _job_leftovers(files, store, cutoff)
    if removed:
        log.warning("start-up: removed %d file(s) left by a killed process", removed)
    return removed


def _incoming(folder: Path, cutoff: float) -> int:
    removed = 0
    for path in folder.iterdir():
        with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live request is receiving it
            if path.stat().st_mtime <= cutoff:
                path.unlink()
                removed += 1
    return removed


def _job_leftovers(files: JobFiles, store: JobStore, cutoff: float) -> int:
    leftovers = files.run_files()
    read_at = time.time()
    job = store.get(files.job_id) if files.job_id.isalnum() else None
    if job is None:
        if files.dir.stat().st_mtime > cutoff:
            return 0  # being submitted right now, perhaps
        files.remove()
        return 1
    if job.status is JobStatus.RUNNING:
        return 0
    stale = [p for p in leftovers if _mtime(p) < read_at]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    # an ended job that kept no outputs keeps no folder (older versions left it empty)
    dropped = job.status.finished and files.drop_if_empty()
    return len(stale) + dropped


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def remove_shared_leftovers(data_dir: Path, store: JobStore) -> None:
    """Redis mode, at a process's start: what no live process can own; never fatal."""
    try:
        remove_leftovers(data_dir, store, exclusive=False)
    except Exception as exc:  # Redis away at start-up: the next process to start will try
        log.warning("start-up: could not look for leftover files: %s", exc)
