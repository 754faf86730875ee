"""The plugin runner keeps the state machine's promise: every plugin message is answered.

A surprise in a step (an exception from the machine or the registry: a bug or an outage,
never the client's doing) is logged with its traceback and answered to that handle with
Janus's generic 499 "Unknown error"; every other handle goes on as if nothing happened.
Relay failures are outcomes, not surprises: the machine turns them into 483/499 texts, and
a failed fire-and-forget request is only logged. The faults are injected (a handler made
to raise for one handle, a registry that raises): they cannot be caused from outside.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets
from websockets.typing import Subprotocol

from shared import ipc
from shared import messages as m
from shared.settings import Settings
from signaling.effects import CoreHangup, Delivery, Event, Relay, RelayFailure
from signaling.plugin_runner import PluginRunner
from signaling.registry import MemoryRegistry, RegistryUnavailable
from signaling.relay_client import RelayUnavailable
from signaling.server import SignalingServer
from signaling.videocall import VideoCall
from tests.support.toy_relay import worker_answer

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\n"}
JANUS_PROTOCOL = [Subprotocol("janus-protocol")]
UNKNOWN_ERROR = {"videocall": "event", "error_code": 499, "error": "Unknown error"}


class Boom(Exception):
    """The injected fault."""


class ScriptedRelay:
    """Answers at once; ``fail`` maps a request type to the exception its request raises."""

    def __init__(self) -> None:
        self.requests: list[m.Request[Any]] = []
        self.fail: dict[type, ipc.IpcError] = {}

    async def request(self, body: m.Request[Any]) -> Any:
        self.requests.append(body)
        if type(body) in self.fail:
            raise self.fail[type(body)]
        return worker_answer(body, offer="relay-offer", answer="relay-answer", sdp="relay-sdp")


class ClaimFails(MemoryRegistry):
    """A registry whose claim of one name raises (its connection broke mid-request)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.broken = name

    async def claim(self, name: str, owner: str) -> bool:
        if name == self.broken:
            raise ConnectionError("registry connection reset")
        return await super().claim(name, owner)


