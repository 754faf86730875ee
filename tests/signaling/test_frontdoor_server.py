"""The front door of a real in-process server, over real sockets: Origin, per-address caps
and rates, the node's session cap, silent and trickling clients; and everyone else unharmed.

The server trusts 127.0.0.1 as a proxy, so each client names its own address with
X-Forwarded-For: a flood "from" one address and a bystander "from" another share loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from shared.settings import Settings
from signaling.server import SignalingServer
from tests.support.raw_ws import close_frame, frame, handshake_request, open_raw

FLOOD = "198.51.100.66"
BYSTANDER = "203.0.113.7"


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.n = 0

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        await self.ws.send(json.dumps({"transaction": f"t{self.n}", **msg}))
        return json.loads(await asyncio.wait_for(self.ws.recv(), 3))

    async def recv(self) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), 3))

    async def ping(self) -> None:
        assert (await self.request({"janus": "ping"}))["janus"] == "pong"

    async def session(self) -> int:
        reply = await self.request({"janus": "create"})
        assert reply["janus"] == "success", reply
        return int(reply["data"]["id"])

    async def handle(self, sid: int) -> int:
        reply = await self.request({"janus": "attach", "session_id": sid, "plugin": "janus.plugin.videocall"})
        return int(reply["data"]["id"])

    async def register(self, sid: int, handle: int, name: str) -> dict[str, Any]:
        """The plugin event answering ``register`` (after its ack)."""
        self.n += 1
        await self.ws.send(json.dumps({"janus": "message", "transaction": f"t{self.n}", "session_id": sid,
                                       "handle_id": handle, "body": {"request": "register", "username": name}}))
        replies = [await self.recv(), await self.recv()]
        assert sorted(r["janus"] for r in replies) == ["ack", "event"], replies
        event = next(r for r in replies if r["janus"] == "event")
        return dict(event["plugindata"]["data"])


def _settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"port": 0, "trusted_proxies": ["127.0.0.1"], "max_connections_per_address": 0,
                            "create_rate": 0, "register_rate": 0, "max_sessions": 0, "idle_timeout": 0,
                            "frame_timeout": 0}
    return Settings(**{**base, **overrides})


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Awaitable[SignalingServer]]]:
    servers: list[SignalingServer] = []

    async def make(**overrides: Any) -> SignalingServer:
        server = SignalingServer(_settings(**overrides))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


async def _open(server: SignalingServer, address: str, origin: str | None = None) -> ClientConnection:
    return await websockets.connect(
        f"ws://127.0.0.1:{server.port}/", subprotocols=["janus-protocol"],  # type: ignore[list-item]
        additional_headers={"X-Forwarded-For": address}, origin=origin, open_timeout=3, proxy=None,  # type: ignore[arg-type]
    )


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    opened: list[ClientConnection] = []

    async def connect(server: SignalingServer, address: str = BYSTANDER, origin: str | None = None) -> Client:
        ws = await _open(server, address, origin)
        opened.append(ws)
        return Client(ws)

    yield connect
    for ws in opened:
        await ws.close()


def refusals(server: SignalingServer, kind: str) -> float:
    """The node's ``/metrics`` count of front-door refusals of ``kind``."""
    return server.metrics.registry.get_sample_value("videocall_frontdoor_refusals_total", {"kind": kind}) or 0.0


async def _refused(server: SignalingServer, address: str, origin: str | None = None) -> InvalidStatus:
    try:
        ws = await _open(server, address, origin)
    except InvalidStatus as refused:
        return refused
    await ws.close()
    pytest.fail(f"a connection from {address} (Origin {origin}) was admitted")


# --- Origin ------------------------------------------------------------------------------------


