"""The API listener over real sockets: plain HTTP/1.1 (bodies, keep-alive, pipelining, limits,
timeouts, long waits, clients going away) and WebSocket upgrades on the same port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection
from websockets.typing import Subprotocol

from signaling.http_listener import ClientSlot, HttpLimits, HttpListener, WebSocketOptions
from signaling.http_types import HttpRequest, HttpResponse

FAST = HttpLimits(max_head=2048, max_headers=20, max_body=1000, head_timeout=0.3, body_timeout=0.3,
                  keepalive_timeout=0.3)


class Echo:
    """Adapters that record what they were asked: ``/echo`` answers the request as JSON,
    ``/wait?s=N`` answers after N seconds (a long poll), ``/boom`` raises."""

    def __init__(self) -> None:
        self.seen: list[HttpRequest] = []
        self.cancelled = asyncio.Event()
        self.waiting = asyncio.Event()

    async def handle(self, request: HttpRequest) -> HttpResponse | None:
        self.seen.append(request)
        if request.path == "/echo":
            body = json.dumps({"method": request.method, "query": dict(request.query), "body": request.body.decode(),
                               "peer": request.peer, "xff": request.header("x-forwarded-for")})
            return HttpResponse(200, body.encode(), "application/json")
        if request.path == "/wait":
            self.waiting.set()
            try:
                await asyncio.sleep(float(request.query["s"]))
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return HttpResponse(200, b"waited\n")
        if request.path == "/boom":
            raise RuntimeError("a bug")
        if request.path == "/close":
            return HttpResponse(200, b"bye\n", headers=(("Connection", "close"),))
        return None


async def echo_websocket(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(f"echo {message}")


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Awaitable[tuple[HttpListener, Echo]]]]:
    listeners: list[HttpListener] = []

    async def serve(limits: HttpLimits = FAST, gate: Any = None) -> tuple[HttpListener, Echo]:
        echo = Echo()
        options = WebSocketOptions(echo_websocket, subprotocols=[Subprotocol("janus-protocol")],
                                   select_subprotocol=lambda conn, offered: offered[0] if offered else None)
        listener = HttpListener([echo.handle], websocket=options, gate=gate, limits=limits)
        await listener.start("127.0.0.1", 0)
        listeners.append(listener)
        return listener, echo

    yield serve
    for listener in listeners:
        await listener.close()


class Raw:
    """A client that writes bytes as given and reads answers one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, listener: HttpListener) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", listener.port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if line)}
        body = await asyncio.wait_for(self.reader.readexactly(int(headers.get("content-length", "0"))), timeout)
        return int(lines[0].split()[1]), headers, body

    async def closed(self, timeout: float = 3.0) -> bool:
        return await asyncio.wait_for(self.reader.read(), timeout) == b""

    def close(self) -> None:
        self.writer.close()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_post_body_and_keep_alive(served: Any) -> None:
    listener, _ = await served()
    client = await Raw.open(listener)
    client.send(post("/echo?rid=1&maxev=5", b'{"janus":"create"}'))
    status, headers, body = await client.answer()
    assert status == 200 and headers["content-type"] == "application/json" and "date" in headers
    assert json.loads(body) == {"method": "POST", "query": {"rid": "1", "maxev": "5"}, "body": '{"janus":"create"}',
                                "peer": "127.0.0.1", "xff": ""}
    client.send(get("/echo"))  # the same connection, again
    assert json.loads((await client.answer())[2])["method"] == "GET"
    client.close()


async def test_pipelined_requests_are_answered_in_order(served: Any) -> None:
    listener, _ = await served()
    client = await Raw.open(listener)
    client.send(post("/echo", b"one") + get("/echo?n=2") + post("/echo", b"three"))
    bodies = [json.loads((await client.answer())[2]) for _ in range(3)]
    assert [b["body"] for b in bodies] == ["one", "", "three"] and bodies[1]["query"] == {"n": "2"}
    client.close()


async def test_chunked_body_is_read(served: Any) -> None:
    listener, _ = await served()
    client = await Raw.open(listener)
    client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert json.loads((await client.answer())[2])["body"] == "abcde"
    client.close()


