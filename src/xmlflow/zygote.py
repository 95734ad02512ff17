"""A fork server forked from this process: job processes for ``xmlflow run`` without
starting an interpreter.

Why: a job's process must not be a plain ``fork`` of a threaded process (a child can
inherit a lock another thread held at the fork: seen here as a deadlock in SQLite's
allocator), so the server starts job processes from multiprocessing's ``forkserver``.
That costs a new interpreter importing xmlflow again, plus multiprocessing's resource
tracker (one more interpreter), plus re-importing the ``__main__`` script in every
child: about 0.25 s of CPU, which for ``xmlflow run`` on one file is a quarter of a
50 MB conversion. A *zygote* (Android's name for the same trick) is this process
forked once, while it still has a single thread and has already imported what jobs
need: it has nothing to re-import, and each job is a ``fork`` of it, a few
milliseconds, with no thread and no lock in flight.

The protocol, over a ``SOCK_SEQPACKET`` pair (message boundaries kept, descriptors
passed with ``SCM_RIGHTS``):

- the parent sends one byte with two descriptors: the child's end of a
  :func:`multiprocessing.Pipe` and the write end of a status pipe;
- the zygote forks; the child reads ``(function, args)`` from its pipe end and calls
  ``function(*args, conn)``, exiting 0 (1 if it raised);
- the zygote writes the child's pid to the status pipe, and its exit code (as
  :attr:`multiprocessing.Process.exitcode`: ``-N`` for signal N) when it ends.

The zygote dies with this process (``PR_SET_PDEATHSIG``) and leaves when its socket
closes; it ignores Ctrl-C (the terminal sends it to the whole group: the parent
decides what it means). Linux only, as the rest of the isolation.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)
_STATUS = struct.Struct("q")
_lock = threading.Lock()
_zygote: Zygote | None = None


class Zygote:
    """This process's fork server; :meth:`start_process` runs a function in a new child."""

    def __init__(self) -> None:
        if threading.active_count() != 1:
            raise RuntimeError("a zygote must be forked while its parent has one thread")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for stream in (sys.stdout, sys.stderr):  # or both processes would write it later
            with contextlib.suppress(Exception):
                stream.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the zygote; its children are what tests see
            code = 0
            try:
                ours.close()
                die_with_parent(parent)
                _serve(theirs)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self._socket = ours
        self._lock = threading.Lock()

    def start_process(self, function: Callable[..., object], args: tuple[Any, ...]) -> Child:
        """``function(*args, conn)`` in a new process; the child has our end, ``conn``.

        ``function`` and ``args`` are pickled to the child through its pipe, so a plan
        built after the zygote was forked reaches it as it is now.
        """
        ours, theirs = Pipe(duplex=True)
        status_r, status_w = os.pipe()
        try:
            with self._lock:
                socket.send_fds(self._socket, [b"f"], [theirs.fileno(), status_w])
        finally:
            theirs.close()
            os.close(status_w)
        child = Child(status_r, ours)
        try:
            ours.send((function, args))
        except BaseException:
            child.kill()
            child.join()
            raise
        return child

    def alive(self) -> bool:
        with contextlib.suppress(ChildProcessError):
            return os.waitpid(self.pid, os.WNOHANG)[0] == 0
        return False

    def close(self, grace: float = 2.0) -> None:
        """Let the zygote go and reap it: it leaves once its socket is closed and the
        jobs it started have ended; after ``grace`` seconds it is killed, and with it
        (``PR_SET_PDEATHSIG``) any job's process still there."""
        self._socket.close()
        deadline = time.monotonic() + grace
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(self.pid, os.WNOHANG)[0] == 0:
                if time.monotonic() > deadline:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    return
                time.sleep(0.01)


