"""Fencing in Redis mode: a job runs once and ends once, even when its worker was paused
past its lease and wakes up; every event is kept for replay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from xmlflow.backends.redis import RedisStore
from xmlflow.backends.redis.store import Change
from xmlflow.models import EventType, JobStatus, Superseded

from ..test_store import check_bounded_events, check_fencing, new_job
from .conftest import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisStore]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield RedisStore(client, retention=3600, lease_ttl=3)
    client.flushdb()
    client.close()


def test_a_stale_attempt_and_anything_after_end_are_refused(store: RedisStore) -> None:
    check_fencing(store)


def test_event_data_is_valid_unicode_and_bounded(store: RedisStore) -> None:
    check_bounded_events(store)


def test_a_requeued_job_refuses_its_first_run_and_its_lease(store: RedisStore) -> None:
    store.create(new_job("r1"))
    assert store.claim("r1") is not None
    assert store.renew_lease("r1", 1)
    store.r.delete("xmlflow:lease:r1")  # the lease expired: the worker was paused
    assert not store.renew_lease("r1", 1), "an expired lease is not taken back"
    assert store.settle_lost("r1", retries=1) is JobStatus.QUEUED
    second = store.claim("r1")
    assert second is not None and second.attempt == 2
    assert not store.renew_lease("r1", 1) and store.renew_lease("r1", 2)
    with pytest.raises(Superseded, match="attempt 1 was superseded"):
        store.append("r1", EventType.PROGRESS, {"index": 0, "fraction": 0.5}, attempt=1)
    store.append("r1", EventType.END, {"status": "succeeded", "outputs": []}, attempt=2)
    assert not store.renew_lease("r1", 2), "an ended job has no lease to renew"
    statuses = [e.data["status"] for e in store.read("r1") if e.type is not EventType.PROGRESS]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]


def test_replay_of_a_long_job_keeps_its_first_events(store: RedisStore) -> None:
    """Redis used to trim each stream to about 10,000 events: a replay lost the start.

    The events go in through the store's own write path, in batches (one append per
    transaction would take ten seconds here)."""
    store.create(new_job("long"))
    store.claim("long")
    for batch in range(10):

        def progress(change: Change, batch: int = batch) -> bool:
            for i in range(1_020):
                data = {"index": 0, "fraction": (batch * 1_020 + i) / 10_200}
                change.append(EventType.PROGRESS, data, attempt=1)
            return True

        store._transact("long", progress)
    store.append("long", EventType.END, {"status": "succeeded", "outputs": []}, attempt=1)
    events = store.read("long")
    assert [e.id for e in events] == list(range(1, 10_204))
    assert [e.data["status"] for e in events[:2]] == ["queued", "running"]
    assert events[2].data["fraction"] == 0 and events[-1].type is EventType.END
