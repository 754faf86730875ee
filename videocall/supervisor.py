"""``serve``'s relay workers: started, watched over their own IPC channel, restarted.

A worker that dies is restarted (with a back-off when it dies young); one that misses its
heartbeat is hung (SIGSTOP, swapped out, stuck) and is killed, then restarted the same way.
Workers are forked from a fork server when the system allows (``videocall/worker_forks.py``),
so they share what they imported; else each is a new interpreter. Their settings go to them
as ``VIDEOCALL_*`` variables (:func:`settings_env`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from pydantic import SecretStr

from shared.settings import Settings
from videocall import worker_forks
from videocall.worker_forks import ForkedWorker, Prefork, WorkerForks

__all__ = ["WorkerSupervisor", "settings_env"]

log = logging.getLogger("videocall")


def settings_env(settings: Settings) -> dict[str, str]:
    """The effective settings as ``VIDEOCALL_*`` variables, for child processes.

    Of the secrets only ``relay_secret`` goes, as its value (read from ``relay_secret_file``
    already, so the file is not named again): the environment, unlike a command line, is not
    shown by ``ps`` to other users. Workers need neither api_secret nor token_auth_secret.
    """
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            if name == "relay_secret":
                env["VIDEOCALL_RELAY_SECRET"] = value.get_secret_value()
            continue
        env[f"VIDEOCALL_{name.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    env["VIDEOCALL_RELAY_SECRET_FILE"] = ""
    return env


class WorkerSupervisor:
    """Starts ``videocall relay`` subprocesses and restarts any that die or hang.

    Each worker is watched over its own IPC channel: ``worker.stats`` every
    ``heartbeat_interval`` s, and a worker that does not answer within ``heartbeat_timeout``
    s is hung and killed (SIGKILL: a stopped process takes no SIGTERM), then restarted like a
    dead one. The signalling side drops it on its own heartbeat (``RelayPool``) or when its
    channel closes, whichever comes first. ``temporary_dir``: the socket folder is serve's own,
    and the last worker out removes it if serve was killed before it could.
    """

    def __init__(self, settings: Settings, count: int, ipc_dir: Path, *, temporary_dir: bool = False,
                 heartbeat_interval: float = 1.0, heartbeat_timeout: float = 5.0,
                 forked: Prefork | None = None) -> None:
        self.settings = settings
        self.addresses = [f"unix:{ipc_dir / f'worker-{i}.sock'}" for i in range(count)]
        self.processes: list[asyncio.subprocess.Process | ForkedWorker | None] = [None] * count
        self.temporary_dir = temporary_dir
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._forks: WorkerForks | None = None
        self._forked = forked

    async def start(self) -> None:
        # Forked from a fork server when this system allows (videocall/worker_forks.py), so
        # the workers share what they imported; else each a new interpreter. The first fork
        # server is serve's own fork (``forked``) when it made one.
        if worker_forks.available() and worker_forks.become_subreaper():
            init = {"supervisor_pid": os.getpid(), "remove_empty_dir": self.temporary_dir}
            self._forks = WorkerForks(self._relay_command("--fork-server", "{fd}"), self._env(), self._forked, init)
        elif self._forked is not None:  # not used: it exits when its socket closes
            self._forked.control.close()
            await ForkedWorker(self._forked.pid).wait()
        self._forked = None
        for index in range(len(self.addresses)):
            self._tasks.append(asyncio.create_task(self._keep_running(index)))

    def _env(self) -> dict[str, str]:
        return {**os.environ, **settings_env(self.settings)}

    def _relay_command(self, *args: str) -> list[str]:
        extra = ["--remove-empty-ipc-dir"] if self.temporary_dir else []
        return [sys.executable, "-m", "videocall", "relay", *args, "--supervisor-pid", str(os.getpid()), *extra]

    async def _spawn(self, index: int) -> asyncio.subprocess.Process | ForkedWorker:
        address, worker_id = self.addresses[index], f"worker-{index}"
        if self._forks is not None:
            return await self._forks.spawn(address, worker_id)
        return await asyncio.create_subprocess_exec(
            *self._relay_command("--listen", address, "--worker-id", worker_id), env=self._env())

    async def _keep_running(self, index: int) -> None:
        delay = 0.5
        while not self._stopping:
            address = self.addresses[index]
            try:
                process = await self._spawn(index)
            except OSError as exc:
                log.error("relay worker %d could not be started: %s", index, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.processes[index] = process
            log.info("relay worker %d started (pid %d) on %s", index, process.pid, address)
            started = asyncio.get_running_loop().time()
            watchdog = asyncio.create_task(self._watch(index, process))
            try:
                code = await process.wait()
            finally:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            if self._stopping:
                return
            log.error("relay worker %d (pid %d) exited with %s; restarting", index, process.pid, code)
            delay = 0.5 if asyncio.get_running_loop().time() - started > 10 else min(delay * 2, 10.0)
            await asyncio.sleep(delay)

    async def _watch(self, index: int, process: asyncio.subprocess.Process | ForkedWorker) -> None:
        """Kill ``process`` if it stops answering its heartbeat (until it exits or is replaced)."""
        from shared import ipc
        from shared.messages import WorkerStats

        address, channel = self.addresses[index], None
        try:
            while process.returncode is None:
                try:
                    if channel is None or channel.closed:
                        channel = await ipc.connect(address, node_id="supervisor", timeout=self.heartbeat_timeout,
                                                    secret=self.settings.relay_secret)
                    await channel.request(WorkerStats())
                except OSError:  # not listening yet (starting), or gone
                    channel = None
                except ipc.RequestTimeout:
                    log.error("relay worker %d (pid %d) missed its heartbeat (no answer in %g s); killing it",
                              index, process.pid, self.heartbeat_timeout)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    return
                except ipc.IpcError as exc:  # refused or closed: ask again on a new channel
                    log.debug("relay worker %d heartbeat: %s", index, exc.reason)
                    channel = None
                await asyncio.sleep(self.heartbeat_interval)
        finally:
            if channel is not None:
                await channel.close()

    async def stop(self) -> None:
        self._stopping = True
        for process in self.processes:
            if process is not None and process.returncode is None:
                process.terminate()
        for process in self.processes:
            if process is not None:
                try:
                    await asyncio.wait_for(process.wait(), 5)
                except TimeoutError:
                    process.kill()
        for task in self._tasks:
            task.cancel()
        if self._forks is not None:
            await self._forks.stop()
