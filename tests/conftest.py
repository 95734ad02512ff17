"""Fixtures shared by the whole suite: the corpus, a real server on a free port, SSE.

What a test must respect so the suite can run in parallel processes (pytest-xdist was
evaluated and is not adopted yet: its ``--dist loadgroup``, which would keep the tests
below apart, silently stops grouping on pytest 9.2, pytest-dev/pytest-xdist#1386):

- Ports: take them from :func:`free_port`, never a fixed one. Two tests own fixed ports
  today (``app.py``'s default 5000 in ``test_entrypoints``, the attack listeners of
  ``test_xml_corpus``) and two plant ``/tmp`` canaries (``test_xml_corpus``,
  ``robustness/test_corpus_http``): they must not run beside each other.
- Files: only under ``tmp_path``/``tmp_path_factory``, never a fixed path.
- Servers, Redis, Chromium: started by the test's own fixtures; Redis on a free port,
  never 6379.
- Collection: parameters are built without randomness or clocks
  (``gzip.compress(..., mtime=0)``), so every process finds the same test ids.
- Time: wait on a condition (a status, an event, a file) rather than sleep a guess;
  close idle keep-alive clients before stopping a gunicorn server (it waits for them).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under ``CI=true`` the corpus tests must run: its absence is an error, not 40 skips."""
    if os.environ.get("CI") == "true" and not CORPUS.is_dir():
        raise pytest.UsageError(
            f"CI=true but the shared corpus is not at {CORPUS}: the corpus tests would "
            "skip. Put it there (see README, Development), or run without CI=true."
        )


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    return CORPUS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parent_pid(pid: int) -> int:
    """The parent of a process, from ``/proc`` (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(") ", 1)[1].split()[1])  # after the name, which may hold ") "


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if parent_pid(int(entry.name)) == pid:
                    children.append(int(entry.name))
            except (OSError, ValueError, IndexError):  # ended while we looked
                continue
    return children


def descendant_pids(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in child_pids(todo.pop()):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, or stopped: not gone and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def write_config(folder: Path, body: str, steps: dict[str, str] | None = None) -> Path:
    """A ``config.py`` (and ``processing_steps/*.py``) in ``folder``; returns the config path."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.py"
    config.write_text(textwrap.dedent(body))
    if steps:
        (folder / "processing_steps").mkdir(exist_ok=True)
        for name, code in steps.items():
            (folder / "processing_steps" / f"{name}.py").write_text(textwrap.dedent(code))
    return config


@dataclass
class Server:
    """``xmlflow serve`` as a subprocess on a free port, with its own data folder."""

    config: Path | None
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Server:
        env = {**os.environ, "XMLFLOW_DATA_DIR": str(self.data_dir), **self.env}
        if self.config:
            env["XMLFLOW_CONFIG"] = str(self.config)
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "xmlflow", "serve", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir.parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()}")
            try:
                httpx.get(self.url + "/api/jobs?limit=1", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.terminate()
        self.wait_stopped()

    def terminate(self) -> None:
        """SIGTERM without waiting, so several processes can shut down side by side."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()

    def wait_stopped(self) -> None:
        """Wait for the exit :meth:`terminate` asked for; SIGKILL after 10 s."""
        if self.proc and self.proc.returncode is None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    # -- client helpers ---------------------------------------------------------------------

    def upload(self, *files: tuple[str, bytes], **form: str) -> list[dict[str, Any]]:
        response = httpx.post(
            self.url + "/upload",
            files=[("file", (name, body, "application/xml")) for name, body in files],
            data=form,
            timeout=60,
        )
        assert response.status_code == 202, response.text
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs

    def job(self, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/jobs/{job_id}", timeout=10)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def events(
        self, job_id: str, *, last_event_id: int | None = None, timeout: float = 60
    ) -> list[Event]:
        """Every event the stream sends until it closes (after ``end``)."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        with (
            httpx.Client(timeout=httpx.Timeout(timeout, connect=5)) as client,
            connect_sse(client, "GET", f"{self.url}/stream/{job_id}", headers=headers) as src,
        ):
            src.response.raise_for_status()
            # a frame without data (the opening `retry:`) is not an event
            return [Event(int(e.id), e.event, e.json()) for e in src.iter_sse() if e.data]

    def wait_finished(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish: {self.job(job_id)}")


@dataclass(frozen=True)
class Event:
    id: int
    event: str
    data: dict[str, Any]


TEST_CONFIG = """
    PIPELINES = {
        "default": [
            {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step",
             "delay": 0, "error_chance": 0.0},
            {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"},
        ],
        "slow": [
            {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step",
             "delay": 30},
            {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"},
        ],
        "paced": [
            {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step",
             "delay": 0.5},
            {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step", "delay": 0.5},
        ],
        "flaky": [
            {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step",
             "error_chance": 1.0},
            {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"},
        ],
        "custom": [
            {"id": "shout", "name": "Shout", "module": "run_shout", "options": {"suffix": "!"}},
        ],
        "raising": [
            {"id": "explode", "name": "Explode", "module": "run_explode"},
            {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"},
        ],
    }
"""
TEST_STEPS = {
    "shout": """
        from xmlflow.step import UploadOption

        UPLOAD_OPTIONS = [UploadOption("suffix", "string", "added to the text", default="!")]

        def run_shout(ctx):
            text = ctx.input.read_text()
            with ctx.open_output(ctx.stem + ".upper.txt", "w") as out:
                out.write(text.upper() + ctx.options["suffix"])
    """,
    "explode": """
        def run_explode(ctx):
            raise RuntimeError("the disk of records is on fire")
    """,
}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that only upload and watch: several pipelines to pick from."""
    root = tmp_path_factory.mktemp("server")
    config = write_config(root / "conf", TEST_CONFIG, TEST_STEPS)
    srv = Server(config=config, data_dir=root / "data", env={"XMLFLOW_WORKERS": "4"}).start()
    yield srv
    srv.stop()
