"""SSE load: N concurrent streams on one job (or spread over several), side by side per server.

For each deployment it starts the servers on 127.0.0.1, uploads ``--jobs`` jobs whose
one step waits for a "go" file and then emits a progress event every 0.1 s stamped
with ``time.time()``, opens ``--clients`` SSE streams, says go, and measures until
every stream has its ``end`` event:

- held: streams connected when the events started, and still there at the end
- lost: events a stream never received (ids are contiguous per job, so a gap is a loss)
- latency p50/p99/max: emit (in the worker) to receipt (in the client), progress events
- web RSS (peak, all web processes) and web CPU (% of one core, during the events); srv
  CPU adds Redis and the job workers; cli CPU is the clients' own

Usage::

    ulimit -n 20000  # the bench raises the soft limit to the hard one, for the servers too
    .venv/bin/python bench/sse_load.py --clients 2000 --events 200
    .venv/bin/python bench/sse_load.py --clients 400 --jobs 4 --modes embedded,gevent-1

``KEEP=1`` keeps the servers' folders and logs (the path is printed).

Deployments (``--modes``, default: the two embedded ones side by side): ``embedded``
(``xmlflow serve``, what ``make run`` runs: gunicorn, one gevent worker, SQLite),
``embedded-dev`` (``xmlflow serve --dev``: werkzeug, a thread per connection, the
default before 0.2), ``embedded-gthread`` / ``embedded-gevent`` (the same one-process
app on gunicorn, one worker of that class, settings through ``GUNICORN_CMD_ARGS``),
``gevent-N`` / ``gthread-N`` (``xmlflow serve --workers N`` on Redis, gunicorn worker
class chosen through ``GUNICORN_CMD_ARGS``), each Redis one with one ``xmlflow worker``
per job. Bounded: clients ≤ 5000, jobs ≤ 16, events ≤ 1000, and every phase times out.

The clients run in ``--client-procs`` processes of their own (fork), each one epoll loop
over plain non-blocking sockets and two regex scans per ``recv``: no asyncio, no HTTP
library, so that they take as little as possible of the cores the servers are measured
on (their CPU is printed too). Latency is ``time.time()`` at ``recv`` minus the stamp
the step put in the event's data.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
DEFAULT_MODES = "embedded,embedded-dev"
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
        """``embedded``: ``xmlflow serve``; ``embedded-dev``: ``serve --dev``;
        ``embedded-gthread``: the same app on gunicorn gthread, one worker;
        ``gevent-N``/``gthread-N``: Redis mode, ``serve --workers N``."""
        env = self.env()
        serve = [sys.executable, "-m", "xmlflow", "--log-level", "WARNING", "serve"]
        serve += ["--host", HOST, "--port", str(self.port)]
        kind, _, count = self.mode.partition("-")
        threads = " --threads 2500" if "gthread" in (kind, count) else ""
        if self.mode == "embedded-dev":
            serve.append("--dev")
        elif self.mode.startswith("embedded-"):
            from xmlflow.gunicorn_conf import gunicorn_argv

            env["GUNICORN_CMD_ARGS"] = f"--worker-class {count}{threads} --log-level warning"
            serve = gunicorn_argv(HOST, self.port, 1)
        elif not self.mode.startswith("embedded"):
            env["XMLFLOW_REDIS_URL"] = self._start_redis(env)
            env["GUNICORN_CMD_ARGS"] = f"--worker-class {kind}{threads} --log-level warning"
            serve += ["--workers", count]
            for _ in range(self.jobs):
                self._spawn(
                    [sys.executable, "-m", "xmlflow", "--log-level", "WARNING", "worker"], env
                )
        self.web = self._spawn(serve, env)
        self._wait_ready()

    def _start_redis(self, env: dict[str, str]) -> str:
        port = free_port()
        redis = ["redis-server", "--port", str(port), "--bind", HOST, "--save", ""]
        self._spawn([*redis, "--appendonly", "no"], env)
        time.sleep(0.3)
        return f"redis://{HOST}:{port}/0"

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

    def all_pids(self) -> list[int]:
        """Every server-side process: web, Redis, job workers (and their work-horses)."""
        pids = [p.pid for p in self.procs]
        return [*pids, *(c for p in pids for c in children(p, deep=True))]

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


def children(pid: int, *, deep: bool = False) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return [*kids, *(g for k in kids for g in children(k, deep=True))] if deep else kids


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


# -- clients (in their own processes) ----------------------------------------------------------

EVENT_ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)
STAMP = re.compile(rb'"message":"(\d+\.\d+)"')
REQUEST = "GET /stream/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
WAITING, OPEN, ENDED, DROPPED = range(4)


class Receipts:
    """Every progress event's latency, and per event the first and last receipt over all
    streams: the first says how long the pipeline to the web process takes, the spread
    (last - first) how long fanning it out to every listener takes."""

    def __init__(self) -> None:
        self.latencies: array[float] = array("d")
        self.spans: dict[bytes, list[float]] = {}

    def add(self, stamp: bytes, now: float) -> None:
        self.latencies.append(now - float(stamp))
        span = self.spans.get(stamp)
        if span is None:
            self.spans[stamp] = [now, now]
        else:
            span[1] = now  # one process reads in time order


class Conn:
    """One EventSource by hand: a socket, the unparsed tail, and what arrived so far.

    The parse is two C-level regex scans per ``recv``, never a loop per byte or per
    field: the clients share the two cores with the servers they measure.
    """

    __slots__ = ("sock", "job", "tail", "state", "count", "last", "disorder")

    def __init__(self, sock: socket.socket, job: str) -> None:
        self.sock, self.job, self.tail = sock, job, b""
        self.state, self.count, self.last, self.disorder = WAITING, 0, 0, 0

    def feed(self, data: bytes, now: float, receipts: Receipts) -> None:
        if self.state == WAITING:
            self.state = OPEN if data.startswith(b"HTTP/1.1 200") else DROPPED
        buf = self.tail + data
        cut = buf.rfind(b"\n\n") + 2
        if cut == 1:
            self.tail = buf
            return
        done, self.tail = buf[:cut], buf[cut:]
        ids = EVENT_ID.findall(done)
        if ids:
            first, last = int(ids[0]), int(ids[-1])
            if first != self.last + 1 or last - first + 1 != len(ids):
                self.disorder += 1  # a gap or a repeat inside one stream
            self.count, self.last = self.count + len(ids), last
        for stamp in STAMP.findall(done):
            receipts.add(stamp, now)
        if b"event: end\n" in done:
            self.state = ENDED


def open_streams(port: int, jobs: list[str]) -> list[Conn]:
    """Connect every stream (blocking connects: the listen backlog paces them)."""
    conns = []
    for job in jobs:
        sock = socket.create_connection((HOST, port), timeout=30)
        sock.sendall(REQUEST.format(job).encode())
        sock.setblocking(False)
        conns.append(Conn(sock, job))
    return conns


def pump(ep: select.epoll, by_fd: dict[int, Conn], receipts: Receipts, until: float) -> None:
    """Read whatever arrived, until ``until`` or until no stream is left."""
    while by_fd and time.monotonic() < until:
        for fd, _ in ep.poll(0.5):
            conn = by_fd[fd]
            try:
                data = conn.sock.recv(262_144)
            except OSError:
                data = b""
            if data:
                conn.feed(data, time.time(), receipts)
            if not data or conn.state in (ENDED, DROPPED):
                if not data and conn.state != ENDED:
                    conn.state = DROPPED
                ep.unregister(fd)
                conn.sock.close()
                del by_fd[fd]


def client_process(port: int, jobs: list[str], pipe: Connection, budget: float) -> None:
    """Hold ``len(jobs)`` streams; report "connected", then every stream's tally."""
    conns = open_streams(port, jobs)
    ep = select.epoll()
    by_fd = {c.sock.fileno(): c for c in conns}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    receipts = Receipts()
    deadline = time.monotonic() + 30
    while any(c.state == WAITING for c in conns) and time.monotonic() < deadline:
        pump(ep, by_fd, receipts, time.monotonic() + 0.5)
    pipe.send(sum(c.state == OPEN for c in conns))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    pump(ep, by_fd, receipts, time.monotonic() + budget)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    tallies = [(c.job, c.state == ENDED, c.count, c.disorder) for c in conns]
    pipe.send((tallies, receipts.latencies.tobytes(), cpu, receipts.spans))


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Result:
    mode: str
    clients: int
    held: int
    lost: int
    disorder: int
    p50: float
    p99: float
    worst: float
    rss: float
    web_cpu: float
    all_cpu: float
    client_cpu: float
    rate: float
    first: float  # ms, median over events: stamp to its first receipt
    spread: float  # ms, median over events: first to last receipt