class RegistryDown(MemoryRegistry):
    """A shared registry that stops answering while ``down`` is set, as a Redis outage does."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise RegistryUnavailable("claim: Connection refused")

    async def claim(self, name: str, owner: str) -> bool:
        self._check()
        return await super().claim(name, owner)

    async def lookup(self, name: str) -> str | None:
        self._check()
        return await super().lookup(name)

    async def names(self) -> list[str]:
        self._check()
        return await super().names()


class Harness:
    """A runner with a machine, a registry and a relay; clients send through ``runner.message``."""

    def __init__(self, registry: MemoryRegistry | None = None) -> None:
        self.plugin = VideoCall()
        self.registry = registry or MemoryRegistry()
        self.relay = ScriptedRelay()
        self.delivered: list[Delivery] = []
        self.runner = PluginRunner(self.plugin, registry=self.registry, relay=self.relay,
                                   deliver=self.delivered.append, node_id="n1")
        self.n = 0

    async def send(self, handle: int, body: Any, jsep: dict[str, Any] | None = None) -> list[Event]:
        """One plugin message, run to the end; the events its handle got with its transaction."""
        self.n += 1
        tx = f"t{self.n}"
        self.runner.message(handle, body, jsep, tx)
        await self.runner.drain()
        return [e for e in self.delivered if isinstance(e, Event) and e.handle == handle and e.transaction == tx]

    async def answer(self, handle: int, body: Any, jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        (event,) = await self.send(handle, body, jsep)
        return event.data

    async def call_and_accept(self, caller: int, callee: int) -> None:
        """Register two users, call and accept: what a healthy pair gets at every step."""
        for handle in (caller, callee):
            self.runner.attach(handle)
            assert await self.answer(handle, {"request": "register", "username": f"u{handle}"}) == \
                {"videocall": "event", "result": {"event": "registered", "username": f"u{handle}"}}
        calling = await self.answer(caller, {"request": "call", "username": f"u{callee}"}, OFFER)
        assert calling == {"videocall": "event", "result": {"event": "calling"}}
        assert await self.answer(callee, {"request": "accept"}, ANSWER) == \
            {"videocall": "event", "result": {"event": "accepted"}}
        call = self.plugin.handles[caller].call
        assert call is not None and call.phase == "active" and self.plugin.handles[callee].call is call


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "videocall.plugin" and r.levelno >= logging.ERROR]


def raising_once(original: Callable[..., Any], when: Callable[..., bool]) -> Callable[..., Any]:
    """``original``, except that its first call for which ``when(*args)`` holds raises ``Boom``."""
    armed = [True]

    def wrapper(*args: Any) -> Any:
        if armed[0] and when(*args):
            armed[0] = False
            raise Boom("injected")
        return original(*args)

    return wrapper


# --- a surprise in a step ---------------------------------------------------------------------


async def test_plugin_step_that_raises_answers_499_to_that_handle_only(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    node = Harness()
    await node.call_and_accept(1, 2)
    node.runner.attach(3)
    monkeypatch.setattr(node.plugin, "message", raising_once(node.plugin.message, lambda handle, *_: handle == 3))
    before = len(node.delivered)
    (event,) = await node.send(3, {"request": "list"})
    assert event.data == UNKNOWN_ERROR and event.transaction == f"t{node.n}"
    assert node.delivered[before:] == [event]  # nobody else heard of it
    (record,) = failures(caplog)
    assert "handle 3" in record.getMessage() and record.exc_info is not None and record.exc_info[0] is Boom
    # the handle itself goes on (its turn was given back), and so does everyone else
    assert await node.answer(3, {"request": "list"}) == {"videocall": "event", "result": {"list": ["u1", "u2"]}}
    await node.call_and_accept(4, 5)
    assert node.plugin.handles[1].call is not None and node.plugin.handles[1].call.phase == "active"


async def test_continuation_that_raises_answers_the_handle_whose_message_it_was(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    node = Harness()
    for handle, name in ((1, "alice"), (2, "bob")):
        node.runner.attach(handle)
        await node.send(handle, {"request": "register", "username": name})
    await node.send(1, {"request": "call", "username": "bob"}, OFFER)
    monkeypatch.setattr(node.plugin, "call_accepted", raising_once(node.plugin.call_accepted, lambda *_: True))
    (event,) = await node.send(2, {"request": "accept"}, ANSWER)
    assert event.data == UNKNOWN_ERROR
    assert len(failures(caplog)) == 1
    await node.call_and_accept(3, 4)


async def test_notification_step_that_raises_is_logged_and_reaches_nobody(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    node = Harness()
    await node.call_and_accept(1, 2)
    call = node.plugin.handles[1].call
    assert call is not None
    monkeypatch.setattr(node.plugin, "leg_state", raising_once(node.plugin.leg_state, lambda *_: True))
    before = len(node.delivered)
    node.runner.on_relay_notification(m.LegState(call_id=call.call_id, leg="caller", state="connected"))
    await node.runner.drain()
    assert node.delivered[before:] == [] and len(failures(caplog)) == 1
    node.runner.on_relay_notification(m.LegState(call_id=call.call_id, leg="caller", state="connected"))
    await node.runner.drain()
    assert len(node.delivered) == before + 1  # the next one is a webrtcup again


async def test_registry_claim_that_raises_answers_499_and_spares_the_others(caplog: pytest.LogCaptureFixture) -> None:
    node = Harness(ClaimFails("mallory"))
    await node.call_and_accept(1, 2)
    node.runner.attach(3)
    assert await node.answer(3, {"request": "register", "username": "mallory"}) == UNKNOWN_ERROR
    (record,) = failures(caplog)
    assert record.exc_info is not None and record.exc_info[0] is ConnectionError
    assert node.plugin.handles[3].username is None and await node.registry.names() == ["u1", "u2"]
    # the handle may try another name, and other pairs go on
    assert (await node.answer(3, {"request": "register", "username": "mal"}))["result"]["event"] == "registered"
    await node.call_and_accept(4, 5)


REGISTRY_UNAVAILABLE = {"videocall": "event", "error_code": 499, "error": "Registry unavailable, try again"}


async def test_registry_unavailable_is_named_and_spares_calls_in_progress(caplog: pytest.LogCaptureFixture) -> None:
    registry = RegistryDown()
    node = Harness(registry)
    await node.call_and_accept(1, 2)
    node.runner.attach(3)
    assert (await node.answer(3, {"request": "register", "username": "carol"}))["result"]["event"] == "registered"
    node.runner.attach(4)
    registry.down = True
    assert await node.answer(4, {"request": "register", "username": "dave"}) == REGISTRY_UNAVAILABLE
    assert await node.answer(3, {"request": "call", "username": "u1"}, OFFER) == REGISTRY_UNAVAILABLE
    assert await node.answer(3, {"request": "list"}) == REGISTRY_UNAVAILABLE
    assert failures(caplog) == []  # an outage is a warning line, not a traceback
    assert [r.exc_info for r in caplog.records if "registry unavailable" in r.getMessage()] == [None] * 3
    # the call in progress goes on: its requests never touch the registry
    assert await node.answer(1, {"request": "set", "bitrate": 100000}) == \
        {"videocall": "event", "result": {"event": "set"}}
    call = node.plugin.handles[1].call
    assert call is not None and call.phase == "active" and node.plugin.handles[3].call is None
    registry.down = False
    assert (await node.answer(4, {"request": "register", "username": "dave"}))["result"]["event"] == "registered"
    assert (await node.answer(3, {"request": "list"}))["result"]["list"] == ["carol", "dave", "u1", "u2"]


# --- relay failures are outcomes --------------------------------------------------------------


@pytest.mark.parametrize(("failure", "code", "text"), [
    (RelayUnavailable("no relay worker is connected"), 499,
     "Media relay unavailable, try again (relay unavailable: no relay worker is connected)"),
    (ipc.IpcError("no codec in common"), 483, "Error parsing offer: no codec in common"),
    (ipc.ChannelClosed("channel closed"), 483, "Error parsing offer: channel closed"),
])
async def test_call_create_failure_is_an_outcome(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                 failure: ipc.IpcError, code: int, text: str) -> None:
    node = Harness()
    outcomes: list[Any] = []
    created = node.plugin.call_created

    def call_created(call_id: str, outcome: Any) -> Any:
        outcomes.append(outcome)
        return created(call_id, outcome)

    monkeypatch.setattr(node.plugin, "call_created", call_created)
    for handle in (1, 2):
        node.runner.attach(handle)
        await node.send(handle, {"request": "register", "username": f"u{handle}"})
    node.relay.fail[m.CallCreate] = failure
    before = len(node.delivered)
    (event,) = await node.send(1, {"request": "call", "username": "u2"}, OFFER)
    assert event.data == {"videocall": "event", "error_code": code, "error": text}
    assert node.delivered[before:] == [event, CoreHangup(1)]
    assert outcomes == [RelayFailure(failure.reason, unavailable=isinstance(failure, RelayUnavailable))]
    assert failures(caplog) == [] and node.plugin.calls == {}


@pytest.mark.parametrize("unavailable", [True, False])
async def test_accept_and_renegotiate_failures_are_outcomes(unavailable: bool) -> None:
    node = Harness()
    failure = RelayUnavailable("worker gone") if unavailable else ipc.IpcError("bad sdp")
    for handle in (1, 2):
        node.runner.attach(handle)
        await node.send(handle, {"request": "register", "username": f"u{handle}"})
    await node.send(1, {"request": "call", "username": "u2"}, OFFER)
    node.relay.fail[m.CallAccept] = failure
    expected = ("Media relay unavailable, try again (relay unavailable: worker gone)" if unavailable
                else "Error parsing answer: bad sdp")
    assert await node.answer(2, {"request": "accept"}, ANSWER) == \
        {"videocall": "event", "error_code": 499 if unavailable else 483, "error": expected}
    del node.relay.fail[m.CallAccept]
    assert (await node.answer(2, {"request": "accept"}, ANSWER))["result"] == {"event": "accepted"}
    node.relay.fail[m.LegRenegotiate] = failure
    expected = expected.replace("answer", "offer")
    assert await node.answer(1, {"request": "set"}, OFFER) == \
        {"videocall": "event", "error_code": 499 if unavailable else 483, "error": expected}


@pytest.mark.parametrize("failure", [ipc.IpcError("no such call"), RelayUnavailable("worker gone"),
                                     ipc.RequestTimeout("no response")])
async def test_fire_and_forget_failures_are_logged_and_change_nothing(
        caplog: pytest.LogCaptureFixture, failure: ipc.IpcError) -> None:
    caplog.set_level(logging.INFO, "videocall.plugin")
    node = Harness()
    await node.call_and_accept(1, 2)
    call = node.plugin.handles[1].call
    assert call is not None
    for kind in (m.LegTrickle, m.LegConfigure, m.CallHangup):
        node.relay.fail[kind] = failure
    before = len(node.delivered)
    node.runner.trickle(1, [m.IceCandidate(candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host")], True)
    assert (await node.answer(2, {"request": "set", "bitrate": 64000}))["result"] == {"event": "set"}
    await node.runner.drain()
    assert [type(r) for r in node.relay.requests[-2:]] == [m.LegTrickle, m.LegConfigure]
    assert node.plugin.handles[1].call is call and call.phase == "active"
    assert len(node.delivered) == before + 1  # only the answer to `set`
    # the hangup fails at the relay too: both users are told all the same, the call is gone
    hangup = await node.answer(1, {"request": "hangup"})
    assert hangup["result"] == {"event": "hangup", "username": "u1", "reason": "Explicit hangup"}
    await node.runner.drain()
    assert isinstance(node.relay.requests[-1], m.CallHangup) and node.plugin.calls == {}
    assert Event(2, {"videocall": "event", "result": {"event": "hangup", "username": "u1", "reason": "We did the hangup"}}) \
        in node.delivered
    logged = [r.getMessage() for r in caplog.records if r.name == "videocall.plugin" and "failed" in r.getMessage()]
    assert [line.split(" for ")[0] for line in logged] == ["leg.trickle", "leg.configure", "call.hangup"]
    assert all(failure.reason in line for line in logged) and failures(caplog) == []


async def test_relay_effect_without_an_answer_is_sent_in_the_background() -> None:
    node = Harness()
    trace = await node.runner.carry_out([Relay(m.CallHangup(call_id="c9", reason="x"))])
    assert trace == [Relay(m.CallHangup(call_id="c9", reason="x"))]
    await node.runner.drain()
    assert node.relay.requests == [m.CallHangup(call_id="c9", reason="x")]


# --- through the real WebSocket server --------------------------------------------------------


class Client:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.n = 0

    async def recv(self) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), 3.0))
        return reply

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        await self.ws.send(json.dumps({"transaction": f"t{self.n}", **msg}))
        return await self.recv()

    async def attach(self) -> tuple[int, int]:
        session = int((await self.request({"janus": "create"}))["data"]["id"])
        reply = await self.request({"janus": "attach", "session_id": session, "plugin": "janus.plugin.videocall"})
        return session, int(reply["data"]["id"])

    async def plugin(self, session: int, handle: int, body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """A plugin message: its ack, then its event (which must carry its transaction)."""
        self.n += 1
        tx = f"t{self.n}"
        await self.ws.send(json.dumps({"janus": "message", "transaction": tx, "session_id": session,
                                       "handle_id": handle, "body": body}))
        ack, event = await self.recv(), await self.recv()
        assert ack == {"janus": "ack", "session_id": session, "transaction": tx}
        assert event["janus"] == "event" and event["transaction"] == tx and event["sender"] == handle, event
        return ack, event["plugindata"]["data"]


@pytest.fixture
async def server() -> AsyncIterator[SignalingServer]:
    srv = SignalingServer(Settings(port=0))
    await srv.start()
    yield srv
    await srv.close()


async def test_server_answers_a_raising_step_with_499_and_serves_the_others(
        server: SignalingServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"ws://127.0.0.1:{server.port}/"
    async with websockets.connect(url, subprotocols=JANUS_PROTOCOL) as ws1, \
            websockets.connect(url, subprotocols=JANUS_PROTOCOL) as ws2:
        victim, other = Client(ws1), Client(ws2)
        vsession, vhandle = await victim.attach()
        osession, ohandle = await other.attach()
        plugin = server.plugin.plugin
        monkeypatch.setattr(plugin, "message", raising_once(plugin.message, lambda handle, *_: handle == vhandle))
        _, data = await victim.plugin(vsession, vhandle, {"request": "register", "username": "victim"})
        assert data == {"videocall": "event", "error_code": 499, "error": "Unknown error"}
        assert len(failures(caplog)) == 1
        _, data = await other.plugin(osession, ohandle, {"request": "register", "username": "other"})
        assert data["result"] == {"event": "registered", "username": "other"}
        _, data = await other.plugin(osession, ohandle, {"request": "list"})
        assert data["result"] == {"list": ["other"]}
        # the victim's handle works again
        _, data = await victim.plugin(vsession, vhandle, {"request": "register", "username": "victim"})
        assert data["result"] == {"event": "registered", "username": "victim"}


# --- a handle's turn: at once when free, queued behind a step that waits ----------------------


class HeldRelay(ScriptedRelay):
    """Answers once ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def request(self, body: m.Request[Any]) -> Any:
        await self.go.wait()
        return await super().request(body)


