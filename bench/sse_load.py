"""SSE load: N concurrent streams on one job (or spread over several), side by side per server.

For each deployment it starts the servers on 127.0.0.1, uploads ``--jobs`` jobs whose
one step waits for a "go" file and then emits a progress event every 0.1 s stamped
with ``time.time()``, opens ``--clients`` SSE streams (asyncio, raw sockets: the
clients must cost less than the server), says go, and measures until every stream
has its ``end`` event:

- held: streams connected when the events started, and still there at the end
- lost: events a stream never received (ids are contiguous per job, so a gap is a loss)
- latency p50/p99/max: emit (in the worker) to receipt (in the client), progress events
- web RSS (peak, all web processes) and web CPU (% of one core, during the events)

Usage::

    .venv/bin/python bench/sse_load.py --clients 2000 --events 100
    .venv/bin/python bench/sse_load.py --clients 400 --jobs 4 --modes embedded,gevent-1

Deployments (``--modes``): ``embedded`` (``xmlflow serve``: werkzeug threads + SQLite),
``gevent-N`` / ``gthread-N`` (``xmlflow serve --workers N`` on Redis, gunicorn worker
class chosen through ``GUNICORN_CMD_ARGS``), each Redis one with one ``xmlflow worker``
per job. Bounded: clients ≤ 5000, jobs ≤ 16, events ≤ 1000, and every phase times out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HOST = "127.0.0.1"
CONFIG = """
PIPELINES = {"default": [{"id": "pace", "name": "Pace", "module": "run_pace",
                          "options": {"events": %d}}]}
"""
PACE_STEP = """
import time
from pathlib import Path

def run_pace(ctx):
    go = Path(ctx.config_dir) / "go"
    while not go.exists():
        time.sleep(0.02)
    for i in range(ctx.options["events"]):
        time.sleep(0.1)  # relative sleeps: never under the runner's 0.1 s progress throttle
        ctx.progress(i / ctx.options["events"], repr(time.time()))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# -- processes --------------------------------------------------------------------------------


@dataclass
class Deployment:
    """The server processes of one mode: web process(es), Redis and workers if any."""

    mode: str
    root: Path
    jobs: int
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    web: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "XMLFLOW_DATA_DIR": str(self.root / "data"),
            "XMLFLOW_CONFIG": str(self.root / "config.py"),
            "XMLFLOW_WORKERS": str(max(2, self.jobs)),
            "XMLFLOW_LOG_LEVEL": "WARNING",
        }
        env.pop("XMLFLOW_REDIS_URL", None)
        return env

    def start(self) -> None:
        env = self.env()
        serve = [
            sys.executable,
            "-m",
            "xmlflow",
            "--log-level",
            "WARNING",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]
        if self.mode != "embedded":
            kind, _, count = self.mode.partition("-")
            redis_port = free_port()
            self._spawn(
                [
                    "redis-server",
                    "--port",
                    str(redis_port),
                    "--bind",
                    HOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                env,
            )
            env["XMLFLOW_REDIS_URL"] = f"redis://{HOST}:{redis_port}/0"
            threads = " --threads 2500" if kind == "gthread" else ""
            env["GUNICORN_CMD_ARGS"] = f"--worker-class {kind}{threads} --log-level warning"
            serve += ["--workers", count]
            time.sleep(0.3)
            for _ in range(self.jobs):
                self._spawn(
                    [sys.executable, "-m", "xmlflow", "--log-level", "WARNING", "worker"], env
                )
        self.web = self._spawn(serve, env)
        self._wait_ready()

    def _spawn(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.root / "server.log").open("ab") as log:
            proc = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/api/health", timeout=2).status_code < 500:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.mode}: server did not start; see {self.root}/server.log")

    def web_pids(self) -> list[int]:
        assert self.web
        return [self.web.pid, *children(self.web.pid)]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def rss_mib(pids: list[int]) -> float:
    kib = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kib += int(line.split()[1])
    return kib / 1024


# -- clients ----------------------------------------------------------------------------------


@dataclass
class Client:
    job_id: str
    connected: bool = False
    ended: bool = False
    ids: set[int] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)


FRAME = re.compile(rb"id: (\d+)\nevent: (\w+)\ndata: ([^\n]*)\n\n")
STAMP = re.compile(rb'"message":"([\d.]+)"')


