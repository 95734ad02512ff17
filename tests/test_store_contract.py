"""One contract, both backends: the same tests of the job store and of listening, run on
SQLite (a temp folder) and on a real redis-server (started here on a free port).

What every backend must do the same way: the events a store operation appends itself,
fencing of stale runs and of anything after ``end``, bounded event data, the list's
filters, and a listener that gets exactly the events after its id, in order. What only
one backend does is tested beside it (``test_store.py``, ``tests/redis``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from xmlflow.backends.base import EventFeed, JobStore
from xmlflow.backends.sqlite import SqliteStore, open_sqlite
from xmlflow.errors import Conflict, NotFound
from xmlflow.models import (
    MAX_EVENT_BYTES,
    TRUNCATED_NOTE,
    Event,
    EventType,
    Job,
    JobStatus,
    StepSpec,
    StepStatus,
    Superseded,
)

SPECS = [StepSpec("process_xml", "Convert", "run_xml_processing_step")]
QUIET = 0.3  # seconds of quiet after which a listener gets []


def new_job(
    job_id: str = "a1",
    created: float | None = None,
    *,
    filename: str = "x.xml",
    pipeline: str = "default",
) -> Job:
    return Job(
        id=job_id,
        filename=filename,
        size=3,
        pipeline_name=pipeline,
        pipeline=SPECS,
        created_at=created or time.time(),
    )


@dataclass
class Backend:
    """A store, the feed that listens to it, and another writer on the same data (as
    another process would be)."""

    store: JobStore
    feed: EventFeed
    other: Callable[[], JobStore]
    closers: list[Callable[[], None]] = field(default_factory=list)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from .redis.conftest import RedisServer, _redis_binary_or_skip

    _redis_binary_or_skip()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


def _sqlite(tmp_path: Path) -> Iterator[Backend]:
    store, listeners = open_sqlite(tmp_path / "db.sqlite")
    yield Backend(store, listeners, lambda: SqliteStore(store.path))


def _redis(url: str) -> Iterator[Backend]:
    import redis

    from xmlflow.backends.redis import RedisStore, connect, open_follower

    client = connect(url)
    client.flushdb()
    store = RedisStore(client, retention=3600, lease_ttl=3)
    follower = open_follower(url, client, store)

    def other() -> RedisStore:
        second = redis.Redis.from_url(url)
        made.closers.append(second.close)
        return RedisStore(second, retention=3600, lease_ttl=3)

    made = Backend(store, follower, other, [follower.close])
    yield made
    for close in made.closers:
        close()
    client.flushdb()
    client.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield from _sqlite(tmp_path)
    else:
        yield from _redis(request.getfixturevalue("redis_url"))


@pytest.fixture
def store(backend: Backend) -> JobStore:
    return backend.store


def listened(batches: Generator[list[Event], None, None], last: int) -> list[Event]:
    """The events of ``batches`` up to id ``last`` (fails after 5 s without it)."""
    seen: list[Event] = []
    deadline = time.monotonic() + 5
    while not seen or seen[-1].id < last:
        assert time.monotonic() < deadline, f"only {[e.id for e in seen]} came"
        seen += next(batches)
    return seen


# -- records, and the events the store appends itself -----------------------------------------


def test_create_appends_the_queued_event(store: JobStore) -> None:
    created = store.create(new_job())
    assert (created.id, created.type, created.data["status"]) == (1, EventType.JOB, "queued")
    assert store.read("a1") == [created]
    job = store.get("a1")
    assert job is not None and job.status is JobStatus.QUEUED and job.last_event_id == 1
    assert store.get("zz") is None


def test_events_number_from_one_and_fold_into_the_job(store: JobStore) -> None:
    store.create(new_job())
    assert store.claim("a1") is not None
    store.append("a1", EventType.STEP, {"index": 0, "status": "running"})
    store.append("a1", EventType.PROGRESS, {"index": 0, "fraction": 0.5, "message": "half"})
    end = store.append("a1", EventType.END, {"status": "succeeded", "error": None, "outputs": []})
    assert [e.id for e in store.read("a1")] == [1, 2, 3, 4, 5]
    assert end.id == 5
    job = store.get("a1")
    assert job is not None
    assert job.status is JobStatus.SUCCEEDED and job.last_event_id == 5
    assert job.steps[0].fraction == 0.5 and job.steps[0].message == "half"
    assert job.ended_at is not None
    assert [e.id for e in store.read("a1", after=3)] == [4, 5]


def test_claim_happens_once(store: JobStore) -> None:
    store.create(new_job())
    claimed = store.claim("a1")
    assert claimed is not None and claimed.attempt == 1
    assert claimed.status is JobStatus.RUNNING
    assert store.claim("a1") is None
    running = store.read("a1")[-1]
    assert (running.id, running.type, running.data["status"]) == (2, EventType.JOB, "running")
    assert store.claim("zz") is None


def test_cancel_queued_ends_it_and_it_never_starts(store: JobStore) -> None:
    store.create(new_job())
    job = store.cancel("a1")
    assert job.status is JobStatus.CANCELLED
    assert store.claim("a1") is None
    end = store.read("a1")[-1]
    assert (end.id, end.type, end.data["status"]) == (2, EventType.END, "cancelled")
    with pytest.raises(Conflict):
        store.cancel("a1")
    with pytest.raises(NotFound):
        store.cancel("zz")


def test_cancel_running_sets_the_flag(store: JobStore) -> None:
    store.create(new_job())
    store.claim("a1")
    assert not store.cancel_requested("a1")
    assert store.cancel("a1").status is JobStatus.RUNNING
    assert store.cancel_requested("a1")
    assert [e.id for e in store.read("a1")] == [1, 2], "a flag, not an event"


def test_append_to_no_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFound):
        store.append("zz", EventType.PROGRESS, {"index": 0, "fraction": 0.1})


# -- fencing and bounded events ----------------------------------------------------------------


def test_a_stale_attempt_and_anything_after_end_are_refused(store: JobStore) -> None:
    """A run names its attempt; a stale attempt and anything after ``end`` are refused."""
    store.create(new_job("f1"))
    claimed = store.claim("f1")
    assert claimed is not None and claimed.attempt == 1
    store.append("f1", EventType.STEP, {"index": 0, "status": "running"}, attempt=1)
    with pytest.raises(Superseded, match="attempt 2 was superseded"):
        store.append("f1", EventType.PROGRESS, {"index": 0, "fraction": 0.1}, attempt=2)
    with pytest.raises(Superseded, match="attempt 0 was superseded"):
        store.append("f1", EventType.PROGRESS, {"index": 0, "fraction": 0.1}, attempt=0)
    store.append("f1", EventType.END, {"status": "failed", "error": "lost", "outputs": []})
    for attempt in (1, None):
        with pytest.raises(Superseded, match="already ended"):
            store.append(
                "f1", EventType.END, {"status": "succeeded", "outputs": []}, attempt=attempt
            )
    with pytest.raises(Superseded):
        store.append("f1", EventType.PROGRESS, {"index": 0, "fraction": 0.9}, attempt=1)
    events = store.read("f1")
    assert [e.id for e in events] == [1, 2, 3, 4]
    assert [e.type for e in events].count(EventType.END) == 1 and events[-1].type is EventType.END
    job = store.get("f1")
    assert job is not None
    assert job.status is JobStatus.FAILED and job.last_event_id == 4 and job.error == "lost"


def test_event_data_is_valid_unicode_and_bounded(store: JobStore) -> None:
    """A lone surrogate is stored as U+FFFD; huge data is cut to MAX_EVENT_BYTES, saying so."""
    store.create(new_job("b1"))
    store.claim("b1")
    store.append("b1", EventType.STEP, {"index": 0, "status": "running"}, attempt=1)
    store.append("b1", EventType.PROGRESS, {"index": 0, "fraction": 0.5, "message": "a\udcffb"})
    huge = {"index": 0, "status": "failed", "error": "x" * 1_000_000, "errors": ["e"] * 200_000}
    store.append("b1", EventType.STEP, huge, attempt=1)
    progress, failed = store.read("b1")[-2:]
    assert progress.data["message"] == "a\ufffdb"
    assert len(orjson.dumps(failed.data)) <= MAX_EVENT_BYTES
    assert failed.data["truncated"] == TRUNCATED_NOTE
    assert failed.data["error"].startswith("xxxx") and "characters cut]" in failed.data["error"]
    assert 0 < len(failed.data["errors"]) < 200_000
    job = store.get("b1")
    assert job is not None
    assert job.steps[0].status is StepStatus.FAILED and job.steps[0].message == "a\ufffdb"
    assert len(orjson.dumps(job.to_dict())) < 2 * MAX_EVENT_BYTES


# -- lists, restarts, retention ----------------------------------------------------------------


def test_list_is_newest_first_paged_and_filtered(store: JobStore) -> None:
    for i in range(5):
        store.create(new_job(f"j{i}", created=1000.0 + i))
    store.claim("j3")
    jobs, total = store.list_jobs(limit=2)
    assert total == 5 and [j.id for j in jobs] == ["j4", "j3"]
    jobs, _ = store.list_jobs(limit=2, offset=2)
    assert [j.id for j in jobs] == ["j2", "j1"]
    running, total = store.list_jobs(status=JobStatus.RUNNING)
    assert total == 1 and running[0].id == "j3"
    assert store.count_queued() == 4


def test_list_filters_by_statuses_pipeline_and_name(store: JobStore) -> None:
    store.create(new_job("n1", 1001.0, filename="Report-ÉTÉ.xml"))
    store.create(new_job("n2", 1002.0, filename="invoice.xml", pipeline="other"))
    store.create(new_job("n3", 1003.0, filename="report-2.xml"))
    store.create(new_job("n4", 1004.0, filename="notes.xml"))
    store.claim("n3")
    store.cancel("n4")

    def ids(**filters: Any) -> tuple[list[str], int]:
        jobs, total = store.list_jobs(**filters)
        return [j.id for j in jobs], total

    assert ids(status=[JobStatus.RUNNING, JobStatus.CANCELLED]) == (["n4", "n3"], 2)
    assert ids(status=[]) == (["n4", "n3", "n2", "n1"], 4)
    assert ids(q="REPORT") == (["n3", "n1"], 2)
    assert ids(q="été") == (["n1"], 1), "case-folded beyond ASCII"
    assert ids(q="report", status=JobStatus.QUEUED) == (["n1"], 1)
    assert ids(pipeline="other") == (["n2"], 1)
    assert ids(q="report", limit=1, offset=1) == (["n1"], 2)
    assert ids(q="nothing like it") == ([], 0)


def test_unfinished_are_queued_and_running_oldest_first(store: JobStore) -> None:
    for i in range(4):
        store.create(new_job(f"u{i}", created=1000.0 + i))
    store.claim("u2")
    store.cancel("u1")
    store.claim("u3")
    store.append("u3", EventType.END, {"status": "succeeded", "outputs": []}, attempt=1)
    assert [j.id for j in store.unfinished()] == ["u0", "u2"]


def test_delete_and_expired(store: JobStore) -> None:
    store.create(new_job("old"))
    store.append("old", EventType.END, {"status": "failed", "error": "x"})
    store.create(new_job("live"))
    assert store.expired(time.time() - 3600) == []
    assert store.expired(time.time() + 1) == ["old"]
    store.delete("old")
    assert store.get("old") is None and store.read("old") == []
    assert store.expired(time.time() + 1) == []
    jobs, total = store.list_jobs()
    assert total == 1 and [j.id for j in jobs] == ["live"]


# -- listening ----------------------------------------------------------------------------------


def test_listen_gets_exactly_the_later_events_in_order_then_idles(backend: Backend) -> None:
    store = backend.store
    store.create(new_job())
    store.claim("a1")

    def run() -> None:
        store.append("a1", EventType.STEP, {"index": 0, "status": "running"}, attempt=1)
        for i in range(5):
            store.append("a1", EventType.PROGRESS, {"index": 0, "fraction": i / 5}, attempt=1)
        store.append("a1", EventType.END, {"status": "succeeded", "outputs": []}, attempt=1)

    with closing(backend.feed.listen("a1", 1, QUIET)) as batches:
        threading.Timer(0.1, run).start()
        seen = listened(batches, 9)
        assert [e.id for e in seen] == list(range(2, 10))
        assert seen == store.read("a1", 1)
        assert next(batches) == [], "after the end: quiet"


def test_listen_wakes_on_append(backend: Backend) -> None:
    store = backend.store
    store.create(new_job())
    with closing(backend.feed.listen("a1", 1, 5)) as batches:
        claimed_at: list[float] = []

        def claim() -> None:
            claimed_at.append(time.monotonic())
            store.claim("a1")

        threading.Timer(0.2, claim).start()
        assert [e.id for e in next(batches)] == [2]
        assert time.monotonic() - claimed_at[0] < 0.5


def test_listen_gets_empty_batches_while_quiet(backend: Backend) -> None:
    backend.store.create(new_job())
    with closing(backend.feed.listen("a1", 1, QUIET)) as batches:
        started = time.monotonic()
        assert next(batches) == []
        assert next(batches) == []
        assert time.monotonic() - started < 4 * QUIET


def test_listen_sees_another_writer_s_events(backend: Backend) -> None:
    backend.store.create(new_job())
    other = backend.other()  # as another process would write
    with closing(backend.feed.listen("a1", 1, 5)) as batches:
        threading.Timer(0.1, lambda: other.claim("a1")).start()
        assert [e.id for e in listened(batches, 2)] == [2]
