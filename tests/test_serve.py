"""``xmlflow serve``'s default server (gunicorn, one gevent worker, embedded SQLite).

Everything through the real command on a free port: the page, an upload, the job's
stream, many streams at once, SIGTERM and Ctrl-C mid-job, a second server on the same
data folder, and ``--dev`` (werkzeug) still there for debugging.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from .conftest import TEST_CONFIG, TEST_STEPS, Server, write_config
from .test_entrypoints import serve_to_the_end

EVENTS = 20  # progress events of the "count" step, 0.1 s apart (the runner's throttle)
STREAMS = 200
COUNT_CONFIG = f"""
    PIPELINES = {{"default": [{{"id": "count", "name": "Count", "module": "run_count",
                                "options": {{"events": {EVENTS}}}}}]}}
"""
COUNT_STEP = """
    import time
    from pathlib import Path

    def run_count(ctx):
        go = Path(ctx.config_dir) / "go"
        while not go.exists():
            time.sleep(0.02)
        for i in range(ctx.options["events"]):
            time.sleep(0.1)
            ctx.progress(i / ctx.options["events"], f"event {i}")
"""


def start(tmp_path: Path, config: str = TEST_CONFIG, steps: dict[str, str] | None = None) -> Server:
    path = write_config(tmp_path / "conf", config, steps)
    return Server(config=path, data_dir=tmp_path / "data").start()


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> httpx.Response:
    """The page, once the server answers (it must not have exited meanwhile)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.get(url + "/", timeout=1)
        except httpx.TransportError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)


@pytest.fixture
def slow_server(tmp_path: Path) -> Server:
    return start(tmp_path, steps=TEST_STEPS)


def test_default_serve_is_gunicorn_gevent_and_serves_page_upload_and_stream(
    slow_server: Server,
) -> None:
    try:
        page = httpx.get(slow_server.url + "/", timeout=10)
        assert page.status_code == 200
        assert page.headers["server"].startswith("gunicorn")
        assert "<form" in page.text or "upload" in page.text.lower()
        (job,) = slow_server.upload(("a.xml", b"<a><b>1</b><b>2</b></a>"))
        events = slow_server.events(job["id"])
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        end = events[-1]
        assert end.event == "end" and end.data["status"] == "succeeded"
        (output,) = [o for o in end.data["outputs"] if o["name"] == "a.json"]
        body = httpx.get(slow_server.url + output["url"], timeout=10)
        assert body.status_code == 200 and '"b"' in body.text
    finally:
        slow_server.stop()
    assert slow_server.proc is not None and slow_server.proc.returncode == 0


Received = list[tuple[int, str, str]]


async def _follow(
    url: str, job_id: str, started: asyncio.Event, client: httpx.AsyncClient
) -> Received:
    events: Received = []
    async with aconnect_sse(client, "GET", f"{url}/stream/{job_id}") as source:
        source.response.raise_for_status()
        async for sse in source.aiter_sse():
            if sse.data:
                events.append((int(sse.id), sse.event, sse.data))
                started.set()
    return events


async def _many_streams(server: Server, job_id: str, go: Path) -> list[Received]:
    limits = httpx.Limits(max_connections=STREAMS + 10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=20), limits=limits) as client:
        flags = [asyncio.Event() for _ in range(STREAMS)]
        tasks = [asyncio.create_task(_follow(server.url, job_id, flag, client)) for flag in flags]
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), 60)
        go.touch()  # every stream is open and has had the job's first event
        return await asyncio.wait_for(asyncio.gather(*tasks), 90)


