"""Gunicorn for xmlflow: the settings file of ``xmlflow serve`` (both modes).

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

import contextlib
import ctypes
import logging
import os
import resource
import signal
import sys
import threading
from pathlib import Path
from typing import Any

wsgi_app = "xmlflow.app:create_app()"
worker_class = "gevent"
worker_connections = 10_000  # gunicorn's default (1000) would cap the streams per worker
timeout = 30
graceful_timeout = 10  # streams end at once on SIGTERM (see post_worker_init); uploads get 10 s
keepalive = 5
limit_request_line = 8190  # gunicorn's most: /api/events names up to 200 jobs in its query
# Forwarded headers are trusted only as XMLFLOW_TRUSTED_PROXIES says (werkzeug's ProxyFix in
# the app): gunicorn's own default would believe any X-Forwarded-Proto from 127.0.0.1.
secure_scheme_headers: dict[str, str] = {}
forwarded_allow_ips = ""
preload_app = False  # build the app in each worker, after gevent patched it
accesslog = None
control_socket_disable = True  # one shared ~/.gunicorn/gunicorn.ctl would clash between servers
loglevel = os.environ.get("XMLFLOW_LOG_LEVEL", "INFO").lower()  # `xmlflow --log-level`
pythonpath = str(Path(__file__).resolve().parents[1])  # xmlflow, even from a bare checkout

log = logging.getLogger("xmlflow.gunicorn")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one: each stream is a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1_048_576
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def on_starting(server: Any) -> None:
    limit = raise_open_files_limit()
    server.log.info("open files limit: %d", limit)
    if limit < 4096:  # a stream is a socket: the limit is the most streams held at once
        server.log.warning(
            "only %d open files allowed (ulimit -n): fewer than %d streams can be held at "
            "once; raise the hard limit (ulimit -Hn, LimitNOFILE= in systemd) to hold more",
            limit,
            limit - 100,
        )


def post_fork(server: Any, worker: Any) -> None:
    """The worker dies with the master (Linux): ``kill -9`` of the server's pid must not
    leave a worker serving, holding the port and the data folder's lock, until its next
    look at its parent id a second later. Its job processes follow it (see jobprocess)."""
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def post_worker_init(worker: Any) -> None:
    """On SIGTERM or Ctrl-C, end this worker's streams now, not after ``graceful_timeout``.

    Gunicorn's own handler only stops accepting; an SSE stream never finishes by
    itself, so the service is closed too: every listener wakes, and each stream ends
    where it is. Clients reconnect (to another worker) with ``Last-Event-ID``.
    """
    logging.basicConfig(level=loglevel.upper(), format=LOG_FORMAT)  # xmlflow's own logs
    service = worker.wsgi.extensions["xmlflow"]
    stop_accepting = worker.handle_exit
    under_gevent = type(worker).__name__ == "GeventWorker"
    if under_gevent:
        fast_body_writes()
        cooperative_forkserver_replies()

    def close_soon() -> None:
        """Not inline, nor a patched Thread (its start() waits to be scheduled): under gevent
        the signal handler runs in the hub, where closing (which talks to Redis, or waits
        for the job processes) may not block; a greenlet of its own may."""
        if under_gevent:
            import gevent

            gevent.spawn(service.close)
        else:
            threading.Thread(target=service.close, name="xmlflow-close", daemon=True).start()

    def handle_term(sig: int, frame: Any) -> None:
        stop_accepting(sig, frame)
        close_soon()

    # Ctrl-C (SIGINT to the whole process group, then SIGQUIT from the master) stops the
    # same way: gunicorn's own quick exit would leave the close half done.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, handle_term)


def worker_exit(server: Any, worker: Any) -> None:
    """Close the service before the worker process ends, however it was asked to stop.

    The close began in :func:`post_worker_init`'s signal handler, in a greenlet of its
    own; the worker's main loop may end first. This waits until the job processes are
    stopped and their jobs have ended ``interrupted`` (embedded mode), so that nothing
    is left ``running`` for the next start to clean up.
    """
    wsgi = getattr(worker, "wsgi", None)  # None: the app never loaded (a bad config...)
    if wsgi is not None:
        wsgi.extensions["xmlflow"].close()


def cooperative_forkserver_replies() -> None:
    """Wait for the forkserver's reply in the hub, not in a blocking ``os.read``.

    Starting a job's process (``jobprocess.run_isolated``, embedded mode) asks
    multiprocessing's forkserver for a child and reads its pid from a pipe with
    ``os.read``, which gevent does not patch: the whole worker, every stream in it,
    stopped for as long as the fork took (seen with gevent's monitor thread: 20-50 ms
    per job on a busy machine, and the forkserver's start-up, ~1 s, for the first
    job). Waiting until the pipe is readable first lets the other greenlets run; the
    read that follows has its 8 bytes there (written at once) or EOF.
    """
    from multiprocessing import forkserver

    from gevent.socket import wait_read

    read_signed = forkserver.read_signed
    if getattr(read_signed, "cooperative", False):
        return

    def cooperative_read_signed(fd: int) -> int:
        wait_read(fd)
        return int(read_signed(fd))

    cooperative_read_signed.cooperative = True  # type: ignore[attr-defined]
    forkserver.read_signed = cooperative_read_signed


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


def run_gunicorn(host: str, port: int, workers: int, *, log_level: str = "INFO") -> None:
    """Replace this process by gunicorn with ``workers`` gevent web processes.

    Embedded mode takes one worker only: jobs live in one SQLite file and run as
    children of the one web process (``Service`` locks the data folder). Settings are
    loaded here first, so that a bad config fails with its message, not in a worker.
    """
    from .errors import ConfigError
    from .settings import load_settings

    settings = load_settings()
    if not settings.redis_url and workers > 1:
        raise ConfigError(
            f"--workers {workers} needs XMLFLOW_REDIS_URL: in embedded mode jobs live in "
            "one SQLite file and run inside the one web process; use --workers 1"
        )
    if settings.redis_url:  # fail here with the remedy, not in a worker with a traceback
        from .backends import redis_extra_installed

        redis_extra_installed()
    else:  # the same for a data folder another server holds (the worker takes it after)
        from .backends.embedded import lock_data_dir

        lock_data_dir(settings.data_dir.resolve()).close()
    mode = f"Redis, {workers} web worker(s)" if settings.redis_url else "embedded"
    print(
        f"xmlflow serving http://{host}:{port}/ (gunicorn + gevent, {mode}; "
        f"data: {settings.data_dir.resolve()}, config: {settings.config_path or 'built-in'})",
        flush=True,
    )
    os.environ["XMLFLOW_LOG_LEVEL"] = log_level.upper()
    os.execv(sys.executable, gunicorn_argv(host, port, workers))
