"""``xmlflow serve`` stopping while streams are open: every stream ends at once and
cleanly, whatever its job is doing (running, or still queued behind another), and the
client resumes on the next server with ``Last-Event-ID``.

Through the real command (gunicorn, gevent) and raw HTTP: what is checked is the bytes a
client got and whether the chunked body ended properly (an ``httpx`` read of a body cut
mid-chunk raises, as curl exits 18).
"""

from __future__ import annotations

import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .conftest import TEST_CONFIG, TEST_STEPS, Server, write_config

GOING_AWAY = ": the server is going away: reconnect with Last-Event-ID"


@dataclass
class RawStream:
    """One stream read in a thread of its own, as bytes: what came, and how it ended."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    error: str | None = None
    ended_at: float | None = None
    opened: threading.Event = field(default_factory=threading.Event)

    def start(self) -> RawStream:
        threading.Thread(target=self._read, daemon=True).start()
        assert self.opened.wait(20), f"{self.url} did not open: {self.error}"
        return self

    def _read(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(60, connect=5)) as client,
                client.stream("GET", self.url, headers=self.headers) as response,
            ):
                assert response.status_code == 200, response.status_code
                for chunk in response.iter_text():
                    self.text += chunk
                    self.opened.set()
        except Exception as exc:  # what a client sees of a cut stream
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended_at = time.monotonic()
            self.opened.set()

    def wait_ended(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.ended_at is None:
            assert time.monotonic() < deadline, f"{self.url} still open: {self.text!r}"
            time.sleep(0.02)

    @property
    def last_id(self) -> str:
        """The last ``id:`` the stream sent: its ``Last-Event-ID`` to resume with."""
        return re.findall(r"^id: (.+)$", self.text, re.MULTILINE)[-1]


def running_and_queued(server: Server, slow: str = "slow") -> tuple[str, str]:
    """A job of the ``slow`` pipeline that runs (the one runner, or worker, is busy with
    it) and a quick one queued behind it."""
    (running,) = server.upload(("slow.xml", b"<a>1</a>"), pipeline=slow)
    deadline = time.monotonic() + 20
    while server.job(running["id"])["status"] != "running":
        assert time.monotonic() < deadline, server.job(running["id"])
        time.sleep(0.05)
    (queued,) = server.upload(("quick.xml", b"<b>2</b>"))
    assert server.job(queued["id"])["status"] == "queued"
    return str(running["id"]), str(queued["id"])


def stop_with_streams_open(server: Server, running: str, queued: str) -> list[RawStream]:
    """SIGTERM with three streams open (the running job's, the queued job's, and one of
    both); each must end cleanly within a few seconds, long before gunicorn's graceful
    timeout (10 s) would cut it. The streams are returned for what they received."""
    url = server.url
    streams = [
        RawStream(f"{url}/stream/{running}").start(),
        RawStream(f"{url}/stream/{queued}").start(),
        RawStream(f"{url}/api/events?job={running}&job={queued}").start(),
    ]
    assert server.proc is not None
    asked = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for stream in streams:
        stream.wait_ended()
        assert stream.error is None, (stream.url, stream.error, stream.text)
        assert stream.ended_at is not None and stream.ended_at - asked < 5, stream.url
    assert server.proc.wait(15) == 0
    return streams


def test_sigterm_ends_every_stream_at_once_and_the_queued_job_runs_after_restart(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "conf", TEST_CONFIG, TEST_STEPS)
    server = Server(config=config, data_dir=tmp_path / "data", env={"XMLFLOW_WORKERS": "1"})
    server.start()
    try:
        running, queued = running_and_queued(server)
        on_running, on_queued, on_both = stop_with_streams_open(server, running, queued)
    finally:
        server.stop()
    assert "event: end" in on_running.text and '"interrupted"' in on_running.text
    assert on_queued.text.endswith(GOING_AWAY + "\n\n"), on_queued.text
    assert on_both.text.endswith(GOING_AWAY + "\n\n"), on_both.text
    assert '"interrupted"' in on_both.text  # the running job's end came first

    server.start()  # the queued job is taken up again; the client resumes where it was
    try:
        resumed = RawStream(
            f"{server.url}/stream/{queued}", headers={"Last-Event-ID": on_queued.last_id}
        ).start()
        resumed.wait_ended(30)
    finally:
        server.stop()
    assert resumed.error is None, resumed.error
    assert "event: end" in resumed.text and '"succeeded"' in resumed.text, resumed.text
    first = int(re.findall(r"^id: (\d+)$", resumed.text, re.MULTILINE)[0])
    assert first == int(on_queued.last_id) + 1  # nothing lost, nothing twice