def test_many_streams_all_get_every_event(tmp_path: Path) -> None:
    """200 streams on one job, open before its events begin: each one gets every event."""
    server = start(tmp_path, COUNT_CONFIG, {"count": COUNT_STEP})
    try:
        (job,) = server.upload(("a.xml", b"<a/>"))
        # In a thread of its own: an event loop may already run in this one (Playwright's).
        with ThreadPoolExecutor(1) as pool:
            received = pool.submit(
                lambda: asyncio.run(_many_streams(server, job["id"], tmp_path / "conf" / "go"))
            ).result()
        recorded = server.job(job["id"])
    finally:
        server.stop()
    assert len(received) == STREAMS
    first = received[0]
    assert [e[0] for e in first] == list(range(1, len(first) + 1))  # contiguous ids
    assert first[-1][1] == "end" and '"succeeded"' in first[-1][2]
    messages = [e[2] for e in first if e[1] == "progress"]
    assert len(messages) == EVENTS and f"event {EVENTS - 1}" in messages[-1]
    assert all(events == first for events in received)  # nothing lost, doubled or reordered
    assert recorded["status"] == "succeeded" and recorded["last_event_id"] == len(first)


def _slow_job(server: Server) -> str:
    (job,) = server.upload(("a.xml", b"<a>1</a>"), pipeline="slow")
    deadline = time.monotonic() + 20
    while server.job(job["id"])["steps"][0]["status"] != "running":  # its process runs it
        assert time.monotonic() < deadline, server.job(job["id"])
        time.sleep(0.05)
    return str(job["id"])


def _ended_interrupted(server: Server, job_id: str) -> None:
    """The server is gone: the job's record says interrupted (read by a fresh server)."""
    server.start()
    try:
        job = server.job(job_id)
        assert job["status"] == "interrupted", job
        assert "server stopped" in job["error"]
    finally:
        server.stop()


def test_sigterm_ends_a_running_job_interrupted_and_exits(slow_server: Server) -> None:
    job_id = _slow_job(slow_server)
    assert slow_server.proc is not None
    started = time.monotonic()
    slow_server.proc.send_signal(signal.SIGTERM)
    assert slow_server.proc.wait(15) == 0
    assert time.monotonic() - started < 8  # at once: not the step's 30 s delay
    _ended_interrupted(slow_server, job_id)


def test_ctrl_c_ends_a_running_job_interrupted_and_exits(tmp_path: Path) -> None:
    """Ctrl-C: SIGINT to the terminal's whole process group, job process included."""
    config = write_config(tmp_path / "conf", TEST_CONFIG, TEST_STEPS)
    server = Server(config=config, data_dir=tmp_path / "data")
    env = {**os.environ, "XMLFLOW_DATA_DIR": str(server.data_dir), "XMLFLOW_CONFIG": str(config)}
    log = (tmp_path / "serve.log").open("wb")
    server.proc = subprocess.Popen(
        [sys.executable, "-m", "xmlflow", "serve", "--port", str(server.port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_up(server.url, server.proc)
        job_id = _slow_job(server)
        os.killpg(server.proc.pid, signal.SIGINT)
        assert server.proc.wait(15) == 0
    finally:
        server.kill()
        log.close()
    _ended_interrupted(server, job_id)


def test_a_second_server_on_the_same_data_folder_refuses_to_start(slow_server: Server) -> None:
    try:
        second = serve_to_the_end(XMLFLOW_DATA_DIR=str(slow_server.data_dir))
        assert second.returncode != 0
        assert "another xmlflow process is serving" in second.stderr
        assert "Traceback" not in second.stderr, second.stderr  # one line, not gunicorn's
        assert "xmlflow serving" not in second.stdout  # nor a promise it did not keep
        assert httpx.get(slow_server.url + "/api/health", timeout=10).status_code == 200
    finally:
        slow_server.stop()


def test_dev_serves_with_werkzeug(tmp_path: Path) -> None:
    server = start(tmp_path, steps=TEST_STEPS)
    server.stop()
    proc = subprocess.Popen(
        [sys.executable, "-m", "xmlflow", "serve", "--dev", "--port", str(server.port)],
        env={
            **os.environ,
            "XMLFLOW_DATA_DIR": str(server.data_dir),
            "XMLFLOW_CONFIG": str(server.config),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page = wait_up(server.url, proc)
        assert page.status_code == 200 and page.headers["server"].startswith("Werkzeug")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_dev_takes_no_workers() -> None:
    result = serve_to_the_end("--dev", "--workers", "2")
    assert result.returncode == 2 and "--dev" in result.stderr
