"""The VideoCall plugin as a pure state machine: requests in, effects out.

This module owns the name each of its handles registered, who is in a call with whom and
in which phase, and what each request answers. It opens no socket, starts no task and
reads no clock: every input is a method call and every output is a list of effects
(``Event`` to a handle, ``CoreHangup``, ``Webrtcup``, registry and relay commands) that
the plugin runner (``signaling/plugin_runner.py``) carries out.

Work that must wait for I/O (claiming a name in the registry, the relay preparing a call)
is split in two: the first call returns a command carrying everything needed to go on,
and the runner feeds its outcome back (``claimed``, ``looked_up``, ``call_created``...).
The runner processes one plugin message per handle at a time, so a handle never has two
requests in flight; other handles' actions may interleave, which is why each
continuation re-checks the state it relies on. Who holds which name is the registry's
alone (it may be shared by several nodes): ``list``, ``register`` and ``call`` ask it.

Behaviour mirrors ``janus_videocall_handler`` in Janus's ``janus_videocall.c`` (codes,
texts, check order, which events carry a transaction). Deliberate differences are marked
"Differs from Janus".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from shared import messages as m
from signaling import videocall_body as vb
from signaling.effects import (
    Claim,
    CoreHangup,
    Effect,
    Event,
    Jsep,
    LegName,
    ListNames,
    Lookup,
    Media,
    Relay,
    RelayFailure,
    Release,
    RingTimeout,
    Webrtcup,
)
from signaling.janus_errors import (
    CLOSE_PC,
    DETACH,
    EXPLICIT_HANGUP,
    JANUS_API,
    NO_ANSWER,
    PEER_HANGUP_DEFAULT,
    REASON_LIMIT,
    REMOTE_HANGUP,
    USER_BUSY,
    PluginCode,
    PluginError,
    quote,
)

#: Candidates one ``leg.trickle`` carries (``LegTrickle`` takes at most this many).
TRICKLE_BATCH = 64


# --- state ----------------------------------------------------------------------------------


@dataclass
class Call:
    """One call between two handles; its media lives on one relay worker."""

    call_id: str
    caller: int
    callee: int
    #: creating (relay preparing) -> ringing (incomingcall sent) -> accepting -> active
    phase: Literal["creating", "ringing", "accepting", "active"] = "creating"
    caller_offer: str = ""
    #: A renegotiation offer forwarded and not yet answered: the leg that offered.
    renegotiating: LegName | None = None
    #: Requests waiting for the relay (``call``, ``accept``, ``set`` with a jsep): the
    #: transaction of each, by handle. The relay's outcome answers it; if the call ends
    #: first, the ``hangup`` event that tells that handle does.
    waiting: dict[int, str | None] = field(default_factory=dict)

    def leg_of(self, handle: int) -> LegName:
        return "caller" if handle == self.caller else "callee"

    def peer_of(self, handle: int) -> int:
        return self.callee if handle == self.caller else self.caller

    def handle_of(self, leg: LegName) -> int:
        return self.caller if leg == "caller" else self.callee


@dataclass
class Controls:
    """What a user asked with ``set``; reset when a call ends, as Janus does."""

    audio: bool = True
    video: bool = True
    bitrate: int = 0
    #: Record what this user sends (``record``), under ``filename`` (None: Janus's default name).
    record: bool = False
    filename: str | None = None
    #: What this user receives of a simulcasting peer (None: not asked, the relay's default:
    #: substream 2, temporal 2, fallback 250000 µs, automatic choice until a substream is set).
    substream: int | None = None
    temporal: int | None = None
    fallback: int | None = None
    auto: bool | None = None

    def changed(self) -> bool:
        return not (self.audio and self.video and self.bitrate == 0) or self.simulcast_changed()

    def simulcast_changed(self) -> bool:
        return (self.substream, self.temporal, self.fallback, self.auto) != (None, None, None, None)


@dataclass
class HandleState:
    handle: int
    username: str | None = None
    call: Call | None = None
    controls: Controls = field(default_factory=Controls)
    #: Candidates trickled before the handle has a call leg (bounded).
    pending_trickles: list[m.IceCandidate] = field(default_factory=list)
    pending_completed: bool = False
    #: The node that hosts this handle's call (its user called someone registered there):
    #: while set, that node's machine answers the handle, and here it counts as busy.
    away: str | None = None
    #: A stand-in for a user of another node whose call this node hosts: its name is held
    #: in the registry by that node, so this handle never claims or releases it.
    proxy: bool = False


class VideoCall:
    """All VideoCall state of one signalling node. Pure: see the module docstring."""

    def __init__(self, max_pending_trickles: int = 128, call_ids: Any = None, ring_timeout: float = 0) -> None:
        self.handles: dict[int, HandleState] = {}
        self.calls: dict[str, Call] = {}
        self.max_pending_trickles = max_pending_trickles
        #: Seconds a call may ring unanswered (0: for ever, as Janus).
        self.ring_timeout = ring_timeout
        self._call_ids = call_ids if call_ids is not None else (f"call-{n}" for n in itertools.count(1))

    # --- handle lifecycle ---------------------------------------------------------------

    def attach(self, handle: int) -> None:
        self.handles[handle] = HandleState(handle)

    def detach(self, handle: int) -> list[Effect]:
        """The handle is gone (detach, destroy, timeout, socket closed): free all it held."""
        state = self.handles.get(handle)
        if state is None:
            return []
        effects: list[Effect] = []
        if state.username is not None and not state.proxy:
            # Freed before its peer hears of it, so a peer's next ``list`` (which may reach
            # a shared registry sooner than this node's release) no longer shows it.
            effects.append(Release(state.username, handle))
        if state.call is not None:
            # Janus tells a detaching handle its PeerConnection closed ("Detach") first.
            effects += self._end_call(state.call, dropped=handle, reason=REMOTE_HANGUP, dropped_pc=DETACH)
        del self.handles[handle]
        return effects

    # --- calls hosted by another node (a fleet) -----------------------------------------------

    def attach_proxy(self, handle: int, username: str) -> None:
        """A user of another node calls one of ours: it is answered here, under ``handle``."""
        self.handles[handle] = HandleState(handle, username=username, proxy=True)

    def went_away(self, handle: int, node: str) -> tuple[list[m.IceCandidate], bool]:
        """``handle`` calls a user of ``node``, which hosts the call: what it trickled so far
        goes there with it, and here it is busy until it comes back."""
        state = self.handles.get(handle)
        if state is None:
            return [], False
        state.away = node
        pending = (state.pending_trickles, state.pending_completed)
        self._drop_pending(state)
        return pending

    def came_back(self, handle: int) -> None:
        """The call ``handle`` had on another node is over."""
        state = self.handles.get(handle)
        if state is not None:
            state.away = None

    def pc_closed(self, handle: int, reason: str = JANUS_API) -> list[Effect]:
        """The client asked the core to close the handle's PeerConnection (``hangup``
        request): it gets the core ``hangup`` with ``reason``, the peer is told "Remote
        WebRTC hangup" (``janus_videocall_hangup_media``)."""
        state = self.handles.get(handle)
        if state is None or state.call is None:
            return []
        return self._end_call(state.call, dropped=handle, reason=REMOTE_HANGUP, dropped_pc=reason)

    # --- plugin messages ----------------------------------------------------------------

    def message(
        self, handle: int, body: Any, jsep: Jsep | None, transaction: str | None, bound_username: str | None = None,
    ) -> list[Effect]:
        """A plugin ``message``; returns the effects (the ``ack`` is the adapter's).
        ``bound_username``: the only name this request may ``register`` (its token names it)."""
        state = self.handles.get(handle)
        if state is None:
            return []
        try:
            request = vb.request_name(body)
            handler = _HANDLERS.get(request)
            if handler is None:
                raise vb.unknown_request(body["request"])
            if handler is VideoCall._register:  # only register reads who the token names
                return self._register(state, body, jsep, transaction, bound_username)
            return handler(self, state, body, jsep, transaction)
        except PluginError as exc:
            effects: list[Effect] = [Event(handle, error_data(exc), transaction)]
            if state.call is None:
                self._drop_pending(state)  # a refused call leaves the handle ready for the next
                if (jsep is not None and exc.code in _CALL_REFUSALS_CLOSING_PC
                        and isinstance(body, dict) and str(body.get("request")).lower() == "call"):
                    effects.append(CoreHangup(handle))
            return effects

    def _list(self, state: HandleState, body: dict[str, Any], jsep: Jsep | None, tx: str | None) -> list[Effect]:
        return [ListNames(state.handle, tx)]

    def listed(self, handle: int, names: list[str], transaction: str | None) -> list[Effect]:
        """The registry's answer to ``ListNames``: every registered name."""
        if handle not in self.handles:
            return []
        return [Event(handle, _result({"list": sorted(names)}), transaction)]

    def _register(
        self, state: HandleState, body: dict[str, Any], jsep: Jsep | None, tx: str | None, bound: str | None = None,
    ) -> list[Effect]:
        name = vb.validate_username(body)
        if state.username is not None:
            raise PluginError(PluginCode.ALREADY_REGISTERED, f"Already registered ({state.username})")
        if bound is not None and name != bound:  # ours: Janus lets anyone be anyone
            raise PluginError(PluginCode.INVALID_ELEMENT, f"Username '{quote(name)}' is not the one your token names")
        return [Claim(state.handle, name, tx)]

    def claimed(self, handle: int, name: str, ok: bool, transaction: str | None) -> list[Effect]:
        """The registry's answer to ``Claim``: the name is this handle's now, or someone else's."""
        state = self.handles.get(handle)
        if state is None or state.username is not None:
            # The handle went away (or got a name) meanwhile: give the claim back.
            return [Release(name, handle)] if ok else []
        if not ok:
            taken = PluginError(PluginCode.USERNAME_TAKEN, f"Username '{quote(name)}' already taken")
            return [Event(handle, error_data(taken), transaction)]
        state.username = name
        return [Event(handle, _result({"event": "registered", "username": name}), transaction)]

    def _call(self, state: HandleState, body: dict[str, Any], jsep: Jsep | None, tx: str | None) -> list[Effect]:
        # Janus's order: registered, not in a call, username valid, not yourself, exists,
        # busy, SDP present. Differs from Janus: a refused call never ends a call in
        # progress (Janus closes the caller's PeerConnection on 480).
        if state.username is None:
            raise PluginError(PluginCode.REGISTER_FIRST, "Register a username first")
        if state.call is not None:
            raise PluginError(PluginCode.ALREADY_IN_CALL, "Already in a call")
        name = vb.validate_username(body)
        if name == state.username:
            raise PluginError(PluginCode.USE_ECHO_TEST, "You can't call yourself... use the EchoTest for that")
        return [Lookup(state.handle, name, tx, jsep)]

    def looked_up(self, handle: int, name: str, callee: int | None, transaction: str | None, jsep: Jsep | None) -> list[Effect]:
        """The registry's answer to ``Lookup``: the callee's handle on this node, or None."""
        state = self.handles.get(handle)
        if state is None or state.username is None:
            return []
        if state.call is not None:
            return [Event(handle, error_data(PluginError(PluginCode.ALREADY_IN_CALL, "Already in a call")), transaction)]
        peer = self.handles.get(callee) if callee is not None else None
        if peer is None or peer.username != name:
            self._drop_pending(state)
            missing = PluginError(PluginCode.NO_SUCH_USERNAME, f"Username '{quote(name)}' doesn't exist")
            refusal = Event(handle, error_data(missing), transaction)
            return [refusal, CoreHangup(handle)] if jsep is not None else [refusal]
        had_pc = jsep is not None
        if peer.call is not None or peer.away is not None:
            effects: list[Effect] = [
                Event(handle, _result({"event": "hangup", "username": state.username, "reason": USER_BUSY}), transaction)
            ]
            if had_pc:
                effects.append(CoreHangup(handle))
            self._drop_pending(state)
            return effects
        if jsep is None or jsep.get("sdp") is None:
            self._drop_pending(state)
            return [Event(handle, error_data(PluginError(PluginCode.MISSING_SDP, "Missing SDP")), transaction)]
        if jsep.get("type") != "offer":
            self._drop_pending(state)
            not_offer = PluginError(PluginCode.INVALID_SDP, "Error parsing offer: not an offer")
            return [Event(handle, error_data(not_offer), transaction)]
        call = Call(next(self._call_ids), caller=handle, callee=peer.handle, caller_offer=jsep["sdp"])
        create = m.CallCreate(call_id=call.call_id, caller_offer=call.caller_offer, rid_order=_rid_order(jsep))
        call.waiting[handle] = transaction
        state.call = peer.call = call
        self.calls[call.call_id] = call
        return [Relay(create, transaction)]

    def call_created(self, call_id: str, outcome: m.CallCreateResult | RelayFailure) -> list[Effect]:
        """The worker prepared the call (the callee's offer) or could not (``RelayFailure``)."""
        call = self.calls.get(call_id)
        if call is None or call.phase != "creating":
            # Ended meanwhile (a side detached): make sure the worker forgets it too.
            return [Relay(m.CallHangup(call_id=call_id, reason="Call ended during setup"))]
        tx = call.waiting.pop(call.caller, None)
        caller = self.handles[call.caller]
        if isinstance(outcome, RelayFailure):
            self._forget(call)
            self._drop_pending(caller)
            return [Event(call.caller, error_data(_relay_error("offer", outcome)), tx), CoreHangup(call.caller)]
        callee_offer = outcome.callee_offer
        call.phase = "ringing"
        effects: list[Effect] = [
            Event(call.callee, _result({"event": "incomingcall", "username": caller.username}), None,
                  {"type": "offer", "sdp": callee_offer}),
            Event(call.caller, _result({"event": "calling"}), tx),
        ]
        effects += self._flush_trickles(call, "caller")
        effects += self._apply_controls(call, "caller")
        if self.ring_timeout > 0:
            effects.append(RingTimeout(call.call_id, self.ring_timeout))
        return effects

    def ring_expired(self, call_id: str) -> list[Effect]:
        """``ring_timeout`` has passed since the call started ringing: if it still rings
        (nobody accepted, declined or hung up), it ends for both with "No answer"."""
        call = self.calls.get(call_id)
        if call is None or call.phase != "ringing":
            return []
        return self._end_call(call, dropped=None, reason=NO_ANSWER, dropped_pc=None)

    def _accept(self, state: HandleState, body: dict[str, Any], jsep: Jsep | None, tx: str | None) -> list[Effect]:
        call = state.call
        if call is None or call.callee != state.handle or call.phase != "ringing":
            raise PluginError(PluginCode.NO_CALL, "No incoming call to accept")
        if jsep is None or jsep.get("sdp") is None:
            raise PluginError(PluginCode.MISSING_SDP, "Missing SDP")
        if jsep.get("type") != "answer":
            raise PluginError(PluginCode.INVALID_SDP, "Error parsing answer: not an answer")
        accept = m.CallAccept(call_id=call.call_id, callee_answer=jsep["sdp"])
        call.phase = "accepting"
        call.waiting[state.handle] = tx
        return [Relay(accept, tx)]

    def call_accepted(self, call_id: str, outcome: m.CallAcceptResult | RelayFailure) -> list[Effect]:
        """The worker took the callee's answer (and answers the caller) or refused it."""
        call = self.calls.get(call_id)
        if call is None or call.phase != "accepting":
            return []
        tx = call.waiting.pop(call.callee, None)
        if isinstance(outcome, RelayFailure):
            # The callee's answer was refused: the call cannot go on (Janus would have
            # refused the accept before ringing the caller's answer; we end it cleanly).
            call.phase = "ringing"
            return [Event(call.callee, error_data(_relay_error("answer", outcome)), tx)]
        caller_answer = outcome.caller_answer
        call.phase = "active"
        callee = self.handles[call.callee]
        effects: list[Effect] = [
            Event(call.callee, _result({"event": "accepted"}), tx),
            Event(call.caller, _result({"event": "accepted", "username": callee.username}), None,
                  {"type": "answer", "sdp": caller_answer}),
        ]
        effects += self._flush_trickles(call, "callee")
        effects += self._apply_controls(call, "callee")
        return effects

    def _set(self, state: HandleState, body: dict[str, Any], jsep: Jsep | None, tx: str | None) -> list[Effect]:
        parsed = vb.validate_set(body)
        if parsed.filename is not None:
            # Differs from Janus: a recording stays inside the recordings folder (Janus
            # writes wherever ``filename`` points, absolute paths and ``..`` included).
            problem = m.recording_name_problem(parsed.filename)
            if problem is not None:
                raise PluginError(PluginCode.INVALID_ELEMENT, f"Invalid value ({problem})")
        controls = state.controls
        if parsed.audio is not None:
            controls.audio = parsed.audio
        if parsed.video is not None:
            controls.video = parsed.video
        if parsed.bitrate is not None:
            controls.bitrate = parsed.bitrate
        if parsed.record is not None:
            # As Janus: ``filename`` names the recording this request starts; a later
            # ``record: true`` without one gets a new default name (never the old files again).
            controls.record = parsed.record
            controls.filename = parsed.filename
        # Simulcast: what this user receives of a simulcasting peer. The worker answers with a
        # ``leg.simulcast`` notification (-> the ``simulcast`` event) when the layer changes, or
        # at once when it already is the one asked for. Differs from Janus: that event comes
        # after the ``set`` answer (Janus sends it first), and a ``set`` made before the call is
        # accepted still counts (Janus aims at substream 2 / temporal 2 again on accept).
        simulcast = {"substream": parsed.substream, "temporal": parsed.temporal, "fallback": parsed.fallback,
                     "auto": parsed.auto}
        for name, value in simulcast.items():
            if value is not None:
                setattr(controls, name, value)
        effects: list[Effect] = []
        call = state.call
        live = call is not None and call.phase == "active"
        asked = (parsed.audio, parsed.video, parsed.bitrate, *simulcast.values())
        if live and call is not None and any(value is not None for value in asked):
            configure = m.LegConfigure(call_id=call.call_id, leg=call.leg_of(state.handle), audio=parsed.audio,
                                       video=parsed.video, bitrate=parsed.bitrate, **simulcast)
            effects.append(Relay(configure))
        if jsep is not None and live and call is not None:
            sdp_type = jsep.get("type")
            leg = call.leg_of(state.handle)
            if sdp_type == "answer" and call.renegotiating in (None, leg):
                raise PluginError(PluginCode.INVALID_SDP, "Error parsing answer: no renegotiation offer to answer")
            renegotiate = m.LegRenegotiate(call_id=call.call_id, leg=leg, sdp_type=jsep["type"], sdp=jsep["sdp"],
                                           restart=bool(parsed.restart), rid_order=_rid_order(jsep))
            if parsed.record is not None:  # answered by the renegotiation; a refusal comes on its own
                effects.append(Relay(self._record_request(call, state), None))
            call.waiting[state.handle] = tx
            effects.append(Relay(renegotiate, tx))
            return effects
        if live and call is not None and parsed.record is not None:
            # Answered (``set``, as Janus) once the worker has opened or closed the files.
            call.waiting[state.handle] = tx
            effects.append(Relay(self._record_request(call, state), tx))
            return effects
        # Janus answers `set` at once; with a jsep it is answered once the relay has it.
        effects.append(Event(state.handle, _result({"event": "set"}), tx))
        return effects

    def renegotiated(self, request: m.LegRenegotiate, outcome: m.LegRenegotiateResult | RelayFailure,
                     transaction: str | None) -> list[Effect]:
        """The worker's answer to ``LegRenegotiate``: the SDP for the other leg."""
        call = self.calls.get(request.call_id)
        if call is None:
            return []
        handle = call.handle_of(request.leg)
        call.waiting.pop(handle, None)
        if isinstance(outcome, RelayFailure):
            return [Event(handle, error_data(_relay_error(request.sdp_type, outcome)), transaction)]
        call.renegotiating = request.leg if outcome.sdp_type == "offer" else None
        peer = call.peer_of(handle)
        return [
            Event(handle, _result({"event": "set"}), transaction),
            Event(peer, _result({"event": "update"}), None, {"type": outcome.sdp_type, "sdp": outcome.sdp}),
        ]

    def _hangup(self, state: HandleState, body: dict[str, Any], jsep: Jsep | None, tx: str | None) -> list[Effect]:
        # A reason that is not a string is ignored, as Janus does; ours is bounded.
        given = body.get("reason")
        reason = quote(given, REASON_LIMIT) if isinstance(given, str) else None
        result: dict[str, Any] = {"event": "hangup"}
        if state.username is not None:
            result["username"] = state.username
        result["reason"] = EXPLICIT_HANGUP
        effects: list[Effect] = [Event(state.handle, _result(result), tx)]
        call = state.call
        self._drop_pending(state)
        if call is not None:
            effects += self._end_call(call, dropped=state.handle, reason=reason or PEER_HANGUP_DEFAULT, dropped_pc=CLOSE_PC)
        return effects

    # --- trickle and relay notifications --------------------------------------------------

    def trickle(self, handle: int, candidates: list[m.IceCandidate], completed: bool) -> list[Effect]:
        """Candidates from a client: to its leg if it has one, else kept (bounded)."""
        state = self.handles.get(handle)
        if state is None:
            return []
        call = state.call
        if call is not None and self._leg_ready(call, call.leg_of(handle)):
            return _trickles(call.call_id, call.leg_of(handle), candidates, completed)
        # Differs from Janus: Janus keeps every early trickle forever; we keep a bounded few.
        room = self.max_pending_trickles - len(state.pending_trickles)
        state.pending_trickles.extend(candidates[: max(room, 0)])
        state.pending_completed = state.pending_completed or completed
        return []

    def leg_state(self, call_id: str, leg: LegName, connected: bool, reason: str) -> list[Effect]:
        """A worker reports a leg's transport: connected -> ``webrtcup``; else the call ends."""
        call = self.calls.get(call_id)
        if call is None:
            return []
        handle = call.handle_of(leg)
        if connected:
            return [Webrtcup(handle)]
        return self._end_call(call, dropped=handle, reason=REMOTE_HANGUP, dropped_pc=reason or CLOSE_PC)

    def recorded(self, request: m.LegRecord, outcome: m.Empty | RelayFailure, transaction: str | None) -> list[Effect]:
        """The worker's answer to ``LegRecord``: ``set`` when it was a ``set`` request's own,
        an error event when the worker could not record (the files could not be opened)."""
        call = self.calls.get(request.call_id)
        if call is None:
            return []
        handle = call.handle_of(request.leg)
        if transaction is not None:
            call.waiting.pop(handle, None)
        if isinstance(outcome, RelayFailure):
            state = self.handles.get(handle)
            if state is not None:
                state.controls.record = False
            return [Event(handle, error_data(_recording_error(outcome)), transaction)]
        return [Event(handle, _result({"event": "set"}), transaction)] if transaction is not None else []

    def leg_recording(self, call_id: str, leg: LegName, failed: bool, reason: str) -> list[Effect]:
        """A worker reports a recording it ended by itself (a full disk...): the user who
        asked is told with an error event (Janus only logs it), and is no longer recording."""
        call = self.calls.get(call_id)
        if call is None or not failed:
            return []
        handle = call.handle_of(leg)
        state = self.handles.get(handle)
        if state is not None:
            state.controls.record = False
        return [Event(handle, error_data(_recording_error(RelayFailure(reason or "write error"))))]

    def leg_media(self, call_id: str, leg: LegName, kind: str, mid: str, receiving: bool) -> list[Effect]:
        call = self.calls.get(call_id)
        if call is None:
            return []
        return [Media(call.handle_of(leg), mid, kind, receiving)]

    def leg_simulcast(self, call_id: str, leg: LegName, videocodec: str, substream: int | None,
                      temporal: int | None) -> list[Effect]:
        """The worker changed the substream or temporal layer this leg's user receives (or a
        ``set`` asked for the current one): Janus's ``simulcast`` event, to that user."""
        call = self.calls.get(call_id)
        if call is None or call.phase != "active" or (substream is None) == (temporal is None):
            return []
        result: dict[str, Any] = {"event": "simulcast", "videocodec": videocodec}
        if substream is not None:
            result["substream"] = substream
        else:
            result["temporal"] = temporal
        return [Event(call.handle_of(leg), _result(result), None)]

    def relay_lost(self, call_ids: list[str]) -> list[Effect]:
        """A worker died or became unreachable: its calls end for both sides."""
        effects: list[Effect] = []
        for call_id in call_ids:
            call = self.calls.get(call_id)
            if call is not None:
                effects += self._end_call(call, dropped=None, reason=REMOTE_HANGUP, dropped_pc=None)
        return effects

    def end_all(self, reason: str) -> list[Effect]:
        """The node stops (SIGTERM, drain over): every call ends for both sides with
        ``reason``, as if the relay had failed, before the sockets close."""
        effects: list[Effect] = []
        for call in list(self.calls.values()):
            effects += self._end_call(call, dropped=None, reason=reason, dropped_pc=None)
        return effects

    # --- internals ------------------------------------------------------------------------

    def _end_call(self, call: Call, *, dropped: int | None, reason: str, dropped_pc: str | None) -> list[Effect]:
        """End ``call``; ``dropped`` is the side that caused it (None: the relay failed).

        Janus (``janus_videocall_hangup_media``): the other side gets the plugin ``hangup``
        event naming the dropper with ``reason``, then its core ``hangup`` (``CLOSE_PC``);
        the side that dropped gets only a core ``hangup`` with ``dropped_pc`` (none when
        its handle is gone). A side that never made a PeerConnection gets no core hangup.
        Differs from Janus: after an explicit hangup the peer is not sent a second, late
        "Remote WebRTC hangup" event.

        A callee the call never rang (it ended while the relay was preparing it) is told
        nothing: it never heard of the call.

        A side whose request still waits for the relay (``call.waiting``; Janus handles one
        message at a time, so it never has one) gets its answer here: its ``hangup`` event
        carries that request's transaction (the side that dropped gets one too, with the
        reason its PeerConnection closed), so every plugin message is answered once.
        """
        effects: list[Effect] = [Relay(m.CallHangup(call_id=call.call_id, reason=reason[:m.MAX_TEXT]))]
        names = {side: getattr(self.handles.get(side), "username", None) for side in (call.caller, call.callee)}
        had_pc = {call.caller: True, call.callee: call.phase in ("accepting", "active")}
        rung = call.phase != "creating"
        self._forget(call)
        for side in (call.caller, call.callee):
            state = self.handles.get(side)
            if state is None or (side == call.callee and not rung and side not in call.waiting):
                continue  # a callee never rung (the relay was still preparing) hears nothing
            self._drop_pending(state)
            data: dict[str, Any] = {"event": "hangup"}
            who = names[call.peer_of(side)]
            if who is not None:
                data["username"] = who
            if side == dropped:
                if side in call.waiting:
                    data["reason"] = dropped_pc or reason
                    effects.append(Event(side, _result(data), call.waiting[side]))
                if had_pc[side] and dropped_pc is not None:
                    effects.append(CoreHangup(side, dropped_pc))
                continue
            data["reason"] = reason
            effects.append(Event(side, _result(data), call.waiting.get(side)))
            if had_pc[side]:
                effects.append(CoreHangup(side))
        return effects

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)
        for side in (call.caller, call.callee):
            state = self.handles.get(side)
            if state is not None and state.call is call:
                state.call = None
                state.controls = Controls()

    def _leg_ready(self, call: Call, leg: LegName) -> bool:
        # The caller's leg exists once the worker prepared the call; the callee's once
        # it answered (the worker buffers candidates until a leg has its remote SDP).
        if leg == "caller":
            return call.phase != "creating"
        return call.phase in ("ringing", "accepting", "active")

    def _flush_trickles(self, call: Call, leg: LegName) -> list[Effect]:
        state = self.handles.get(call.handle_of(leg))
        if state is None or not (state.pending_trickles or state.pending_completed):
            return []
        effects = _trickles(call.call_id, leg, state.pending_trickles, state.pending_completed)
        self._drop_pending(state)
        return effects

    def _apply_controls(self, call: Call, leg: LegName) -> list[Effect]:
        """What the user asked with ``set`` before its leg existed, for the worker."""
        state = self.handles.get(call.handle_of(leg))
        if state is None:
            return []
        c = state.controls
        effects: list[Effect] = []
        if c.changed():
            effects.append(Relay(m.LegConfigure(call_id=call.call_id, leg=leg, audio=c.audio, video=c.video,
                                                bitrate=c.bitrate, substream=c.substream, temporal=c.temporal,
                                                fallback=c.fallback, auto=c.auto)))
        if c.record:
            effects.append(Relay(self._record_request(call, state), None))
        return effects

    def _record_request(self, call: Call, state: HandleState) -> m.LegRecord:
        peer = self.handles.get(call.peer_of(state.handle))
        return m.LegRecord(call_id=call.call_id, leg=call.leg_of(state.handle), record=state.controls.record,
                           base=state.controls.filename, user=(state.username or "")[:m.MAX_TEXT],
                           peer=((peer.username if peer else None) or "")[:m.MAX_TEXT])

    @staticmethod
    def _drop_pending(state: HandleState) -> None:
        state.pending_trickles = []
        state.pending_completed = False


