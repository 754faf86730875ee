"""The IPC channel: framing without sockets, then requests, errors and notifications over real ones."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pydantic import BaseModel

from shared.ipc import (
    MAX_FRAME,
    Channel,
    ChannelClosed,
    FrameDecoder,
    FrameError,
    IpcError,
    RequestTimeout,
    connect,
    encode_frame,
    parse_address,
    serve,
)
from shared.messages import (
    PROTOCOL_VERSION,
    CallCreate,
    CallCreateResult,
    CallHangup,
    Empty,
    Hello,
    HelloResult,
    LegState,
    LegTrickle,
    Request,
    WorkerStats,
)

REQUEST = {"t": "req", "id": 7, "method": "call.hangup", "body": {"call_id": "c1", "reason": ""}}
RESPONSE = {"t": "res", "id": 7, "ok": False, "body": None, "error": "no such call"}
NOTIFICATION = {"t": "ntf", "method": "leg.state", "body": {"call_id": "c1", "leg": "caller", "state": "connected"}}


def raw_frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


# --- framing, no sockets ---------------------------------------------------------------------


@pytest.mark.parametrize("message", [REQUEST, RESPONSE, NOTIFICATION], ids=["req", "res", "ntf"])
def test_frame_round_trips(message: dict[str, Any]) -> None:
    frame = encode_frame(message)
    assert frame[:4] == (len(frame) - 4).to_bytes(4, "big")
    assert msgpack.unpackb(frame[4:]) == message
    assert FrameDecoder().feed(frame) == [message]


def test_a_request_may_carry_its_deadline() -> None:
    message = {**REQUEST, "dl": 1.8e9}
    assert FrameDecoder().feed(encode_frame(message)) == [message]


def test_frame_fed_one_byte_at_a_time() -> None:
    decoder, frame, out = FrameDecoder(), encode_frame(REQUEST), []
    for i in range(len(frame)):
        out += decoder.feed(frame[i:i + 1])
        assert out == ([] if i < len(frame) - 1 else [REQUEST])


def test_many_frames_in_one_chunk_come_out_in_order() -> None:
    messages = [{**REQUEST, "id": i} for i in range(1, 101)] + [NOTIFICATION, RESPONSE]
    assert FrameDecoder().feed(b"".join(map(encode_frame, messages))) == messages


def test_truncated_input_waits_for_the_rest() -> None:
    decoder, frame = FrameDecoder(), encode_frame(NOTIFICATION) + encode_frame(RESPONSE)
    assert decoder.feed(frame[:2]) == []
    assert decoder.feed(frame[2:-3]) == [NOTIFICATION]
    assert decoder.feed(frame[-3:]) == [RESPONSE]


@pytest.mark.parametrize(("data", "error"), [
    (b"GET / HTTP/1.1\r\n", "frame length 1195725856 exceeds the limit of 1048576 bytes"),
    (raw_frame(b""), "frame payload is empty"),
    (raw_frame(b"\xc1"), "frame payload is not valid msgpack"),
    (raw_frame(b"\x92\x01"), "frame payload is not valid msgpack"),
    (raw_frame(b"\xa2\xff\xfe"), "frame payload is not valid msgpack"),
    (raw_frame(b"\x01\x02\x03"), "frame payload has 2 bytes after its msgpack value"),
    (raw_frame(msgpack.packb([1, 2])), "frame is a msgpack array, not a map"),
    (raw_frame(msgpack.packb("req")), "frame is a msgpack string, not a map"),
    (raw_frame(msgpack.packb({"id": 1})), "frame map has no field 't'"),
    (raw_frame(msgpack.packb({"t": "rpc"})), "frame field 't' is 'rpc', not 'req', 'res' or 'ntf'"),
    (raw_frame(msgpack.packb({**REQUEST, "id": "7"})),
     "'req' frame field 'id' must be an integer in 1..4294967295, got string '7'"),
    (raw_frame(msgpack.packb({**REQUEST, "id": 0})),
     "'req' frame field 'id' must be an integer in 1..4294967295, got integer 0"),
    (raw_frame(msgpack.packb({**REQUEST, "id": 2**32})),
     "'req' frame field 'id' must be an integer in 1..4294967295, got integer 4294967296"),
    (raw_frame(msgpack.packb({**REQUEST, "id": True})),
     "'req' frame field 'id' must be an integer in 1..4294967295, got boolean True"),
    (raw_frame(msgpack.packb({**REQUEST, "body": [1]})), "'req' frame field 'body' must be a map, got array [1]"),
    (raw_frame(msgpack.packb({**RESPONSE, "ok": 1})), "'res' frame field 'ok' must be a boolean, got integer 1"),
    (raw_frame(msgpack.packb({**RESPONSE, "error": b"x"})),
     "'res' frame field 'error' must be a string or nil, got binary b'x'"),
    (raw_frame(msgpack.packb({k: v for k, v in NOTIFICATION.items() if k != "body"})),
     "'ntf' frame is missing field 'body'"),
    (raw_frame(msgpack.packb({**NOTIFICATION, "id": 3})), "'ntf' frame has unexpected field 'id'"),
    (raw_frame(msgpack.packb({**RESPONSE, "dl": 1.8e9})), "'res' frame has unexpected field 'dl'"),
    (raw_frame(msgpack.packb({**REQUEST, "dl": 1800000000})),
     "'req' frame field 'dl' must be a float of Unix seconds, got integer 1800000000"),
    (raw_frame(msgpack.packb({**REQUEST, "dl": 5.0})), "'req' frame field 'dl' must be a float of Unix seconds, got float 5.0"),
    (raw_frame(msgpack.packb({**REQUEST, "dl": float("inf")})),
     "'req' frame field 'dl' must be a float of Unix seconds, got float inf"),
])
def test_bad_frame_names_its_defect(data: bytes, error: str) -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError) as caught:
        decoder.feed(data)
    assert str(caught.value) == error
    with pytest.raises(FrameError, match="^" + error[:20]):  # the stream has lost its framing for good
        decoder.feed(encode_frame(REQUEST))


def test_length_prefix_is_checked_before_the_payload_arrives() -> None:
    with pytest.raises(FrameError, match=r"^frame length 101 exceeds the limit of 100 bytes$"):
        FrameDecoder(max_frame=100).feed((101).to_bytes(4, "big"))
    assert FrameDecoder(max_frame=MAX_FRAME).feed(MAX_FRAME.to_bytes(4, "big")) == []


def test_encoding_checks_shape_and_size() -> None:
    with pytest.raises(FrameError, match=r"^'req' frame is missing field 'body'$"):
        encode_frame({"t": "req", "id": 1, "method": "hello"})
    with pytest.raises(FrameError, match=r"^frame length .* exceeds the limit of 100 bytes$"):
        encode_frame({**NOTIFICATION, "body": {"x": "y" * 100}}, max_frame=100)


# --- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "parsed"), [
    ("unix:/run/videocall/w1.sock", ("unix", "/run/videocall/w1.sock")),
    ("unix:relative.sock", ("unix", "relative.sock")),
    ("tcp:127.0.0.1:7000", ("tcp", ("127.0.0.1", 7000))),
    ("tcp:[::1]:7000", ("tcp", ("::1", 7000))),
    ("tcp:relay-1:0", ("tcp", ("relay-1", 0))),
])
def test_parse_address(address: str, parsed: object) -> None:
    assert parse_address(address) == parsed


@pytest.mark.parametrize(("address", "error"), [
    ("/tmp/w.sock", "must be 'unix:/path/to.sock' or 'tcp:host:port'"),
    ("unix:", "must be 'unix:/path/to.sock' or 'tcp:host:port'"),
    ("udp:1.2.3.4:5", "must be 'unix:/path/to.sock' or 'tcp:host:port'"),
    ("unix:/" + "x" * 120, "is longer than 107 bytes"),
    ("tcp:127.0.0.1", "must be 'tcp:host:port' with a port in 0..65535"),
    ("tcp::7000", "must be 'tcp:host:port' with a port in 0..65535"),
    ("tcp:127.0.0.1:http", "must be 'tcp:host:port' with a port in 0..65535"),
    ("tcp:127.0.0.1:65536", "must be 'tcp:host:port' with a port in 0..65535"),
    ("tcp:::1:7000", "must be in brackets, as in 'tcp:[::1]:7000'"),
])
def test_parse_address_refuses(address: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)) as caught:
        parse_address(address)
    assert repr(address[:20])[:-1] in str(caught.value)


# --- channels over real sockets --------------------------------------------------------------


class Worker:
    """A server running ``serve()`` with a scriptable handler; remembers its channels."""

    def __init__(self) -> None:
        self.channels: list[Channel] = []
        self.release = asyncio.Event()
        self.seen: list[str] = []

    async def handle(self, channel: Channel, body: Request[Any]) -> BaseModel:
        self.seen.append(body.METHOD)
        if isinstance(body, CallCreate):
            if body.call_id == "slow":
                await self.release.wait()
            if body.call_id == "bad":
                raise ValueError("offer has no media")
            if body.call_id == "crash":
                raise KeyError("secret internals")
            return CallCreateResult(callee_offer=body.caller_offer.upper())
        if isinstance(body, LegTrickle):  # answer, then notify: the response must arrive first
            asyncio.get_running_loop().call_soon(
                channel.notify, LegState(call_id=body.call_id, leg=body.leg, state="connected"))
        return Empty()


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[tuple[Worker, str]]:
    w = Worker()
    address = f"unix:{tmp_path}/w.sock"
    server = await serve(address, w.handle, on_channel=w.channels.append, worker_id="w1", calls=lambda: 3)
    yield w, address
    server.close()
    w.release.set()
    for channel in w.channels:
        await channel.close()
    await server.wait_closed()


@pytest.fixture
async def node(worker: tuple[Worker, str]) -> AsyncIterator[Channel]:
    channel = await connect(worker[1], node_id="n1", timeout=2)
    yield channel
    await channel.close()


async def test_hello_reports_the_worker(node: Channel, worker: tuple[Worker, str]) -> None:
    assert node.peer == HelloResult(version=PROTOCOL_VERSION, worker_id="w1", pid=os.getpid(), calls=3)
    assert worker[0].seen == []  # hello is answered by serve(), not by the handler


async def test_request_response_over_unix_socket(node: Channel, worker: tuple[Worker, str]) -> None:
    result = await node.request(CallCreate(call_id="c1", caller_offer="v=0"))
    assert result == CallCreateResult(callee_offer="V=0")
    assert stat.S_IMODE(os.stat(worker[1].removeprefix("unix:")).st_mode) == 0o600


async def test_request_response_over_tcp() -> None:
    w = Worker()
    server = await serve("tcp:127.0.0.1:0", w.handle, on_channel=w.channels.append)
    port = server.sockets[0].getsockname()[1]
    channel = await connect(f"tcp:127.0.0.1:{port}")
    assert channel.peer is not None and channel.peer.worker_id == f"pid-{os.getpid()}"
    assert await channel.request(CallHangup(call_id="c1")) == Empty()
    await channel.close()
    server.close()
    for c in w.channels:
        await c.close()


async def test_slow_request_does_not_block_others(node: Channel, worker: tuple[Worker, str]) -> None:
    slow = asyncio.create_task(node.request(CallCreate(call_id="slow", caller_offer="")))
    assert await node.request(LegTrickle(call_id="c1", leg="caller", completed=True)) == Empty()
    assert not slow.done()
    worker[0].release.set()
    assert await slow == CallCreateResult(callee_offer="")


@pytest.mark.parametrize(("method", "body", "error"), [
    ("leg.dance", {}, "unknown method 'leg.dance'"),
    ("call.create", {"call_id": "", "caller_offer": 5, "extra": 1},
     ("invalid body for 'call.create': call_id: String should have at least 1 character; "
      "caller_offer: Input should be a valid string; extra: Extra inputs are not permitted")),
    ("call.create", {}, "invalid body for 'call.create': call_id: Field required; caller_offer: Field required"),
    ("call.create", {"call_id": "bad", "caller_offer": ""}, "offer has no media"),
    ("call.create", {"call_id": "crash", "caller_offer": ""}, "internal error"),
])
async def test_error_responses(worker: tuple[Worker, str], method: str, body: dict[str, Any], error: str,
                               caplog: pytest.LogCaptureFixture) -> None:
    reader, writer = await asyncio.open_unix_connection(worker[1].removeprefix("unix:"))
    hello = {"version": PROTOCOL_VERSION, "node_id": ""}
    writer.write(encode_frame({"t": "req", "id": 1, "method": "hello", "body": hello}))
    writer.write(encode_frame({"t": "req", "id": 2, "method": method, "body": body}))
    decoder, replies = FrameDecoder(), []
    while len(replies) < 2:
        replies += decoder.feed(await reader.read(65536))
    assert {"t": "res", "id": 2, "ok": False, "body": None, "error": error} in replies  # matched by id, any order
    if error == "internal error":
        assert "secret internals" in caplog.text  # logged with its traceback, never sent
    writer.close()


async def test_error_response_raises_ipc_error_with_reason(node: Channel) -> None:
    with pytest.raises(IpcError) as caught:
        await node.request(CallCreate(call_id="bad", caller_offer=""))
    assert type(caught.value) is IpcError and caught.value.reason == "offer has no media"


async def test_requests_before_hello_are_refused(worker: tuple[Worker, str]) -> None:
    reader, writer = await asyncio.open_unix_connection(worker[1].removeprefix("unix:"))
    channel = Channel(reader, writer)
    run = asyncio.create_task(channel.run())
    with pytest.raises(IpcError, match=r"^'worker\.stats' refused: send 'hello' first$"):
        await channel.request(WorkerStats())
    await channel.close()
    await run
    assert worker[0].seen == []


async def test_timeout_fails_the_request_and_ignores_the_late_response(
        node: Channel, worker: tuple[Worker, str], caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RequestTimeout, match=r"^'call\.create' got no response within 0\.05 s$"):
        await node.request(CallCreate(call_id="slow", caller_offer=""), timeout=0.05)
    assert node._pending == {}
    worker[0].release.set()
    assert await node.request(CallHangup(call_id="c1")) == Empty()
    assert "'call.create' answered after it timed out (request id 2)" in caplog.text
    assert not node.closed


async def test_a_late_answer_goes_to_on_late_response(worker: tuple[Worker, str]) -> None:
    late: list[tuple[Request[Any], bool]] = []
    node = await connect(worker[1], timeout=2, on_late_response=lambda body, ok: late.append((body, ok)))
    try:
        slow = CallCreate(call_id="slow", caller_offer="")
        with pytest.raises(RequestTimeout):
            await node.request(slow, timeout=0.05)
        assert late == []
        worker[0].release.set()
        for _ in range(100):
            if late:
                break
            await asyncio.sleep(0.01)
        assert late == [(slow, True)]
    finally:
        await node.close()


async def test_a_request_read_after_its_deadline_is_dropped() -> None:
    """The worker was stopped while the request waited in its socket: when it reads it, the
    node has given up, so it is not carried out (and not answered)."""
    node_sock, worker_sock = socket.socketpair()
    node_reader, node_writer = await asyncio.open_connection(sock=node_sock)
    worker_reader, worker_writer = await asyncio.open_connection(sock=worker_sock)
    w = Worker()
    node = Channel(node_reader, node_writer, name="node")
    worker = Channel(worker_reader, worker_writer, handler=w.handle, name="worker")
    worker.clock_offset = 0.0  # as learnt at hello: same clock
    node_run = asyncio.create_task(node.run())
    with pytest.raises(RequestTimeout):
        await node.request(CallCreate(call_id="c1", caller_offer="v=0"), timeout=0.05)
    worker_run = asyncio.create_task(worker.run())  # the worker resumes
    assert await node.request(CallCreate(call_id="c2", caller_offer="v=0"), timeout=2) == CallCreateResult(
        callee_offer="V=0")
    assert w.seen == ["call.create"] and worker.dropped_late == 1  # c2 only
    await node.close()
    await worker.close()
    await asyncio.gather(node_run, worker_run)


async def test_hello_teaches_the_worker_the_node_clock(node: Channel, worker: tuple[Worker, str]) -> None:
    (channel,) = worker[0].channels
    assert channel.clock_offset is not None and abs(channel.clock_offset) < 0.5
    assert node.clock_offset is None  # the node takes no requests


class RawPeer:
    """A bare socket server speaking frames by hand: for peers that misbehave on purpose."""

    def __init__(self, script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.script = script

    async def serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.script(reader, writer)
        finally:
            writer.close()

    async def __aenter__(self) -> tuple[Channel, list[tuple[str, object]]]:
        self.server = await asyncio.start_server(self.serve_one, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self.events: list[tuple[str, object]] = []
        self.channel = Channel(reader, writer, timeout=2, name="raw",
                               on_notification=lambda b: self.events.append(("ntf", b)),
                               on_close=lambda: self.events.append(("closed", None)))
        self.run = asyncio.create_task(self.channel.run())
        return self.channel, self.events

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        await self.run
        self.server.close()


async def read_request(reader: asyncio.StreamReader) -> dict[str, Any]:
    decoder = FrameDecoder()
    while not (messages := decoder.feed(await reader.read(1))):
        pass
    return messages[0]


async def test_peer_closing_mid_request_fails_pending_with_channel_closed() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async with RawPeer(hang_up) as (channel, events):
        with pytest.raises(ChannelClosed, match=r"^channel raw closed: peer closed the connection$"):
            await channel.request(CallHangup(call_id="c1"))
        await asyncio.sleep(0)
        assert channel.closed and events == [("closed", None)]
        with pytest.raises(ChannelClosed):
            await channel.request(CallHangup(call_id="c1"))
        channel.notify(LegState(call_id="c1", leg="caller", state="closed"))  # dropped quietly
        await channel.close()
        await asyncio.sleep(0)
        assert events == [("closed", None)]  # on_close once, however the channel ends


async def test_notification_is_delivered_after_the_response_sent_before_it() -> None:
    state = {"call_id": "c1", "leg": "callee", "state": "failed", "reason": "ice"}

    async def answer_then_notify(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        writer.write(encode_frame({"t": "res", "id": request["id"], "ok": True, "body": {}, "error": None})
                     + encode_frame({"t": "ntf", "method": "leg.state", "body": state})
                     + encode_frame({"t": "ntf", "method": "leg.state", "body": {**state, "reason": "dtls"}}))
        await reader.read()

    async with RawPeer(answer_then_notify) as (channel, events):
        result = await channel.request(CallHangup(call_id="c1"))
        events.append(("result", result))
        await asyncio.sleep(0.05)
        assert [kind for kind, _ in events] == ["result", "ntf", "ntf"]
        assert [body.reason for kind, body in events[1:]] == ["ice", "dtls"]  # type: ignore[attr-defined]


async def test_notification_after_response_over_serve(worker: tuple[Worker, str]) -> None:
    events: list[object] = []
    channel = await connect(worker[1], on_notification=lambda b: events.append((b.METHOD, b)))
    events.append(await channel.request(LegTrickle(call_id="c9", leg="callee")))
    await asyncio.sleep(0.05)
    assert events == [Empty(), ("leg.state", LegState(call_id="c9", leg="callee", state="connected"))]
    await channel.close()


async def test_invalid_and_unknown_notifications_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    async def send_junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_frame({"t": "ntf", "method": "leg.state", "body": {"call_id": "c1"}})
                     + encode_frame({"t": "ntf", "method": "worker.party", "body": {}})
                     + encode_frame(NOTIFICATION))
        await reader.read()

    async with RawPeer(send_junk) as (channel, events):
        while not events:
            await asyncio.sleep(0.01)
        assert events == [("ntf", LegState(call_id="c1", leg="caller", state="connected"))]
        assert "dropped invalid 'leg.state' notification: leg: Field required" in caplog.text
        assert "dropped unknown notification 'worker.party'" in caplog.text
        assert not channel.closed


async def test_version_mismatch_is_refused_by_the_worker(worker: tuple[Worker, str]) -> None:
    reader, writer = await asyncio.open_unix_connection(worker[1].removeprefix("unix:"))
    channel = Channel(reader, writer)
    run = asyncio.create_task(channel.run())
    with pytest.raises(IpcError, match=f"^protocol version mismatch: worker speaks {PROTOCOL_VERSION}, "
                                       "node speaks 99$"):
        await channel.request(Hello(version=99, node_id="old"))
    await channel.close()
    await run


async def test_version_mismatch_is_refused_by_connect() -> None:
    async def newer_worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        body = {"version": PROTOCOL_VERSION + 1, "worker_id": "w2", "pid": 1, "calls": 0}
        writer.write(encode_frame({"t": "res", "id": request["id"], "ok": True, "body": body, "error": None}))
        await reader.read()
        writer.close()

    server = await asyncio.start_server(newer_worker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(IpcError, match=f"^protocol version mismatch: worker speaks {PROTOCOL_VERSION + 1}, "
                                       f"node speaks {PROTOCOL_VERSION}$"):
        await connect(f"tcp:127.0.0.1:{port}")
    server.close()


async def test_garbage_peer_is_disconnected_while_another_channel_keeps_working(
        node: Channel, worker: tuple[Worker, str], caplog: pytest.LogCaptureFixture) -> None:
    reader, writer = await asyncio.open_unix_connection(worker[1].removeprefix("unix:"))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 2) == b""  # EOF: the worker hung up
    assert "closing, bad frame from peer: frame length 1195725856 exceeds the limit of 1048576 bytes" in caplog.text
    assert await node.request(CallCreate(call_id="c2", caller_offer="ok")) == \
        CallCreateResult(callee_offer="OK")
    writer.close()


async def test_bad_frame_fails_pending_requests_with_channel_closed() -> None:
    async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw_frame(msgpack.packb(["not", "a", "map"])))
        await reader.read()

    async with RawPeer(answer_garbage) as (channel, _):
        with pytest.raises(ChannelClosed, match=r"bad frame from peer: frame is a msgpack array, not a map$"):
            await channel.request(CallHangup(call_id="c1"))


async def test_oversized_request_is_refused_locally(worker: tuple[Worker, str]) -> None:
    channel = await connect(worker[1], max_frame=200)
    with pytest.raises(IpcError, match=r"^'call\.create' not sent: frame length 2\d\d exceeds the limit of 200 bytes$"):
        await channel.request(CallCreate(call_id="c1", caller_offer="v" * 200))
    assert await channel.request(CallCreate(call_id="c1", caller_offer="v")) == \
        CallCreateResult(callee_offer="V")
    await channel.close()


async def test_serve_replaces_a_stale_socket_but_not_a_live_one(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed worker leaves behind
    w = Worker()
    server = await serve(f"unix:{path}", w.handle, on_channel=w.channels.append)
    with pytest.raises(OSError, match="is in use by a running process"):
        await serve(f"unix:{path}", w.handle)
    channel = await connect(f"unix:{path}")
    assert not channel.closed
    await channel.close()
    server.close()
    for c in w.channels:
        await c.close()
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(OSError, match="exists and is not a socket"):
        await serve(f"unix:{tmp_path}/file", w.handle)


async def test_request_ids_wrap_and_skip_pending_ids(node: Channel) -> None:
    node._last_id = 2**32 - 2
    node._pending[1] = None  # type: ignore[assignment]  # pretend id 1 is still waiting
    try:
        assert [node._next_id(), node._next_id()] == [2**32 - 1, 2]
    finally:
        del node._pending[1]
