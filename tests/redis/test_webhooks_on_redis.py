"""Webhooks in Redis mode: a web process and two ``xmlflow worker``s share the outbox."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from xmlflow.backends.redis.keys import Keys
from xmlflow.backends.redis.outbox import RedisOutbox
from xmlflow.models import Event, EventType, Job, JobStatus, StepSpec

from ..webhook_receiver import Receiver, check_signature
from .conftest import Cluster, RedisServer

SECRET = "s3cret-for-the-tests"
JOBS = 6


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_every_job_is_delivered_once_accepted_with_one_id_across_its_tries(
    cluster: Cluster, receiver: Receiver
) -> None:
    receiver.script = lambda n, tries: "500" if tries == 0 else "ok"  # each fails once
    receiver.start()
    cluster.extra_env.update(
        XMLFLOW_WEBHOOK_URL=receiver.url,
        XMLFLOW_WEBHOOK_SECRET=SECRET,
        XMLFLOW_WEBHOOK_BACKOFF="0.1",
        XMLFLOW_WEBHOOK_TIMEOUT="2",
    )
    web = cluster.web()
    cluster.worker(), cluster.worker()
    jobs = [web.upload((f"n{i}.xml", b"<n>%d</n>" % i))[0] for i in range(JOBS)]
    for job in jobs:
        assert web.wait_finished(job["id"])["status"] == "succeeded"
    accepted = receiver.wait_accepted(JOBS)
    time.sleep(0.5)  # a second claim of the same delivery would show by now

    assert sorted(r.payload["job"]["id"] for r in accepted) == sorted(j["id"] for j in jobs)
    tries = Counter(r.delivery for r in receiver.received)
    assert set(tries.values()) == {2}, tries  # one 500, one 204: one claimer at a time
    for r in receiver.received:
        check_signature(SECRET, r)
        assert r.payload["id"] == r.delivery
    first_tries = {r.delivery: r.body for r in receiver.received if r.answer == "500"}
    assert {r.delivery: r.body for r in accepted} == first_tries  # same id, same body
    client = redis.Redis.from_url(cluster.redis.url)
    assert client.zcard(Keys.webhooks_due) == 0 and not client.keys("xmlflow:webhook:*")


def test_a_claim_is_a_lease_that_a_dead_sender_loses(redis_server: RedisServer) -> None:
    """A sender killed mid-POST never reports: the delivery is claimable again once its
    lease runs out, counting the lost try, and the dead claim cannot push it back."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    outbox = RedisOutbox(client)
    job = Job("j1", "a.xml", 3, "default", [StepSpec("s", "S", "m")], JobStatus.SUCCEEDED)
    job.ended_at = 100.0
    pipe = client.pipeline(transaction=True)
    outbox.add(pipe, job, Event("j1", 7, EventType.END, {}))
    pipe.execute()

    first = outbox.claim(now=100.0, lease=5)
    assert first is not None and (first.id, first.attempts) == ("j1-7", 1)
    assert outbox.claim(now=104.9, lease=5) is None  # held
    second = outbox.claim(now=105.1, lease=5)  # the holder died: its lease ran out
    assert second is not None and (second.id, second.attempts) == ("j1-7", 2)
    assert second.body == first.body and second.token != first.token
    outbox.retry_at(first, 200.0, "late news from the dead claim")  # ignored
    assert outbox.claim(now=109.0, lease=5) is None  # still the second claim's
    outbox.retry_at(second, 150.0, "HTTP 500")
    assert outbox.claim(now=149.0, lease=5) is None
    third = outbox.claim(now=150.0, lease=5)
    assert third is not None and third.attempts == 3
    outbox.done(third)
    assert outbox.pending() == 0 and outbox.claim(now=1e12, lease=5) is None
    client.flushdb()
