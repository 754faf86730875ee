"""The VideoCall state machine, driven directly: no sockets, no tasks, microseconds each.

Each test feeds requests and the outcomes of registry/relay commands, and checks the
effects against what real Janus sends (../shared/janus/traces/videocall-session.jsonl).
"""

from __future__ import annotations

from typing import Any

import pytest

from signaling import videocall as vc

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\n"}
ALICE, BOB, CAROL = 1, 2, 3


def events(effects: list[vc.Effect], handle: int | None = None) -> list[vc.Event]:
    return [e for e in effects if isinstance(e, vc.Event) and (handle is None or e.handle == handle)]


def result(effect: vc.Event) -> dict[str, Any]:
    assert "result" in effect.data, effect.data
    return effect.data["result"]


def assert_error(effects: list[vc.Effect], code: int, text: str, tx: str = "t") -> None:
    (event,) = events(effects)
    assert event.data == {"videocall": "event", "error_code": code, "error": text}
    assert event.transaction == tx


def of_type(effects: list[vc.Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


class Harness:
    """The state machine plus a toy registry and relay that answer every command."""

    def __init__(self) -> None:
        self.vc = vc.VideoCall(max_pending_trickles=4)
        self.registry: dict[str, int] = {}
        self.relay_refuses: str | None = None
        self.relay_log: list[vc.Effect] = []

    def run(self, effects: list[vc.Effect]) -> list[vc.Effect]:
        """Carry out registry/relay commands as the adapter would; return every effect."""
        out: list[vc.Effect] = []
        queue = list(effects)
        while queue:
            e = queue.pop(0)
            out.append(e)
            if isinstance(e, vc.Claim):
                ok = self.registry.setdefault(e.name, e.handle) == e.handle
                queue[:0] = self.vc.claimed(e.handle, e.name, ok, e.transaction)
            elif isinstance(e, vc.Release):
                if self.registry.get(e.name) == e.handle:
                    del self.registry[e.name]
            elif isinstance(e, vc.Lookup):
                queue[:0] = self.vc.looked_up(e.handle, e.name, self.registry.get(e.name), e.transaction, e.jsep)
            elif isinstance(e, vc.RelayCreate):
                self.relay_log.append(e)
                if self.relay_refuses:
                    queue[:0] = self.vc.call_created(e.call_id, None, self.relay_refuses)
                else:
                    queue[:0] = self.vc.call_created(e.call_id, "relay-offer-for-callee", None)
            elif isinstance(e, vc.RelayAccept):
                self.relay_log.append(e)
                queue[:0] = self.vc.call_accepted(e.call_id, "relay-answer-for-caller", None)
            elif isinstance(e, (vc.RelayTrickle, vc.RelayConfigure, vc.RelayHangup)):
                self.relay_log.append(e)
        return out

    def msg(self, handle: int, body: Any, jsep: dict[str, Any] | None = None, tx: str = "t") -> list[vc.Effect]:
        return self.run(self.vc.message(handle, body, jsep, tx))

    def users(self, *handles_names: tuple[int, str]) -> None:
        for handle, name in handles_names:
            self.vc.attach(handle)
            if name:
                self.msg(handle, {"request": "register", "username": name})

    def connect(self) -> vc.Call:
        self.users((ALICE, "alice"), (BOB, "bob"))
        self.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
        self.msg(BOB, {"request": "accept"}, ANSWER)
        call = self.vc.handles[ALICE].call
        assert call is not None and call.phase == "active"
        return call


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- list and register ---------------------------------------------------------------------


def test_list_empty_then_registered_names(h: Harness) -> None:
    h.users((ALICE, ""))
    (e,) = events(h.msg(ALICE, {"request": "list"}))
    assert result(e) == {"list": []} and e.transaction == "t"
    h.users((BOB, "bob"), (CAROL, "carol"))
    assert result(events(h.msg(ALICE, {"request": "LIST"}))[0]) == {"list": ["bob", "carol"]}


def test_register_result_and_name_in_registry(h: Harness) -> None:
    h.vc.attach(ALICE)
    effects = h.msg(ALICE, {"request": "register", "username": "alice"}, tx="r1")
    (e,) = events(effects)
    assert result(e) == {"event": "registered", "username": "alice"} and e.transaction == "r1"
    assert h.registry == {"alice": ALICE}


def test_register_twice_is_already_registered(h: Harness) -> None:
    h.users((ALICE, "alice"))
    assert_error(h.msg(ALICE, {"request": "register", "username": "alice2"}), 477, "Already registered (alice)")


def test_register_taken_name(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, ""))
    assert_error(h.msg(BOB, {"request": "register", "username": "alice"}), 476, "Username 'alice' already taken")


def test_register_claim_lost_in_registry_is_taken(h: Harness) -> None:
    h.vc.attach(BOB)
    h.registry["alice"] = 99  # held elsewhere (another node)
    assert_error(h.msg(BOB, {"request": "register", "username": "alice"}), 476, "Username 'alice' already taken")


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        ({"request": "register"}, 475, "Missing mandatory element (username)"),
        ({"request": "register", "username": 42}, 474, "Invalid element type (username should be a string)"),
        ({"request": "register", "username": ""}, 474, "Invalid element type (username should be a non-empty string)"),
        ({"request": "register", "username": "x" * 129}, 474, "Invalid value (username should be at most 128 characters)"),
    ],
)
def test_register_validation(h: Harness, body: dict[str, Any], code: int, text: str) -> None:
    h.vc.attach(BOB)
    assert_error(h.msg(BOB, body), code, text)
    assert h.registry == {}


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
def test_request_errors(h: Harness, body: Any, code: int, text: str) -> None:
    h.vc.attach(ALICE)
    assert_error(h.msg(ALICE, body), code, text)


