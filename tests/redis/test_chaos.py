"""Chaos in Redis mode: everything that can pause, pauses, while 200 clients watch 20 jobs.

One worker (with its work-horse and the job's process) is stopped past its lease and
then let go; Redis is paused, then out of memory, then healthy again. Whatever
happens, each job ends exactly once with ``end`` as its last event, every client sees
contiguous ids without a duplicate (reconnecting from ``Last-Event-ID`` as browsers
do when a stream is cut), the record agrees with the stream, and the data folder
holds nothing but the outputs of the jobs that succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import aconnect_sse

from ..conftest import Server
from .conftest import Cluster, Worker

pytestmark = pytest.mark.redis

JOBS = 20
STREAMS_PER_JOB = 10  # 200 open streams
LEASE = 6  # seconds
DEADLINE = 50  # seconds for the whole scenario, streams included


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    children = [int(p) for p in out.split()]
    return children + [d for c in children for d in descendants(c)]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def follow(url: str, job_id: str, client: httpx.AsyncClient) -> list[tuple[int, str]]:
    """Every event of the job's stream as one client sees it, reconnecting when cut."""
    seen: list[tuple[int, str]] = []
    while not seen or seen[-1][1] != "end":
        headers = {"Last-Event-ID": str(seen[-1][0])} if seen else {}
        try:
            async with aconnect_sse(client, "GET", f"{url}/stream/{job_id}", headers=headers) as s:
                if s.response.status_code != 200:
                    await asyncio.sleep(0.5)  # 503 while Redis is away: retry, as EventSource does
                    continue
                async for e in s.aiter_sse():
                    if e.data:
                        seen.append((int(e.id), e.event))
        except httpx.TransportError:
            await asyncio.sleep(0.2)
    return seen


async def follow_all(
    urls: list[str], job_ids: list[str], results: dict[tuple[str, int], Any]
) -> None:
    limits = httpx.Limits(max_connections=JOBS * STREAMS_PER_JOB + 10)
    timeout = httpx.Timeout(20, connect=10)  # longer than the keepalive
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        tasks = {
            (job_id, n): asyncio.create_task(follow(urls[n % len(urls)], job_id, client))
            for job_id in job_ids
            for n in range(STREAMS_PER_JOB)
        }
        done, _ = await asyncio.wait(tasks.values(), timeout=DEADLINE)
        for key, task in tasks.items():
            results[key] = task.result() if task in done else TimeoutError("stream never ended")
            task.cancel()


def stop_past_lease(worker: Worker) -> list[int]:
    """SIGSTOP a worker busy with a job, its horse and the job's process; their pids."""
    assert worker.proc
    deadline = time.monotonic() + 20
    while not worker.horse_pids():
        assert time.monotonic() < deadline, "the worker never took a job"
        time.sleep(0.05)
    pids = [worker.proc.pid, *descendants(worker.proc.pid)]
    signal_all(pids, signal.SIGSTOP)
    return pids


@pytest.fixture
def chaos(cluster: Cluster) -> Iterator[Cluster]:
    cluster.extra_env.update({"XMLFLOW_LEASE_SECONDS": str(LEASE), "XMLFLOW_SSE_KEEPALIVE": "5"})
    client = redis.Redis.from_url(cluster.redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    yield cluster
    assert cluster.redis.proc
    os.kill(cluster.redis.proc.pid, signal.SIGCONT)
    client.config_set("maxmemory", 0)
    for w in cluster.workers:
        if w.proc:
            signal_all([w.proc.pid, *descendants(w.proc.pid)], signal.SIGCONT)


def test_chaos_every_job_ends_once_and_every_stream_is_whole(chaos: Cluster) -> None:
    started = time.monotonic()
    webs = [chaos.web(), chaos.web()]
    workers = [chaos.worker() for _ in range(4)]
    jobs = webs[0].upload(
        *[(f"{i}.xml", f"<r>{i}</r>".encode()) for i in range(JOBS)], pipeline="paced"
    )
    job_ids = [j["id"] for j in jobs]
    results: dict[tuple[str, int], Any] = {}
    readers = threading.Thread(
        target=asyncio.run, args=(follow_all([w.url for w in webs], job_ids, results),)
    )
    readers.start()

    stopped = stop_past_lease(workers[0])
    redis_pid = chaos.redis.proc.pid if chaos.redis.proc else 0
    client = redis.Redis.from_url(chaos.redis.url)
    time.sleep(1)
    os.kill(redis_pid, signal.SIGSTOP)  # Redis paused...
    time.sleep(3)
    os.kill(redis_pid, signal.SIGCONT)
    client.config_set("maxmemory", 1)  # ...then refusing every write...
    time.sleep(3)
    client.config_set("maxmemory", 0)  # ...then healthy
    time.sleep(LEASE)  # the lost-job monitor settles the stopped worker's job
    signal_all(stopped, signal.SIGCONT)  # and the stopped run wakes up, too late

    readers.join(DEADLINE + 5)
    settle_after_wake(workers[0])
    check_streams(results, job_ids)
    check_records(webs[0], results, job_ids)
    check_no_orphans(chaos.root / "data", webs[0], job_ids)
    assert time.monotonic() - started < 60


def settle_after_wake(worker: Worker) -> None:
    """Give the woken run the time to do what it would do (append, write outputs)."""
    deadline = time.monotonic() + 10
    while worker.horse_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)


def check_streams(results: dict[tuple[str, int], Any], job_ids: list[str]) -> None:
    for job_id in job_ids:
        seen = [results[(job_id, n)] for n in range(STREAMS_PER_JOB)]
        for events in seen:
            assert not isinstance(events, Exception), f"job {job_id}: {events}"
            ids = [i for i, _ in events]
            assert ids == list(range(1, len(ids) + 1)), f"job {job_id}: ids {ids}"
            kinds = [k for _, k in events]
            assert kinds.count("end") == 1 and kinds[-1] == "end", f"job {job_id}: {kinds}"
        assert all(s == seen[0] for s in seen), f"job {job_id}: clients saw different streams"


def check_records(web: Server, results: dict[tuple[str, int], Any], job_ids: list[str]) -> None:
    """The record ends where the streams ended: no event was appended after ``end``."""
    statuses = []
    for job_id in job_ids:
        end_id = results[(job_id, 0)][-1][0]
        job = web.job(job_id)
        assert job["last_event_id"] == end_id, f"job {job_id}: events after end: {job}"
        assert job["status"] in ("succeeded", "failed"), job
        statuses.append(job["status"])
    assert statuses.count("succeeded") >= JOBS - 1, statuses  # at most the stopped one lost


def check_no_orphans(data: Path, web: Server, job_ids: list[str]) -> None:
    assert list((data / "incoming").iterdir()) == []
    kept = [job_id for job_id in job_ids if web.job(job_id)["outputs"]]  # the others: no folder
    assert sorted(p.name for p in (data / "jobs").iterdir()) == sorted(kept)
    for job_id in job_ids:
        outputs = {o["name"] for o in web.job(job_id)["outputs"]}
        files = [p for p in (data / "jobs" / job_id).rglob("*") if p.is_file()]
        assert sorted(p.relative_to(data / "jobs" / job_id).as_posix() for p in files) == sorted(
            f"out/{name}" for name in outputs
        ), f"job {job_id}"