class Child:
    """A job process started by a :class:`Zygote`: the part of
    :class:`multiprocessing.Process` that :mod:`xmlflow.jobprocess` uses.

    It is the zygote's child, not ours: its pid and its exit code come over ``status``.
    """

    def __init__(self, status: int, conn: Connection) -> None:
        self.conn = conn
        self._status = status
        self.exitcode: int | None = None
        pid = _read_status(status, None)
        if pid is None:
            os.close(status)
            conn.close()
            raise OSError("the zygote did not start the job's process")
        self.pid = pid

    def is_alive(self) -> bool:
        return not self._ended(0)

    def join(self, timeout: float | None = None) -> None:
        self._ended(timeout)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def _ended(self, timeout: float | None) -> bool:
        if self.exitcode is not None:
            return True
        code = _read_status(self._status, timeout)
        if code is _PENDING:
            return False
        # the zygote died before telling (only with this process): killed with it
        self.exitcode = -signal.SIGKILL if code is None else code
        os.close(self._status)
        return True


_PENDING = object()


def _read_status(fd: int, timeout: float | None) -> Any:
    """The next number on a status pipe; ``_PENDING`` if none came within ``timeout``
    (``None``: wait), ``None`` at the end of the pipe."""
    if timeout is not None and not select.select([fd], [], [], timeout)[0]:
        return _PENDING
    data = b""
    while len(data) < _STATUS.size:
        chunk = os.read(fd, _STATUS.size - len(data))
        if not chunk:
            return None
        data += chunk
    return _STATUS.unpack(data)[0]


def start() -> Zygote | None:
    """Fork this process's zygote now, if it has one thread; None (and the caller uses
    multiprocessing's forkserver) otherwise, or on a system without ``fork``."""
    global _zygote
    with _lock:
        if _zygote is None:
            try:
                _zygote = Zygote()
            except (RuntimeError, OSError, AttributeError) as exc:
                log.debug("no zygote: %s", exc)
        return _zygote


def running() -> Zygote | None:
    return _zygote


def stop() -> None:
    global _zygote
    with _lock:
        if _zygote is not None:
            _zygote.close()
            _zygote = None


# -- the zygote ------------------------------------------------------------------------------


def _serve(requests: socket.socket) -> None:  # pragma: no cover - runs in the zygote
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # not the parent's Python handlers
        signal.signal(signum, signal.SIG_DFL)
    with open(os.devnull, "rb") as devnull:  # steps never read the terminal
        os.dup2(devnull.fileno(), 0)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, int] = {}  # pid -> its status pipe's write end
    listening = True
    while listening or children:  # (if the parent dies, so do we: die_with_parent)
        waiting = [requests.fileno(), wake_r] if listening else [wake_r]
        ready = select.select(waiting, [], [])[0]
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(children)
        if listening and requests.fileno() in ready:
            message, fds, _, _ = socket.recv_fds(requests, 16, 2)
            if not message:  # the parent closed its end: no more jobs
                listening = False
                continue
            conn_fd, status_fd = fds
            pid = os.fork()
            if pid == 0:
                requests.close()
                for fd in (wake_r, wake_w, *children.values()):
                    os.close(fd)
                os.close(status_fd)
                _child(conn_fd)
            os.close(conn_fd)
            children[pid] = status_fd
            _write_status(status_fd, pid)


def _reap(children: dict[int, int]) -> None:  # pragma: no cover - runs in the zygote
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = children.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                _write_status(fd, os.waitstatus_to_exitcode(status))
            os.close(fd)


def _write_status(fd: int, value: int) -> None:  # pragma: no cover - runs in the zygote
    os.write(fd, _STATUS.pack(value))


def _child(conn_fd: int) -> None:  # pragma: no cover - runs in a job's process
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    code = 0
    try:
        conn = Connection(conn_fd)
        function, args = conn.recv()
        function(*args, conn)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def die_with_parent(parent: int | None = None) -> None:
    """Ask Linux to kill this process when its parent dies (no-op elsewhere); exit now
    if ``parent`` (its pid before the fork) is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != parent:
        os._exit(1)
