"""A relay worker that dies mid-call: both users get a clean hangup, signalling goes on,
the worker is restarted and the next call works. Real processes, sockets and aiortc peers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.janus_ws import JanusConnection, Peer, Session, offer_host_address, plugin_result
from tests.support.servers import children, free_port

TIMEOUT = 15.0



@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "VIDEOCALL_LOG_LEVEL": "INFO"}
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "videocall", "serve", "--port", str(port), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if b"relay worker" in (tmp_path / "serve.log").read_bytes() and _connectable(port):
                break
            time.sleep(0.1)
        else:
            proc.kill()
            pytest.fail("videocall serve did not start:\n" + (tmp_path / "serve.log").read_text())
        yield f"ws://127.0.0.1:{port}/", proc
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _connectable(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _user(url: str, name: str) -> tuple[JanusConnection, Session, object]:
    conn = await JanusConnection.connect(url)
    session = await Session.create(conn)
    handle = await session.attach()
    _, event = await handle.message({"request": "register", "username": name})
    assert plugin_result(event) == {"event": "registered", "username": name}
    return conn, session, handle


async def _call(alice: object, bob: object) -> tuple[Peer, Peer]:
    caller, callee = Peer("alice"), Peer("bob")
    _, event = await alice.message({"request": "call", "username": "bob"}, await caller.offer())  # type: ignore[attr-defined]
    assert plugin_result(event) == {"event": "calling"}, event
    incoming = await bob.plugin_event("incomingcall", timeout=TIMEOUT)  # type: ignore[attr-defined]
    _, event = await bob.message({"request": "accept"}, await callee.answer(incoming["jsep"]))  # type: ignore[attr-defined]
    accepted = await alice.plugin_event("accepted", timeout=TIMEOUT)  # type: ignore[attr-defined]
    await caller.set_remote(accepted["jsep"])
    for handle in (alice, bob):
        await handle.notification("webrtcup", timeout=TIMEOUT)  # type: ignore[attr-defined]
    return caller, callee


async def test_worker_death_hangs_up_both_and_next_call_works(serve: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = serve
    with offer_host_address("127.0.0.1"):
        a_conn, _, alice = await _user(url, "alice")
        b_conn, _, bob = await _user(url, "bob")
        peers = await _call(alice, bob)

        (worker,) = children(proc.pid)
        os.kill(worker, signal.SIGKILL)
        for handle, other in ((alice, "bob"), (bob, "alice")):
            hangup = await handle.plugin_event("hangup", timeout=TIMEOUT)  # type: ignore[attr-defined]
            assert plugin_result(hangup) == {"event": "hangup", "username": other, "reason": "Remote WebRTC hangup"}
            await handle.notification("hangup", timeout=TIMEOUT)  # type: ignore[attr-defined]
        for peer in peers:
            await peer.close()

        # signalling kept serving; once the worker is back, a new call connects
        _, event = await alice.message({"request": "list"})  # type: ignore[attr-defined]
        assert plugin_result(event) == {"list": ["alice", "bob"]}
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                peers = await _call(alice, bob)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        assert children(proc.pid) != [worker]
        for peer in peers:
            await peer.close()
        await a_conn.close()
        await b_conn.close()
