"""What ``xmlflow worker`` runs: the RQ job function, and the worker's start-up.

The worker builds the same :class:`~xmlflow.service.Service` from the same settings as
the web processes, so a step runs identically wherever it runs. RQ forks a work-horse
per job; the horse inherits this module's service (redis-py reopens its connections
after a fork), so a job costs a fork, not a start-up.
"""

from __future__ import annotations

import logging
from typing import cast

from .errors import ConfigError
from .leftovers import remove_shared_leftovers
from .service import Service
from .settings import Settings, load_settings
from .worker import execute_job

log = logging.getLogger(__name__)

_service: Service | None = None


def service() -> Service:
    """This process's service; built from the environment when RQ runs us without ``work``."""
    global _service
    if _service is None:
        _service = Service(load_settings())
    return _service


def run_job(job_id: str) -> None:
    """The RQ job: ``execute_job``, with the lease of its attempt renewed while it runs
    (and its child stopped at once if the lease is lost or refused)."""
    from .backends.redis import RedisStore, lease_kept

    svc = service()
    store = cast(RedisStore, svc.store)
    execute_job(
        svc,
        job_id,
        start_method="fork",  # the horse lives for this job only
        guard=lambda job: lease_kept(store, job.id, job.attempt),
    )


def work(settings: Settings, *, burst: bool = False, name: str | None = None) -> None:
    """Run one RQ worker on the xmlflow queue; rides out Redis outages by starting over."""
    from .backends import redis_extra_installed

    if not settings.redis_url:
        raise ConfigError(
            "xmlflow worker needs XMLFLOW_REDIS_URL (the embedded mode runs "
            "jobs inside `xmlflow serve`)"
        )
    redis_extra_installed()
    from .backends.redis import RedisStore, run_worker

    global _service
    svc = _service = Service(settings)
    svc.start()
    remove_shared_leftovers(svc.data_dir, svc.store)
    try:
        run_worker(cast(RedisStore, svc.store).r, burst=burst, name=name)
    finally:
        svc.close()
