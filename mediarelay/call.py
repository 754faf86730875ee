"""A call at the relay: the caller's leg and the callee's leg, and the SDP between them.

The relay is the answerer towards the caller and the offerer towards the callee, as in
Janus's VideoCall: the callee gets the caller's media (kinds, order, directions) with the
relay's ICE/DTLS, and the callee's answer decides the codecs of the whole call.

    call, callee_offer = await Call.create(call_id, caller_offer, policy=..., notify=...)
    caller_answer = await call.accept(callee_answer)
    await call.add_candidates("caller", [{"candidate": ..., "sdpMid": "0"}], completed=False)
    await call.close("Explicit hangup")

Every SDP and candidate is checked before it touches a PeerConnection; a refusal is an
``SdpError`` (ValueError) with a sentence for the client, and a refused request changes
nothing. The callee's answer is carried over to the caller by ``negotiation.apply_answer``, as
every later answer is. ``media`` (``media.py``) forwards between the legs once both are
connected; this module does not forward media itself, it tells ``media`` what changed. A
renegotiation (``renegotiate``, see ``renegotiation.py``) may add ``pairs`` (caller m-line <->
callee m-line); after each one (pairs added, directions or codecs changed) the media links
again and ``listeners`` are told ``"renegotiated"``; ``"ice-restarted"`` when a leg's restarted
ICE agent takes over (its selected candidate pair changed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial

from aiortc import RTCIceCandidate

from mediarelay import aiortc_hooks, sdp
from mediarelay.datachannels import DataChannelRelay
from mediarelay.ice import IcePolicy
from mediarelay.leg import Leg, Notify
from mediarelay.media import CallMedia
from mediarelay.negotiation import MediaPair, apply_answer
from mediarelay.renegotiation import Renegotiation
from mediarelay.sdp import SdpError
from shared.logs import call_log
from shared.messages import CLOSE_PC, MEDIA_KINDS, LegName

log = logging.getLogger(__name__)


class Call:
    """Two legs of one call inside a worker. Build it with ``await Call.create(...)``."""

    def __init__(self, call_id: str, caller: Leg, callee: Leg, pairs: list[MediaPair]) -> None:
        self.call_id = call_id
        self.caller = caller
        self.callee = callee
        self.pairs = pairs
        #: Data channel messages relayed between the legs by label (``datachannels.py``).
        self.data = DataChannelRelay(call_id, {"caller": caller.pc, "callee": callee.pc})
        #: Called with "renegotiated" or "ice-restarted", after the media re-linked; must not block.
        self.listeners: list[Callable[[str], None]] = []
        #: Adds to ``pairs`` (the same list) and calls ``changed`` after each renegotiation.
        self.renegotiation = Renegotiation(call_id, {"caller": caller, "callee": callee}, pairs, self.changed)
        #: The media between the legs: forwarded without decoding once both are connected.
        self.media = CallMedia(call_id, {"caller": caller, "callee": callee})
        for leg in (caller, callee):
            leg.on_connection_state = partial(self._connection_changed, leg.name)
            leg.on_sender_stop = partial(self.media.sender_stopped, leg.name)
        self.accepted = False
        self._accepting = False
        self._closing: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<Call {self.call_id} caller={self.caller.state} callee={self.callee.state}>"

    @property
    def closed(self) -> bool:
        return self._closing is not None

    def leg(self, name: object) -> Leg:
        if name == "caller":
            return self.caller
        if name == "callee":
            return self.callee
        raise ValueError("leg must be 'caller' or 'callee'")

    @classmethod
    async def create(cls, call_id: str, caller_offer: str, *, policy: IcePolicy,
                     notify: Notify) -> tuple[Call, str]:
        """Set the caller's offer on the caller leg and offer the same media to the callee.

        Returns the call and the relay's offer for the callee. SdpError if the offer is refused.
        """
        lines = sdp.plan_offer(sdp.parse(caller_offer, "offer"))
        data = [line for line in lines if line.kind == "application"]
        caller = Leg(call_id, "caller", policy, notify)
        callee = Leg(call_id, "callee", policy, notify, data_first=bool(data) and lines[0].kind == "application")
        try:
            await caller.set_remote(caller_offer, "offer")
            for line in lines:
                if line.kind in MEDIA_KINDS:
                    transceiver = callee.pc.addTransceiver(line.kind, direction=line.direction)
                    transceiver.setCodecPreferences(list(line.codecs))
            if data and lines[0].kind != "application":
                aiortc_hooks.add_sctp_transport(callee.pc)  # after the media, as the caller has it
            callee_offer = await callee.set_local("offer")
        except BaseException:
            await asyncio.gather(caller.close(report=False), callee.close(report=False))
            raise
        media = list(caller.pc.getTransceivers())
        mirrored = list(callee.pc.getTransceivers())
        pairs = [MediaPair(a.kind, a, b) for a, b in zip(media, mirrored, strict=True)]
        log.info("call %s: created (%s)", call_id, ", ".join(f"{line.kind} {line.direction}" for line in lines),
                 extra=call_log(call_id))
        return cls(call_id, caller, callee, pairs), callee_offer

    async def accept(self, callee_answer: str) -> str:
        """Apply the callee's answer, then answer the caller with the codecs the callee chose.

        Returns the relay's answer for the caller. SdpError if the answer is refused (the
        call is then unchanged, and the callee may answer again).
        """
        if self.closed:
            raise ValueError("the call is over")
        if self.accepted or self._accepting:
            raise ValueError("the call was already accepted")
        self._accepting = True
        try:
            return await self._accept(callee_answer)
        except Exception:
            if self.closed:  # hung up meanwhile: whatever aiortc said, that is the reason
                raise ValueError("the call was hung up while being accepted") from None
            raise
        finally:
            self._accepting = False

    async def _accept(self, callee_answer: str) -> str:
        caller_answer, agreed = await apply_answer(
            callee_answer, answerer=self.callee, offerer=self.caller,
            lines=[(pair.caller, pair.callee) for pair in self.pairs], offered_by="the caller")
        self.accepted = True
        log.info("call %s: accepted (%s)", self.call_id, agreed, extra=call_log(self.call_id))
        return caller_answer

    async def renegotiate(self, leg: LegName, sdp_type: str, sdp_text: str, restart: bool = False) -> str:
        """A client's new offer (-> the relay's offer for the other client) or its answer to the
        relay's mirrored offer (-> the relay's answer for the client that offered)."""
        if self._accepting:
            raise ValueError("the call is being accepted")
        self.leg(leg)
        if sdp_type == "offer":
            self._check_renegotiable()
            return await self.renegotiation.offer(leg, sdp_text, restart)
        if sdp_type == "answer":
            self._check_renegotiable()
            return await self.renegotiation.answer(leg, sdp_text)
        raise SdpError("a renegotiation SDP must be an offer or an answer")

    def _check_renegotiable(self) -> None:
        if self.closed:
            raise ValueError("the call is over")
        if not self.accepted:
            raise ValueError("the call is not accepted yet: there is nothing to renegotiate")

    def _connection_changed(self, name: LegName) -> None:
        """A leg's PC changed connection state; the leg has already updated and reported its
        ``state``, and the media follows it now (links once both legs are connected)."""
        self.media.connection_changed(name)

    def changed(self, what: str) -> None:
        """A renegotiation or an ICE restart changed a leg: the media links again first, then
        the ``listeners`` hear ``what``."""
        for listener in (self.media.changed, *self.listeners):
            try:
                listener(what)
            except Exception:  # a broken listener must not break the call
                log.exception("call %s: a listener failed on %s", self.call_id, what, extra=call_log(self.call_id))

    async def add_candidates(self, leg: LegName, candidates: Sequence[Mapping[str, object]],
                             completed: bool = False) -> None:
        """Trickled candidates for a leg, as janus.js sends them; all are checked first."""
        target = self.leg(leg)
        if len(candidates) > 64:
            raise SdpError("too many candidates in one trickle (at most 64)")
        parsed: list[RTCIceCandidate | None] = []
        for item in candidates:
            if not isinstance(item, Mapping):
                raise SdpError("a candidate must be an object with candidate, sdpMid and sdpMLineIndex")
            parsed.append(sdp.parse_candidate(item.get("candidate"), item.get("sdpMid"), item.get("sdpMLineIndex")))
        if completed:
            parsed.append(None)
        await target.add_candidates(parsed)

    def configure(self, leg: LegName, audio: bool | None = None, video: bool | None = None,
                  bitrate: int | None = None) -> None:
        """``set`` for the media this leg sends: relayed or not (audio, video), REMB cap (bitrate)."""
        settings = self.leg(leg).settings
        if audio is not None:
            settings.audio = audio
        if video is not None:
            settings.video = video
        if bitrate is not None:
            if bitrate < 0:
                raise ValueError("bitrate must not be negative")
            settings.bitrate = bitrate
        self.media.apply(leg, settings)

    async def close(self, reason: str = CLOSE_PC) -> None:
        """Close both legs (each reports ``closed`` with ``reason`` unless it already ended); idempotent."""
        if self._closing is None:
            log.info("call %s: closing (%s)", self.call_id, reason, extra=call_log(self.call_id))
            self._closing = asyncio.ensure_future(self._close(reason))
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        await self.renegotiation.close()  # first: a PC closing under a restart waits for its old agent
        await asyncio.gather(self.caller.close(reason), self.callee.close(reason))
        self.media.close()
