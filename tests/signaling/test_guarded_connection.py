"""Replies written at once, or queued behind a socket that waits: one order either way, and
a client that stops reading is closed (1008). A real in-process server over real sockets;
the socket "waits" because the test calls the connection's flow-control callbacks
(``pause_writing``, ``resume_writing``) as the transport would when its buffer fills."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from shared.settings import Settings
from signaling import server as server_module
from signaling.guarded_connection import GuardedConnection
from signaling.server import Connection, SignalingServer


@pytest.fixture
async def node() -> AsyncIterator[SignalingServer]:
    server = SignalingServer(Settings(port=0, max_connections_per_address=0, create_rate=0, register_rate=0,
                                      idle_timeout=0, frame_timeout=0))
    await server.start()
    yield server
    await server.close()


async def _client(server: SignalingServer) -> tuple[ClientConnection, Connection]:
    ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["janus-protocol"],  # type: ignore[list-item]
                                  open_timeout=3, proxy=None)
    for _ in range(100):
        if server.connections:
            break
        await asyncio.sleep(0.01)
    [connection] = server.connections.values()
    return ws, connection


async def _ping(ws: ClientConnection, transaction: str) -> None:
    await ws.send(json.dumps({"janus": "ping", "transaction": transaction}))


async def _transactions(ws: ClientConnection, count: int) -> list[str]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 3))["transaction"] for _ in range(count)]


async def _settled(connection: Connection, queued: int) -> None:
    for _ in range(200):
        if connection.queue.qsize() == queued:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{connection.queue.qsize()} replies queued, expected {queued}")


async def test_websockets_still_has_what_send_now_uses(node: SignalingServer) -> None:
    """``GuardedConnection.send_now`` uses websockets beyond its documented API (``send_data``,
    ``paused``, ``send_in_progress``): if a release moves one, this fails first."""
    ws, connection = await _client(node)
    guarded = connection.ws
    assert isinstance(guarded, GuardedConnection)
    assert guarded.paused is False and guarded.send_in_progress is None and callable(guarded.send_data)
    assert guarded.send_now(b'{"janus":"hello"}')
    assert json.loads(await asyncio.wait_for(ws.recv(), 3)) == {"janus": "hello"}
    await ws.close()


async def test_replies_queue_behind_a_waiting_socket_and_keep_their_order(node: SignalingServer) -> None:
    ws, connection = await _client(node)
    await _ping(ws, "t1")
    assert await _transactions(ws, 1) == ["t1"]  # written at once: nothing queued
    assert connection.queue.empty()

    connection.ws.pause_writing()  # the transport's buffer is full
    for transaction in ("t2", "t3", "t4"):
        await _ping(ws, transaction)
    # t2 goes to the writer, which hands it to the socket and waits; t3 and t4 wait behind it
    assert await _transactions(ws, 1) == ["t2"]
    await _settled(connection, 2)
    await _ping(ws, "t5")  # the socket still waits: queued, not written ahead of t3 and t4
    await _settled(connection, 3)

    connection.ws.resume_writing()
    connection.send({"janus": "pong", "transaction": "t6"})  # before the writer runs again: behind t3-t5
    assert await _transactions(ws, 4) == ["t3", "t4", "t5", "t6"]
    await _ping(ws, "t7")
    assert await _transactions(ws, 1) == ["t7"]
    assert connection.queue.empty()
    await ws.close()


async def test_a_client_that_does_not_read_is_closed(node: SignalingServer, monkeypatch: Any) -> None:
    monkeypatch.setattr(server_module, "MAX_OUTGOING", 3)
    ws, connection = await _client(node)
    connection.ws.pause_writing()
    for n in range(6):  # one handed to the socket, 3 queued, the 5th overflows
        await _ping(ws, f"t{n}")
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1008 and ws.close_reason == "too many unread messages"
