"""A real HTTP receiver for webhook tests: a server on a free port, scripted answers.

Each request gets the answer the script gives for its number (0, 1, ...) and the number
of earlier tries of the same delivery: ``"ok"``
(204), ``"500"``, ``"302"`` (to ``/elsewhere``), ``"close"`` (the connection dropped
without an answer), or ``"hang"`` (no answer until the receiver stops). Every request is
recorded, with its time.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from .conftest import free_port

Script = Callable[[int, int], str]


@dataclass
class Received:
    at: float  # time.monotonic()
    path: str
    headers: dict[str, str]
    body: bytes
    answer: str

    @property
    def delivery(self) -> str:
        return self.headers["x-xmlflow-delivery"]

    @property
    def payload(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    script: Script = lambda n, tries: "ok"
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _released: threading.Event = field(default_factory=threading.Event)
    _httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    ident = headers.get("x-xmlflow-delivery")
                    tries = sum(r.delivery == ident for r in receiver.received)
                    answer = receiver.script(len(receiver.received), tries)
                    receiver.received.append(
                        Received(time.monotonic(), self.path, headers, body, answer)
                    )
                if answer == "hang":
                    receiver._released.wait(30)
                    self.close_connection = True
                elif answer == "close":
                    self.close_connection = True
                elif answer == "302":
                    self.send_response(302)
                    self.send_header("Location", "/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif answer == "500":
                    self.send_response(500)
                    self.send_header("Content-Length", "4")
                    self.end_headers()
                    self.wfile.write(b"oops")
                else:
                    self.send_response(204)
                    self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.answer == "ok"]

    def wait_accepted(self, count: int, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(done := self.accepted()) >= count:
                return done
            time.sleep(0.02)
        raise AssertionError(f"{len(self.accepted())} of {count} deliveries: {self.received}")

    def wait_received(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, self.received
            time.sleep(0.02)


def check_signature(secret: str, received: Received, tolerance: float = 300) -> None:
    """What a receiver does (docs/api.md): recompute the HMAC, compare in constant time."""
    fields = dict(p.split("=", 1) for p in received.headers["x-xmlflow-signature"].split(","))
    timestamp = int(fields["t"])
    assert abs(time.time() - timestamp) < tolerance
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"])