def _transactions(node: Harness, handle: int) -> list[str | None]:
    return [e.transaction for e in node.delivered if isinstance(e, Event) and e.handle == handle]


async def test_a_step_needing_only_the_registry_ends_before_message_returns() -> None:
    node = Harness()
    node.runner.attach(1)
    node.runner.message(1, {"request": "register", "username": "u1"}, None, "t1")
    assert node.delivered == [Event(1, {"videocall": "event", "result": {"event": "registered", "username": "u1"}}, "t1")]
    assert not node.runner._background  # no task was needed


async def test_a_step_that_waits_holds_its_handle_turn_and_no_one_else() -> None:
    node = Harness()
    relay = node.runner.relay = HeldRelay()
    for handle in (1, 2, 3):
        node.runner.attach(handle)
        node.runner.message(handle, {"request": "register", "username": f"u{handle}"}, None, f"r{handle}")
    node.runner.message(1, {"request": "call", "username": "u2"}, OFFER, "call")  # waits for the relay
    assert relay.requests == [] and node.runner._background
    node.runner.message(1, {"request": "list"}, None, "list1")  # behind the call, in a task
    node.runner.message(3, {"request": "list"}, None, "list3a")  # behind list1, which has not started
    for _ in range(5):
        await asyncio.sleep(0)
    node.runner.message(3, {"request": "list"}, None, "list3b")  # nothing before it now: at once
    assert _transactions(node, 3) == ["r3", "list3a", "list3b"]
    assert _transactions(node, 1) == ["r1"]
    relay.go.set()
    await node.runner.drain()
    assert _transactions(node, 1) == ["r1", "call", "list1"]  # "calling", then the list
    assert [type(r) for r in relay.requests] == [m.CallCreate]
    assert node.runner._turns == {} and node.runner._unstarted == 0


async def test_a_cancelled_waiting_step_gives_its_handle_turn_back() -> None:
    node = Harness()
    node.runner.relay = HeldRelay()
    for handle in (1, 2):
        node.runner.attach(handle)
        node.runner.message(handle, {"request": "register", "username": f"u{handle}"}, None, f"r{handle}")
    node.runner.message(1, {"request": "call", "username": "u2"}, OFFER, "call")
    await asyncio.sleep(0)
    await node.runner.close()  # cancels the step where it waits
    assert not node.runner._handle_locks[1].locked() and node.runner._turns == {}
