"""``serve``'s workers forked from its fork server (videocall/worker_forks.py), on a real
``videocall serve --workers 2``: the first fork server is serve's own fork, the workers are
``serve``'s children, they and serve share what serve imported, and they outlive the fork
server; a worker that dies is forked again from a new fork server (a new interpreter)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.servers import children, free_port, videocall_command
from videocall.worker_forks import WORKER_NAME_PREFIX

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="Linux: pidfd_open")


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return fields


def _fork_servers(pid: int) -> list[int]:
    return children(pid, fork_servers=True)


def _wait(what: str, check: object, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@pytest.mark.timeout(120)
def test_forked_workers_share_memory_outlive_the_fork_server_and_are_replaced(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    env = {**os.environ, "VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "VIDEOCALL_LOG_LEVEL": "INFO"}
    with log.open("wb") as out:
        serve = subprocess.Popen([*videocall_command(), "serve", "--workers", "2", "--port", str(free_port())],
                                 env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait("two workers listening", lambda: log.read_text().count("listening on unix:") == 2, log)
        workers = sorted(children(serve.pid), key=_comm)
        assert [_comm(pid) for pid in workers] == [f"{WORKER_NAME_PREFIX}0", f"{WORKER_NAME_PREFIX}1"]
        (fork_server,) = _fork_servers(serve.pid)
        # the first fork server is serve's own fork, not a new interpreter ...
        assert Path(f"/proc/{fork_server}/cmdline").read_bytes() == Path(f"/proc/{serve.pid}/cmdline").read_bytes()
        for pid in [serve.pid, *workers]:
            memory = _memory_kb(pid)
            own = memory["Private_Clean"] + memory["Private_Dirty"]
            # ... so serve and its workers share what serve imported (aiortc & co.) before it
            # forked it: most of each of them is shared
            assert own < memory["Rss"] / 2, (pid, memory)

        os.kill(fork_server, signal.SIGKILL)
        _wait("the fork server gone", lambda: not _alive(fork_server), log)
        time.sleep(1.0)
        assert all(_alive(pid) for pid in workers)  # serve's children, not the fork server's

        os.kill(workers[0], signal.SIGKILL)  # replaced, forked from a new fork server
        _wait("worker 0 replaced", lambda: len(re.findall(r"relay worker 0 started", log.read_text())) == 2, log)
        _wait("the new worker listening", lambda: log.read_text().count("worker-0 listening on unix:") == 2, log)
        replacement = [pid for pid in children(serve.pid) if pid not in workers]
        assert [_comm(pid) for pid in replacement] == [f"{WORKER_NAME_PREFIX}0"]
        assert len(_fork_servers(serve.pid)) == 1 and _fork_servers(serve.pid) != [fork_server]
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
