"""The scale-out backend: jobs and events in Redis, work on RQ workers.

The only place that imports ``redis`` and ``rq``; :func:`xmlflow.backends.open_backend`
imports it only when ``XMLFLOW_REDIS_URL`` is set. It is a package rather than one
module so that each part stays short: :mod:`.keys` (the data model), :mod:`.store`
(jobs and event appends), :mod:`.fanout` (following streams), :mod:`.jobs` (RQ,
leases and the lost-worker monitor), :mod:`.worker` (``xmlflow worker`` and the RQ job).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ...models import Event, EventType
from ...settings import Settings
from ..base import Backend, TakeOver
from .fanout import BLOCK_MS, Follower
from .jobs import LostJobMonitor, RQExecutor, lease_kept
from .store import RedisStore

__all__ = ["RedisEventLog", "RedisStore", "lease_kept", "open_redis_backend"]


class RedisEventLog:
    """``EventLog``: appends and replays go to the store; following to the process's reader."""

    def __init__(self, store: RedisStore, follower: Follower) -> None:
        self.store = store
        self.follower = follower

    def append(
        self, job_id: str, type: EventType, data: dict[str, Any], *, attempt: int | None = None
    ) -> Event:
        return self.store.append(job_id, type, data, attempt=attempt)

    def read(self, job_id: str, after: int = 0) -> list[Event]:
        return self.store.read(job_id, after)

    def follow(self, job_id: str, after: int, timeout: float) -> list[Event]:
        return self.follower.follow(job_id, after, timeout)

    def listen(self, job_id: str, after: int, timeout: float) -> Generator[list[Event], None, None]:
        return self.follower.listen(job_id, after, timeout)


POOL_SIZE = 100  # Redis connections per process; more requests than this wait their turn
POOL_WAIT = 20.0  # seconds a request waits for a free connection before it gets a 503


def connect(url: str, **options: Any) -> redis.Redis:
    """A client that rides out short outages (a Redis restart) by reconnecting.

    Its pool *blocks* when all connections are in use: redis-py's default pool raises
    "Too many connections" past 100, which 2,000 streams opening at once (each
    reads its job) reach at once under gevent.
    """
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
        **options,
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def open_redis_backend(settings: Settings) -> Backend:
    assert settings.redis_url
    url = settings.redis_url
    client = connect(url, socket_timeout=30)
    retention = settings.retention_hours * 3600
    store = RedisStore(
        client,
        retention=retention,
        lease_ttl=settings.lease_seconds,
        webhooks=bool(settings.webhook_url),
    )
    follower = Follower(
        # The reader's own connection: no automatic retry (it reconnects itself), and a
        # socket timeout longer than its XREAD BLOCK.
        lambda: redis.Redis.from_url(
            url,
            single_connection_client=True,
            socket_connect_timeout=5,
            socket_timeout=BLOCK_MS / 1000 + 10,
            socket_keepalive=True,
        ),
        client,
        store.read,
    )
    executor = RQExecutor(client, failure_ttl=int(retention))
    monitor = LostJobMonitor(store, executor, settings.data_dir.resolve(), settings.retries)

    def start(take_over: TakeOver) -> None:
        monitor.start()
        take_over(False)  # shared: other processes serve the same data folder

    def close() -> None:
        monitor.stop()
        follower.close()

    return Backend(
        name="redis",
        store=store,
        events=RedisEventLog(store, follower),
        executor=executor,
        start=start,
        close=close,
        guard=lambda job: lease_kept(store, job.id, job.attempt),
        outbox=store.outbox,
    )
