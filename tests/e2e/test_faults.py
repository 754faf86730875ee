"""Faults seen from the outside: a hung worker (SIGSTOP), a killed ``serve`` (SIGKILL), a
stopped ``serve`` (SIGTERM) with calls up, and a stopped remote worker that resumes late.
Real processes, sockets and aiortc peers; what the users see is checked message by message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.janus_ws import Handle, JanusConnection, Peer, Session, offer_host_address, plugin_result
from tests.support.servers import children, free_port, videocall_command

TIMEOUT = 15.0
#: What the issue promises: users of a hung worker's calls are told within this.
TOLD_WITHIN = 10.0
#: ``ipc_timeout`` of the node whose remote worker resumes late: its requests' deadline (s), short
#: so the test waits little past it.
IPC_TIMEOUT = 2.0


class Tree:
    """A ``videocall serve`` (or ``signaling``/``relay``) process started for one test, and its log."""

    def __init__(self, tmp: Path, name: str, args: list[str], env: dict[str, str] | None = None,
                 port: int = 0) -> None:
        self.log = tmp / f"{name}.log"
        self.port = port
        self.env = {**os.environ, "VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "VIDEOCALL_LOG_LEVEL": "INFO",
                    **(env or {})}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([*videocall_command(), *args], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 30.0) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, self.text()))
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"no {count} x {pattern!r} in the log:\n{self.text()[-4000:]}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def serve(tmp: Path, *extra: str, env: dict[str, str] | None = None) -> Tree:
    port = free_port()
    tree = Tree(tmp, "serve", ["serve", "--port", str(port), "--workers", "2", *extra], env, port)
    tree.wait_for_log(r"connected to relay worker", count=2)
    wait_connectable(port)
    return tree


def wait_connectable(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"nothing listens on port {port}")



def alive(pid: int) -> bool:
    """Running or stopped, not gone and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def relay_processes_with(marker: str) -> list[int]:
    """Pids of ``videocall relay`` processes whose command line mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"relay" in cmdline and any(marker.encode() in arg for arg in cmdline) and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


class User:
    def __init__(self, conn: JanusConnection, session: Session, handle: Handle, name: str) -> None:
        self.conn, self.session, self.handle, self.name = conn, session, handle, name
        self.peer: Peer | None = None

    @classmethod
    async def join(cls, url: str, name: str) -> User:
        conn = await JanusConnection.connect(url)
        session = await Session.create(conn)
        session.start_keepalive(10)
        handle = await session.attach()
        _, event = await handle.message({"request": "register", "username": name})
        assert plugin_result(event) == {"event": "registered", "username": name}
        return cls(conn, session, handle, name)

    async def told_hangup(self, peer: str, reason: str, timeout: float = TIMEOUT) -> None:
        """The plugin ``hangup`` naming ``peer`` with ``reason``, then the core ``hangup``."""
        event = await self.handle.plugin_event("hangup", timeout=timeout)
        assert plugin_result(event) == {"event": "hangup", "username": peer, "reason": reason}
        await self.handle.notification("hangup", timeout=timeout)

    async def close(self) -> None:
        self.session.stop_keepalive()
        if self.peer is not None:
            await self.peer.close()
        await self.conn.close()


async def connect_call(caller: User, callee: User) -> None:
    caller.peer, callee.peer = Peer(caller.name), Peer(callee.name)
    _, event = await caller.handle.message({"request": "call", "username": callee.name}, await caller.peer.offer())
    assert plugin_result(event) == {"event": "calling"}, event
    incoming = await callee.handle.plugin_event("incomingcall", timeout=TIMEOUT)
    await callee.handle.message({"request": "accept"}, await callee.peer.answer(incoming["jsep"]))
    accepted = await caller.handle.plugin_event("accepted", timeout=TIMEOUT)
    await caller.peer.set_remote(accepted["jsep"])
    for user in (caller, callee):
        await user.handle.notification("webrtcup", timeout=TIMEOUT)


def worker_of(tree: Tree, call_id: str) -> int:
    """The pid of the worker that created ``call_id`` (its log line names its pid)."""
    (match,) = re.finditer(rf"\[(\d+)\]: call {call_id}: created", tree.text())
    return int(match.group(1))


def since(user: User, mark: int) -> list[dict[str, Any]]:
    """What ``user`` received after the first ``mark`` messages, keepalive acks left out."""
    return [m for m in user.conn.received[mark:] if m.get("janus") != "ack"]


@pytest.fixture
def host_address() -> Iterator[None]:
    with offer_host_address("127.0.0.1"):
        yield


async def test_hung_worker_is_dropped_replaced_and_does_nothing_late(tmp_path: Path, host_address: None) -> None:
    tree = serve(tmp_path)
    users: list[User] = []
    try:
        alice, bob, carol, dave = users[:] = [await User.join(tree.url, n) for n in ("alice", "bob", "carol", "dave")]
        await connect_call(alice, bob)
        hung = worker_of(tree, "call-1")

        os.kill(hung, signal.SIGSTOP)
        stopped = time.monotonic()
        await alice.told_hangup("bob", "Remote WebRTC hangup", timeout=TOLD_WITHIN)
        await bob.told_hangup("alice", "Remote WebRTC hangup", timeout=TOLD_WITHIN)
        assert time.monotonic() - stopped < TOLD_WITHIN
        ended = {user.name: len(user.conn.received) for user in (alice, bob)}

        # a new call meanwhile goes to a live worker (the other one, or the hung one's
        # replacement if it is up already), never to the hung one, and connects
        await connect_call(carol, dave)
        assert worker_of(tree, "call-2") in set(children(tree.proc.pid)) - {hung}

        # the hung worker is killed and a new one started in its place
        tree.wait_for_log(rf"relay worker \d \(pid {hung}\) missed its heartbeat", timeout=TIMEOUT)
        tree.wait_for_log(r"relay worker \d started \(pid \d+\)", count=3, timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while alive(hung) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not alive(hung)
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
        # the node takes the replacement (its third connection to a worker), then a moment for
        # anything late to show
        tree.wait_for_log(r"connected to relay worker", count=3, timeout=TIMEOUT)
        await asyncio.sleep(0.5)

        # nothing carried out late, no stray event to anyone
        assert not re.search(rf"\[{hung}\]: call call-\d+: created", tree.text().split(f"[{hung}]: call call-1: created", 1)[1])
        for user in (alice, bob):
            assert since(user, ended[user.name]) == [], user.name
        assert [m for m in since(carol, 0) + since(dave, 0) if m.get("janus") == "hangup"] == []
        _, event = await carol.handle.message({"request": "hangup"})
        assert plugin_result(event) is not None
    finally:
        for user in users:
            await user.close()
        tree.stop()


async def test_remote_worker_resumed_late_creates_nothing(tmp_path: Path, host_address: None) -> None:
    """``videocall relay`` started by hand, stopped while a ``call.create`` waits in its socket,
    resumed after the request's deadline: it drops it, keeps running, and takes calls again."""
    sock = tmp_path / "relay.sock"
    relay = Tree(tmp_path, "relay", ["relay", "--listen", f"unix:{sock}"])
    signaling = None
    users: list[User] = []
    try:
        relay.wait_for_log(r"listening on")
        port = free_port()
        signaling = Tree(tmp_path, "signaling", ["signaling", "--port", str(port), "--worker", f"unix:{sock}"],
                         {"VIDEOCALL_IPC_TIMEOUT": str(IPC_TIMEOUT)}, port=port)
        signaling.wait_for_log(r"connected to relay worker")
        wait_connectable(port)
        alice, bob = users[:] = [await User.join(signaling.url, n) for n in ("alice", "bob")]

        os.kill(relay.proc.pid, signal.SIGSTOP)
        alice.peer = Peer("alice")
        started = time.monotonic()
        _, event = await alice.handle.message({"request": "call", "username": "bob"}, await alice.peer.offer())
        result = event["plugindata"]["data"]
        assert result["error_code"] == 499 and result["error"].startswith("Media relay unavailable, try again"), result
        assert time.monotonic() - started < TOLD_WITHIN
        # The node gave up on the worker (its heartbeat), and the request's deadline is a second past.
        signaling.wait_for_log(r"relay worker \S+ missed its heartbeat", timeout=TIMEOUT)
        await asyncio.sleep(max(0.0, IPC_TIMEOUT + 1.0 - (time.monotonic() - started)))
        os.kill(relay.proc.pid, signal.SIGCONT)

        relay.wait_for_log(r"dropped 'call\.create' request \d+ read [\d.]+ s after its deadline", timeout=TIMEOUT)
        signaling.wait_for_log(r"connected to relay worker", count=2, timeout=TIMEOUT)
        assert "call call-1: created" not in relay.text()
        assert relay.proc.poll() is None  # a remote worker keeps running for the next node
        await alice.peer.close()
        await connect_call(alice, bob)  # and takes calls again
        assert "call call-2: created" in relay.text()
        rung = [m for m in since(bob, 0) if (plugin_result(m) or {}).get("event") == "incomingcall"]
        assert len(rung) == 1  # call-2 only: the late call-1 never rang
    finally:
        for user in users:
            await user.close()
        if signaling is not None:
            signaling.stop()
        relay.stop()


