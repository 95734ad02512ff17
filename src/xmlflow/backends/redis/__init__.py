"""The scale-out backend: jobs and events in Redis, work on RQ workers.

The only place that imports ``redis`` and ``rq``; :func:`xmlflow.backends.open_backend`
imports it only when ``XMLFLOW_REDIS_URL`` is set. It is a package rather than one
module so that each part stays short: :mod:`.keys` (the data model), :mod:`.store`
(jobs and their events: the ``JobStore``), :mod:`.fanout` (following streams: the
``EventFeed``), :mod:`.outbox` (webhook deliveries), :mod:`.jobs` (RQ, leases and the
lost-worker monitor), :mod:`.worker` (``xmlflow worker`` and the RQ job).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ...settings import Settings
from ..base import Backend, Events, TakeOver
from .fanout import READER_TIMEOUT, Follower
from .jobs import LostJobMonitor, RQExecutor, lease_kept
from .store import RedisStore

__all__ = ["RedisStore", "lease_kept", "open_redis_backend"]


POOL_SIZE = 100  # Redis connections per process; more requests than this wait their turn
POOL_WAIT = 20.0  # seconds a request waits for a free connection before it gets a 503
# Seconds a command waits for Redis's answer. None of ours blocks on purpose (the
# follower's XREAD BLOCK has a connection of its own), so a command this slow means
# Redis is frozen or drowning: the request gets its 503 now, and whoever must ride an
# outage out (appends, leases, the monitor, streams) tries again on its own.
COMMAND_TIMEOUT = 5.0


def connect(url: str, *, socket_timeout: float = COMMAND_TIMEOUT, **options: Any) -> redis.Redis:
    """A client that rides out short outages (a Redis restart) by reconnecting.

    A refused or reset connection is tried again, with backoff, for about 2.5 s; a
    command that times out is not: against a frozen Redis (SIGSTOP, a stalled VM) each
    try would wait ``socket_timeout`` again, and five of 30 s held an upload for three
    minutes. Its pool *blocks* when all connections are in use: redis-py's default
    pool raises "Too many connections" past 100, which 2,000 streams opening at once
    (each reads its job) reach at once under gevent.
    """
    reconnect = Retry(
        ExponentialBackoff(cap=1.0, base=0.05), retries=5, supported_errors=(redis.ConnectionError,)
    )
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT,
        retry=reconnect,
        retry_on_error=[redis.ConnectionError],
        socket_connect_timeout=5,
        socket_timeout=socket_timeout,
        socket_keepalive=True,
        health_check_interval=30,
        **options,
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def open_follower(url: str, client: redis.Redis, store: RedisStore) -> Follower:
    """The process's reader of the streams (its ``EventFeed``), replaying from ``store``."""
    return Follower(
        # The reader's own connection: no automatic retry (it reconnects itself), and a
        # socket timeout longer than its XREAD BLOCK.
        lambda: redis.Redis.from_url(
            url,
            single_connection_client=True,
            socket_connect_timeout=5,
            socket_timeout=READER_TIMEOUT,
            socket_keepalive=True,
        ),
        client,
        store.read,
    )


def open_redis_backend(settings: Settings) -> Backend:
    assert settings.redis_url
    url = settings.redis_url
    client = connect(url)
    retention = settings.retention_hours * 3600
    store = RedisStore(
        client,
        retention=retention,
        lease_ttl=settings.lease_seconds,
        webhooks=bool(settings.webhook_url),
    )
    follower = open_follower(url, client, store)
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
        events=Events(store, follower),
        executor=executor,
        start=start,
        close=close,
        guard=lambda job: lease_kept(store, job.id, job.attempt),
        outbox=store.outbox,
    )