def run_mode(mode: str, args: argparse.Namespace, root: Path) -> Result:
    root.mkdir(parents=True)
    (root / "config.py").write_text(CONFIG % args.events)
    (root / "processing_steps").mkdir()
    (root / "processing_steps" / "pace.py").write_text(textwrap.dedent(PACE_STEP))
    deployment = Deployment(mode, root, args.jobs)
    deployment.start()
    try:
        return measure(deployment, args)
    finally:
        deployment.stop()


def measure(d: Deployment, args: argparse.Namespace) -> Result:
    files = [("file", (f"{i}.xml", b"<a/>", "application/xml")) for i in range(args.jobs)]
    jobs = [j["id"] for j in httpx.post(d.url + "/upload", files=files, timeout=30).json()["jobs"]]
    wanted = [jobs[i % len(jobs)] for i in range(args.clients)]
    budget = args.events * 0.1 * 3 + 30
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for k in range(args.client_procs):
        ours, theirs = ctx.Pipe()
        share = wanted[k :: args.client_procs]
        procs.append(ctx.Process(target=client_process, args=(d.port, share, theirs, budget)))
        procs[-1].start()
        pipes.append(ours)
    held = sum(p.recv() for p in pipes if p.poll(120))
    web, everything = d.web_pids(), d.all_pids()
    web0, all0, t0, peak = cpu_seconds(web), cpu_seconds(everything), time.monotonic(), 0.0
    (d.root / "go").touch()
    replies: dict[int, Any] = {}
    while len(replies) < len(pipes) and time.monotonic() - t0 < budget + 10:
        for k in (k for k, p in enumerate(pipes) if k not in replies and p.poll(0.5)):
            replies[k] = pipes[k].recv()
        peak = max(peak, rss_mib(web))
    elapsed = time.monotonic() - t0
    for proc in procs:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    usage = (
        (cpu_seconds(web) - web0) / elapsed * 100,
        (cpu_seconds(everything) - all0) / elapsed * 100,
        sum(r[2] for r in replies.values()) / elapsed * 100,
    )
    return summarise(d, held, list(replies.values()), peak, usage, elapsed)