async def test_killed_serve_leaves_no_worker_socket_or_folder(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    tree = serve(tmp_path, env={"TMPDIR": str(tmpdir)})
    try:
        workers = children(tree.proc.pid)
        assert len(workers) == 2 and list(tmpdir.glob("videocall-ipc-*/worker-*.sock"))
        os.kill(tree.proc.pid, signal.SIGKILL)
        tree.proc.wait()
        deadline = time.monotonic() + 3.0
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [pid for pid in workers if alive(pid)] == []
        assert list(tmpdir.iterdir()) == []  # no socket file, no folder
    finally:
        tree.stop()


async def test_sigterm_hangs_up_every_call_before_closing(tmp_path: Path, host_address: None) -> None:
    tree = serve(tmp_path, "--drain-timeout", "1")
    users: list[User] = []
    try:
        alice, bob = users[:] = [await User.join(tree.url, n) for n in ("alice", "bob")]
        await connect_call(alice, bob)
        os.kill(tree.proc.pid, signal.SIGTERM)
        for user, peer in ((alice, "bob"), (bob, "alice")):
            await user.told_hangup(peer, "Server shutting down")  # found even if the socket closed after
        for user in users:
            deadline = time.monotonic() + TIMEOUT
            while not user.conn.closed and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert user.conn.closed
            kinds = [m.get("janus") for m in user.conn.received]
            assert kinds[-2:] == ["event", "hangup"], kinds  # the hangups were the last words
        assert tree.proc.wait(TIMEOUT) == 0
    finally:
        for user in users:
            await user.close()
        tree.stop()
