"""The VideoCall state machine, driven by the real plugin runner: no sockets, a millisecond each.

Each test feeds requests through ``PluginRunner.carry_out`` with an in-memory registry and
a scripted relay, and checks what the clients receive (codes, texts, transactions, order)
against what real Janus sends (../shared/janus/traces/videocall-session.jsonl). The trace
``carry_out`` returns shows every effect, relay commands included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from shared import ipc
from shared import messages as m
from signaling import videocall as vc
from signaling.effects import CoreHangup, Delivery, Effect, Event, Media, Relay, Release, RingTimeout, Webrtcup
from signaling.plugin_runner import PluginRunner
from signaling.registry import MemoryRegistry, owner_id
from signaling.relay_client import RelayUnavailable
from tests.support.toy_relay import worker_answer

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\n"}
ALICE, BOB, CAROL = 1, 2, 3
NODE = "n1"


def events(effects: Sequence[Effect], handle: int | None = None) -> list[Event]:
    return [e for e in effects if isinstance(e, Event) and (handle is None or e.handle == handle)]


def result(effect: Event) -> dict[str, Any]:
    assert "result" in effect.data, effect.data
    return effect.data["result"]


def assert_error(effects: Sequence[Effect], code: int, text: str, tx: str = "t") -> None:
    (event,) = events(effects)
    assert event.data == {"videocall": "event", "error_code": code, "error": text}
    assert event.transaction == tx


def of_type(effects: Sequence[Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def relayed(effects: Sequence[Effect], kind: type) -> list[Any]:
    """The relay requests of type ``kind`` in a trace."""
    return [e.request for e in effects if isinstance(e, Relay) and isinstance(e.request, kind)]


class ScriptedRelay:
    """Answers every relay request at once, as a worker would; records them in order.

    ``refuse`` maps a request type to the reason the worker gives (``ipc.IpcError``);
    ``unavailable`` names request types for which no worker can be reached.
    """

    def __init__(self) -> None:
        self.requests: list[m.Request[Any]] = []
        self.refuse: dict[type, str] = {}
        self.unavailable: set[type] = set()
        self.renegotiated_sdp = "relay-sdp-for-peer"
        #: When set, ``call.create`` waits for it (a worker still preparing the call).
        self.hold: asyncio.Event | None = None
        self.hold_accept: asyncio.Event | None = None

    async def request(self, body: m.Request[Any]) -> Any:
        self.requests.append(body)
        if isinstance(body, m.CallCreate) and self.hold is not None:
            await self.hold.wait()
        if isinstance(body, m.CallAccept) and self.hold_accept is not None:
            await self.hold_accept.wait()
        if type(body) in self.unavailable:
            raise RelayUnavailable("no relay worker is connected")
        if type(body) in self.refuse:
            raise ipc.IpcError(self.refuse[type(body)])
        return worker_answer(body, offer="relay-offer-for-callee", answer="relay-answer-for-caller", sdp=self.renegotiated_sdp)


class Harness:
    """The state machine, the plugin runner, a memory registry and a scripted relay."""

    def __init__(self) -> None:
        self.vc = vc.VideoCall(max_pending_trickles=4)
        self.registry = MemoryRegistry()
        self.relay = ScriptedRelay()
        self.delivered: list[Delivery] = []
        self.runner = PluginRunner(self.vc, registry=self.registry, relay=self.relay,
                                   deliver=self.delivered.append, node_id=NODE)

    async def run(self, effects: list[Effect]) -> list[Effect]:
        """Carry out ``effects`` with the runner; return every effect, outcomes' included."""
        before = len(self.delivered)
        trace = await self.runner.carry_out(effects)
        # what reached the clients is exactly the trace's deliveries, in order
        assert self.delivered[before:] == [e for e in trace if isinstance(e, (Event, CoreHangup, Webrtcup, Media))]
        return trace

    async def msg(self, handle: int, body: Any, jsep: dict[str, Any] | None = None, tx: str = "t") -> list[Effect]:
        return await self.run(self.vc.message(handle, body, jsep, tx))

    async def users(self, *handles_names: tuple[int, str]) -> None:
        for handle, name in handles_names:
            self.runner.attach(handle)
            if name:
                await self.msg(handle, {"request": "register", "username": name})

    async def connect(self) -> vc.Call:
        await self.users((ALICE, "alice"), (BOB, "bob"))
        await self.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
        await self.msg(BOB, {"request": "accept"}, ANSWER)
        call = self.vc.handles[ALICE].call
        assert call is not None and call.phase == "active"
        return call

    async def registered(self) -> dict[str, str | None]:
        """The registry's view: name -> owner."""
        return {name: await self.registry.lookup(name) for name in await self.registry.names()}

    async def relay_requests(self) -> list[m.Request[Any]]:
        """Every request the relay got, fire-and-forget ones included once sent."""
        await self.runner.drain()
        return self.relay.requests


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- list and register ---------------------------------------------------------------------


