"""How the test suites start our server: a free port and the `videocall` command.

Shared by tests/e2e, tests/browser and the process-level tests, so there is one answer to
"which `videocall` runs" (``VIDEOCALL_SERVE_CMD`` overrides it, e.g. ``"python -m videocall"``).
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import socket
import sys
import time
import urllib.request
from pathlib import Path

from videocall.worker_forks import FORK_SERVER_NAME

# Ports handed out by free_port in this test run: never handed out twice.
_HANDED_OUT: set[int] = set()
# Below Linux's ephemeral range (ip_local_port_range starts at 32768): a port the OS picks
# with bind(0) comes from that range, the same one every outgoing connection's local port
# comes from, and it can come back twice once its socket is closed. Two services of one
# topology then collide ("address already in use" in CI), or a server's port is taken by a
# client's connection between the pick and the server's bind.
_PORT_RANGE = (20000, 32768)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, never one handed out before in this run."""
    while True:
        port = random.randrange(*_PORT_RANGE)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def wait_ready(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    """Until the server's ``/readyz`` says ready (its relay worker connected): a call placed
    earlier is refused ("no relay worker is connected")."""
    deadline = time.monotonic() + timeout
    url = f"http://{host}:{port}/readyz"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready within {timeout:g} s")
        time.sleep(0.1)


def videocall_command() -> list[str]:
    """The command that runs `videocall`: the override, the installed script, or its entry point."""
    override = os.environ.get("VIDEOCALL_SERVE_CMD")
    if override:
        return shlex.split(override)
    exe = shutil.which("videocall")
    if exe:
        return [exe]
    # Not installed: run the console script's entry point (pyproject: videocall.cli:main).
    return [sys.executable, "-c", "import sys; from videocall.cli import main; sys.exit(main())"]


def children(pid: int, *, fork_servers: bool = False) -> list[int]:
    """The processes whose parent is ``pid`` (``serve``'s relay workers), from /proc; not
    ``serve``'s fork server (videocall/worker_forks.py), which is its child too, unless
    ``fork_servers``: then only it (a live one; none while it is being replaced)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            name = (entry / "comm").read_text().strip()
        except (OSError, IndexError, ValueError):
            continue
        if int(parent) == pid and (name == FORK_SERVER_NAME) == fork_servers and state != "Z":
            found.append(int(entry.name))
    return found
