"""Sessions that outlive their WebSocket (``reclaim_session_timeout``), through the WebSocket
adapter: real connections to an in-process server whose relay answers as a worker would
(``ToyRelay``: the signalling of a call, no media; tests/e2e/test_e2e_reclaim.py has media).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from shared.settings import Settings
from signaling.server import SignalingServer
from tests.support.janus_ws import Handle, JanusConnection, Session, new_transaction, plugin_result
from tests.support.toy_relay import ToyRelay
from tests.support.waits import until

SDP = "v=0\r\no=- {0} {0} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
OFFER = {"type": "offer", "sdp": SDP.format(1)}
ANSWER = {"type": "answer", "sdp": SDP.format(2)}


class User:
    def __init__(self, name: str, conn: JanusConnection, session: Session, handle: Handle) -> None:
        self.name, self.conn, self.session, self.handle = name, conn, session, handle

    async def ask(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        _, event = await self.handle.message(body, jsep)
        return plugin_result(event) or {}


Start = Callable[..., Awaitable[SignalingServer]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[SignalingServer] = []
    conns: list[JanusConnection] = []

    async def make(**settings: Any) -> SignalingServer:
        server = SignalingServer(Settings(port=0, **settings))
        server.plugin.relay = ToyRelay()
        await server.start()
        servers.append(server)
        return server

    yield make
    for conn in conns:
        await conn.close()
    for server in servers:
        await server.close()


async def connect(server: SignalingServer) -> JanusConnection:
    return await JanusConnection.connect(f"ws://127.0.0.1:{server.port}/")


async def user(server: SignalingServer, name: str) -> User:
    conn = await connect(server)
    session = await Session.create(conn)
    handle = await session.attach()
    result = User(name, conn, session, handle)
    assert await result.ask({"request": "register", "username": name}) == {"event": "registered", "username": name}
    return result


async def claim(server: SignalingServer, gone: User) -> User:
    """A new connection claims ``gone``'s session: success, and the same handle goes on there."""
    conn = await connect(server)
    tx = new_transaction()
    assert await conn.request({"janus": "claim", "session_id": gone.session.id, "transaction": tx}) == {
        "janus": "success", "session_id": gone.session.id, "transaction": tx}
    session = Session(conn, gone.session.id)
    return User(gone.name, conn, session, Handle(session, gone.handle.id))


def events(conn: JanusConnection) -> list[dict[str, Any]]:
    return [m for m in conn.received if m.get("janus") == "event"]


async def test_a_dropped_socket_keeps_its_session_and_a_claim_gets_the_missed_events_in_order(start: Start) -> None:
    server = await start(reclaim_session_timeout=30)
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await alice.conn.abort()
    await until(lambda: server.sessions.orphans() == [alice.session.id], "alice's session kept for a claim")
    assert sorted((await bob.ask({"request": "list"}))["list"]) == ["alice", "bob"]  # her name stays

    # While nobody holds alice's session, bob calls her and hangs up: both events are held.
    assert await bob.ask({"request": "call", "username": "alice"}, OFFER) == {"event": "calling"}
    assert (await bob.ask({"request": "hangup"}))["event"] == "hangup"
    await until(lambda: len(server.core.mailboxes.get(alice.session.id, ())) == 2, "two events held")

    back = await claim(server, alice)
    incoming = await back.handle.plugin_event("incomingcall", username="bob")
    assert incoming["jsep"]["type"] == "offer"
    hangup = await back.handle.plugin_event("hangup")
    assert back.conn.received.index(incoming) < back.conn.received.index(hangup)
    assert server.sessions.orphans() == [] and server.core.mailboxes == {}
    # The session and its handle are usable from the new connection, and so is her name.
    assert (await back.session.keepalive())["janus"] == "ack"
    assert await bob.ask({"request": "call", "username": "alice"}, OFFER) == {"event": "calling"}
    await back.handle.plugin_event("incomingcall", username="bob")
    assert (await back.ask({"request": "accept"}, ANSWER))["event"] == "accepted"
    await back.conn.close()
    await bob.conn.close()


