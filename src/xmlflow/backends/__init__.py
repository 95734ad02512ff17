"""Backends behind the three seams; :func:`open_backend` picks one from the settings.

Without ``XMLFLOW_REDIS_URL`` nothing here imports redis or rq.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from ..settings import Settings
from .base import Backend, EventLog, Executor, JobStore

__all__ = [
    "Backend",
    "EventLog",
    "Executor",
    "JobStore",
    "open_backend",
    "redis_extra_installed",
    "run_rq_worker",
]


def open_backend(settings: Settings, run_job: Callable[[str], None]) -> Backend:
    """Open the backend the settings ask for; ``run_job`` is what the executor calls."""
    if settings.redis_url:
        redis_extra_installed()
        from .redis import open_redis_backend

        return open_redis_backend(settings)
    from .embedded import open_embedded_backend

    return open_embedded_backend(settings, run_job)


def run_rq_worker(settings: Settings, *, burst: bool = False, name: str | None = None) -> None:
    """``xmlflow worker``: one RQ worker process (:mod:`.redis.worker`), Redis mode only."""
    if not settings.redis_url:
        raise ConfigError(
            "xmlflow worker needs XMLFLOW_REDIS_URL (the embedded mode runs "
            "jobs inside `xmlflow serve`)"
        )
    redis_extra_installed()
    from .redis.worker import work

    work(settings, burst=burst, name=name)


def redis_extra_installed() -> None:
    """Raise :class:`ConfigError` with the remedy when redis or rq cannot be imported."""
    try:
        import redis  # noqa: F401
        import rq  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "XMLFLOW_REDIS_URL is set but the Redis extra is not installed: "
            f"pip install 'xmlflow[redis]' (redis and rq), or unset XMLFLOW_REDIS_URL ({exc})"
        ) from None
