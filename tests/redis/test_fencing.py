"""Fencing in Redis mode: a job runs once and ends once, even when its worker was paused
past its lease and wakes up; every event is kept for replay, and RQ records no failure."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry

from xmlflow.backends.redis import RedisStore
from xmlflow.backends.redis.keys import QUEUE_NAME
from xmlflow.backends.redis.store import Change
from xmlflow.models import EventType, JobStatus, Superseded

from ..conftest import Event, Server, write_config
from ..test_store_contract import new_job
from .conftest import REDIS_CONFIG, REDIS_STEPS, Cluster, RedisServer, Worker

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisStore]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield RedisStore(client, retention=3600, lease_ttl=3)
    client.flushdb()
    client.close()


def test_a_requeued_job_refuses_its_first_run_and_its_lease(store: RedisStore) -> None:
    store.create(new_job("r1"))
    assert store.claim("r1") is not None
    assert store.renew_lease("r1", 1)
    store.r.delete("xmlflow:lease:r1")  # the lease expired: the worker was paused
    assert not store.renew_lease("r1", 1), "an expired lease is not taken back"
    settled = store.settle_lost("r1", retries=1)
    assert settled is not None and settled.status is JobStatus.QUEUED and settled.attempt == 1
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


# -- a worker paused past its lease, through the real entry points -----------------------------

LEASE = 4  # seconds (XMLFLOW_LEASE_SECONDS); the lost-job monitor looks every 1.3 s
FENCED_CONFIG = REDIS_CONFIG.replace(
    '"raising": [',
    """"pausable": [
            {"id": "tick", "name": "Tick", "module": "run_tick", "options": {"ticks": 40}},
            {"id": "shout", "name": "Shout", "module": "run_shout", "options": {"suffix": "?"}},
        ],
        "raising": [""",
)


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    children = [int(p) for p in out.split()]
    return children + [d for c in children for d in _descendants(c)]


def _pause_running_job(web: Server, worker: Worker, job_id: str) -> list[int]:
    """SIGSTOP the work-horse running the job and its pipeline child, once it reports progress."""
    deadline = time.monotonic() + 30
    while web.job(job_id)["steps"][0]["fraction"] is None:
        assert time.monotonic() < deadline, web.job(job_id)
        time.sleep(0.05)
    assert worker.proc
    paused = _descendants(worker.proc.pid)
    assert len(paused) >= 2, "a work-horse and its pipeline child"
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    return paused


def _resume(paused: list[int]) -> None:
    for pid in reversed(paused):  # the pipeline child first: the worst case
        os.kill(pid, signal.SIGCONT)


def _wait_until(web: Server, job_id: str, done: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not done(job := web.job(job_id)):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def _stream_in_background(web: Server, job_id: str) -> tuple[threading.Thread, list[Event]]:
    """A real SSE client that stays connected through the pause, until the stream closes."""
    seen: list[Event] = []
    thread = threading.Thread(target=lambda: seen.extend(web.events(job_id, timeout=90)))
    thread.start()
    return thread, seen


def _wait_for_stale_run_to_go(worker: Worker) -> None:
    """The paused horse, resumed, must notice at once that it lost the job and stop."""
    assert worker.proc
    deadline = time.monotonic() + 10
    while _descendants(worker.proc.pid):
        assert time.monotonic() < deadline, "the superseded run did not stop"
        time.sleep(0.1)
    time.sleep(1)  # what a run that carried on would append or write, it would have by now


def _assert_one_end_last(events: list[Event]) -> None:
    assert [e.id for e in events] == list(range(1, len(events) + 1)), "ids contiguous"
    assert [e.event for e in events].count("end") == 1 and events[-1].event == "end"


def _store_events(cluster: Cluster, job_id: str) -> list[Event]:
    client = redis.Redis.from_url(cluster.redis.url)
    store = RedisStore(client, retention=3600, lease_ttl=LEASE)
    events = [Event(e.id, str(e.type), e.data) for e in store.read(job_id)]
    client.close()
    return events


@pytest.fixture
def pausable(cluster: Cluster) -> Cluster:
    write_config(cluster.root / "conf", FENCED_CONFIG, REDIS_STEPS)
    cluster.extra_env["XMLFLOW_LEASE_SECONDS"] = str(LEASE)
    return cluster


def test_a_run_paused_past_its_lease_never_adds_to_the_ended_job(pausable: Cluster) -> None:
    web = pausable.web()
    worker = pausable.worker()
    [job] = web.upload(("a.xml", b"<a>text</a>"), pipeline="pausable")
    job_id = job["id"]
    listener, streamed = _stream_in_background(web, job_id)
    paused = _pause_running_job(web, worker, job_id)
    try:
        ended = _wait_until(web, job_id, lambda j: j["status"] != "running", timeout=LEASE * 5)
    finally:
        _resume(paused)
    _wait_for_stale_run_to_go(worker)
    listener.join(30)

    assert ended["status"] == "failed" and "lost" in ended["error"]
    replayed = web.events(job_id)
    for events in (streamed, replayed, _store_events(pausable, job_id)):
        _assert_one_end_last(events)
        assert events == replayed
    after = web.job(job_id)
    assert after["status"] == "failed" and after["outputs"] == []
    assert after["last_event_id"] == replayed[-1].id
    job_dir = pausable.root / "data" / "jobs" / job_id
    assert not job_dir.exists() or list(job_dir.iterdir()) == [], "no file from the stale run"


def test_with_a_retry_the_two_runs_never_interleave(pausable: Cluster) -> None:
    pausable.extra_env["XMLFLOW_RETRIES"] = "1"
    web = pausable.web()
    first = pausable.worker()
    [job] = web.upload(("a.xml", b"<a>text</a>"), pipeline="pausable")
    job_id = job["id"]
    listener, streamed = _stream_in_background(web, job_id)
    _wait_until(web, job_id, lambda j: j["status"] == "running")
    second = pausable.worker()  # idle until the retry
    paused = _pause_running_job(web, first, job_id)
    try:
        _wait_until(web, job_id, lambda j: j["attempt"] == 2, timeout=LEASE * 5)
    finally:
        _resume(paused)
    _wait_for_stale_run_to_go(first)
    listener.join(60)
    assert second.proc and second.proc.poll() is None

    replayed = web.events(job_id)
    _assert_one_end_last(replayed)
    assert streamed == replayed == _store_events(pausable, job_id)
    runs = [
        i for i, e in enumerate(replayed) if e.data.get("status") == "running" and e.event == "job"
    ]
    assert [replayed[i].data["attempt"] for i in runs] == [1, 2]
    stale_horse = f"worker {paused[0]}"
    assert not any(stale_horse in e.data.get("message", "") for e in replayed[runs[1] :])
    assert any(stale_horse in e.data.get("message", "") for e in replayed[: runs[1]])
    end = replayed[-1].data
    assert end["status"] == "succeeded"
    [output] = end["outputs"]
    assert httpx.get(web.url + output["url"], timeout=10).text == "<A>TEXT</A>?"
    job_dir = pausable.root / "data" / "jobs" / job_id
    assert sorted(p.name for p in job_dir.iterdir()) == ["out"]
    assert [p.name for p in (job_dir / "out").iterdir()] == [output["name"]]
    _wait_for_stale_run_to_go(second)  # RQ's bookkeeping of the retry is done too
    _assert_no_rq_failure(pausable, job_id, stale=first, retry=second)


def _assert_no_rq_failure(cluster: Cluster, job_id: str, *, stale: Worker, retry: Worker) -> None:
    """The stale run was fenced on purpose and the job ended fine: RQ records no failure
    (its two executions once shared one RQ record, and the first to end deleted it under
    the other), and the stale run says in one INFO line that it was superseded."""
    logs = {w.log_path.name: w.log_path.read_text() for w in (stale, retry)}
    for name, text in logs.items():
        assert " ERROR " not in text and "Traceback" not in text, f"{name}:\n{text}"
    said = f" INFO xmlflow.jobrun: job {job_id}: attempt 1 superseded, stopped: "
    assert [said in line for line in logs[stale.log_path.name].splitlines()].count(True) == 1
    queue = Queue(QUEUE_NAME, connection=redis.Redis.from_url(cluster.redis.url))
    assert FailedJobRegistry(queue=queue).get_job_ids() == []


def test_redis_paused_past_the_lease_still_ends_the_job_once(pausable: Cluster) -> None:
    """Redis SIGSTOPped longer than the lease: the run cannot renew it, so when Redis is
    back the run stops itself, the job is settled as lost, and nothing follows its end."""
    web = pausable.web()
    worker = pausable.worker()
    [job] = web.upload(("a.xml", b"<a>text</a>"), pipeline="pausable")
    job_id = job["id"]
    _wait_until(web, job_id, lambda j: j["steps"][0]["fraction"] is not None)
    assert pausable.redis.proc
    pausable.redis.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(LEASE * 2)
    finally:
        pausable.redis.proc.send_signal(signal.SIGCONT)
    ended = _wait_until(web, job_id, lambda j: j["status"] != "running", timeout=LEASE * 5)
    _wait_for_stale_run_to_go(worker)

    assert ended["status"] == "failed" and "lost" in ended["error"]
    replayed = web.events(job_id)
    _assert_one_end_last(replayed)
    assert replayed == _store_events(pausable, job_id)
    assert web.job(job_id)["last_event_id"] == replayed[-1].id
    job_dir = pausable.root / "data" / "jobs" / job_id
    assert not job_dir.exists() or list(job_dir.iterdir()) == []
