"""Load: uploads arriving steadily while many listeners stream, and proof nothing is lost.

For each deployment it starts the servers on 127.0.0.1, then uploads ``--uploads``
small XML files spread evenly over ``--seconds`` and, as soon as each job exists,
opens ``--listeners-per-job`` SSE streams on it (200 uploads and 5 listeners a job
are the 1,000 listeners of the issue). Each listener reads until the server closes
its stream after ``end``. Then every listener's events are compared with the job's
full log (a replay after the end): the same ids, types and data, each exactly once
and in order.

Usage::

    .venv/bin/python bench/load.py                       # 200 uploads in 30 s, 1,000 listeners
    .venv/bin/python bench/load.py --modes embedded --uploads 50 --seconds 10

Bounded: uploads ≤ 1,000, listeners ≤ 5,000, every phase times out; 127.0.0.1 only.
The clients run in this process (one asyncio loop), on the same two cores as the
servers: their cost is in the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sse_load import Deployment, cpu_seconds, rss_mib

CONFIG = """
PROCESSING_STEPS = [
    {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"},
    {"id": "pace", "name": "Report progress", "module": "run_pace"},
    {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"},
]
"""
PACE_STEP = """
import time

def run_pace(ctx):
    for i in range(10):  # ten progress events over a second
        time.sleep(0.1)
        ctx.progress((i + 1) / 10, f"part {i + 1} of 10")
"""
DOC = (
    "<orders>"
    + "".join(
        f'<order id="{i}"><item sku="A{i}">widget</item><qty>{i % 7}</qty></order>'
        for i in range(2000)
    )
    + "</orders>"
)


@dataclass
class Gauge:
    now: int = 0
    peak: int = 0

    def __enter__(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        self.now -= 1


OPEN = Gauge()


@dataclass
class Listener:
    job: str
    events: list[tuple[int, str, str]] = field(default_factory=list)
    error: str | None = None


@dataclass
class Outcome:
    mode: str
    uploads: int
    refused: int
    ended: int
    succeeded: int
    listeners: int
    peak: int
    complete: int
    received: int
    lost: int
    duplicated: int
    disordered: int
    upload_ms: tuple[float, float]
    job_s: tuple[float, float]
    drain_s: float
    rss: float
    cpu: float


def parse_frames(raw: bytes) -> list[tuple[int, str, str]]:
    """(id, event, data) of every frame with an id; comments and the retry frame skipped."""
    frames = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        fields: dict[str, str] = {}
        for line in block.decode().split("\n"):
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                fields[name] = value
        if "id" in fields:
            frames.append((int(fields["id"]), fields.get("event", ""), fields.get("data", "")))
    return frames


async def listen(port: int, listener: Listener, timeout: float) -> None:
    """Read one stream to its end; the server closes it after ``end``."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /stream/{listener.job} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\nConnection: close\r\n\r\n".encode()
        )
        with OPEN:
            raw = await asyncio.wait_for(reader.read(-1), timeout)
        writer.close()
        body = raw.partition(b"\r\n\r\n")[2]
        listener.events = parse_frames(_dechunk(body) if b"chunked" in raw[:400] else body)
    except (OSError, TimeoutError) as exc:
        listener.error = repr(exc)


def _dechunk(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


async def upload(client: httpx.AsyncClient, name: str) -> tuple[str | None, float]:
    started = time.perf_counter()
    for _ in range(50):  # honour 503 + Retry-After, as a polite client would
        response = await client.post("/upload", files={"file": (name, DOC.encode())})
        if response.status_code == 202:
            return response.json()["jobs"][0]["id"], time.perf_counter() - started
        if response.status_code != 503:
            break
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return None, time.perf_counter() - started


async def drive(d: Deployment, args: argparse.Namespace) -> tuple[list[Any], ...]:
    listeners: list[Listener] = []
    tasks: list[asyncio.Task[None]] = []
    upload_times: list[float] = []
    jobs: list[str] = []
    gap = args.seconds / args.uploads
    async with httpx.AsyncClient(base_url=d.url, timeout=60) as client:
        start = time.monotonic()
        for i in range(args.uploads):
            await asyncio.sleep(max(0.0, start + i * gap - time.monotonic()))
            job, seconds = await upload(client, f"order-{i}.xml")
            upload_times.append(seconds)
            if job is None:
                continue
            jobs.append(job)
            for _ in range(args.listeners_per_job):
                listener = Listener(job)
                listeners.append(listener)
                tasks.append(asyncio.create_task(listen(d.port, listener, args.timeout)))
        await asyncio.gather(*tasks)
    return jobs, listeners, upload_times


def verify(d: Deployment, jobs: list[str], listeners: list[Listener]) -> dict[str, int]:
    """Compare every listener with its job's complete log."""
    truth: dict[str, list[tuple[int, str, str]]] = {}
    with httpx.Client(base_url=d.url, timeout=60) as client:
        for job in jobs:
            truth[job] = parse_frames(client.get(f"/stream/{job}").content)
    counts = {"complete": 0, "received": 0, "lost": 0, "duplicated": 0, "disordered": 0}
    for listener in listeners:
        want, got = truth[listener.job], listener.events
        ids = [e[0] for e in got]
        counts["received"] += len(got)
        counts["duplicated"] += len(ids) - len(set(ids))
        counts["disordered"] += sum(1 for a, b in zip(ids, ids[1:], strict=False) if b <= a)
        counts["lost"] += len({e[0] for e in want} - set(ids))
        counts["complete"] += got == want and bool(want) and want[-1][1] == "end"
    return counts


def job_stats(d: Deployment, jobs: list[str]) -> tuple[int, int, list[float], float]:
    ended = succeeded = 0
    durations, last_end = [], 0.0
    with httpx.Client(base_url=d.url, timeout=60) as client:
        for job in jobs:
            state = client.get(f"/api/jobs/{job}").json()
            if state["ended_at"]:
                ended += 1
                succeeded += state["status"] == "succeeded"
                durations.append(state["ended_at"] - state["created_at"])
                last_end = max(last_end, state["ended_at"])
    return ended, succeeded, durations, last_end


def run_mode(mode: str, args: argparse.Namespace, root: Path) -> Outcome:
    root.mkdir(parents=True)
    (root / "config.py").write_text(textwrap.dedent(CONFIG))
    (root / "processing_steps").mkdir()
    (root / "processing_steps" / "pace.py").write_text(textwrap.dedent(PACE_STEP))
    OPEN.peak = 0
    d = Deployment(mode, root, jobs=args.workers)
    d.start()
    try:
        cpu0, began, wall0 = cpu_seconds(d.all_pids()), time.time(), time.monotonic()
        jobs, listeners, upload_times = asyncio.run(drive(d, args))
        elapsed = time.monotonic() - wall0
        cpu = (cpu_seconds(d.all_pids()) - cpu0) / elapsed * 100
        rss = rss_mib(d.web_pids())
        ended, succeeded, durations, last_end = job_stats(d, jobs)
        counts = verify(d, jobs, listeners)
    finally:
        d.stop()
    return Outcome(
        mode=mode,
        uploads=args.uploads,
        refused=args.uploads - len(jobs),
        ended=ended,
        succeeded=succeeded,
        listeners=len(listeners),
        peak=OPEN.peak,
        upload_ms=_p50_p99([t * 1000 for t in upload_times]),
        job_s=_p50_p99(durations),
        drain_s=max(0.0, last_end - began - args.seconds),
        rss=rss,
        cpu=cpu,
        **counts,
    )


def _p50_p99(values: list[float]) -> tuple[float, float]:
    if not values:
        return (float("nan"), float("nan"))
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def table(outcomes: list[Outcome]) -> str:
    head = (
        f"{'deployment':<12}{'uploads':>8}{'503s':>6}{'ended':>7}{'ok':>6}{'listen':>8}"
        f"{'peak':>6}{'complete':>9}{'events':>8}{'lost':>6}{'dup':>5}{'order':>6}"
        f"{'up p50/p99 ms':>16}{'job p50/p99 s':>15}{'drain s':>9}{'RSS MiB':>9}{'CPU %':>7}"
    )
    rows = [head]
    for o in outcomes:
        rows.append(
            f"{o.mode:<12}{o.uploads:>8}{o.refused:>6}{o.ended:>7}{o.succeeded:>6}"
            f"{o.listeners:>8}{o.peak:>6}{o.complete:>9}{o.received:>8}{o.lost:>6}{o.duplicated:>5}"
            f"{o.disordered:>6}{f'{o.upload_ms[0]:.0f}/{o.upload_ms[1]:.0f}':>16}"
            f"{f'{o.job_s[0]:.1f}/{o.job_s[1]:.1f}':>15}{o.drain_s:>9.1f}{o.rss:>9.0f}"
            f"{o.cpu:>7.0f}"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--listeners-per-job", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="job workers per deployment")
    parser.add_argument("--modes", default="embedded,gevent-1")
    parser.add_argument("--timeout", type=float, default=300.0, help="per stream, seconds")
    args = parser.parse_args()
    if not (1 <= args.uploads <= 1000 and args.uploads * args.listeners_per_job <= 5000):
        parser.error("bounded: uploads ≤ 1000 and listeners ≤ 5000")
    with tempfile.TemporaryDirectory(prefix="xmlflow-load-") as tmp:
        outcomes = [run_mode(m, args, Path(tmp) / m) for m in args.modes.split(",")]
    print(
        f"{args.uploads} uploads over {args.seconds:g} s, {args.listeners_per_job} listeners "
        f"each ({args.uploads * args.listeners_per_job} in all), {args.workers} job workers"
    )
    print(table(outcomes))


if __name__ == "__main__":
    main()
