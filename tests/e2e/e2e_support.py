"""VideoCall-level helpers for the end-to-end tests: users, calls, and expected message shapes.

The ``expected_*`` builders return the exact message Janus sends (from the recorded trace and
real Janus 1.1.2); tests compare with ``==`` so a missing or extra field fails, with ids and
transactions filled in from what the client knows and SDP bodies matched by ``JSEP``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from tests.support.janus_ws import (
    VIDEOCALL,
    Handle,
    JanusConnection,
    Message,
    Peer,
    Session,
    plugin_result,
)

#: Seconds for a call to connect (ICE + DTLS) and for media to start.
MEDIA_TIMEOUT = 10.0


@dataclass(frozen=True)
class Server:
    """A server under test, as the tests see it."""

    kind: str  # "janus" or "videocall"
    url: str
    ice_host: str  # the address the clients must offer as their host candidate
    session_timeout: float
    log: Path | None = None
    #: For a fleet: every node's URL. Each new connection goes to the next one, so a test's
    #: users alternate between nodes and its calls cross them.
    urls: tuple[str, ...] = ()

    @property
    def is_janus(self) -> bool:
        return self.kind == "janus"


class JSEP:
    """Equal to a jsep object of this type with an SDP body (the body itself is not compared)."""

    def __init__(self, type_: str) -> None:
        self.type = type_

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, dict) and set(other) == {"type", "sdp"}
                and other["type"] == self.type and isinstance(other["sdp"], str)
                and other["sdp"].startswith("v=0"))

    def __repr__(self) -> str:
        return f"JSEP({self.type!r}, sdp=...)"


class User:
    """One client of the VideoCall plugin: connection, session, handle, PeerConnection."""

    def __init__(self, clients: Clients, name: str, conn: JanusConnection, session: Session,
                 handle: Handle) -> None:
        self.clients = clients
        self.name = name
        self.conn = conn
        self.session = session
        self.handle = handle
        self.peer: Peer | None = None

    async def message(self, body: Any, jsep: Any = None) -> tuple[Message, Message]:
        return await self.handle.message(body, jsep)

    async def register(self) -> None:
        _, event = await self.message({"request": "register", "username": self.name})
        assert plugin_result(event) == {"event": "registered", "username": self.name}, event

    async def list(self) -> list[str]:
        """The names of this test's users that the server lists (other tests' are left out)."""
        _, event = await self.message({"request": "list"})
        names = (plugin_result(event) or {}).get("list")
        assert isinstance(names, list), event
        return sorted(name for name in names if self.clients.owns(name))

    def new_peer(self) -> Peer:
        self.peer = self.clients.peer(self.name)
        return self.peer

    def is_plugin_hangup(self, message: Message) -> bool:
        return self.handle.is_plugin_hangup(message)


class Clients:
    """Opens connections, users and peers for one test, and closes all of them after it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.suffix = secrets.token_hex(3)
        self.connections: list[JanusConnection] = []
        self.peers: list[Peer] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for peer in self.peers:
            await peer.close()
        for conn in self.connections:
            await conn.close()

    def name(self, base: str) -> str:
        """A username unique to this test (servers are shared between tests)."""
        return f"{base}-{self.suffix}"

    def owns(self, name: str) -> bool:
        return name.endswith(f"-{self.suffix}")

    async def connect(self) -> JanusConnection:
        urls = self.server.urls or (self.server.url,)
        conn = await JanusConnection.connect(urls[len(self.connections) % len(urls)])
        self.connections.append(conn)
        return conn

    async def session(self) -> Session:
        return await Session.create(await self.connect())

    async def user(self, base: str, *, register: bool = True) -> User:
        session = await self.session()
        handle = await session.attach(VIDEOCALL, opaque_id=f"e2e-{base}")
        user = User(self, self.name(base), session.conn, session, handle)
        if register:
            await user.register()
        return user

    def peer(self, name: str = "peer") -> Peer:
        peer = Peer(name)
        self.peers.append(peer)
        return peer


# --- expected messages --------------------------------------------------------------------------

def expected_ack(user: User, transaction: str) -> Message:
    return {"janus": "ack", "session_id": user.session.id, "transaction": transaction}


