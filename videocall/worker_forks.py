"""Relay workers forked from one process that has imported them already: ``serve``'s way.

A relay worker started as a new interpreter reads and runs the same modules again (aiortc,
PyAV, OpenSSL, pydantic: about 75 MB RSS, 47 MB PSS each, idle). Forked from a process that
imported them and froze its objects out of the garbage collector's walks (``gc.freeze``: a
collection then writes to none of their pages), a worker shares those pages with it and its
other workers; its own memory is what it writes (about 5 MB idle).

Who forks: the *fork server*, ``videocall relay --fork-server``, a child of ``serve`` started
once (the signalling process never imports aiortc, so it cannot be the one). It prepares a
relay process (``mediarelay.worker.prepare_process``: one DTLS certificate, codec table, then
``gc.freeze``) and waits for requests on a socket ``serve`` gave it. For each, it forks twice
and the middle process exits at once: the worker is then an orphan, and ``serve``, a *child
subreaper* (``PR_SET_CHILD_SUBREAPER``), becomes its parent. So every worker is still a direct
child of ``serve``, as one it started itself would be: ``serve`` waits for it (through a
``pidfd``), signals it, and it exits with ``serve`` (``PR_SET_PDEATHSIG``, set once it is
``serve``'s), whatever happens to the fork server, which is started again if it dies.

**One prepared interpreter for both roles.** ``serve`` itself imports what a worker runs before
anything else (``prefork``: before its settings are read, so no secret is in its memory yet),
freezes it, and forks its first fork server from itself: the signalling process, the fork
server and every worker then share one copy of the interpreter's modules (Python, pydantic,
asyncio, uvloop, aiortc, PyAV...) instead of signalling having its own (about 18 MB less PSS
idle, measured in ``bench/compare_janus.py``). The fork server learns its settings from the
first line ``serve`` sends it. If it dies, ``serve`` starts a new one as a new interpreter
(``videocall relay --fork-server``), which prepares itself the same way.

Both ends are here: ``serve_forks`` runs in the fork server, ``WorkerForks`` in ``serve``.
Linux only (``pidfd_open``, ``prctl``); elsewhere ``serve`` starts workers as new interpreters.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("videocall")

#: ``prctl`` options (linux/prctl.h).
_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36
#: ``/proc/PID/comm`` of the fork server, and the start of each worker's (``vc-relay-0``...):
#: a forked worker's command line is the fork server's, so its name tells them apart.
FORK_SERVER_NAME = "vc-relay-forks"
WORKER_NAME_PREFIX = "vc-relay-"
#: How long a new worker waits to be ``serve``'s child before it gives up.
REPARENT_TIMEOUT = 5.0
#: A request or answer on the control socket is one JSON line, at most this long.
MAX_LINE = 4096
#: The first line to a forked fork server (the settings' environment), at most this long.
MAX_INIT_LINE = 1 << 20


def available() -> bool:
    """Whether this system can fork workers this way."""
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


def _prctl(option: int, value: Any) -> bool:
    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def set_process_name(name: str) -> None:
    """``/proc/PID/comm`` (15 bytes), which ``ps -o comm`` and ``top`` show."""
    _prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


def become_subreaper() -> bool:
    """Make this process the parent of its descendants' orphans (the forked workers)."""
    return sys.platform.startswith("linux") and _prctl(_PR_SET_CHILD_SUBREAPER, 1)


# --- the fork server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Prefork:
    """A fork server forked from ``serve`` itself (``prefork``), waiting for its first line."""

    pid: int
    control: socket.socket


