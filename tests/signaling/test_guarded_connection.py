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
from signaling.registry import MemoryRegistry
from signaling.server import Connection, SignalingServer
from tests.support.raw_ws import close_frame, frame, open_raw


@pytest.fixture
async def node() -> AsyncIterator[SignalingServer]:
    server = SignalingServer(Settings(port=0, max_connections_per_address=0, create_rate=0, register_rate=0,
                                      idle_timeout=0, frame_timeout=0, websocket_compression=True))
    await server.start()
    yield server
    await server.close()


async def _client(server: SignalingServer, *, compression: str | None = "deflate") -> tuple[ClientConnection, Connection]:
    ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["janus-protocol"],  # type: ignore[list-item]
                                  open_timeout=3, proxy=None, compression=compression)
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


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_send_now_writes_frames_of_every_length_encoding(node: SignalingServer, compression: str | None) -> None:
    """Without an extension ``send_now`` makes the frame itself (it reads websockets'
    ``protocol.writes`` and ``expect_continuation_frame``); with one, websockets makes it."""
    ws, connection = await _client(node, compression=compression)
    guarded = connection.ws
    assert isinstance(guarded, GuardedConnection)
    assert guarded.protocol.writes == [] and guarded.protocol.expect_continuation_frame is False
    for size in (0, 100, 125, 126, 1000, 65535, 65536, 200_000):
        text = json.dumps({"janus": "x" * size})
        assert guarded.send_now(text.encode())
        assert await asyncio.wait_for(ws.recv(), 3) == text
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


# --- messages handled as they arrive (GuardedConnection._run_now) ------------------------------


class SlowReleaseRegistry(MemoryRegistry):
    """A registry whose ``release`` waits a few loop ticks, as a networked one would: a
    ``detach`` of a registered handle then waits in the middle of its handling."""

    immediate = False

    async def release(self, name: str, owner: str) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        await super().release(name, owner)


async def _raw_messages(reader: asyncio.StreamReader, count: int) -> list[dict[str, Any]]:
    """The next ``count`` server frames (text, under 64 kB), as JSON."""
    messages = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readexactly(2), 3)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        assert head[0] == 0x81, head
        messages.append(json.loads(await reader.readexactly(length)))
    return messages


async def _session_and_handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, int]:
    """``create`` then ``attach`` (the VideoCall plugin) on a raw socket, each read alone."""
    writer.write(_text({"janus": "create", "transaction": "c"}))
    [created] = await _raw_messages(reader, 1)
    session = created["data"]["id"]
    writer.write(_text({"janus": "attach", "transaction": "a", "session_id": session,
                        "plugin": "janus.plugin.videocall"}))
    [attached] = await _raw_messages(reader, 1)
    return session, attached["data"]["id"]


def _text(message: dict[str, Any]) -> bytes:
    return frame(json.dumps(message).encode())


async def test_websockets_still_has_what_the_frame_fast_path_reads(node: SignalingServer) -> None:
    """``GuardedConnection`` reads websockets' parser state (the generators ``Protocol.parse``
    and ``StreamReader.at_eof`` it waits in, ``current_size``, ``max_fragment_size``) and its
    message queue (``recv_messages.frames``): if a release changes one, this fails first
    (requests would still be answered, through websockets' own reader, only slower). A
    client without compression, as the fast path takes no extension (browsers ask for
    permessage-deflate: their frames go through websockets' parser)."""
    ws, connection = await _client(node, compression=None)
    guarded = connection.ws
    assert isinstance(guarded, GuardedConnection)
    assert guarded.protocol.current_size is None and guarded.protocol.max_fragment_size is None
    assert len(guarded.recv_messages.frames) == 0
    assert guarded._between_frames()  # open, idle: the next frame may skip websockets' parser
    assert guarded._may_run_now()
    await _ping(ws, "t1")
    assert await _transactions(ws, 1) == ["t1"]
    assert guarded._between_frames()
    await ws.close()