def expected_event(user: User, data: dict[str, Any], *, transaction: str | None = None,
                   jsep: str | None = None) -> Message:
    message: Message = {"janus": "event", "session_id": user.session.id, "sender": user.handle.id,
                        "plugindata": {"plugin": VIDEOCALL, "data": {"videocall": "event", **data}}}
    if transaction is not None:
        message["transaction"] = transaction
    if jsep is not None:
        message["jsep"] = JSEP(jsep)
    return message


def expected_result(user: User, result: dict[str, Any], **kwargs: Any) -> Message:
    return expected_event(user, {"result": result}, **kwargs)


def expected_error(user: User, transaction: str, code: int, text: str) -> Message:
    return expected_event(user, {"error_code": code, "error": text}, transaction=transaction)


def expected_core_error(transaction: str | None, code: int, reason: str,
                        session_id: int | None = None) -> Message:
    message: Message = {"janus": "error"}
    if session_id is not None:
        message["session_id"] = session_id
    if transaction is not None:
        message["transaction"] = transaction
    message["error"] = {"code": code, "reason": reason}
    return message


def expected_notification(user: User, janus: str, **fields: Any) -> Message:
    return {"janus": janus, "session_id": user.session.id, "sender": user.handle.id, **fields}


# --- steps ------------------------------------------------------------------------------------

async def expect_result(user: User, body: dict[str, Any], result: dict[str, Any],
                        jsep: Any = None) -> Message:
    """Send a plugin message; assert the ack and the result event exactly; return the event."""
    transaction = await user.handle.send_message(body, jsep)
    ack, event = await user.handle.ack_and_event(transaction)
    assert ack == expected_ack(user, transaction)
    assert event == expected_result(user, result, transaction=transaction)
    return event


async def expect_plugin_error(user: User, body: Any, code: int, text: str, jsep: Any = None) -> None:
    """Send a plugin message; assert the ack and the plugin error event exactly."""
    transaction = await user.handle.send_message(body, jsep)
    ack, event = await user.handle.ack_and_event(transaction)
    assert ack == expected_ack(user, transaction)
    assert event == expected_error(user, transaction, code, text)


async def place_call(caller: User, callee: User, *, datachannel: str | None = None) -> Message:
    """``call`` with a fresh offer; return the callee's ``incomingcall`` (with the offer)."""
    offer = await caller.new_peer().offer(datachannel=datachannel)
    await expect_result(caller, {"request": "call", "username": callee.name}, {"event": "calling"},
                        jsep=offer)
    incoming = await callee.handle.plugin_event("incomingcall", timeout=MEDIA_TIMEOUT)
    assert incoming == expected_result(callee, {"event": "incomingcall", "username": caller.name},
                                       jsep="offer")
    await caller.handle.trickle(completed=True)
    return incoming


async def answer_call(caller: User, callee: User, incoming: Message) -> None:
    """``accept`` with an answer to ``incoming``; the caller applies the answer it receives."""
    answer = await callee.new_peer().answer(incoming["jsep"])
    await expect_result(callee, {"request": "accept"}, {"event": "accepted"}, jsep=answer)
    accepted = await caller.handle.plugin_event("accepted", timeout=MEDIA_TIMEOUT)
    assert accepted == expected_result(caller, {"event": "accepted", "username": callee.name},
                                       jsep="answer")
    assert caller.peer is not None
    await caller.peer.set_remote(accepted["jsep"])
    await callee.handle.trickle(completed=True)


async def connect_call(caller: User, callee: User, *, media: bool = True,
                       datachannel: str | None = None) -> None:
    """Call, accept, and wait until both sides are up (and, with ``media``, receive video).

    With ``datachannel`` the caller's offer opens a data channel of that label.
    """
    incoming = await place_call(caller, callee, datachannel=datachannel)
    await answer_call(caller, callee, incoming)
    for user in (caller, callee):
        webrtcup = await user.handle.notification("webrtcup", timeout=MEDIA_TIMEOUT)
        assert webrtcup == expected_notification(user, "webrtcup")
    if media:
        for user in (caller, callee):
            assert user.peer is not None
            await user.peer.wait_frames("video", 2, timeout=MEDIA_TIMEOUT)
