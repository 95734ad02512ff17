"""``GET /api/health``: can this process take and run jobs right now?

Four checks, each answering a question an operator would ask first: can the job
store be read and written (SQLite file or Redis), is there room in the queue (past
``XMLFLOW_MAX_QUEUED`` uploads are refused with 503), can the data folder be
written (uploads and outputs live there), and is anyone running the jobs (``xmlflow
worker`` processes in Redis mode, the runner threads in embedded mode). Any failing
check makes the answer 503, so a load balancer stops sending uploads here; the body
says which check failed.

Jobs that wait with nobody to run them make the answer ``degraded``, and still 200:
this process serves uploads, streams and downloads all the same, and the workers are
the deployment's, not this node's, so a 503 would take every web node out of the
load balancer at once for something none of them can mend. Monitoring alerts on
``status``; the body's ``degraded`` names the check.
It needs no token: it reveals nothing about any job.

The checks run side by side, and each has ``CHECK_SECONDS`` to answer: one that has not
failed by then (Redis frozen, a data folder on a hung mount) fails as ``TimeoutError``,
so the answer comes within those seconds whatever hangs, and a load balancer polling
with a short timeout sees a 503, not a timeout of its own. A late check goes on in the
background until the store's own timeout ends it; its end is only logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint

from ..service import Service
from . import service

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)
MIN_FREE_BYTES = 64 * 1024 * 1024  # below this an upload of any size is likely to fail
CHECK_SECONDS = 2.0  # each check's time to answer; they run at once, so the answer's too

Check = Callable[[Service], dict[str, Any]]


@bp.get("/api/health")
def health() -> tuple[dict[str, Any], int]:
    checks = run_checks(service(), CHECKS, CHECK_SECONDS)
    failed = sorted(name for name, result in checks.items() if not result["ok"])
    degraded = sorted(name for name, result in checks.items() if result.get("degraded"))
    status = "fail" if failed else "degraded" if degraded else "ok"
    body = {"status": status, "failed": failed, "degraded": degraded, "checks": checks}
    return body, 503 if failed else 200


def run_checks(svc: Service, checks: dict[str, Check], seconds: float) -> dict[str, dict[str, Any]]:
    """Every check at once, each in a thread (a greenlet under gevent); those without an
    answer after ``seconds`` fail as timed out."""
    results: dict[str, dict[str, Any]] = {}

    def run(name: str, check: Check) -> None:
        results[name] = _run(check, svc)

    threads = [
        threading.Thread(target=run, args=item, name=f"xmlflow-health-{item[0]}", daemon=True)
        for item in checks.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: results.get(name) or _late(name, seconds) for name in checks}


def _late(name: str, seconds: float) -> dict[str, Any]:
    log.warning("health check %s gave no answer within %g s", name, seconds)
    return {"ok": False, "error": f"TimeoutError: no answer within {seconds:g} s"}


def _run(check: Check, svc: Service) -> dict[str, Any]:
    """One check; an exception is a failed check with its reason, never a 500."""
    try:
        return check(svc)
    except Exception as exc:
        # One line per failed check: a load balancer polls this every few seconds during
        # an outage, and the same traceback each time would bury the rest of the log.
        log.warning("health check %s failed: %s: %s", check.__name__, type(exc).__name__, exc)
        log.debug("health check %s failed", check.__name__, exc_info=True)
        # Anyone may ask: say what kind of failure, not which paths (the log has those).
        # Redis's own text names commands and keys: only the kind of failure is said.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
        return {"ok": False, "error": f"{type(exc).__name__}: {reason or 'see the server log'}"}


def check_store(svc: Service) -> dict[str, Any]:
    """A read, and in Redis mode a write too: Redis out of memory still answers reads."""
    svc.store.list_jobs(limit=1)
    try_lock = getattr(svc.store, "try_lock", None)  # RedisStore's: a SET that expires
    if try_lock is not None:
        try_lock(f"xmlflow:health:{secrets.token_hex(8)}", 1.0)
    return {"ok": True, "backend": svc.backend.name}


def check_queue(svc: Service) -> dict[str, Any]:
    """Room in the queue, and the files one upload may hold: what a client sending many
    files (``xmlflow submit``) needs to know to split them before the first is sent."""
    queued = svc.store.count_queued()
    limit = svc.settings.max_queued
    result: dict[str, Any] = {"ok": queued < limit, "queued": queued, "max_queued": limit}
    result["max_upload_files"] = svc.settings.max_upload_files
    if queued >= limit:
        result["error"] = "the queue is full (XMLFLOW_MAX_QUEUED): uploads are refused"
    return result


def check_data_dir(svc: Service) -> dict[str, Any]:
    """Write, sync and remove a small file where uploads arrive: the way an upload would."""
    probe = svc.data_dir / "incoming" / f".health-{secrets.token_hex(8)}"
    try:
        with probe.open("xb") as f:
            f.write(b"ok")
            os.fsync(f.fileno())
    finally:  # a full disk makes the file and then refuses its bytes: not one left per poll
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(svc.data_dir).free
    result: dict[str, Any] = {"ok": free >= MIN_FREE_BYTES, "free_bytes": free}
    if free < MIN_FREE_BYTES:
        result["error"] = f"only {free} bytes free in the data folder"
    return result


def check_workers(svc: Service) -> dict[str, Any]:
    """How many run the jobs (``rq_workers`` or ``runner_threads``: the backend says which)
    and how many jobs wait for them (``queue_length``); degraded when jobs wait and none
    is alive to run them."""
    capacity = svc.backend.executor.capacity()
    result: dict[str, Any] = {
        "ok": True,
        capacity.kind: capacity.live,
        "queue_length": capacity.waiting,
    }
    if capacity.waiting and not capacity.live:
        result["degraded"] = True
        result["warning"] = (
            f"{capacity.waiting} job(s) queued and no {capacity.kind} alive: they wait"
        )
    return result


CHECKS: dict[str, Check] = {
    "store": check_store,
    "queue": check_queue,
    "data_dir": check_data_dir,
    "workers": check_workers,
}