async def test_foreign_origin_gets_403_before_the_upgrade(make_server: Any, clients: Any,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    server = await make_server(allowed_origins="https://example.com,http://localhost:8188")
    caplog.set_level(logging.INFO, "videocall.server")
    refused = await _refused(server, FLOOD, origin="https://evil.example")
    assert refused.response.status_code == 403
    assert refused.response.body == b"Origin 'https://evil.example' is not in allowed_origins\n"
    assert f"refused a WebSocket from {FLOOD}: Origin 'https://evil.example' is not in allowed_origins" in caplog.text
    assert refusals(server, "origin") == 1 and refusals(server, "connections") == 0
    await (await clients(server, origin="https://example.com")).ping()
    await (await clients(server, origin="http://localhost:8188")).ping()
    await (await clients(server)).ping()  # no Origin: not a browser (janus-client, scripts)


async def test_missing_origin_refused_when_the_setting_says_so(make_server: Any) -> None:
    server = await make_server(allowed_origins="https://example.com", allow_missing_origin=False)
    assert (await _refused(server, FLOOD)).response.status_code == 403


async def test_any_origin_by_default(make_server: Any, clients: Any) -> None:
    server = await make_server()
    await (await clients(server, origin="https://anything.example")).ping()


async def test_plain_gets_do_not_check_origin(make_server: Any) -> None:
    server = await make_server(allowed_origins="https://example.com")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 3)).startswith(b"HTTP/1.1 200")
    writer.close()


# --- connections per address -------------------------------------------------------------------


async def test_connection_cap_per_address_refuses_then_recovers(make_server: Any, clients: Any,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    server = await make_server(max_connections_per_address=3)
    caplog.set_level(logging.INFO, "videocall.server")
    flood = [await clients(server, FLOOD) for _ in range(3)]
    refused = await _refused(server, FLOOD)
    assert refused.response.status_code == 429
    assert refused.response.body == f"too many connections from {FLOOD} (at most 3)\n".encode()
    assert f"refused a WebSocket from {FLOOD}: too many connections" in caplog.text
    bystander = await clients(server, BYSTANDER)  # another address is not slowed nor refused
    await bystander.ping()
    for client in flood:
        await client.ping()  # the ones admitted go on
    await flood[0].ws.close()
    for _ in range(50):  # the slot comes back when the server sees the TCP connection end
        try:
            flood[0] = await clients(server, FLOOD)
            break
        except InvalidStatus:
            await asyncio.sleep(0.02)
    await flood[0].ping()
    assert (await _refused(server, FLOOD)).response.status_code == 429
    assert caplog.text.count(f"refused a WebSocket from {FLOOD}") == 1  # a flood of refusals is one line
    assert refusals(server, "connections") == 2  # but each is counted


async def test_refused_and_plain_http_connections_give_their_slot_back(make_server: Any, clients: Any) -> None:
    server = await make_server(max_connections_per_address=1)
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {FLOOD}\r\n\r\n".encode())
        assert (await asyncio.wait_for(reader.read(), 3)).startswith(b"HTTP/1.1 200")
        writer.close()
    await asyncio.sleep(0.05)
    assert server.door.connections.counts == {}
    client = await clients(server, FLOOD)
    await client.ping()


# --- create and register rates, the node's session cap -----------------------------------------


async def test_create_rate_limit_hit_and_recovered(make_server: Any, clients: Any) -> None:
    server = await make_server(create_rate=4, create_burst=2)
    flood, bystander = await clients(server, FLOOD), await clients(server, BYSTANDER)
    await flood.session()
    await flood.session()
    reply = await flood.request({"janus": "create"})
    assert reply == {"janus": "error", "transaction": f"t{flood.n}", "error": {
        "code": 490, "reason": "Rate limit: too many sessions created from your address (at most 4/s), try again later"}}
    await bystander.session()  # its own bucket
    await asyncio.sleep(0.3)
    await flood.session()


async def test_register_rate_limit_hit_and_recovered(make_server: Any, clients: Any) -> None:
    server = await make_server(register_rate=4, register_burst=2)
    flood, bystander = await clients(server, FLOOD), await clients(server, BYSTANDER)
    sid = await flood.session()
    handle = await flood.handle(sid)
    assert (await flood.register(sid, handle, ""))["error_code"] == 474  # a refused register still costs a token
    assert (await flood.register(sid, handle, "x" * 5000))["error_code"] != 499
    event = await flood.register(sid, handle, "mallory")
    assert event == {"videocall": "event", "error_code": 499,
                     "error": "Rate limit: too many register requests from your address (at most 4/s), try again later"}
    bsid = await bystander.session()
    assert (await bystander.register(bsid, await bystander.handle(bsid), "bystander"))["result"]["event"] == "registered"
    await asyncio.sleep(0.3)
    assert (await flood.register(sid, handle, "mallory"))["result"] == {"event": "registered", "username": "mallory"}


async def test_node_session_cap_answers_472(make_server: Any, clients: Any) -> None:
    server = await make_server(max_sessions=2)
    a, b = await clients(server, FLOOD), await clients(server, BYSTANDER)
    sid = await a.session()
    await b.session()
    reply = await b.request({"janus": "create"})
    assert reply["error"] == {"code": 472, "reason": "Currently not accepting new sessions (this node holds its maximum of 2)"}
    assert (await a.request({"janus": "destroy", "session_id": sid}))["janus"] == "success"
    await b.session()


# --- silent and trickling clients ----------------------------------------------------------------


async def test_idle_connection_without_session_is_closed(make_server: Any, clients: Any) -> None:
    server = await make_server(idle_timeout=0.4)
    idle = await clients(server, FLOOD)
    with_session = await clients(server, BYSTANDER)
    sid = await with_session.session()
    chatty = await clients(server, BYSTANDER)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 0.9:
        await chatty.ping()  # requests without a session keep a connection
        await asyncio.sleep(0.2)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(idle.ws.recv(), 3)
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "idle")
    assert refusals(server, "idle") == 1
    assert (await with_session.request({"janus": "keepalive", "session_id": sid}))["janus"] == "ack"
    await chatty.ping()