async def test_a_long_wait_outlasts_every_timeout_of_the_listener(served: Any) -> None:
    """A long poll: the adapter takes 4x the head, body and keep-alive timeouts."""
    listener, _ = await served()
    client = await Raw.open(listener)
    client.send(get("/wait?s=1.2"))
    assert (await client.answer())[:3:2] == (200, b"waited\n")
    client.send(get("/echo"))  # and the connection is still good
    assert (await client.answer())[0] == 200
    client.close()


async def test_client_gone_mid_wait_cancels_the_adapter(served: Any) -> None:
    listener, echo = await served()
    client = await Raw.open(listener)
    client.send(get("/wait?s=30"))
    await asyncio.wait_for(echo.waiting.wait(), 3)
    client.writer.transport.abort()
    await asyncio.wait_for(echo.cancelled.wait(), 3)
    assert not listener.connections


async def test_closing_the_listener_cancels_a_waiting_adapter(served: Any) -> None:
    listener, echo = await served()
    client = await Raw.open(listener)
    client.send(get("/wait?s=30"))
    await asyncio.wait_for(echo.waiting.wait(), 3)
    await asyncio.wait_for(listener.close(), 5)
    assert echo.cancelled.is_set()
    assert await client.closed()


async def test_unknown_path_404_bug_500_and_the_connection_goes_on(served: Any) -> None:
    listener, _ = await served()
    client = await Raw.open(listener)
    client.send(get("/nothing-here"))
    assert (await client.answer())[0] == 404
    client.send(get("/boom"))
    assert (await client.answer())[:3:2] == (500, b"Internal server error (see the server log)\n")
    client.send(get("/echo"))
    assert (await client.answer())[0] == 200
    client.close()


async def test_head_has_no_body(served: Any) -> None:
    listener, _ = await served()
    client = await Raw.open(listener)
    client.send(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: " in head
    client.send(get("/echo"))  # no body bytes came between the two answers
    assert (await client.answer())[0] == 200
    client.close()


@pytest.mark.parametrize("close_how", ["client header", "adapter header", "http/1.0"])
async def test_connection_close(served: Any, close_how: str) -> None:
    listener, _ = await served()
    client = await Raw.open(listener)
    if close_how == "client header":
        client.send(get("/echo", "Connection: close\r\n"))
    elif close_how == "adapter header":
        client.send(get("/close"))
    else:
        client.send(b"GET /echo HTTP/1.0\r\n\r\n")
    status, headers, _ = await client.answer()
    assert status == 200 and headers.get("connection", "").lower() == "close"
    assert await client.closed()


async def test_expect_100_continue(served: Any) -> None:
    listener, _ = await served()
    client = await Raw.open(listener)
    client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert (await client.answer())[0] == 100
    client.send(b"hi")
    assert json.loads((await client.answer())[2])["body"] == "hi"
    client.close()


# --- limits and timeouts ------------------------------------------------------------------------


async def _refused(listener: HttpListener, data: bytes) -> tuple[int, bytes]:
    client = await Raw.open(listener)
    client.send(data)
    status, headers, body = await client.answer()
    assert headers["connection"] == "close"
    assert await client.closed()
    return status, body


async def test_body_too_large_is_413_before_it_is_read(served: Any) -> None:
    listener, echo = await served()
    status, body = await _refused(listener, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
    assert (status, body) == (413, b"request body larger than 1000 bytes\n")
    chunk = b"100\r\n" + b"x" * 256 + b"\r\n"
    chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 4
    assert (await _refused(listener, chunked))[0] == 413
    assert not echo.seen


async def test_head_limits_are_431(served: Any) -> None:
    listener, echo = await served()
    many = "".join(f"X-{i}: y\r\n" for i in range(21))
    assert await _refused(listener, get("/echo", many)) == (431, b"more than 20 header fields\n")
    assert (await _refused(listener, get("/echo", "X-Big: " + "y" * 3000 + "\r\n")))[0] == 431  # in one read
    client = await Raw.open(listener)
    client.send(b"GET /echo HTTP/1.1\r\nX-Big: " + b"y" * 1500)  # still arriving
    await asyncio.sleep(0.05)
    client.send(b"y" * 1500)
    assert (await client.answer())[0] == 431
    assert not echo.seen


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",  # smuggling
    b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
])
async def test_malformed_requests_are_400(served: Any, data: bytes) -> None:
    listener, echo = await served()
    assert (await _refused(listener, data))[0] == 400
    assert not echo.seen


