"""The embedded job store and event log (SQLite), and recovery after a crash."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from xmlflow.backends.embedded import SqliteStore
from xmlflow.errors import Conflict, NotFound
from xmlflow.models import (
    MAX_EVENT_BYTES,
    TRUNCATED_NOTE,
    EventType,
    Job,
    JobStatus,
    StepSpec,
    StepStatus,
    Superseded,
    bounded_data,
)

SPECS = [StepSpec("process_xml", "Convert", "run_xml_processing_step")]


def new_job(job_id: str = "a1", created: float | None = None) -> Job:
    return Job(
        id=job_id,
        filename="x.xml",
        size=3,
        pipeline_name="default",
        pipeline=SPECS,
        created_at=created or time.time(),
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "db.sqlite")


def test_events_number_from_one_and_fold_into_the_job(store: SqliteStore) -> None:
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


def test_claim_happens_once(store: SqliteStore) -> None:
    store.create(new_job())
    assert store.claim("a1") is not None
    assert store.claim("a1") is None


def test_cancel_queued_ends_it_and_it_never_starts(store: SqliteStore) -> None:
    store.create(new_job())
    job = store.cancel("a1")
    assert job.status is JobStatus.CANCELLED
    assert store.claim("a1") is None
    assert store.read("a1")[-1].type is EventType.END
    with pytest.raises(Conflict):
        store.cancel("a1")
    with pytest.raises(NotFound):
        store.cancel("zz")


def test_cancel_running_sets_the_flag(store: SqliteStore) -> None:
    store.create(new_job())
    store.claim("a1")
    assert not store.cancel_requested("a1")
    assert store.cancel("a1").status is JobStatus.RUNNING
    assert store.cancel_requested("a1")


def test_follow_wakes_on_append(store: SqliteStore) -> None:
    store.create(new_job())
    threading.Timer(0.2, lambda: store.claim("a1")).start()
    started = time.monotonic()
    events = store.follow("a1", after=1, timeout=5)
    assert [e.id for e in events] == [2]
    assert time.monotonic() - started < 1


def test_follow_times_out_empty(store: SqliteStore) -> None:
    store.create(new_job())
    assert store.follow("a1", after=1, timeout=0.2) == []


def test_follow_sees_another_connection_s_writes(store: SqliteStore, tmp_path: Path) -> None:
    store.create(new_job())
    other = SqliteStore(store.path)  # as another process would
    threading.Timer(0.1, lambda: other.claim("a1")).start()
    assert [e.id for e in store.follow("a1", after=1, timeout=5)] == [2]


def test_list_is_newest_first_paged_and_filtered(store: SqliteStore) -> None:
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


def test_delete_and_expired(store: SqliteStore) -> None:
    store.create(new_job("old"))
    store.append("old", EventType.END, {"status": "failed", "error": "x"})
    store.create(new_job("live"))
    assert store.expired(time.time() + 1) == ["old"]
    store.delete("old")
    assert store.get("old") is None and store.read("old") == []


def test_listeners_free_what_they_held(store: SqliteStore) -> None:
    store.create(new_job())
    threads = [threading.Thread(target=store.follow, args=("a1", 1, 0.3)) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    assert store.listeners() == 5
    for t in threads:
        t.join()
    assert store.listeners() == 0


# -- fencing and bounded events: the same checks run on the Redis store (tests/redis) ---------


def check_fencing(store: Any) -> None:
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
    assert job.status is JobStatus.FAILED and job.last_event_id == 4 and job.error == "lost"


def check_bounded_events(store: Any) -> None:
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
    assert job.steps[0].status is StepStatus.FAILED and job.steps[0].message == "a\ufffdb"
    assert len(orjson.dumps(job.to_dict())) < 2 * MAX_EVENT_BYTES


def test_a_stale_attempt_and_anything_after_end_are_refused(store: SqliteStore) -> None:
    check_fencing(store)


def test_event_data_is_valid_unicode_and_bounded(store: SqliteStore) -> None:
    check_bounded_events(store)


@pytest.mark.parametrize(
    "data",
    [
        {
            "index": 0,
            "status": "failed",
            "errors": [{"line": i, "text": "x" * 80} for i in range(10**5)],
        },
        {"index": 0, "message": {str(i): "y" * 50 for i in range(10**5)}},
        {"index": 0, "status": "failed", "nested": [[["z" * 1000] * 100] * 100] * 10},
    ],
    ids=["long-list", "many-keys", "nested"],
)
def test_any_event_data_is_cut_to_the_cap_keeping_what_the_record_needs(
    data: dict[str, Any],
) -> None:
    bounded = bounded_data(data)
    assert len(orjson.dumps(bounded)) <= MAX_EVENT_BYTES
    assert bounded["truncated"] == TRUNCATED_NOTE and bounded["index"] == 0
    assert bounded.get("status") == data.get("status")
    assert bounded_data({"index": 1, "message": "short"}) == {"index": 1, "message": "short"}