@pytest.mark.parametrize("one_read", [True, False], ids=["one read", "one read each"])
async def test_requests_behind_one_that_waits_are_answered_after_it_in_order(one_read: bool) -> None:
    """A ``detach`` whose handling waits (the registry's ``release``) holds the requests
    behind it, whether they come in the same read or later: ``success``, ``detached``, then
    the pongs, as the reader alone answered them."""
    server = SignalingServer(Settings(port=0, max_connections_per_address=0, create_rate=0, register_rate=0,
                                      idle_timeout=0, frame_timeout=0), registry=SlowReleaseRegistry())
    await server.start()
    try:
        reader, writer = await open_raw("127.0.0.1", server.port)
        session, handle = await _session_and_handle(reader, writer)
        writer.write(_text({"janus": "message", "transaction": "r", "session_id": session, "handle_id": handle,
                            "body": {"request": "register", "username": "waits"}}))
        assert [m["janus"] for m in await _raw_messages(reader, 2)] == ["ack", "event"]

        frames = [_text({"janus": "detach", "transaction": "d", "session_id": session, "handle_id": handle}),
                  _text({"janus": "ping", "transaction": "p1"}), _text({"janus": "ping", "transaction": "p2"})]
        if one_read:
            writer.write(b"".join(frames))
        else:
            for data in frames:
                writer.write(data)
                await writer.drain()
                await asyncio.sleep(0)
        replies = await _raw_messages(reader, 4)
        assert [(m["janus"], m.get("transaction")) for m in replies] == [
            ("success", "d"), ("detached", None), ("pong", "p1"), ("pong", "p2")]
        writer.close()
    finally:
        await server.close()


async def test_a_whole_text_frame_of_bad_utf8_still_closes_with_1007(node: SignalingServer) -> None:
    reader, writer = await open_raw("127.0.0.1", node.port)
    writer.write(_text({"janus": "ping", "transaction": "p"}) + frame(b'{"janus": "\xff"}'))
    assert [m["transaction"] for m in await _raw_messages(reader, 1)] == ["p"]
    assert (await close_frame(reader))[0] == 1007
    writer.close()


async def test_a_fragmented_message_then_whole_ones_in_one_read_are_answered_in_order(node: SignalingServer) -> None:
    reader, writer = await open_raw("127.0.0.1", node.port)
    first, rest = b'{"janus": "ping", ', b'"transaction": "f"}'
    writer.write(frame(first, fin=False) + frame(rest, opcode=0) + _text({"janus": "ping", "transaction": "w1"})
                 + frame(b"", opcode=9) + _text({"janus": "ping", "transaction": "w2"}))
    replies = []
    while len(replies) < 3:  # the pong of the ping frame (opcode 10) comes among them
        head = await asyncio.wait_for(reader.readexactly(2), 3)
        payload = await reader.readexactly(head[1] & 0x7F)
        if head[0] == 0x81:
            replies.append(json.loads(payload)["transaction"])
    assert replies == ["f", "w1", "w2"]
    writer.close()


@pytest.mark.parametrize("waits_first", [False, True], ids=["at once", "after waiting"])
async def test_a_handler_that_raises_closes_its_connection_with_1011(node: SignalingServer, monkeypatch: Any,
                                                                    waits_first: bool) -> None:
    """As when the server's handler raises (``http_listener``): logged, 1011, others go on."""
    handle_frame = node.core.handle_frame

    async def failing(frame: str | bytes, *args: Any) -> None:
        if b"boom" in (frame if isinstance(frame, bytes) else frame.encode()):
            if waits_first:
                await asyncio.sleep(0)
            raise RuntimeError("a bug")
        await handle_frame(frame, *args)

    monkeypatch.setattr(node.core, "handle_frame", failing)
    other, _ = await _client(node, compression=None)
    reader, writer = await open_raw("127.0.0.1", node.port)
    writer.write(_text({"janus": "ping", "transaction": "p"}))
    assert [m["transaction"] for m in await _raw_messages(reader, 1)] == ["p"]
    writer.write(_text({"janus": "boom", "transaction": "b"}))
    assert (await close_frame(reader))[0] == 1011
    writer.close()
    await _ping(other, "still")
    assert await _transactions(other, 1) == ["still"]
    await other.close()