def _rid_order(jsep: Jsep) -> Literal["hml", "lmh"]:
    """The jsep's ``rid_order`` (``janus_api`` made it "hml" or "lmh"; "hml" as Janus otherwise)."""
    return "lmh" if jsep.get("rid_order") == "lmh" else "hml"


def _result(data: dict[str, Any]) -> dict[str, Any]:
    return {"videocall": "event", "result": data}


def error_data(exc: PluginError) -> dict[str, Any]:
    """The body of a plugin error event, as Janus sends it."""
    return {"videocall": "event", "error_code": exc.code, "error": exc.text}


def _relay_error(what: str, failure: RelayFailure) -> PluginError:
    """A worker's refusal of an SDP becomes 483; an unreachable worker 499."""
    if failure.unavailable:
        return PluginError(PluginCode.UNKNOWN_ERROR, f"Media relay unavailable, try again ({failure.detail})")
    return PluginError(PluginCode.INVALID_SDP, f"Error parsing {what}: {failure.detail}")


def _recording_error(failure: RelayFailure) -> PluginError:
    """A recording the worker could not start or keep writing (our event: Janus only logs)."""
    if failure.unavailable:
        return PluginError(PluginCode.UNKNOWN_ERROR, f"Media relay unavailable, try again ({failure.detail})")
    return PluginError(PluginCode.UNKNOWN_ERROR, f"Recording failed: {failure.detail}")