async def test_slow_body_is_408(served: Any) -> None:
    listener, echo = await served()
    client = await Raw.open(listener)
    client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    status, _, body = await client.answer()
    assert (status, body) == (408, b"request not received in time\n")
    assert await client.closed()
    assert not echo.seen


async def test_idle_keep_alive_connection_is_closed_silently(served: Any) -> None:
    listener, _ = await served()
    client = await Raw.open(listener)
    client.send(get("/echo"))
    assert (await client.answer())[0] == 200
    assert await client.closed()  # keepalive_timeout 0.3 s, no answer
    fresh = await Raw.open(listener)  # and a connection that never sends a byte
    assert await fresh.closed()


async def test_a_client_that_does_not_read_is_not_read_from(served: Any) -> None:
    listener, echo = await served(HttpLimits(max_body=100_000, keepalive_timeout=5))
    _, writer = await asyncio.open_connection("127.0.0.1", listener.port, limit=1024)
    transport = writer.transport
    transport.pause_reading()  # this client never reads
    request = post("/echo", b"x" * 90_000)
    for _ in range(200):
        writer.write(request)
        if transport.get_write_buffer_size() > 2_000_000:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.3)
    answered = len(echo.seen)
    await asyncio.sleep(0.3)
    assert len(echo.seen) == answered < 200  # the server stopped taking requests it cannot answer
    transport.abort()


# --- WebSocket upgrades and the gate -------------------------------------------------------------


async def test_websocket_upgrade_on_the_same_port(served: Any) -> None:
    listener, _ = await served()
    async with websockets.connect(f"ws://127.0.0.1:{listener.port}/any/path",
                                  subprotocols=[Subprotocol("janus-protocol")]) as ws:
        assert ws.subprotocol == "janus-protocol"
        await ws.send("hi")
        assert await ws.recv() == "echo hi"
        assert len(listener.websockets) == 1


async def test_upgrade_after_plain_requests_on_one_connection(served: Any) -> None:
    from tests.support.raw_ws import frame, handshake_request

    listener, _ = await served()
    client = await Raw.open(listener)
    client.send(post("/echo", b"first"))
    assert json.loads((await client.answer())[2])["body"] == "first"
    client.send(handshake_request() + frame(b"sent with the handshake"))
    status, headers, _ = await client.answer()
    assert status == 101 and headers["upgrade"] == "websocket"
    reply = await asyncio.wait_for(client.reader.readexactly(2 + len("echo sent with the handshake")), 3)
    assert reply[2:] == b"echo sent with the handshake"
    client.close()


async def test_gate_sees_every_head_and_counts_a_connection_once(served: Any) -> None:
    calls: list[tuple[str | None, str, bool]] = []
    released: list[str] = []

    def gate(slot: ClientSlot, request: HttpRequest, upgrade: bool) -> HttpResponse | None:
        calls.append((slot.address, request.path, upgrade))
        if request.path == "/forbidden":
            return HttpResponse(403, b"no\n")
        if slot.address is None:
            slot.hold("client-a", lambda: released.append("client-a"))
        return None

    listener, echo = await served(gate=gate)
    client = await Raw.open(listener)
    client.send(get("/echo") + get("/echo"))
    assert json.loads((await client.answer())[2])["peer"] == "client-a"
    await client.answer()
    client.close()
    async with websockets.connect(f"ws://127.0.0.1:{listener.port}/") as ws:
        await ws.send("x")
        await ws.recv()
    refused = await _refused(listener, post("/forbidden", b"never read"))
    assert refused == (403, b"no\n")
    for _ in range(100):
        if len(released) == 2:
            break
        await asyncio.sleep(0.01)
    assert calls == [(None, "/echo", False), ("client-a", "/echo", False), (None, "/", True), (None, "/forbidden", False)]
    assert released == ["client-a", "client-a"]  # the plain connection's and the WebSocket's, each when it ended
    assert [r.path for r in echo.seen] == ["/echo", "/echo"]