def test_message_for_unknown_handle_does_nothing(h: Harness) -> None:
    assert h.msg(77, {"request": "list"}) == []


# --- call ----------------------------------------------------------------------------------


def test_call_before_register(h: Harness) -> None:
    h.users((ALICE, ""), (BOB, "bob"))
    effects = h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    assert_error(effects, 473, "Register a username first")
    assert of_type(effects, vc.CoreHangup) == [vc.CoreHangup(ALICE)]


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
def test_call_errors(h: Harness, body: dict[str, Any], jsep: Any, code: int, text: str) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    effects = h.msg(ALICE, body, jsep)
    assert_error(effects, code, text)
    # Janus closes the caller's PeerConnection when it refuses a call that carried an offer
    closes = code in (473, 474, 475, 478, 479) and jsep is not None
    assert of_type(effects, vc.CoreHangup) == ([vc.CoreHangup(ALICE, "Close PC")] if closes else [])
    assert h.vc.handles[ALICE].call is None and h.vc.handles[BOB].call is None
    assert h.relay_log == []


def test_call_rings_callee_with_relay_offer(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    effects = h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER, tx="c1")
    (create,) = of_type(effects, vc.RelayCreate)
    assert create.caller_offer == OFFER["sdp"]
    (incoming,) = events(effects, BOB)
    assert result(incoming) == {"event": "incomingcall", "username": "alice"}
    assert incoming.transaction is None
    assert incoming.jsep == {"type": "offer", "sdp": "relay-offer-for-callee"}
    (calling,) = events(effects, ALICE)
    assert result(calling) == {"event": "calling"} and calling.transaction == "c1"
    assert h.vc.handles[BOB].call is h.vc.handles[ALICE].call


