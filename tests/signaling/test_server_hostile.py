"""The WebSocket adapter under hostile input: real connections to an in-process server.

Every bad frame gets its Janus error and the connection (and everyone else) goes on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from shared.settings import Settings
from signaling.server import SignalingServer


class Client:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.n = 0

    async def send(self, msg: Any) -> None:
        await self.ws.send(msg if isinstance(msg, (str, bytes)) else json.dumps(msg))

    async def recv(self, timeout: float = 3.0) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        msg = {"transaction": f"t{self.n}", **msg}
        await self.send(msg)
        return await self.recv()

    async def session(self) -> int:
        return int((await self.request({"janus": "create"}))["data"]["id"])

    async def handle(self, session_id: int) -> int:
        reply = await self.request({"janus": "attach", "session_id": session_id, "plugin": "janus.plugin.videocall"})
        return int(reply["data"]["id"])

    async def plugin(self, session_id: int, handle: int, body: Any) -> dict[str, Any]:
        """Send a plugin message; return its event (the ack is checked and skipped)."""
        self.n += 1
        tx = f"t{self.n}"
        await self.send({"janus": "message", "transaction": tx, "session_id": session_id, "handle_id": handle, "body": body})
        replies = [await self.recv(), await self.recv()]
        kinds = sorted(r["janus"] for r in replies)
        assert kinds == ["ack", "event"], replies
        return next(r for r in replies if r["janus"] == "event")


@pytest.fixture
async def server() -> AsyncIterator[SignalingServer]:
    settings = Settings(
        port=0, session_timeout=1.0, max_message_size=4096, max_sessions_per_connection=3,
        max_handles_per_session=2,
    )
    srv = SignalingServer(settings)
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def connect(server: SignalingServer) -> AsyncIterator[Any]:
    opened: list[websockets.ClientConnection] = []

    async def make() -> Client:
        ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/any/path", subprotocols=["janus-protocol"])  # type: ignore[list-item]
        opened.append(ws)
        assert ws.subprotocol == "janus-protocol"
        return Client(ws)

    yield make
    for ws in opened:
        await ws.close()


HOSTILE = [
    ("{not json", 454),
    ("NaN", 454),
    ('{"janus": "ping", "transaction": "x", "n": NaN}', 454),
    ('{"janus": "ping", "transaction": "x", "n": 1e400}', 454),
    ('{"janus": "ping", "transaction": "x", "n": 18446744073709551616}', 454),
    ('{"janus": "ping", "transaction": "x", "s": "\\ud800"}', 454),
    ("[" * 4_000, 454),
    ('{"a":' * 800, 454),
    ("[1, 2]", 456),
    ('{"transaction": "x"}', 456),
    ('{"janus": "ping"}', 456),
    ('{"janus": 5, "transaction": "x"}', 467),
    ('{"janus": "ping", "transaction": 5}', 467),
    ('{"janus": "frobnicate", "transaction": "x"}', 457),
    ("x" * 5000, 450),
]


@pytest.mark.parametrize(("frame", "code"), HOSTILE, ids=[f"{f[:24]!r}-{c}" for f, c in HOSTILE])
async def test_hostile_frame_gets_janus_error_and_connection_survives(connect: Any, frame: str, code: int) -> None:
    client = await connect()
    await client.send(frame)
    reply = await client.recv()
    assert reply["janus"] == "error" and reply["error"]["code"] == code, reply
    assert (await client.request({"janus": "ping"}))["janus"] == "pong"


async def test_frame_beyond_hard_limit_closes_only_that_connection(connect: Any) -> None:
    bad, good = await connect(), await connect()
    await bad.send("x" * 100_000)
    with pytest.raises(websockets.ConnectionClosed) as exc:
        await bad.recv()
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 1009
    assert (await good.request({"janus": "ping"}))["janus"] == "pong"


async def test_binary_and_invalid_utf8_frames(connect: Any) -> None:
    client = await connect()
    await client.send(b'{"janus": "ping", "transaction": "b"}')
    assert (await client.recv())["janus"] == "pong"
    await client.send(b'{"janus": "ping", "transaction": "\xff\xfe"}')
    assert (await client.recv())["error"]["code"] == 454
    assert (await client.request({"janus": "ping"}))["janus"] == "pong"


async def test_sessions_of_another_connection_do_not_exist(connect: Any) -> None:
    alice, mallory = await connect(), await connect()
    sid = await alice.session()
    handle = await alice.handle(sid)
    for msg in (
        {"janus": "keepalive", "session_id": sid},
        {"janus": "attach", "session_id": sid, "plugin": "janus.plugin.videocall"},
        {"janus": "message", "session_id": sid, "handle_id": handle, "body": {"request": "list"}},
        {"janus": "destroy", "session_id": sid},
    ):
        reply = await mallory.request(msg)
        assert reply["error"] == {"code": 458, "reason": f"No such session {sid}"}, reply
    # alice is untouched
    assert (await alice.request({"janus": "keepalive", "session_id": sid}))["janus"] == "ack"


async def test_claim_moves_a_session_to_another_connection(connect: Any) -> None:
    first, second = await connect(), await connect()
    sid = await first.session()
    assert (await second.request({"janus": "claim", "session_id": sid}))["janus"] == "success"
    assert (await second.request({"janus": "keepalive", "session_id": sid}))["janus"] == "ack"
    assert (await first.request({"janus": "keepalive", "session_id": sid}))["error"]["code"] == 458


async def test_limits_on_sessions_and_handles(connect: Any) -> None:
    client = await connect()
    sids = [await client.session() for _ in range(3)]
    reply = await client.request({"janus": "create"})
    assert reply["janus"] == "error" and reply["error"]["code"] == 490
    await client.handle(sids[0])
    await client.handle(sids[0])
    reply = await client.request({"janus": "attach", "session_id": sids[0], "plugin": "janus.plugin.videocall"})
    assert reply["janus"] == "error" and reply["error"]["code"] == 461
    # another connection still gets its sessions
    other = await connect()
    await other.session()


async def test_session_timeout_notifies_and_frees_the_name(connect: Any, server: SignalingServer) -> None:
    idle, other = await connect(), await connect()
    sid = await idle.session()
    handle = await idle.handle(sid)
    event = await idle.plugin(sid, handle, {"request": "register", "username": "sleepy"})
    assert event["plugindata"]["data"]["result"]["event"] == "registered"
    osid = await other.session()
    ohandle = await other.handle(osid)
    timeout_note = None
    for _ in range(20):  # `other` keeps its own session alive meanwhile
        assert (await other.request({"janus": "keepalive", "session_id": osid}))["janus"] == "ack"
        try:
            timeout_note = await idle.recv(timeout=0.3)
            break
        except TimeoutError:
            pass
    assert timeout_note == {"janus": "timeout", "session_id": sid}
    event = await other.plugin(osid, ohandle, {"request": "list"})
    assert event["plugindata"]["data"]["result"]["list"] == []
    assert (await idle.request({"janus": "keepalive", "session_id": sid}))["error"]["code"] == 458


async def test_socket_close_frees_names(connect: Any) -> None:
    gone, stays = await connect(), await connect()
    sid = await gone.session()
    handle = await gone.handle(sid)
    await gone.plugin(sid, handle, {"request": "register", "username": "bob"})
    await gone.ws.close()
    osid = await stays.session()
    ohandle = await stays.handle(osid)
    for _ in range(50):
        event = await stays.plugin(osid, ohandle, {"request": "list"})
        if event["plugindata"]["data"]["result"]["list"] == []:
            break
        await asyncio.sleep(0.02)
    event = await stays.plugin(osid, ohandle, {"request": "register", "username": "bob"})
    assert event["plugindata"]["data"]["result"] == {"event": "registered", "username": "bob"}


async def test_call_without_relay_worker_is_a_clear_error(connect: Any) -> None:
    a, b = await connect(), await connect()
    asid, bsid = await a.session(), await b.session()
    ah, bh = await a.handle(asid), await b.handle(bsid)
    await a.plugin(asid, ah, {"request": "register", "username": "alice"})
    await b.plugin(bsid, bh, {"request": "register", "username": "bob"})
    a.n += 1
    await a.send({
        "janus": "message", "transaction": "call", "session_id": asid, "handle_id": ah,
        "body": {"request": "call", "username": "bob"},
        "jsep": {"type": "offer",
                 "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"},
    })
    replies = [await a.recv(), await a.recv()]
    event = next(r for r in replies if r["janus"] == "event")
    assert event["plugindata"]["data"]["error_code"] == 499
    assert "relay" in event["plugindata"]["data"]["error"]


async def test_plain_http_get_is_answered(server: SignalingServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 3)
    assert status.startswith(b"HTTP/1.1 200")
    writer.close()


def _mutations(rng: Any, sid: int, handle: int) -> Any:
    """Frames a confused or hostile client might send: real verbs, wrong shapes."""
    verbs = ["info", "ping", "create", "attach", "message", "trickle", "keepalive", "hangup", "detach", "destroy", "claim",
             "bogus", 7, None]
    values = [None, 0, -1, 2**63 - 1, 2**53, "x", "", [], {}, [1, {}], True, 1.5, sid, handle, "é" * 300]
    bodies = [{"request": r} for r in ("list", "register", "call", "accept", "set", "hangup", "x", 5)]
    for _ in range(400):
        msg: dict[str, Any] = {"janus": rng.choice(verbs), "transaction": rng.choice(["t", "", 5, None, "é" * 100])}
        for key in ("session_id", "handle_id", "plugin", "body", "jsep", "candidate", "candidates", "id", "opaque_id"):
            if rng.random() < 0.4:
                msg[key] = rng.choice(values + [sid, handle] * 3 + bodies)
        if rng.random() < 0.1:
            sdps = ["v=0\r\n", "", 5, "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"]
            msg["jsep"] = {"type": rng.choice(["offer", "answer", "x", 1]), "sdp": rng.choice(sdps)}
        yield json.dumps(msg)


async def test_random_frames_never_disturb_another_client(connect: Any) -> None:
    import random

    victim, attacker = await connect(), await connect()
    vsid = await victim.session()
    vhandle = await victim.handle(vsid)
    await victim.plugin(vsid, vhandle, {"request": "register", "username": "victim"})
    asid = await attacker.session()
    ahandle = await attacker.handle(asid)
    rng = random.Random(7)
    sent = 0
    for frame in _mutations(rng, rng.choice([vsid, asid]), rng.choice([vhandle, ahandle])):
        await attacker.send(frame)
        sent += 1
    # every frame is answered (error, ack, success, pong...) or pushes events; drain what came
    received = 0
    while True:
        try:
            reply = await attacker.recv(timeout=0.5)
        except TimeoutError:
            break
        received += 1
        assert isinstance(reply, dict) and "janus" in reply
        assert reply.get("error", {}).get("reason") != "Internal error", reply
    assert received >= sent // 2
    # the victim's session, handle and name are untouched
    event = await victim.plugin(vsid, vhandle, {"request": "list"})
    assert "victim" in event["plugindata"]["data"]["result"]["list"]
    assert (await victim.request({"janus": "keepalive", "session_id": vsid}))["janus"] == "ack"