async def test_list_empty_then_registered_names(h: Harness) -> None:
    await h.users((ALICE, ""))
    (e,) = events(await h.msg(ALICE, {"request": "list"}))
    assert result(e) == {"list": []} and e.transaction == "t"
    await h.users((BOB, "bob"), (CAROL, "carol"))
    assert result(events(await h.msg(ALICE, {"request": "LIST"}))[0]) == {"list": ["bob", "carol"]}


async def test_register_result_and_name_in_registry(h: Harness) -> None:
    h.runner.attach(ALICE)
    effects = await h.msg(ALICE, {"request": "register", "username": "alice"}, tx="r1")
    (e,) = events(effects)
    assert result(e) == {"event": "registered", "username": "alice"} and e.transaction == "r1"
    assert await h.registered() == {"alice": owner_id(NODE, ALICE)}


async def test_register_twice_is_already_registered(h: Harness) -> None:
    await h.users((ALICE, "alice"))
    assert_error(await h.msg(ALICE, {"request": "register", "username": "alice2"}), 477, "Already registered (alice)")


async def test_register_taken_name(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, ""))
    assert_error(await h.msg(BOB, {"request": "register", "username": "alice"}), 476, "Username 'alice' already taken")


async def test_register_claim_lost_in_registry_is_taken(h: Harness) -> None:
    h.runner.attach(BOB)
    assert await h.registry.claim("alice", owner_id("n2", 99))  # held elsewhere (another node)
    assert_error(await h.msg(BOB, {"request": "register", "username": "alice"}), 476, "Username 'alice' already taken")


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        ({"request": "register"}, 475, "Missing mandatory element (username)"),
        ({"request": "register", "username": 42}, 474, "Invalid element type (username should be a string)"),
        ({"request": "register", "username": ""}, 474, "Invalid element type (username should be a non-empty string)"),
        ({"request": "register", "username": "x" * 129}, 474, "Invalid value (username should be at most 128 characters)"),
    ],
)
async def test_register_validation(h: Harness, body: dict[str, Any], code: int, text: str) -> None:
    h.runner.attach(BOB)
    assert_error(await h.msg(BOB, body), code, text)
    assert await h.registered() == {}


# --- request-level errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        (None, 470, "No message??"),
        ("x", 471, "JSON error: not an object"),
        ({}, 475, "Missing mandatory element (request)"),
        ({"request": 5}, 474, "Invalid element type (request should be a string)"),
        ({"request": "foo"}, 472, "Unknown request (foo)"),
        ({"request": "é" * 500}, 472, "Unknown request (" + "é" * 64 + "...)"),
    ],
)
async def test_request_errors(h: Harness, body: Any, code: int, text: str) -> None:
    h.runner.attach(ALICE)
    assert_error(await h.msg(ALICE, body), code, text)


async def test_message_for_unknown_handle_does_nothing(h: Harness) -> None:
    assert await h.msg(77, {"request": "list"}) == []


# --- call ----------------------------------------------------------------------------------


async def test_call_before_register(h: Harness) -> None:
    await h.users((ALICE, ""), (BOB, "bob"))
    effects = await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    assert_error(effects, 473, "Register a username first")
    assert of_type(effects, CoreHangup) == [CoreHangup(ALICE)]


@pytest.mark.parametrize(
    ("body", "jsep", "code", "text"),
    [
        ({"request": "call"}, OFFER, 475, "Missing mandatory element (username)"),
        ({"request": "call", "username": ["bob"]}, OFFER, 474, "Invalid element type (username should be a string)"),
        ({"request": "call", "username": "alice"}, OFFER, 479, "You can't call yourself... use the EchoTest for that"),
        ({"request": "call", "username": "nobody"}, OFFER, 478, "Username 'nobody' doesn't exist"),
        ({"request": "call", "username": "bob"}, None, 482, "Missing SDP"),
        ({"request": "call", "username": "bob"}, ANSWER, 483, "Error parsing offer: not an offer"),
    ],
)
async def test_call_errors(h: Harness, body: dict[str, Any], jsep: Any, code: int, text: str) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    effects = await h.msg(ALICE, body, jsep)
    assert_error(effects, code, text)
    # Janus closes the caller's PeerConnection when it refuses a call that carried an offer
    closes = code in (473, 474, 475, 478, 479) and jsep is not None
    assert of_type(effects, CoreHangup) == ([CoreHangup(ALICE, "Close PC")] if closes else [])
    assert h.vc.handles[ALICE].call is None and h.vc.handles[BOB].call is None
    assert await h.relay_requests() == []


async def test_call_rings_callee_with_relay_offer(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    effects = await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER, tx="c1")
    (create,) = relayed(effects, m.CallCreate)
    assert create.caller_offer == OFFER["sdp"]
    (incoming,) = events(effects, BOB)
    assert result(incoming) == {"event": "incomingcall", "username": "alice"}
    assert incoming.transaction is None
    assert incoming.jsep == {"type": "offer", "sdp": "relay-offer-for-callee"}
    (calling,) = events(effects, ALICE)
    assert result(calling) == {"event": "calling"} and calling.transaction == "c1"
    assert h.vc.handles[BOB].call is h.vc.handles[ALICE].call