@pytest.mark.parametrize("enabled", [False, True])
async def test_permessage_deflate_only_when_the_setting_asks_for_it(enabled: bool) -> None:
    """Janus 1.1.2 never accepts permessage-deflate (a browser offers it; Janus answers without
    ``Sec-WebSocket-Extensions``), and neither do we unless ``websocket_compression`` is on:
    deflating every message both ways costs CPU and saves bytes only on slow links."""
    server = SignalingServer(Settings(port=0, websocket_compression=enabled))
    await server.start()
    try:
        ws, _ = await _client(server, compression="deflate")
        assert "permessage-deflate" in (ws.request.headers.get("Sec-WebSocket-Extensions") or "")
        accepted = ws.response.headers.get("Sec-WebSocket-Extensions")
        assert (accepted is not None and accepted.startswith("permessage-deflate")) is enabled
        await _ping(ws, "t1")
        assert await _transactions(ws, 1) == ["t1"]
        await ws.close()
    finally:
        await server.close()


# --- replies of one read, written together (GuardedConnection._flush_batch) ---------------------


async def _raw_guarded(node: SignalingServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, GuardedConnection,
                                                        list[bytes]]:
    """A raw client, its server side, and what that side writes (each ``_write``, in order)."""
    reader, writer = await open_raw("127.0.0.1", node.port)
    for _ in range(100):
        if node.connections:
            break
        await asyncio.sleep(0.01)
    [connection] = node.connections.values()
    guarded = connection.ws
    assert isinstance(guarded, GuardedConnection)
    written: list[bytes] = []
    write = guarded._write

    def recording(frames: bytes) -> None:
        written.append(frames)
        write(frames)

    guarded._write = recording  # type: ignore[method-assign]
    return reader, writer, guarded, written


async def test_the_replies_to_one_read_go_out_in_one_write(node: SignalingServer) -> None:
    """A ``message``'s ``ack`` and ``event``, and the answers to every request of the same
    read, are made into one write, in order; a request read alone gets a write of its own."""
    reader, writer, _, written = await _raw_guarded(node)
    session, handle = await _session_and_handle(reader, writer)
    assert len(written) == 2  # a request read alone: a write of its own
    writer.write(_text({"janus": "message", "transaction": "r", "session_id": session, "handle_id": handle,
                        "body": {"request": "register", "username": "batched"}})
                 + _text({"janus": "ping", "transaction": "p"}))
    replies = await _raw_messages(reader, 3)
    assert [(m["janus"], m.get("transaction")) for m in replies] == [("ack", "r"), ("event", "r"), ("pong", "p")]
    assert replies[1]["plugindata"]["data"]["result"]["event"] == "registered"
    assert len(written) == 3  # the three in one
    writer.close()


async def test_a_batch_past_its_limit_is_written_and_a_socket_that_then_waits_queues_the_rest(
        node: SignalingServer, monkeypatch: Any) -> None:
    """No more than ``_BATCH_LIMIT`` bytes are held; if the transport pauses on that write,
    the replies after it queue behind it, in order, as any reply to a paused socket."""
    from signaling import guarded_connection

    monkeypatch.setattr(guarded_connection, "_BATCH_LIMIT", 1)  # every reply written as it is made
    reader, writer, guarded, _ = await _raw_guarded(node)
    write = guarded._write

    def pausing(frames: bytes) -> None:
        write(frames)
        guarded.pause_writing()  # the transport's buffer is full after the first

    guarded._write = pausing  # type: ignore[method-assign]
    writer.write(b"".join(_text({"janus": "ping", "transaction": f"p{n}"}) for n in range(4)))
    [first] = await _raw_messages(reader, 1)
    assert first["transaction"] == "p0"
    [connection] = node.connections.values()
    await _settled(connection, 2)  # p1 handed to the writer, which waits; p2, p3 behind it
    guarded._write = write  # type: ignore[method-assign]
    guarded.resume_writing()
    assert [m["transaction"] for m in await _raw_messages(reader, 3)] == ["p1", "p2", "p3"]
    writer.close()