def prefork(start: Callable[[int, dict[str, Any]], None]) -> Prefork | None:
    """Fork a fork server from this process as it is now (call it once everything a worker
    runs is imported, before any thread or event loop exists); None if this system or this
    process cannot (then ``serve`` starts one as a new interpreter). The child reads one JSON
    object line from its control socket (``WorkerForks`` sends the settings' environment
    there first) and calls ``start(control_fd, that object)``; it exits when that returns,
    or at once if ``serve`` closes the socket first (it failed to start)."""
    if not available() or threading.active_count() > 1:  # fork copies one thread only
        return None
    ours, theirs = socket.socketpair()
    gc.collect()
    gc.freeze()  # the imports: no collection in the fork server or a worker writes to them
    try:
        pid = os.fork()
    except OSError as exc:
        log.warning("cannot fork the relay fork server (%s); starting it as a new interpreter", exc)
        ours.close()
        theirs.close()
        return None
    if pid == 0:  # the fork server
        code = 1
        try:
            ours.close()
            with open(os.devnull, "rb") as devnull:  # as the exec'd one (stdin=DEVNULL)
                os.dup2(devnull.fileno(), 0)
            init = read_line(theirs, MAX_INIT_LINE)
            if isinstance(init, dict):
                start(theirs.fileno(), init)
                code = 0
        except BaseException:  # nothing may unwind into serve's code
            with contextlib.suppress(Exception):
                log.exception("relay fork server failed")
        finally:
            os._exit(code)
    theirs.close()
    return Prefork(pid, ours)


def read_line(sock: socket.socket, limit: int = MAX_LINE) -> Any:
    """One JSON line from ``sock``, taking nothing after it (``serve_forks`` reads the rest
    through its own buffer); None at end of stream or on an unreadable line."""
    line = b""
    while not line.endswith(b"\n") and len(line) < limit:
        peek = sock.recv(min(limit - len(line), 65536), socket.MSG_PEEK)
        if not peek:
            return None
        end = peek.find(b"\n")
        line += sock.recv(end + 1 if end >= 0 else len(peek))
    try:
        return json.loads(line)
    except ValueError:
        return None


def serve_forks(control_fd: int, supervisor_pid: int, run: Callable[[str, str], int]) -> None:
    """The fork server's loop: for each ``{"listen": ..., "worker_id": ...}`` line on
    ``control_fd``, fork a worker that calls ``run(listen, worker_id)`` (its exit status) and
    answer ``{"pid": ...}``; return when ``serve`` closes the socket. The caller has prepared
    this process (everything imported, ``gc.freeze``)."""
    set_process_name(FORK_SERVER_NAME)
    # Ctrl-C (SIGINT to the whole process group) or a SIGTERM to the group stops serve and its
    # workers; the fork server stays until serve closes its socket (or dies: SIGHUP), so that
    # serve can still replace a worker while it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    control = socket.socket(fileno=control_fd)
    lines = control.makefile("rb")
    try:
        while line := lines.readline(MAX_LINE):
            try:
                request = json.loads(line)
                listen, worker_id = str(request["listen"]), str(request["worker_id"])
            except (ValueError, KeyError, TypeError):
                log.error("fork server: unreadable request %r", line[:80])
                return
            pid = _fork_worker(control, supervisor_pid, run, listen, worker_id)
            control.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    finally:
        lines.close()
        control.close()


def _fork_worker(control: socket.socket, supervisor_pid: int, run: Callable[[str, str], int], listen: str,
                 worker_id: str) -> int:
    """Fork twice (the middle process exits at once, so ``serve`` adopts the worker); the
    worker's pid, or 0 if the fork failed."""
    gc.collect()
    gc.freeze()  # whatever this process made since: no collection in a worker writes to it
    read_end, write_end = os.pipe()
    try:
        middle = os.fork()
    except OSError as exc:
        log.error("fork server: cannot fork: %s", exc)
        os.close(read_end)
        os.close(write_end)
        return 0
    if middle == 0:  # the middle process: fork the worker, say its pid, exit
        code = 0
        try:
            os.close(read_end)
            worker = os.fork()
            if worker == 0:
                os.close(write_end)
                control.close()
                _worker(supervisor_pid, run, listen, worker_id)
            os.write(write_end, str(worker).encode())
        except BaseException:  # noqa: BLE001 - nothing may unwind into the fork server's loop
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read(32)
    finally:
        os.waitpid(middle, 0)
    return int(answer) if answer.isdigit() else 0