async def test_frame_sent_a_byte_at_a_time_is_closed(make_server: Any, clients: Any) -> None:
    server = await make_server(frame_timeout=0.5)
    bystander = await clients(server, BYSTANDER)
    reader, writer = await open_raw("127.0.0.1", server.port, FLOOD)
    writer.write(frame(b'{"janus": "ping", "transaction": "quick"}'))  # a whole frame is fine
    slow = frame(b'{"janus": "ping", "transaction": "slowloris"}')

    async def trickle() -> None:
        for byte in slow:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)

    trickler = asyncio.get_running_loop().create_task(trickle())
    started = asyncio.get_running_loop().time()
    code, reason = await close_frame(reader)
    assert (code, reason) == (1008, "frame too slow")
    assert refusals(server, "frame_too_slow") == 1
    assert 0.4 < asyncio.get_running_loop().time() - started < 2.0
    trickler.cancel()
    writer.close()
    await bystander.ping()


async def test_message_trickled_as_fragments_is_closed(make_server: Any) -> None:
    """Each fragment is a whole frame (and keepalive pongs could pass between them): the
    message's first fragment starts the clock."""
    server = await make_server(frame_timeout=0.5)
    reader, writer = await open_raw("127.0.0.1", server.port, FLOOD)
    writer.write(frame(b'{"janus": ', fin=False))

    async def trickle() -> None:
        for _ in range(30):
            await asyncio.sleep(0.1)
            writer.write(frame(b" ", opcode=0, fin=False))

    trickler = asyncio.get_running_loop().create_task(trickle())
    assert await close_frame(reader) == (1008, "frame too slow")
    trickler.cancel()
    writer.close()


async def test_handshake_sent_a_byte_at_a_time_is_dropped(make_server: Any) -> None:
    server = await make_server(handshake_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = handshake_request(FLOOD)
    loop = asyncio.get_running_loop()
    started = loop.time()
    head = b""
    for byte in request:  # a byte every 0.1 s, until the server answers
        writer.write(bytes([byte]))
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.1)
            break
        except TimeoutError:
            continue
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), head  # then the connection is closed
    assert b"\r\nConnection: close\r\n" in head
    assert await asyncio.wait_for(reader.read(), 3) == b"request not received in time\n"
    assert loop.time() - started < 2.0
    writer.close()


async def test_websockets_still_has_the_receive_buffer_we_read(make_server: Any, clients: Any) -> None:
    """``guarded_connection`` reads ``protocol.reader.buffer`` (not documented API): if a
    websockets release moves it, this fails first."""
    from signaling.guarded_connection import GuardedConnection

    server = await make_server()
    await clients(server)
    await asyncio.sleep(0.05)
    [connection] = [c.ws for c in server.connections.values()]
    assert isinstance(connection, GuardedConnection)
    assert isinstance(connection.protocol.reader.buffer, bytearray)