async def test_events_past_the_bound_drop_the_oldest_logged_and_counted(
        start: Start, caplog: pytest.LogCaptureFixture) -> None:
    server = await start(reclaim_session_timeout=30, max_held_events=3)
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await alice.conn.abort()
    await until(lambda: server.sessions.orphans() == [alice.session.id], "alice's session kept")
    for _ in range(3):  # 6 events for alice: incomingcall, hangup, three times
        assert await bob.ask({"request": "call", "username": "alice"}, OFFER) == {"event": "calling"}
        assert (await bob.ask({"request": "hangup"}))["event"] == "hangup"
    await until(lambda: server.metrics.events_dropped._value.get() == 3, "three events dropped")
    assert caplog.text.count(f"session {alice.session.id} holds 3 events") == 3

    back = await claim(server, alice)
    await until(lambda: len(events(back.conn)) == 3, "the three held events")
    back.conn.drain()
    await back.conn.expect_none(lambda m: m.get("janus") == "event", within=0.3, what="a fourth held event")
    assert [(plugin_result(m) or {}).get("event") for m in events(back.conn)] == ["hangup", "incomingcall", "hangup"]
    await back.conn.close()
    await bob.conn.close()


async def test_past_the_reclaim_timeout_the_session_goes_and_the_peer_is_hung_up(start: Start) -> None:
    server = await start(reclaim_session_timeout=0.5)
    alice, bob = await user(server, "alice"), await user(server, "bob")
    assert await alice.ask({"request": "call", "username": "bob"}, OFFER) == {"event": "calling"}
    await bob.handle.plugin_event("incomingcall", username="alice")
    assert (await bob.ask({"request": "accept"}, ANSWER))["event"] == "accepted"
    await alice.conn.abort()
    hangup = await bob.handle.plugin_event("hangup", timeout=5.0)
    assert plugin_result(hangup) == {"event": "hangup", "username": "alice", "reason": "Remote WebRTC hangup"}
    assert not server.sessions.orphans() and alice.session.id not in server.sessions.sessions
    conn = await connect(server)
    tx = new_transaction()
    assert await conn.request({"janus": "claim", "session_id": alice.session.id, "transaction": tx}) == {
        "janus": "error", "session_id": alice.session.id, "transaction": tx,
        "error": {"code": 458, "reason": f"No such session {alice.session.id}"}}
    assert (await bob.ask({"request": "list"}))["list"] == ["bob"]  # her name is free
    await conn.close()
    await bob.conn.close()


async def test_with_reclaim_off_a_dropped_socket_ends_its_sessions_at_once(start: Start) -> None:
    server = await start(reclaim_session_timeout=0)
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await alice.conn.abort()
    await until(lambda: alice.session.id not in server.sessions.sessions, "alice's session destroyed")
    assert (await bob.ask({"request": "list"}))["list"] == ["bob"]
    await bob.conn.close()


async def test_a_claim_from_a_live_connection_moves_the_session_and_its_events(start: Start) -> None:
    server = await start(reclaim_session_timeout=30)
    alice, bob = await user(server, "alice"), await user(server, "bob")
    back = await claim(server, alice)  # alice's first socket is still open
    assert await bob.ask({"request": "call", "username": "alice"}, OFFER) == {"event": "calling"}
    await back.handle.plugin_event("incomingcall", username="bob")
    await alice.conn.expect_none(lambda m: m.get("janus") == "event", within=0.3, what="event on the old socket")
    tx = new_transaction()  # the old socket no longer holds the session
    assert (await alice.conn.request({"janus": "keepalive", "session_id": alice.session.id,
                                      "transaction": tx}))["error"]["code"] == 458
    for conn in (alice.conn, back.conn, bob.conn):
        await conn.close()


async def test_a_socket_closed_with_its_handshake_is_leaving_and_its_sessions_go_at_once(start: Start) -> None:
    """janus.js closes its WebSocket, without destroy, when its page unloads: not a drop."""
    server = await start(reclaim_session_timeout=30)
    alice, bob = await user(server, "alice"), await user(server, "bob")
    await alice.conn.close()
    await until(lambda: alice.session.id not in server.sessions.sessions, "alice's session destroyed")
    assert server.sessions.orphans() == []
    assert (await bob.ask({"request": "list"}))["list"] == ["bob"]
    await bob.conn.close()
