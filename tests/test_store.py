"""The embedded job store and event log (SQLite), and recovery after a crash."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from xmlflow.backends.embedded import SqliteStore
from xmlflow.errors import Conflict, NotFound
from xmlflow.models import EventType, Job, JobStatus, StepSpec

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
    assert len(store._signals._conds) == 1
    for t in threads:
        t.join()
    assert store._signals._conds == {}