def _worker(supervisor_pid: int, run: Callable[[str, str], int], listen: str, worker_id: str) -> None:
    """A new worker: wait to be ``serve``'s child, then run; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a new interpreter's
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        set_process_name(WORKER_NAME_PREFIX + worker_id.removeprefix("worker-"))
        deadline = time.monotonic() + REPARENT_TIMEOUT
        while os.getppid() != supervisor_pid and time.monotonic() < deadline:
            time.sleep(0.002)
        code = run(listen, worker_id)
    except BaseException:  # a worker must end here, never in the fork server's code
        log.exception("relay worker %s failed", worker_id)
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# --- serve's side -------------------------------------------------------------------------------


class ForkedWorker:
    """A forked worker, as ``serve`` sees it: ``asyncio.subprocess.Process``'s ``pid``,
    ``returncode``, ``wait``, ``terminate`` and ``kill``. Its exit is noticed through a pidfd
    (no SIGCHLD handler involved) and it is signalled through it, so a pid used again after the
    worker is gone is never signalled."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._pidfd = os.pidfd_open(pid)
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self, tries: int = 0) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # exited before it was adopted: it will be, in a moment
            pid, status = 0, 0
            if tries > 100:  # never adopted (cannot happen while serve is a subreaper)
                pid, status = self.pid, 255 << 8
        if pid == 0:
            self._loop.remove_reader(self._pidfd)
            self._loop.call_later(0.01, self._reap, tries + 1)
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self.returncode = os.waitstatus_to_exitcode(status)
        if not self._exited.done():
            self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WorkerForks:
    """``serve``'s end of the fork server: starts it (again, if it died) and asks it for workers.

    ``command`` starts the fork server with ``{fd}`` in it standing for the control socket's
    descriptor; ``env`` is its environment (and so its workers'). ``forked``: the fork server
    ``prefork`` made of ``serve`` itself, used first; it is sent ``init`` (with ``env`` in it)
    as its first line."""

    def __init__(self, command: list[str], env: dict[str, str], forked: Prefork | None = None,
                 init: dict[str, Any] | None = None) -> None:
        self.command = command
        self.env = env
        self.process: asyncio.subprocess.Process | ForkedWorker | None = None
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._forked = forked
        self._init = {**(init or {}), "env": env}

    async def _start(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._forked is not None:  # the one made of serve itself, once
            forked, self._forked = self._forked, None
            self.process = ForkedWorker(forked.pid)
            reader, writer = await asyncio.open_connection(sock=forked.control, limit=MAX_LINE)
            writer.write(json.dumps(self._init).encode() + b"\n")
            log.debug("relay fork server forked from serve (pid %d)", forked.pid)
            return reader, writer
        ours, theirs = socket.socketpair()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *[part.replace("{fd}", str(theirs.fileno())) for part in self.command],
                env=self.env, pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        log.debug("relay fork server started (pid %d)", self.process.pid)
        return await asyncio.open_connection(sock=ours, limit=MAX_LINE)

    async def spawn(self, listen: str, worker_id: str) -> ForkedWorker:
        """A new worker listening on ``listen``; OSError if none could be made."""
        async with self._lock:
            for attempt in (1, 2):
                if self._stream is None or self.process is None or self.process.returncode is not None:
                    await self._close_stream()
                    self._stream = await self._start()
                reader, writer = self._stream
                try:
                    writer.write(json.dumps({"listen": listen, "worker_id": worker_id}).encode() + b"\n")
                    await writer.drain()
                    answer = json.loads(await reader.readline() or b"null")
                except (OSError, ValueError) as exc:
                    answer = None
                    log.warning("relay fork server: %s", exc)
                if isinstance(answer, dict) and isinstance(answer.get("pid"), int) and answer["pid"] > 0:
                    return ForkedWorker(answer["pid"])
                log.error("relay fork server gave no worker (attempt %d); starting it again", attempt)
                await self.stop()
        raise OSError("the relay fork server gives no workers")

    async def _close_stream(self) -> None:
        if self._stream is not None:
            writer = self._stream[1]
            self._stream = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        """Stop the fork server (its workers are ``serve``'s and are not touched)."""
        if self._forked is not None:  # never used: it is waiting for its first line
            forked, self._forked = self._forked, None
            self.process = ForkedWorker(forked.pid)
            forked.control.close()
        await self._close_stream()  # it exits when its socket closes
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