class Stream(asyncio.Protocol):
    """One EventSource, by hand and cheaply: the clients share a core with the servers."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self.buffer = b""
        self.transport: asyncio.BaseTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        request = (
            f"GET /stream/{self.job_id} HTTP/1.1\r\nHost: {HOST}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        self.transport = transport
        transport.write(request.encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        c = self.client
        if not c.connected:
            c.connected = data.startswith(b"HTTP/1.1 200")
        self.buffer += data
        cut = self.buffer.rfind(b"\n\n") + 2
        for event_id, event, payload in FRAME.findall(self.buffer, 0, cut):
            c.ids.add(int(event_id))
            if event == b"progress" and (stamp := STAMP.search(payload)):
                c.latencies.append(now - float(stamp.group(1)))
            elif event == b"end":
                c.ended = True
        self.buffer = self.buffer[cut:]
        if c.ended:
            assert self.transport
            self.transport.close()  # the response is complete; the connection would idle on

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def stream(client: Client, port: int, gate: asyncio.Semaphore) -> None:
    loop = asyncio.get_running_loop()
    async with gate:
        transport, protocol = await loop.create_connection(
            lambda: Stream(client, client.job_id), HOST, port
        )
        await until(lambda: client.connected or protocol.closed.done(), 30)
    try:
        await protocol.closed
    finally:
        transport.close()


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Result:
    mode: str
    clients: int
    held: int
    lost: int
    p50: float
    p99: float
    worst: float
    rss: float
    cpu: float
    rate: float


def run_mode(mode: str, args: argparse.Namespace, root: Path) -> Result:
    root.mkdir(parents=True)
    (root / "config.py").write_text(CONFIG % args.events)
    (root / "processing_steps").mkdir()
    (root / "processing_steps" / "pace.py").write_text(textwrap.dedent(PACE_STEP))
    deployment = Deployment(mode, root, args.jobs)
    deployment.start()
    try:
        return asyncio.run(measure(deployment, args))
    finally:
        deployment.stop()


async def measure(d: Deployment, args: argparse.Namespace) -> Result:
    files = [("file", (f"{i}.xml", b"<a/>", "application/xml")) for i in range(args.jobs)]
    jobs = httpx.post(d.url + "/upload", files=files, timeout=30).json()["jobs"]
    clients = [Client(jobs[i % len(jobs)]["id"]) for i in range(args.clients)]
    gate = asyncio.Semaphore(100)  # connects in flight: the listen backlog is finite
    tasks = [asyncio.create_task(stream(c, d.port, gate)) for c in clients]
    await until(lambda: all(c.connected for c in clients) or any(t.done() for t in tasks), 90)
    held_at_start = sum(c.connected for c in clients)
    pids = d.web_pids()
    cpu0, t0, peak = cpu_seconds(pids), time.monotonic(), rss_mib(pids)
    (d.root / "go").touch()
    deadline = args.events * 0.1 * 3 + 30
    while not all(t.done() for t in tasks) and time.monotonic() - t0 < deadline:
        await asyncio.sleep(0.5)
        peak = max(peak, rss_mib(pids))
    cpu = (cpu_seconds(pids) - cpu0) / (time.monotonic() - t0) * 100
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return summarise(d, clients, held_at_start, peak, cpu, time.monotonic() - t0)


async def until(done: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.1)


def summarise(
    d: Deployment, clients: list[Client], held: int, rss: float, cpu: float, elapsed: float
) -> Result:
    last = {
        job: httpx.get(f"{d.url}/api/jobs/{job}", timeout=10).json()["last_event_id"]
        for job in {c.job_id for c in clients}
    }
    lost = sum(last[c.job_id] - len(c.ids) for c in clients)
    latencies = sorted(x for c in clients for x in c.latencies)
    ms = (
        [1000 * q for q in (statistics.median(latencies), quantile(latencies, 0.99), latencies[-1])]
        if latencies
        else [float("nan")] * 3
    )
    still = sum(c.connected and c.ended for c in clients)
    rate = len(latencies) / elapsed
    return Result(d.mode, len(clients), min(held, still), lost, ms[0], ms[1], ms[2], rss, cpu, rate)


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(results: list[Result]) -> str:
    head = (
        f"{'deployment':<12} {'clients':>7} {'held':>6} {'lost':>6} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'web RSS MiB':>11} {'web CPU %':>9} {'ev/s':>7}"
    )
    rows = [
        f"{r.mode:<12} {r.clients:>7} {r.held:>6} {r.lost:>6} {r.p50:>8.1f} {r.p99:>8.1f} "
        f"{r.worst:>8.1f} {r.rss:>11.0f} {r.cpu:>9.0f} {r.rate:>7.0f}"
        for r in results
    ]
    return "\n".join([head, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--events", type=int, default=100, help="progress events per job")
    parser.add_argument("--modes", default="embedded,gevent-1,gevent-2,gthread-1")
    args = parser.parse_args()
    if not (1 <= args.clients <= 5000 and 1 <= args.jobs <= 16 and 1 <= args.events <= 1000):
        parser.error("bounded: clients 1..5000, jobs 1..16, events 1..1000")
    if any(m != "embedded" for m in args.modes.split(",")) and not shutil.which("redis-server"):
        parser.error("the gunicorn modes need redis-server on PATH")
    root = Path(tempfile.mkdtemp(prefix="sse-load-"))
    results = []
    for mode in args.modes.split(","):
        print(
            f"{mode}: {args.clients} clients on {args.jobs} job(s), {args.events} events...",
            file=sys.stderr,
            flush=True,
        )
        results.append(run_mode(mode, args, root / mode))
    print(table(results))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