def summarise(
    d: Deployment,
    held: int,
    replies: list[Any],
    rss: float,
    usage: tuple[float, float, float],
    elapsed: float,
) -> Result:
    tallies = [t for r in replies for t in r[0]]
    last = {
        job: httpx.get(f"{d.url}/api/jobs/{job}", timeout=10).json()["last_event_id"]
        for job in {t[0] for t in tallies}
    }
    lost = sum(last[job] - count for job, _, count, _ in tallies)
    latencies: array[float] = array("d")
    for r in replies:
        latencies.frombytes(r[1])
    ordered = sorted(latencies)
    first, spread = pipeline_and_fanout(replies)
    ms = [1000 * quantile(ordered, q) for q in (0.5, 0.99, 1.0)] if ordered else [math.nan] * 3
    ended = sum(t[1] for t in tallies)
    disorder = sum(t[3] for t in tallies)
    rate = len(ordered) / elapsed
    p50, p99, worst = ms
    web_cpu, all_cpu, client_cpu = usage
    return Result(
        d.mode, len(tallies), min(held, ended), lost, disorder,
        p50, p99, worst, rss, web_cpu, all_cpu, client_cpu, rate, first, spread,
    )  # fmt: skip


def pipeline_and_fanout(replies: list[Any]) -> tuple[float, float]:
    """Medians over events, in ms: stamp to first receipt, and first to last receipt."""
    spans: dict[bytes, list[float]] = {}
    for reply in replies:
        for stamp, (first, last) in reply[3].items():
            span = spans.setdefault(stamp, [first, last])
            span[0], span[1] = min(span[0], first), max(span[1], last)
    if not spans:
        return math.nan, math.nan
    firsts = sorted(1000 * (f - float(stamp)) for stamp, (f, _) in spans.items())
    spreads = sorted(1000 * (last - f) for f, last in spans.values())
    return quantile(firsts, 0.5), quantile(spreads, 0.5)


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(results: list[Result]) -> str:
    """All modes side by side; "vs dev" is the werkzeug server's p99 over this mode's p99."""
    base = next((r.p99 for r in results if r.mode == "embedded-dev"), math.nan)
    head = (
        f"{'deployment':<17} {'clients':>7} {'held':>5} {'lost':>5} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'p99 vs dev':>10} {'web MiB':>7} {'web CPU%':>8} "
        f"{'srv CPU%':>8} {'cli CPU%':>8} {'ev/s':>6} {'first ms':>8} {'spread ms':>9}"
    )
    rows = [
        f"{r.mode:<17} {r.clients:>7} {r.held:>5} {r.lost + r.disorder:>5} {r.p50:>7.0f} "
        f"{r.p99:>7.0f} {r.worst:>7.0f} {base / r.p99:>9.1f}x {r.rss:>7.0f} {r.web_cpu:>8.0f} "
        f"{r.all_cpu:>8.0f} {r.client_cpu:>8.0f} {r.rate:>6.0f} {r.first:>8.0f} {r.spread:>9.0f}"
        for r in results
    ]
    return "\n".join([head, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--events", type=int, default=200, help="progress events per job")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes")
    parser.add_argument("--modes", default=DEFAULT_MODES)
    args = parser.parse_args()
    if not (1 <= args.clients <= 5000 and 1 <= args.jobs <= 16 and 1 <= args.events <= 1000):
        parser.error("bounded: clients 1..5000, jobs 1..16, events 1..1000")
    if any(m.startswith("g") for m in args.modes.split(",")) and not shutil.which("redis-server"):
        parser.error("the gunicorn modes need redis-server on PATH")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers inherit it too
    root = Path(tempfile.mkdtemp(prefix="sse-load-"))
    results = []
    load_start = os.getloadavg()[0]
    for mode in args.modes.split(","):
        print(
            f"{mode}: {args.clients} clients on {args.jobs} job(s), {args.events} events, "
            f"load average {os.getloadavg()[0]:.2f}...",
            file=sys.stderr,
            flush=True,
        )
        results.append(run_mode(mode, args, root / mode))
    print(table(results))
    # The machine may be shared: numbers only compare within one run, at the load it had.
    print(f"load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    if os.environ.get("KEEP") is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(root)


if __name__ == "__main__":
    main()
