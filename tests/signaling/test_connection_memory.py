"""What a burst of connections leaves behind in a real in-process server once they closed:
none of their objects, and the freed heap handed back to the system.

Issue 17: 3,000 connections from one address kept the signalling process at 229 MB after they
closed. Measured with ``bench/memory_probe.py --signalling`` (a burst of 3,000, 50 per address):
160 MB of it was freed memory glibc kept in its arenas (given back by the trim checked here),
and one connection (its buffers and zlib contexts) stayed alive in the connection watch's loop
variable. Memory figures are the probe's business; this test checks the objects, not RSS: with
the interpreter's automatic collection off, only the server's own collection (before its trim)
may free them.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any

import pytest
import websockets

from shared.settings import Settings
from signaling.guarded_connection import GuardedConnection
from signaling.server import Connection, SignalingServer

#: Client addresses of the burst (X-Forwarded-For from trusted loopback), and connections each.
ADDRESSES = [f"198.51.100.{n}" for n in range(1, 5)]
PER_ADDRESS = 40


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"not seen within {timeout} s: {what}") from None


async def _client(port: int, address: str) -> Any:
    """A connection holding a session and a VideoCall handle, as janus.js leaves one."""
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/", subprotocols=["janus-protocol"],  # type: ignore[list-item]
                                  additional_headers={"X-Forwarded-For": address}, open_timeout=10, proxy=None)
    await ws.send(json.dumps({"janus": "create", "transaction": "c"}))
    session = json.loads(await ws.recv())["data"]["id"]
    await ws.send(json.dumps({"janus": "attach", "transaction": "a", "session_id": session,
                              "plugin": "janus.plugin.videocall"}))
    assert json.loads(await ws.recv())["janus"] == "success"
    return ws


@pytest.mark.usefixtures("no_automatic_collection")
async def test_closed_connections_leave_no_object_behind_and_the_heap_is_trimmed() -> None:
    settings = Settings(port=0, trusted_proxies=["127.0.0.1"], create_rate=0, register_rate=0,
                        idle_timeout=0.4, frame_timeout=0)  # the watch looks every 0.1 s
    server = SignalingServer(settings)
    trims: list[int] = []
    server.heap.delay, server.heap.trim = 0.05, lambda pad: trims.append(pad) or 1
    await server.start()
    try:
        clients = [await _client(server.port, address) for address in ADDRESSES for _ in range(PER_ADDRESS)]
        assert len(server.connections) == len(clients) == len(ADDRESSES) * PER_ADDRESS
        held = [weakref.ref(c) for c in server.connections.values()]
        held += [weakref.ref(c.ws) for c in server.connections.values()]
        assert all(isinstance(ref(), Connection | GuardedConnection) for ref in held)
        # The connection watch has looked at them (it marks a connection with a session active).
        first = weakref.ref(next(iter(server.connections.values())).ws)
        before = first().last_active  # type: ignore[union-attr]
        await _until(lambda: first().last_active > before,  # type: ignore[union-attr]
                     "the connection watch looking at the connections")

        await asyncio.gather(*(ws.close() for ws in clients))
        await _until(lambda: not server.connections and not server.sessions.sessions, "every connection gone")
        assert server.door.connections.counts == {}  # every address's slots given back
        # The server's collection and trim after the last of them (none pending any more).
        await _until(lambda: trims and not server.heap.pending, "the heap trimmed after the connections closed")
        assert set(trims) == {0} and len(trims) <= 3  # one per burst of closes, not one per connection

        await asyncio.sleep(0.3)  # a few more looks of the watch, with nothing left to look at
        alive = [ref() for ref in held if ref() is not None]
        assert alive == [], f"{len(alive)} object(s) of closed connections still alive: {alive[:3]}"
    finally:
        await server.close()
