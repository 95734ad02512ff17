"""A real redis-server per test module, web processes and ``xmlflow worker`` subprocesses.

Every test here talks to a redis-server started on a free port (or the one named by
``XMLFLOW_TEST_REDIS_URL``); none is mocked. Without redis-server the tests skip,
except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from ..conftest import TEST_STEPS, Server, free_port, write_config

pytestmark = pytest.mark.redis

REDIS_CONFIG = """
    PIPELINES = {
        "default": [
            {"id": "shout", "name": "Shout", "module": "run_shout", "options": {"suffix": "!"}},
        ],
        "paced": [
            {"id": "tick", "name": "Tick", "module": "run_tick", "options": {"ticks": 10}},
            {"id": "shout", "name": "Shout", "module": "run_shout", "options": {"suffix": "?"},
             "delay": 0.2},
        ],
        "long": [
            {"id": "tick", "name": "Tick", "module": "run_tick", "options": {"ticks": 60}},
        ],
        "raising": [
            {"id": "explode", "name": "Explode", "module": "run_explode"},
        ],
    }
"""
REDIS_STEPS = {
    "shout": TEST_STEPS["shout"],
    "tick": """
        import os, time
        def run_tick(ctx):
            n = ctx.options["ticks"]
            for i in range(n):
                ctx.progress(i / n, f"tick {i} worker {os.getppid()}")
                time.sleep(0.12)
                if ctx.cancelled:
                    return
    """,
    "explode": TEST_STEPS["explode"],
}


@dataclass
class RedisServer:
    """``redis-server`` on a free port, appending to an AOF in ``folder`` so restarts keep data
    (unless not ``persistent``: then a restart loses every key)."""

    folder: Path
    port: int = field(default_factory=free_port)
    persistent: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--appendfsync",
            "always",
        ]
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self, down_for: float = 1.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


def _redis_binary_or_skip() -> None:
    if shutil.which("redis-server"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("redis-server is not installed, and CI=true: the Redis tests must run")
    pytest.skip("redis-server is not installed")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    _redis_binary_or_skip()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@dataclass
class Worker:
    """``xmlflow worker`` as a subprocess; its work-horses are its children."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "xmlflow", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def horse_pids(self) -> list[int]:
        assert self.proc
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill_with_horse(self) -> None:
        """SIGKILL the worker and its horses (RQ puts each horse in a session of its own)."""
        assert self.proc
        horses = self.horse_pids()
        os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.terminate()
        self.wait_stopped()

    def terminate(self) -> None:
        """SIGTERM the worker's group without waiting (see :meth:`Cluster.stop`)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def wait_stopped(self) -> None:
        if self.proc and self.proc.returncode is None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill_with_horse()


@dataclass
class Cluster:
    """Web processes and workers sharing one Redis and one data folder."""

    root: Path
    redis: RedisServer
    extra_env: dict[str, str] = field(default_factory=dict)
    webs: list[Server] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "conf" / "config.py"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "XMLFLOW_REDIS_URL": self.redis.url,
            "XMLFLOW_DATA_DIR": str(self.root / "data"),
            "XMLFLOW_CONFIG": str(self.config),
            "XMLFLOW_LEASE_SECONDS": "4",
            **self.extra_env,
        }

    def web(self, web_workers: int | None = None) -> Server:
        """``xmlflow serve``: werkzeug, or gunicorn with ``web_workers`` processes."""
        env = {k: v for k, v in self.env.items() if k.startswith("XMLFLOW_")}
        if web_workers is not None:
            env["XMLFLOW_WEB_WORKERS"] = str(web_workers)
        server = Server(config=self.config, data_dir=self.root / "data", env=env).start()
        self.webs.append(server)
        return server

    def worker(self) -> Worker:
        w = Worker(self.env, self.root / f"worker-{len(self.workers)}.log").start()
        self.workers.append(w)
        return w

    def stop(self) -> None:
        """Every process is asked to stop first, then waited for: their shutdowns overlap
        (one after the other, each worker's and web process's took seconds)."""
        for w in self.workers:
            w.terminate()
        for s in self.webs:
            s.terminate()
        for w in self.workers:
            w.wait_stopped()
        for s in self.webs:
            s.wait_stopped()


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    redis.Redis.from_url(redis_server.url).flushdb()
    write_config(tmp_path / "conf", REDIS_CONFIG, REDIS_STEPS)
    c = Cluster(tmp_path, redis_server)
    yield c
    c.stop()
    redis.Redis.from_url(redis_server.url).flushdb()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Server]:
    """The integration suite's ``server``, in Redis mode: a web process and two workers."""
    from ..conftest import TEST_CONFIG

    root = tmp_path_factory.mktemp("redis-server")
    write_config(root / "conf", TEST_CONFIG, TEST_STEPS)
    cluster = Cluster(root, redis_server)
    cluster.web()
    cluster.worker(), cluster.worker()
    yield cluster.webs[0]
    cluster.stop()
