"""The cost of ``GET /api/jobs``'s filters in the embedded store, as the history grows.

Writes ``--jobs`` ended jobs (every tenth one failed, the rest cancelled; names
``report-<n>.xml``) to a fresh SQLite store in a temporary folder, then times
``SqliteStore.list_jobs`` for one page of 50: unfiltered (the baseline, measured in the
same run), by status, by several statuses, by file name (``q``) and combined. Each
figure is the median of ``--repeat`` calls; the ratio is against the unfiltered page.

Usage::

    .venv/bin/python bench/list_jobs.py                 # 10,000 jobs
    .venv/bin/python bench/list_jobs.py --jobs 1000

The name search reads every job's record inside SQLite (status and pipeline are indexed
columns, the name is not), so it grows with the history; the table shows by how much.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xmlflow.backends.sqlite import SqliteStore
from xmlflow.models import EventType, Job, JobStatus
from xmlflow.service import new_job_id


def fill(store: SqliteStore, count: int) -> None:
    start = time.time() - count
    for i in range(count):
        job = Job(
            id=new_job_id(),
            filename=f"report-{i:06d}.xml",
            size=1000,
            pipeline_name="default" if i % 3 else "other",
            pipeline=[],
            created_at=start + i,
        )
        store.create(job)
        if i % 10:
            store.cancel(job.id)
        else:
            store.claim(job.id)
            store.append(job.id, EventType.END, {"status": "failed", "error": "x", "outputs": []})


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "xmlflow.db")
        fill(store, args.jobs)
        cases: dict[str, dict[str, Any]] = {
            "no filter (baseline)": {},
            "status=failed": {"status": JobStatus.FAILED},
            "status=failed,cancelled": {"status": {JobStatus.FAILED, JobStatus.CANCELLED}},
            "pipeline=other": {"pipeline": "other"},
            "q=REPORT-0042": {"q": "REPORT-0042"},
            "q=report (all match)": {"q": "report"},
            "q=report-00 + status=failed": {"q": "report-00", "status": JobStatus.FAILED},
        }
        print(f"{args.jobs:,} jobs, one page of 50, median of {args.repeat}")
        print(f"{'filter':32} {'matches':>8} {'ms':>8} {'ratio':>7}")
        base = 0.0
        for name, filters in cases.items():
            _, total = store.list_jobs(limit=50, **filters)
            ms = median_ms(lambda f=filters: store.list_jobs(limit=50, **f), args.repeat)
            base = base or ms
            print(f"{name:32} {total:>8,} {ms:>8.2f} {ms / base:>6.1f}x")


if __name__ == "__main__":
    main()