def test_call_refused_by_relay_is_483_and_frees_both(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    h.relay_refuses = "no codec in common"
    effects = h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    (e,) = events(effects)
    assert e.data["error_code"] == 483 and e.data["error"] == "Error parsing offer: no codec in common"
    assert of_type(effects, vc.CoreHangup) == [vc.CoreHangup(ALICE, "Close PC")]
    assert h.vc.handles[ALICE].call is None and h.vc.handles[BOB].call is None


def test_call_with_no_worker_is_499(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    h.relay_refuses = "relay unavailable: no relay worker is connected"
    (e,) = events(h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER))
    assert e.data["error_code"] == 499
    assert "relay unavailable" in e.data["error"]


def test_call_busy_user_gets_user_busy_hangup(h: Harness) -> None:
    h.connect()
    h.users((CAROL, "carol"))
    effects = h.msg(CAROL, {"request": "call", "username": "alice"}, OFFER, tx="b")
    (e,) = events(effects)
    assert result(e) == {"event": "hangup", "username": "carol", "reason": "User busy"}
    assert e.transaction == "b"
    assert of_type(effects, vc.CoreHangup) == [vc.CoreHangup(CAROL, "Close PC")]
    assert h.vc.handles[ALICE].call is not None and h.vc.handles[CAROL].call is None


def test_callee_ringing_is_busy_too(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"))
    h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    (e,) = events(h.msg(CAROL, {"request": "call", "username": "bob"}, OFFER))
    assert result(e)["reason"] == "User busy"


def test_call_while_in_call_is_480_and_keeps_the_call(h: Harness) -> None:
    call = h.connect()
    h.users((CAROL, "carol"))
    effects = h.msg(ALICE, {"request": "call", "username": "carol"}, OFFER)
    assert_error(effects, 480, "Already in a call")
    assert of_type(effects, vc.CoreHangup) == []  # the call in progress keeps its PeerConnection
    assert h.vc.handles[ALICE].call is call and call.phase == "active"
    # the callee of a ringing call cannot call either
    h2 = Harness()
    h2.users((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"))
    h2.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    assert_error(h2.msg(BOB, {"request": "call", "username": "carol"}, OFFER), 480, "Already in a call")


# --- accept --------------------------------------------------------------------------------


def test_accept_without_call(h: Harness) -> None:
    h.users((BOB, "bob"))
    assert_error(h.msg(BOB, {"request": "accept"}, ANSWER), 481, "No incoming call to accept")


def test_caller_cannot_accept_own_call(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    assert_error(h.msg(ALICE, {"request": "accept"}, ANSWER), 481, "No incoming call to accept")


@pytest.mark.parametrize(
    ("jsep", "code", "text"),
    [(None, 482, "Missing SDP"), (OFFER, 483, "Error parsing answer: not an answer")],
)
def test_accept_sdp_errors(h: Harness, jsep: Any, code: int, text: str) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    assert_error(h.msg(BOB, {"request": "accept"}, jsep), code, text)
    assert h.vc.handles[BOB].call is not None and h.vc.handles[BOB].call.phase == "ringing"


def test_accept_sends_relay_answer_to_caller(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    effects = h.msg(BOB, {"request": "accept"}, ANSWER, tx="a1")
    (accept,) = of_type(effects, vc.RelayAccept)
    assert accept.callee_answer == ANSWER["sdp"]
    (to_bob,) = events(effects, BOB)
    assert result(to_bob) == {"event": "accepted"} and to_bob.transaction == "a1"
    (to_alice,) = events(effects, ALICE)
    assert result(to_alice) == {"event": "accepted", "username": "bob"}
    assert to_alice.transaction is None
    assert to_alice.jsep == {"type": "answer", "sdp": "relay-answer-for-caller"}


def test_accept_refused_by_relay_keeps_ringing(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    call = h.vc.handles[BOB].call
    assert call is not None
    h.vc.message(BOB, {"request": "accept"}, ANSWER, "a")
    (e,) = events(h.vc.call_accepted(call.call_id, None, "no codec in common"))
    assert e.data["error_code"] == 483 and e.data["error"] == "Error parsing answer: no codec in common"
    assert call.phase == "ringing"


# --- set -----------------------------------------------------------------------------------


def test_set_without_call_succeeds(h: Harness) -> None:
    h.users((ALICE, "alice"))
    (e,) = events(h.msg(ALICE, {"request": "set", "bitrate": 128000}))
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
    ],
)
def test_set_validation(h: Harness, body: dict[str, Any], text: str) -> None:
    h.users((ALICE, "alice"))
    assert_error(h.msg(ALICE, body), 474, text)


def test_set_in_call_configures_own_leg(h: Harness) -> None:
    h.connect()
    effects = h.msg(BOB, {"request": "set", "video": False, "bitrate": 256000})
    (conf,) = of_type(effects, vc.RelayConfigure)
    assert (conf.leg, conf.audio, conf.video, conf.bitrate) == ("callee", None, False, 256000)
    assert result(events(effects, BOB)[0]) == {"event": "set"}


def test_set_before_call_applies_when_call_starts(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    h.msg(ALICE, {"request": "set", "audio": False})
    effects = h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    (conf,) = of_type(effects, vc.RelayConfigure)
    assert (conf.leg, conf.audio, conf.video, conf.bitrate) == ("caller", False, True, 0)


def test_set_with_offer_goes_to_peer_as_update(h: Harness) -> None:
    call = h.connect()
    effects = h.vc.message(ALICE, {"request": "set"}, OFFER, "s1")
    (reneg,) = of_type(effects, vc.RelayRenegotiate)
    assert (reneg.leg, reneg.sdp_type, reneg.restart) == ("caller", "offer", False)
    effects = h.vc.renegotiated(call.call_id, "caller", "offer", "mirrored-offer", None, "s1")
    assert result(events(effects, ALICE)[0]) == {"event": "set"}
    (update,) = events(effects, BOB)
    assert result(update) == {"event": "update"} and update.jsep == {"type": "offer", "sdp": "mirrored-offer"}
    # bob answers: his answer reaches alice the same way
    effects = h.vc.message(BOB, {"request": "set"}, ANSWER, "s2")
    (reneg,) = of_type(effects, vc.RelayRenegotiate)
    assert (reneg.leg, reneg.sdp_type) == ("callee", "answer")
    effects = h.vc.renegotiated(call.call_id, "callee", "answer", "answer-for-alice", None, "s2")
    (update,) = events(effects, ALICE)
    assert update.jsep == {"type": "answer", "sdp": "answer-for-alice"}


def test_set_with_unexpected_answer_is_refused(h: Harness) -> None:
    h.connect()
    assert_error(h.msg(ALICE, {"request": "set"}, ANSWER), 483, "Error parsing answer: no renegotiation offer to answer")


# --- hangup --------------------------------------------------------------------------------


def test_hangup_without_call_still_succeeds(h: Harness) -> None:
    h.users((ALICE, "alice"))
    (e,) = events(h.msg(ALICE, {"request": "hangup"}))
    assert result(e) == {"event": "hangup", "username": "alice", "reason": "Explicit hangup"}


def test_hangup_unregistered_has_no_username(h: Harness) -> None:
    h.users((ALICE, ""))
    (e,) = events(h.msg(ALICE, {"request": "hangup"}))
    assert result(e) == {"event": "hangup", "reason": "Explicit hangup"}


def test_explicit_hangup_with_reason_reaches_peer(h: Harness) -> None:
    call = h.connect()
    effects = h.msg(ALICE, {"request": "hangup", "reason": "bye now"}, tx="h")
    mine, theirs = events(effects, ALICE), events(effects, BOB)
    assert [result(e) for e in mine] == [{"event": "hangup", "username": "alice", "reason": "Explicit hangup"}]
    assert [result(e) for e in theirs] == [{"event": "hangup", "username": "alice", "reason": "bye now"}]
    assert set(of_type(effects, vc.CoreHangup)) == {vc.CoreHangup(ALICE), vc.CoreHangup(BOB)}
    assert of_type(effects, vc.RelayHangup)[0].call_id == call.call_id
    assert h.vc.calls == {} and h.vc.handles[ALICE].call is None and h.vc.handles[BOB].call is None


def test_hangup_reason_not_a_string_uses_default(h: Harness) -> None:
    h.connect()
    effects = h.msg(BOB, {"request": "hangup", "reason": 42})
    assert result(events(effects, ALICE)[0])["reason"] == "We did the hangup"


def test_decline_ringing_call(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    effects = h.msg(BOB, {"request": "hangup"})
    assert result(events(effects, ALICE)[0]) == {"event": "hangup", "username": "bob", "reason": "We did the hangup"}
    # bob never had a PeerConnection: no core hangup for him
    assert of_type(effects, vc.CoreHangup) == [vc.CoreHangup(ALICE)]


def test_can_call_again_after_hangup(h: Harness) -> None:
    h.connect()
    h.msg(ALICE, {"request": "hangup"})
    effects = h.msg(BOB, {"request": "call", "username": "alice"}, OFFER)
    assert result(events(effects, ALICE)[0]) == {"event": "incomingcall", "username": "bob"}


# --- hangups without a request -------------------------------------------------------------


def test_detach_mid_call_tells_peer_and_frees_name(h: Harness) -> None:
    h.connect()
    effects = h.run(h.vc.detach(BOB))
    (e,) = events(effects)
    assert e.handle == ALICE
    assert result(e) == {"event": "hangup", "username": "bob", "reason": "Remote WebRTC hangup"}
    assert set(of_type(effects, vc.CoreHangup)) == {vc.CoreHangup(BOB, "Detach"), vc.CoreHangup(ALICE)}
    assert "bob" not in h.registry and "bob" not in h.vc.names
    assert h.vc.handles[ALICE].call is None


def test_core_hangup_request_closes_own_pc(h: Harness) -> None:
    h.connect()
    effects = h.vc.pc_closed(ALICE)
    assert vc.CoreHangup(ALICE, "Janus API") in effects and vc.CoreHangup(BOB) in effects
    assert result(events(effects, BOB)[0])["reason"] == "Remote WebRTC hangup"


def test_leg_failure_ends_call_with_reason(h: Harness) -> None:
    call = h.connect()
    effects = h.vc.leg_state(call.call_id, "callee", False, "ICE failed")
    assert vc.CoreHangup(BOB, "ICE failed") in effects
    (e,) = events(effects)
    assert e.handle == ALICE and result(e)["reason"] == "Remote WebRTC hangup" and result(e)["username"] == "bob"


def test_leg_connected_is_webrtcup_and_media_is_forwarded(h: Harness) -> None:
    call = h.connect()
    assert h.vc.leg_state(call.call_id, "caller", True, "") == [vc.Webrtcup(ALICE)]
    assert h.vc.leg_media(call.call_id, "callee", "video", "1", True) == [vc.Media(BOB, "1", "video", True)]
    assert h.vc.leg_state("unknown", "caller", True, "") == []


def test_relay_lost_hangs_up_both(h: Harness) -> None:
    call = h.connect()
    effects = h.vc.relay_lost([call.call_id])
    assert {e.handle for e in events(effects)} == {ALICE, BOB}
    assert all(result(e)["reason"] == "Remote WebRTC hangup" for e in events(effects))


def test_detach_during_setup_makes_relay_forget_the_call(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    effects = h.vc.message(ALICE, {"request": "call", "username": "bob"}, OFFER, "c")
    (_lookup,) = of_type(effects, vc.Lookup)
    (create,) = of_type(h.vc.looked_up(ALICE, "bob", BOB, "c", OFFER), vc.RelayCreate)
    h.run(h.vc.detach(BOB))
    assert h.vc.call_created(create.call_id, "late-offer", None) == [vc.RelayHangup(create.call_id, "Call ended during setup")]


def test_claim_after_detach_gives_name_back(h: Harness) -> None:
    h.vc.attach(ALICE)
    (_claim,) = h.vc.message(ALICE, {"request": "register", "username": "alice"}, None, "r")
    h.vc.detach(ALICE)
    assert h.vc.claimed(ALICE, "alice", True, "r") == [vc.Release("alice", ALICE)]


# --- trickle -------------------------------------------------------------------------------


def test_trickle_before_call_is_kept_bounded_and_flushed(h: Harness) -> None:
    h.users((ALICE, "alice"), (BOB, "bob"))
    cands = [{"candidate": f"candidate:{i} 1 udp 1 127.0.0.1 {i} typ host", "sdpMid": "0"} for i in range(10)]
    assert h.vc.trickle(ALICE, cands, False) == []
    assert len(h.vc.handles[ALICE].pending_trickles) == 4
    effects = h.msg(ALICE, {"request": "call", "username": "bob"}, OFFER)
    (trickle,) = of_type(effects, vc.RelayTrickle)
    assert trickle.leg == "caller" and len(trickle.candidates) == 4
    assert h.vc.handles[ALICE].pending_trickles == []


def test_trickle_in_call_goes_to_leg(h: Harness) -> None:
    call = h.connect()
    (t,) = h.vc.trickle(BOB, [{"candidate": "c"}], True)
    assert t == vc.RelayTrickle(call.call_id, "callee", ({"candidate": "c"},), True)


def test_refused_call_drops_early_trickles(h: Harness) -> None:
    h.users((ALICE, "alice"))
    h.vc.trickle(ALICE, [{"candidate": "c"}], True)
    h.msg(ALICE, {"request": "call", "username": "nobody"}, OFFER)
    assert h.vc.handles[ALICE].pending_trickles == [] and not h.vc.handles[ALICE].pending_completed
