"""The Redis store's webhook outbox: a hash per delivery and one sorted set of due times.

:meth:`RedisOutbox.add` queues its writes on the ``MULTI`` pipeline that appends a job's
``end`` event (``RedisStore._write``), so the delivery exists exactly when the end does.

Every web process and every worker runs a sender; a claim (one Lua script, so atomic
across them all) moves the delivery's score in ``xmlflow:webhooks`` from its due time
to the end of a lease and gives it a fresh token. Nobody else can claim it until the
lease runs out; a sender killed mid-POST leaves it to run out, and the delivery is
claimed again. Retrying needs the token: a sender whose lease ran out cannot push back
a delivery that another has taken meanwhile. Times are the processes' clocks.
"""

from __future__ import annotations

import secrets
from typing import Any

import redis

from ...models import Event, Job
from ...webhooks import Delivery, outbox_entry
from .keys import Keys

# KEYS[1] the due set; ARGV: now, now + lease, token, the hash keys' prefix
CLAIM = """
while true do
    local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
    if #ids == 0 then return false end
    local key = ARGV[4] .. ids[1]
    if redis.call('EXISTS', key) == 1 then
        redis.call('ZADD', KEYS[1], ARGV[2], ids[1])
        local n = redis.call('HINCRBY', key, 'attempts', 1)
        redis.call('HSET', key, 'token', ARGV[3])
        local f = redis.call('HMGET', key, 'job_id', 'body', 'created_at')
        return {ids[1], f[1], f[2], f[3], n}
    end
    redis.call('ZREM', KEYS[1], ids[1])
end
"""
# KEYS[1] the delivery's hash, KEYS[2] the due set; ARGV: token, when, error, id
RETRY = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'error', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return 1
"""


class RedisOutbox:
    """``webhooks.Outbox`` on Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._claim = client.register_script(CLAIM)
        self._retry = client.register_script(RETRY)

    def add(self, pipe: Any, job: Job, event: Event) -> None:
        """Queue the delivery of a job's end on the caller's ``MULTI`` pipeline."""
        ident, body = outbox_entry(job, event)
        now = job.ended_at or 0.0
        pipe.hset(
            Keys.webhook.format(ident),
            mapping={"job_id": job.id, "body": body, "created_at": repr(now), "attempts": 0},
        )
        pipe.zadd(Keys.webhooks_due, {ident: now}, nx=True)

    def claim(self, now: float, lease: float) -> Delivery | None:
        token = secrets.token_hex(8)
        prefix = Keys.webhook.format("")
        found: Any = self._claim(keys=[Keys.webhooks_due], args=[now, now + lease, token, prefix])
        if not found:
            return None
        ident, job_id, body, created_at, attempts = found
        return Delivery(
            ident.decode(), job_id.decode(), bytes(body), float(created_at), int(attempts), token
        )

    def done(self, delivery: Delivery) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(Keys.webhook.format(delivery.id))
        pipe.zrem(Keys.webhooks_due, delivery.id)
        pipe.execute()

    def retry_at(self, delivery: Delivery, when: float, error: str) -> None:
        keys = [Keys.webhook.format(delivery.id), Keys.webhooks_due]
        self._retry(keys=keys, args=[delivery.token, when, error, delivery.id])

    def pending(self) -> int:
        return int(self.r.zcard(Keys.webhooks_due))
