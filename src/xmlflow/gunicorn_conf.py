"""Gunicorn for xmlflow: the settings file, and ``xmlflow serve --workers N``.

Gunicorn reads this file by path (``-c .../gunicorn_conf.py``), not as
``xmlflow.gunicorn_conf``, so its master never imports xmlflow, Flask or redis:
each worker imports them after gevent has monkey-patched it, which is what gevent
needs ("patch early"). Any setting can still be overridden the gunicorn way, e.g.
``GUNICORN_CMD_ARGS="--worker-class gthread --threads 1000"``.

Why gevent (measured with ``bench/sse_load.py``, table in docs/deployment.md): with
2,000 streams each getting 10 events a second, a gevent worker spends ~20 µs of CPU
per delivered event, most of it the ``send`` syscall and the greenlet switches, and
holds p99 under 100 ms; gthread wakes 2,000 OS threads per event, each to queue for
the GIL, and falls seconds behind at the same load while using more CPU. The gevent
worker's body writes go through :func:`fast_body_writes` (installed by
``post_worker_init``).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

wsgi_app = "xmlflow.app:create_app()"
worker_class = "gevent"
worker_connections = 10_000  # gunicorn's default (1000) would cap the streams per worker
timeout = 30
graceful_timeout = 10  # streams end at once on SIGTERM (see post_worker_init); uploads get 10 s
keepalive = 5
preload_app = False  # build the app in each worker, after gevent patched it
accesslog = None
control_socket_disable = True  # one shared ~/.gunicorn/gunicorn.ctl would clash between servers

log = logging.getLogger("xmlflow.gunicorn")


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one: each stream is a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1_048_576
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def on_starting(server: Any) -> None:
    server.log.info("open files limit: %d", raise_open_files_limit())


def post_worker_init(worker: Any) -> None:
    """On SIGTERM, end this worker's streams now rather than after ``graceful_timeout``.

    Gunicorn's own handler only stops accepting; an SSE stream never finishes by
    itself, so the service is closed too: every listener wakes, and each stream ends
    where it is. Clients reconnect (to another worker) with ``Last-Event-ID``.
    """
    import threading  # patched by now under gevent: a greenlet there, a thread under gthread

    service = worker.wsgi.extensions["xmlflow"]
    stop_accepting = worker.handle_exit
    if type(worker).__name__ == "GeventWorker":
        fast_body_writes()

    def handle_term(sig: int, frame: Any) -> None:
        stop_accepting(sig, frame)
        # Not inline: under gevent this handler runs in the hub, where closing (which
        # talks to Redis) may not block; a greenlet of its own may.
        threading.Thread(target=service.close, name="xmlflow-close", daemon=True).start()

    signal.signal(signal.SIGTERM, handle_term)


def fast_body_writes() -> None:
    """One ``send`` per body write, without gevent's ``sendall`` machinery, when it fits.

    gunicorn writes each piece of a chunked body with ``util.write_chunk`` and gevent's
    ``sendall``, which reads SO_SNDBUF with a ``getsockopt`` call and slices a
    memoryview in three Python frames, for every write: a fifth of the worker's CPU
    with 2,000 streams (py-spy), each write being one small SSE frame. This replaces
    ``Response._emit_body`` (gunicorn's documented place for body framing) by the same
    framing built in one step and one non-blocking ``send`` on the socket's own
    descriptor; whatever did not fit (the client's buffer is full) goes through
    gevent's ``sendall`` as before, which waits in the hub. Errors are the ones
    ``sendall`` raises. Installed in gevent workers only (gunicorn's ``gevent`` worker
    class; its sockets are gevent sockets around a non-blocking ``_sock``).
    """
    from gunicorn.http.wsgi import Response

    if not hasattr(Response, "_emit_body"):  # another gunicorn: leave its writes alone
        return

    def _emit_body(self: Any, data: bytes) -> None:
        if self.chunked:
            data = b"%X\r\n%b\r\n" % (len(data), data)
        sock = self.sock
        raw = getattr(sock, "_sock", None)
        if raw is None:
            sock.sendall(data)
            return
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            sock.sendall(memoryview(data)[sent:])

    Response._emit_body = _emit_body


def gunicorn_argv(host: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(Path(__file__).resolve()),
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
    ]


def run_gunicorn(host: str, port: int, workers: int) -> None:
    """Replace this process by gunicorn with ``workers`` web processes (Redis mode only).

    Returns without doing anything for ``--workers 1`` in embedded mode, so the
    caller serves as usual; refuses more than one worker in embedded mode.
    """
    from .errors import ConfigError
    from .settings import load_settings

    settings = load_settings()  # fail here, with a clear message, not in every worker
    if not settings.redis_url:
        if workers > 1:
            raise ConfigError(
                f"--workers {workers} needs XMLFLOW_REDIS_URL: in embedded mode jobs live in "
                "one SQLite file and run inside the one web process; use --workers 1"
            )
        return
    sys.stdout.flush()
    os.execv(sys.executable, gunicorn_argv(host, port, workers))
