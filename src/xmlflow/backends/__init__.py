"""Backends behind the three seams; :func:`open_backend` picks one from the settings.

Without ``XMLFLOW_REDIS_URL`` nothing here imports redis or rq.
"""

from __future__ import annotations

from collections.abc import Callable

from ..settings import Settings
from .base import Backend, EventLog, Executor, JobStore

__all__ = ["Backend", "EventLog", "Executor", "JobStore", "open_backend"]


def open_backend(settings: Settings, run_job: Callable[[str], None]) -> Backend:
    """Open the backend the settings ask for; ``run_job`` is what the executor calls."""
    if settings.redis_url:
        from .redis import open_redis_backend

        return open_redis_backend(settings)
    from .embedded import open_embedded_backend

    return open_embedded_backend(settings, run_job)