async def test_call_refused_by_relay_is_483_and_frees_both(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    h.relay.refuse[m.CallCreate] = "no codec in common"
    effects = await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    (e,) = events(effects)
    assert e.data["error_code"] == 483 and e.data["error"] == "Error parsing offer: no codec in common"
    assert of_type(effects, CoreHangup) == [CoreHangup(ALICE, "Close PC")]
    assert h.vc.handles[ALICE].call is None and h.vc.handles[BOB].call is None


async def test_call_with_no_worker_is_499(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    h.relay.unavailable.add(m.CallCreate)
    (e,) = events(await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER))
    assert e.data["error_code"] == 499
    assert "relay unavailable" in e.data["error"]


async def test_call_busy_user_gets_user_busy_hangup(h: Harness) -> None:
    await h.connect()
    await h.users((CAROL, "carol"))
    effects = await h.msg(CAROL, {"request": "call", "username": "alice"}, OFFER, tx="b")
    (e,) = events(effects)
    assert result(e) == {"event": "hangup", "username": "carol", "reason": "User busy"}
    assert e.transaction == "b"
    assert of_type(effects, CoreHangup) == [CoreHangup(CAROL, "Close PC")]
    assert h.vc.handles[ALICE].call is not None and h.vc.handles[CAROL].call is None


async def test_callee_ringing_is_busy_too(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"))
    await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    (e,) = events(await h.msg(CAROL, {"request": "call", "username": "bob"}, OFFER))
    assert result(e)["reason"] == "User busy"


async def test_call_while_in_call_is_480_and_keeps_the_call(h: Harness) -> None:
    call = await h.connect()
    await h.users((CAROL, "carol"))
    effects = await h.msg(ALICE, {"request": "call", "username": "carol"}, OFFER)
    assert_error(effects, 480, "Already in a call")
    assert of_type(effects, CoreHangup) == []  # the call in progress keeps its PeerConnection
    assert h.vc.handles[ALICE].call is call and call.phase == "active"
    # the callee of a ringing call cannot call either
    h2 = Harness()
    await h2.users((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"))
    await h2.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    assert_error(await h2.msg(BOB, {"request": "call", "username": "carol"}, OFFER), 480, "Already in a call")


# --- accept --------------------------------------------------------------------------------


async def test_accept_without_call(h: Harness) -> None:
    await h.users((BOB, "bob"))
    assert_error(await h.msg(BOB, {"request": "accept"}, ANSWER), 481, "No incoming call to accept")


async def test_caller_cannot_accept_own_call(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    assert_error(await h.msg(ALICE, {"request": "accept"}, ANSWER), 481, "No incoming call to accept")


@pytest.mark.parametrize(
    ("jsep", "code", "text"),
    [(None, 482, "Missing SDP"), (OFFER, 483, "Error parsing answer: not an answer")],
)
async def test_accept_sdp_errors(h: Harness, jsep: Any, code: int, text: str) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    assert_error(await h.msg(BOB, {"request": "accept"}, jsep), code, text)
    call = h.vc.handles[BOB].call
    assert call is not None and call.phase == "ringing"


async def test_accept_sends_relay_answer_to_caller(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    effects = await h.msg(BOB, {"request": "accept"}, ANSWER, tx="a1")
    (accept,) = relayed(effects, m.CallAccept)
    assert accept.callee_answer == ANSWER["sdp"]
    (to_bob,) = events(effects, BOB)
    assert result(to_bob) == {"event": "accepted"} and to_bob.transaction == "a1"
    (to_alice,) = events(effects, ALICE)
    assert result(to_alice) == {"event": "accepted", "username": "bob"}
    assert to_alice.transaction is None
    assert to_alice.jsep == {"type": "answer", "sdp": "relay-answer-for-caller"}


async def test_accept_refused_by_relay_keeps_ringing(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    call = h.vc.handles[BOB].call
    assert call is not None
    h.relay.refuse[m.CallAccept] = "no codec in common"
    (e,) = events(await h.msg(BOB, {"request": "accept"}, ANSWER, tx="a"))
    assert e.handle == BOB and e.transaction == "a"
    assert e.data["error_code"] == 483 and e.data["error"] == "Error parsing answer: no codec in common"
    assert call.phase == "ringing"


# --- set -----------------------------------------------------------------------------------


async def test_set_without_call_succeeds(h: Harness) -> None:
    await h.users((ALICE, "alice"))
    (e,) = events(await h.msg(ALICE, {"request": "set", "bitrate": 128000}))
    assert result(e) == {"event": "set"}


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"request": "set", "audio": "yes"}, "Invalid element type (audio should be a boolean)"),
        ({"request": "set", "video": 1}, "Invalid element type (video should be a boolean)"),
        ({"request": "set", "bitrate": -1}, "Invalid element type (bitrate should be a positive integer)"),
        ({"request": "set", "bitrate": 1.5}, "Invalid element type (bitrate should be a positive integer)"),
        ({"request": "set", "bitrate": True}, "Invalid element type (bitrate should be a positive integer)"),
        ({"request": "set", "record": "no"}, "Invalid element type (record should be a boolean)"),
        ({"request": "set", "filename": 3}, "Invalid element type (filename should be a string)"),
        ({"request": "set", "restart": 0}, "Invalid element type (restart should be a boolean)"),
        ({"request": "set", "substream": 7}, "Invalid value (substream should be 0, 1 or 2)"),
        ({"request": "set", "temporal": -1}, "Invalid value (temporal should be 0, 1 or 2)"),
        ({"request": "set", "fallback": -5}, "Invalid value (fallback should be a positive integer)"),
        ({"request": "set", "substream": 3}, "Invalid value (substream should be 0, 1 or 2)"),
        ({"request": "set", "substream": "1"}, "Invalid value (substream should be 0, 1 or 2)"),
        ({"request": "set", "substream": True}, "Invalid value (substream should be 0, 1 or 2)"),
        ({"request": "set", "substream": 1.0}, "Invalid value (substream should be 0, 1 or 2)"),
        ({"request": "set", "temporal": 3}, "Invalid value (temporal should be 0, 1 or 2)"),
        ({"request": "set", "temporal": None, "substream": -1}, "Invalid value (substream should be 0, 1 or 2)"),
        ({"request": "set", "fallback": "250000"}, "Invalid value (fallback should be a positive integer)"),
        ({"request": "set", "fallback": 2**32}, "Invalid value (fallback should be at most 4294967295)"),
        ({"request": "set", "auto": 1}, "Invalid element type (auto should be a boolean)"),
        ({"request": "set", "auto": "true"}, "Invalid element type (auto should be a boolean)"),
        # Janus's table is checked first, then substream, temporal, fallback (then our auto).
        ({"request": "set", "audio": 1, "substream": 9}, "Invalid element type (audio should be a boolean)"),
        ({"request": "set", "temporal": 9, "substream": 9}, "Invalid value (substream should be 0, 1 or 2)"),
        ({"request": "set", "fallback": -1, "temporal": 9}, "Invalid value (temporal should be 0, 1 or 2)"),
        ({"request": "set", "auto": 0, "fallback": -1}, "Invalid value (fallback should be a positive integer)"),
    ],
)
async def test_set_validation(h: Harness, body: dict[str, Any], text: str) -> None:
    await h.users((ALICE, "alice"))
    assert_error(await h.msg(ALICE, body), 474, text)


async def test_set_in_call_configures_own_leg(h: Harness) -> None:
    await h.connect()
    effects = await h.msg(BOB, {"request": "set", "video": False, "bitrate": 256000})
    (conf,) = relayed(effects, m.LegConfigure)
    assert (conf.leg, conf.audio, conf.video, conf.bitrate) == ("callee", None, False, 256000)
    assert result(events(effects, BOB)[0]) == {"event": "set"}


async def test_set_before_call_applies_when_call_starts(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    await h.msg(ALICE, {"request": "set", "audio": False})
    effects = await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    (conf,) = relayed(effects, m.LegConfigure)
    assert (conf.leg, conf.audio, conf.video, conf.bitrate) == ("caller", False, True, 0)


async def test_a_refused_simulcast_value_changes_nothing(h: Harness) -> None:
    await h.connect()
    before = len(await h.relay_requests())
    assert_error(await h.msg(BOB, {"request": "set", "video": False, "substream": 5}), 474,
                 "Invalid value (substream should be 0, 1 or 2)")
    assert len(await h.relay_requests()) == before
    assert h.vc.handles[BOB].controls.video is True and h.vc.handles[BOB].controls.substream is None


async def test_set_substream_temporal_fallback_auto_reach_the_receivers_leg(h: Harness) -> None:
    """What a user receives of its simulcasting peer: the worker gets it on that user's leg."""
    await h.connect()
    effects = await h.msg(BOB, {"request": "set", "substream": 0, "temporal": 1, "fallback": 500000})
    (conf,) = relayed(effects, m.LegConfigure)
    assert (conf.leg, conf.substream, conf.temporal, conf.fallback, conf.auto) == ("callee", 0, 1, 500000, None)
    assert (conf.audio, conf.video, conf.bitrate) == (None, None, None)
    assert [result(e) for e in events(effects, BOB)] == [{"event": "set"}]
    effects = await h.msg(BOB, {"request": "set", "auto": True})
    (conf,) = relayed(effects, m.LegConfigure)
    assert (conf.substream, conf.temporal, conf.fallback, conf.auto) == (None, None, None, True)
    effects = await h.msg(ALICE, {"request": "set", "temporal": 0})  # the caller may ask too (nothing to pick)
    (conf,) = relayed(effects, m.LegConfigure)
    assert (conf.leg, conf.temporal) == ("caller", 0)


async def test_simulcast_settings_made_before_the_call_go_with_the_accept(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    await h.msg(BOB, {"request": "set", "substream": 1, "auto": False})
    assert relayed(await h.relay_requests(), m.LegConfigure) == []
    effects = await h.msg(BOB, {"request": "accept"}, ANSWER)
    (conf,) = relayed(effects, m.LegConfigure)
    assert (conf.leg, conf.substream, conf.temporal, conf.fallback, conf.auto) == ("callee", 1, None, None, False)


async def test_the_jseps_rid_order_goes_with_the_offer_to_the_worker(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    effects = await h.msg(ALICE, {"request": "call", "username": "bob"}, {**OFFER, "rid_order": "lmh"})
    (create,) = relayed(effects, m.CallCreate)
    assert create.rid_order == "lmh"
    await h.msg(BOB, {"request": "accept"}, ANSWER)
    effects = await h.msg(ALICE, {"request": "set"}, OFFER)  # no rid_order: Janus's default
    (renegotiate,) = relayed(effects, m.LegRenegotiate)
    assert renegotiate.rid_order == "hml"


async def test_a_worker_layer_change_is_janus_simulcast_event_to_the_receiver(h: Harness) -> None:
    call = await h.connect()
    (e,) = h.vc.leg_simulcast(call.call_id, "callee", "vp8", 1, None)
    assert e.handle == BOB and e.transaction is None
    assert e.data == {"videocall": "event", "result": {"event": "simulcast", "videocodec": "vp8", "substream": 1}}
    assert list(e.data["result"]) == ["event", "videocodec", "substream"]  # Janus's key order
    (e,) = h.vc.leg_simulcast(call.call_id, "callee", "h264", None, 0)
    assert e.data == {"videocall": "event", "result": {"event": "simulcast", "videocodec": "h264", "temporal": 0}}
    assert h.vc.leg_simulcast("unknown", "callee", "vp8", 1, None) == []
    assert h.vc.leg_simulcast(call.call_id, "callee", "vp8", None, None) == []


async def test_the_runner_delivers_a_workers_leg_simulcast_notification(h: Harness) -> None:
    call = await h.connect()
    h.runner.on_relay_notification(m.LegSimulcast(call_id=call.call_id, leg="callee", videocodec="vp9", substream=2))
    await h.runner.drain()
    assert h.delivered[-1] == Event(BOB, {"videocall": "event", "result": {
        "event": "simulcast", "videocodec": "vp9", "substream": 2}}, None)


async def test_set_with_offer_goes_to_peer_as_update(h: Harness) -> None:
    call = await h.connect()
    h.relay.renegotiated_sdp = "mirrored-offer"
    effects = await h.msg(ALICE, {"request": "set"}, OFFER, tx="s1")
    (reneg,) = relayed(effects, m.LegRenegotiate)
    assert (reneg.call_id, reneg.leg, reneg.sdp_type, reneg.restart) == (call.call_id, "caller", "offer", False)
    (done,) = events(effects, ALICE)
    assert result(done) == {"event": "set"} and done.transaction == "s1"
    (update,) = events(effects, BOB)
    assert result(update) == {"event": "update"} and update.jsep == {"type": "offer", "sdp": "mirrored-offer"}
    assert update.transaction is None
    # bob answers: his answer reaches alice the same way
    h.relay.renegotiated_sdp = "answer-for-alice"
    effects = await h.msg(BOB, {"request": "set"}, ANSWER, tx="s2")
    (reneg,) = relayed(effects, m.LegRenegotiate)
    assert (reneg.leg, reneg.sdp_type) == ("callee", "answer")
    assert result(events(effects, BOB)[0]) == {"event": "set"}
    (update,) = events(effects, ALICE)
    assert update.jsep == {"type": "answer", "sdp": "answer-for-alice"}


async def test_set_with_unexpected_answer_is_refused(h: Harness) -> None:
    await h.connect()
    assert_error(await h.msg(ALICE, {"request": "set"}, ANSWER), 483, "Error parsing answer: no renegotiation offer to answer")


# --- set: record ---------------------------------------------------------------------------


async def test_set_record_in_call_asks_the_worker_then_answers_set(h: Harness) -> None:
    call = await h.connect()
    h.relay.requests.clear()
    effects = await h.msg(ALICE, {"request": "set", "record": True, "filename": "calls/alice-1"}, tx="r1")
    (record,) = [e.request for e in of_type(effects, Relay)]
    assert record == m.LegRecord(call_id=call.call_id, leg="caller", record=True, base="calls/alice-1",
                                 user="alice", peer="bob")
    (e,) = events(effects)
    assert result(e) == {"event": "set"} and e.transaction == "r1"  # as Janus answers any set
    effects = await h.msg(ALICE, {"request": "set", "record": False}, tx="r2")
    assert [e.request for e in of_type(effects, Relay)] == [record.model_copy(update={"record": False, "base": None})]
    assert result(events(effects)[0]) == {"event": "set"}


async def test_filename_names_only_the_recording_its_request_starts(h: Harness) -> None:
    """As Janus: recording again without ``filename`` gets a default name, not the last
    one (whose files would be overwritten); a ``filename`` without ``record`` is ignored."""
    await h.connect()
    await h.msg(ALICE, {"request": "set", "record": True, "filename": "first"})
    await h.msg(ALICE, {"request": "set", "record": False})
    await h.msg(ALICE, {"request": "set", "filename": "ignored"})
    h.relay.requests.clear()
    effects = await h.msg(ALICE, {"request": "set", "record": True})
    (record,) = [e.request for e in of_type(effects, Relay)]
    assert isinstance(record, m.LegRecord) and (record.record, record.base) == (True, None)


async def test_record_without_filename_leaves_the_name_to_the_worker(h: Harness) -> None:
    await h.connect()
    effects = await h.msg(BOB, {"request": "set", "record": True})
    (record,) = [e.request for e in of_type(effects, Relay)]
    assert isinstance(record, m.LegRecord)
    assert (record.leg, record.base, record.user, record.peer) == ("callee", None, "bob", "alice")


@pytest.mark.parametrize("filename", [
    "/etc/passwd", "../outside", "a/../../b", "a//b", "./a", "x\x00y", "tab\tname", "a" * 201, "", "a\\b",
])
async def test_hostile_filename_is_refused_before_anything_changes(h: Harness, filename: str) -> None:
    await h.connect()
    h.relay.requests.clear()
    effects = await h.msg(ALICE, {"request": "set", "record": True, "filename": filename, "audio": False})
    (e,) = events(effects)
    assert e.data["error_code"] == 474 and e.data["error"].startswith("Invalid value (filename should ")
    assert of_type(effects, Relay) == [] and await h.relay_requests() == []
    assert h.vc.handles[ALICE].controls == vc.Controls()  # the whole set was refused


async def test_worker_refusing_to_record_is_an_error_for_that_set(h: Harness) -> None:
    await h.connect()
    h.relay.refuse[m.LegRecord] = "the recordings folder is not writable: permission denied"
    effects = await h.msg(ALICE, {"request": "set", "record": True}, tx="r")
    assert_error(effects, 499, "Recording failed: the recordings folder is not writable: permission denied", tx="r")
    assert h.vc.handles[ALICE].controls.record is False


async def test_record_asked_before_the_call_starts_with_the_call(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    (e,) = events(await h.msg(ALICE, {"request": "set", "record": True, "filename": "early"}))
    assert result(e) == {"event": "set"}
    await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    records = [r for r in await h.relay_requests() if isinstance(r, m.LegRecord)]
    assert [(r.leg, r.record, r.base) for r in records] == [("caller", True, "early")]


async def test_a_recording_the_worker_ends_is_told_to_its_user(h: Harness) -> None:
    call = await h.connect()
    await h.msg(ALICE, {"request": "set", "record": True})
    h.delivered.clear()
    await h.run(h.vc.leg_recording(call.call_id, "caller", True, "no space left on device"))
    (e,) = events(h.delivered)
    assert e.handle == ALICE and e.transaction is None
    assert e.data == {"videocall": "event", "error_code": 499, "error": "Recording failed: no space left on device"}
    assert h.vc.handles[ALICE].controls.record is False
    assert await h.run(h.vc.leg_recording(call.call_id, "caller", False, "")) == []  # started/stopped: quiet


# --- hangup --------------------------------------------------------------------------------


async def test_hangup_without_call_still_succeeds(h: Harness) -> None:
    await h.users((ALICE, "alice"))
    (e,) = events(await h.msg(ALICE, {"request": "hangup"}))
    assert result(e) == {"event": "hangup", "username": "alice", "reason": "Explicit hangup"}


async def test_hangup_unregistered_has_no_username(h: Harness) -> None:
    await h.users((ALICE, ""))
    (e,) = events(await h.msg(ALICE, {"request": "hangup"}))
    assert result(e) == {"event": "hangup", "reason": "Explicit hangup"}


async def test_explicit_hangup_with_reason_reaches_peer(h: Harness) -> None:
    call = await h.connect()
    effects = await h.msg(ALICE, {"request": "hangup", "reason": "bye now"}, tx="h")
    mine, theirs = events(effects, ALICE), events(effects, BOB)
    assert [result(e) for e in mine] == [{"event": "hangup", "username": "alice", "reason": "Explicit hangup"}]
    assert [result(e) for e in theirs] == [{"event": "hangup", "username": "alice", "reason": "bye now"}]
    assert set(of_type(effects, CoreHangup)) == {CoreHangup(ALICE), CoreHangup(BOB)}
    assert relayed(effects, m.CallHangup)[0].call_id == call.call_id
    assert h.vc.calls == {} and h.vc.handles[ALICE].call is None and h.vc.handles[BOB].call is None


async def test_hangup_reason_not_a_string_uses_default(h: Harness) -> None:
    await h.connect()
    effects = await h.msg(BOB, {"request": "hangup", "reason": 42})
    assert result(events(effects, ALICE)[0])["reason"] == "We did the hangup"


async def test_decline_ringing_call(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    effects = await h.msg(BOB, {"request": "hangup"})
    assert result(events(effects, ALICE)[0]) == {"event": "hangup", "username": "bob", "reason": "We did the hangup"}
    # bob never had a PeerConnection: no core hangup for him
    assert of_type(effects, CoreHangup) == [CoreHangup(ALICE)]


async def test_can_call_again_after_hangup(h: Harness) -> None:
    await h.connect()
    await h.msg(ALICE, {"request": "hangup"})
    effects = await h.msg(BOB, {"request": "call", "username": "alice"}, OFFER)
    assert result(events(effects, ALICE)[0]) == {"event": "incomingcall", "username": "bob"}


# --- hangups without a request -------------------------------------------------------------


async def test_detach_mid_call_tells_peer_and_frees_name(h: Harness) -> None:
    await h.connect()
    effects = await h.run(h.vc.detach(BOB))
    (e,) = events(effects)
    assert e.handle == ALICE
    assert result(e) == {"event": "hangup", "username": "bob", "reason": "Remote WebRTC hangup"}
    assert set(of_type(effects, CoreHangup)) == {CoreHangup(BOB, "Detach"), CoreHangup(ALICE)}
    assert await h.registered() == {"alice": owner_id(NODE, ALICE)}
    assert h.vc.handles[ALICE].call is None


async def test_core_hangup_request_closes_own_pc(h: Harness) -> None:
    await h.connect()
    effects = await h.run(h.vc.pc_closed(ALICE))
    assert CoreHangup(ALICE, "Janus API") in effects and CoreHangup(BOB) in effects
    assert result(events(effects, BOB)[0])["reason"] == "Remote WebRTC hangup"


async def test_leg_failure_ends_call_with_reason(h: Harness) -> None:
    call = await h.connect()
    effects = await h.run(h.vc.leg_state(call.call_id, "callee", False, "ICE failed"))
    assert CoreHangup(BOB, "ICE failed") in effects
    (e,) = events(effects)
    assert e.handle == ALICE and result(e)["reason"] == "Remote WebRTC hangup" and result(e)["username"] == "bob"


async def test_leg_connected_is_webrtcup_and_media_is_forwarded(h: Harness) -> None:
    call = await h.connect()
    assert h.vc.leg_state(call.call_id, "caller", True, "") == [Webrtcup(ALICE)]
    assert h.vc.leg_media(call.call_id, "callee", "video", "1", True) == [Media(BOB, "1", "video", True)]
    assert h.vc.leg_state("unknown", "caller", True, "") == []


async def test_relay_lost_hangs_up_both(h: Harness) -> None:
    call = await h.connect()
    effects = await h.run(h.vc.relay_lost([call.call_id]))
    assert {e.handle for e in events(effects)} == {ALICE, BOB}
    assert all(result(e)["reason"] == "Remote WebRTC hangup" for e in events(effects))


async def test_end_all_hangs_up_every_call_for_both_with_the_reason(h: Harness) -> None:
    call = await h.connect()
    effects = await h.run(h.vc.end_all("Server shutting down"))
    assert [(e.handle, result(e)) for e in events(effects)] == [
        (ALICE, {"event": "hangup", "username": "bob", "reason": "Server shutting down"}),
        (BOB, {"event": "hangup", "username": "alice", "reason": "Server shutting down"}),
    ]
    assert {e.handle for e in effects if isinstance(e, CoreHangup)} == {ALICE, BOB}
    assert m.CallHangup(call_id=call.call_id, reason="Server shutting down") in await h.relay_requests()
    assert h.vc.calls == {} and await h.run(h.vc.end_all("again")) == []


async def test_detach_during_setup_makes_relay_forget_the_call(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    h.delivered.clear()
    h.relay.hold = asyncio.Event()
    h.runner.message(ALICE, {"request": "call", "username": "bob"}, OFFER, "c")
    while not h.relay.requests:  # the worker is preparing the call
        await asyncio.sleep(0)
    (create,) = h.relay.requests
    assert isinstance(create, m.CallCreate)
    await h.runner.detach(BOB)
    h.relay.hold.set()
    requests = await h.relay_requests()
    assert requests[-1] == m.CallHangup(call_id=create.call_id, reason="Call ended during setup")
    assert h.vc.calls == {} and h.vc.handles[ALICE].call is None
    (hangup,) = events(h.delivered)  # alice's; never "calling"
    assert hangup.handle == ALICE and result(hangup)["event"] == "hangup"
    assert hangup.transaction == "c"  # her `call` is answered by the hangup that ended it


async def test_accept_waiting_for_the_relay_is_answered_by_the_callers_hangup(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER, "c")
    h.relay.hold_accept = asyncio.Event()
    h.delivered.clear()
    h.runner.message(BOB, {"request": "accept"}, ANSWER, "a")
    while not any(isinstance(r, m.CallAccept) for r in h.relay.requests):
        await asyncio.sleep(0)
    await h.msg(ALICE, {"request": "hangup"}, tx="h")
    h.relay.hold_accept.set()
    await h.runner.drain()
    (bob_hangup,) = events(h.delivered, BOB)
    assert result(bob_hangup) == {"event": "hangup", "username": "alice", "reason": "We did the hangup"}
    assert bob_hangup.transaction == "a"  # never "accepted" afterwards, and never unanswered


async def test_caller_closing_its_pc_while_the_relay_prepares_gets_its_call_answered(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    h.relay.hold = asyncio.Event()
    h.delivered.clear()
    h.runner.message(ALICE, {"request": "call", "username": "bob"}, OFFER, "c")
    while not h.relay.requests:
        await asyncio.sleep(0)
    await h.runner.pc_closed(ALICE)
    h.relay.hold.set()
    await h.runner.drain()
    answer, core = [e for e in h.delivered if e.handle == ALICE]
    assert isinstance(answer, Event) and answer.transaction == "c"
    assert result(answer) == {"event": "hangup", "username": "bob", "reason": "Janus API"}
    assert core == CoreHangup(ALICE, "Janus API")


async def test_callee_never_rung_is_not_told_of_a_call_that_ended_during_setup(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    h.relay.hold = asyncio.Event()
    h.delivered.clear()
    h.runner.message(ALICE, {"request": "call", "username": "bob"}, OFFER, "c")
    while not h.relay.requests:  # the worker is preparing the call: bob has not been rung
        await asyncio.sleep(0)
    await h.runner.pc_closed(ALICE)
    h.relay.hold.set()
    await h.runner.drain()
    assert [e for e in h.delivered if e.handle == BOB] == []
    assert h.vc.handles[BOB].call is None  # and bob can be called again


async def test_claim_after_detach_gives_name_back(h: Harness) -> None:
    h.runner.attach(ALICE)
    (_claim,) = h.vc.message(ALICE, {"request": "register", "username": "alice"}, None, "r")
    assert await h.registry.claim("alice", owner_id(NODE, ALICE))  # the claim won meanwhile
    await h.runner.detach(ALICE)
    assert await h.run(h.vc.claimed(ALICE, "alice", True, "r")) == [Release("alice", ALICE)]
    assert await h.registered() == {}


async def test_a_call_ringing_past_ring_timeout_ends_for_both(h: Harness) -> None:
    h.vc.ring_timeout = 0.05
    await h.users((ALICE, "alice"), (BOB, "bob"))
    effects = await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    (timer,) = of_type(effects, RingTimeout)
    assert timer.seconds == 0.05
    h.delivered.clear()
    await asyncio.sleep(0.2)
    await h.runner.drain()
    assert [(e.handle, result(e)) for e in events(h.delivered)] == [
        (ALICE, {"event": "hangup", "username": "bob", "reason": "No answer"}),
        (BOB, {"event": "hangup", "username": "alice", "reason": "No answer"}),
    ]
    assert of_type(h.delivered, CoreHangup) == [CoreHangup(ALICE)]  # bob never had a PeerConnection
    assert h.vc.calls == {}
    assert (await h.relay_requests())[-1] == m.CallHangup(call_id=timer.call_id, reason="No answer")


async def test_an_answered_call_outlives_ring_timeout(h: Harness) -> None:
    h.vc.ring_timeout = 0.05
    call = await h.connect()
    h.delivered.clear()
    await asyncio.sleep(0.2)
    await h.runner.drain()
    assert h.delivered == [] and h.vc.calls == {call.call_id: call}
    assert h.vc.ring_expired(call.call_id) == []


async def test_ring_timeout_zero_rings_for_ever_as_janus(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    assert of_type(await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER), RingTimeout) == []


# --- trickle -------------------------------------------------------------------------------


async def test_trickle_before_call_is_kept_bounded_and_flushed(h: Harness) -> None:
    await h.users((ALICE, "alice"), (BOB, "bob"))
    cands = [m.IceCandidate(candidate=f"candidate:{i} 1 udp 1 127.0.0.1 {i} typ host", sdpMid="0") for i in range(10)]
    assert await h.run(h.vc.trickle(ALICE, cands, False)) == []
    assert len(h.vc.handles[ALICE].pending_trickles) == 4
    effects = await h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    (trickle,) = relayed(effects, m.LegTrickle)
    assert trickle.leg == "caller" and trickle.candidates == cands[:4] and not trickle.completed
    assert h.vc.handles[ALICE].pending_trickles == []


async def test_trickle_in_call_goes_to_leg(h: Harness) -> None:
    call = await h.connect()
    (t,) = await h.run(h.vc.trickle(BOB, [m.IceCandidate(candidate="c")], True))
    sent = m.LegTrickle(call_id=call.call_id, leg="callee", candidates=[m.IceCandidate(candidate="c")], completed=True)
    assert t == Relay(sent)
    assert (await h.relay_requests())[-1] == sent


async def test_refused_call_drops_early_trickles(h: Harness) -> None:
    await h.users((ALICE, "alice"))
    await h.run(h.vc.trickle(ALICE, [m.IceCandidate(candidate="c")], True))
    await h.msg(ALICE, {"request": "call", "username": "nobody"}, OFFER)
    assert h.vc.handles[ALICE].pending_trickles == [] and not h.vc.handles[ALICE].pending_completed