def _trickles(call_id: str, leg: LegName, candidates: list[m.IceCandidate], completed: bool) -> list[Effect]:
    """``leg.trickle`` requests for ``candidates`` in batches the IPC model takes;
    ``completed`` rides on the last."""
    batches = [candidates[i:i + TRICKLE_BATCH] for i in range(0, len(candidates), TRICKLE_BATCH)] or [[]]
    last = len(batches) - 1
    return [
        Relay(m.LegTrickle(call_id=call_id, leg=leg, candidates=batch, completed=completed and i == last))
        for i, batch in enumerate(batches)
    ]


#: Refusals of ``call`` after which Janus closes the caller's PeerConnection (``close_pc``),
#: so a client that sent an offer gets a core ``hangup`` and starts the next call afresh.
#: Differs from Janus: not on 480, which would kill the call in progress.
_CALL_REFUSALS_CLOSING_PC = frozenset({
    PluginCode.REGISTER_FIRST, PluginCode.INVALID_ELEMENT, PluginCode.MISSING_ELEMENT, PluginCode.USE_ECHO_TEST,
})


_HANDLERS = {
    "list": VideoCall._list,
    "register": VideoCall._register,
    "call": VideoCall._call,
    "accept": VideoCall._accept,
    "set": VideoCall._set,
    "hangup": VideoCall._hangup,
}
