"""Renegotiation of a live call: one client's new offer mirrored onto the other leg, and back.

As in Janus's VideoCall (``set`` with a jsep, delivered to the peer as ``update``), either
client may offer again once the call is accepted; the relay stays in the middle:

    offer_for_callee = await call.renegotiate("caller", "offer", caller_offer)     # -> update to the callee
    answer_for_caller = await call.renegotiate("callee", "answer", callee_answer)  # -> update to the caller

1. The offer is checked, then set on the offering client's leg. The other leg's relay offer
   mirrors it, as at call setup: the same directions on the m-lines both legs have, and each
   m-line the client added is added there too (codecs: the client's offer and aiortc's, in the
   client's order; an ``m=application`` line gets an SCTP transport).
   A caller's offer also says again what it simulcasts (``simulcast_sdp``; a relay re-offer
   to a simulcasting caller keeps receiving its layers: ``Leg.set_local``).
2. The other client's answer is set on its leg; its codecs fix the codecs of the m-lines on the
   offering client's leg, and the relay answers the offering client (``negotiation.apply_answer``,
   as at call setup). New m-line pairs are added to the call's ``pairs``, and ``on_change``
   hears "renegotiated" (the call links its media again and tells its listeners).

A re-offer by the relay keeps what a leg already negotiated: aiortc's ``createOffer`` would
offer its own codec list with its own payload types again, and a browser refuses a payload
type or extension id that changes meaning within a BUNDLE group. So the existing m-lines are
written with their negotiated codecs and header extensions, and an added m-line's payload
types and extension ids are chosen not to collide with the ones the leg already uses
(``keep_negotiated``, pure).

An offer with new ICE credentials (``restart: true``, or simply a new ufrag) is an ICE
restart. aiortc 1.16 cannot restart ICE; ``aiortc_hooks.IceRestart`` gives the leg a fresh ICE
agent before the offer is set, so the answer carries new credentials and candidates, and starts
its checks when the answer goes out. DTLS, SRTP and SCTP go on over the new path unchanged.

Refusals are ``SdpError`` sentences; an offer refused before it is set on the leg changes nothing.
Only one renegotiation runs at a time; an offer while another waits for its answer is refused.
This module holds the legs and the pairs, not the call: ``Call`` checks that the call is live and
accepted before it asks, and hears what changed through ``on_change``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiortc import RTCIceParameters, RTCRtpTransceiver
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
)
from aiortc.sdp import MediaDescription, SessionDescription

from mediarelay import aiortc_hooks, sdp, simulcast_sdp
from mediarelay.aiortc_hooks import IceRestart, is_codec_compatible
from mediarelay.leg import Leg
from mediarelay.negotiation import MediaPair, apply_answer, other_leg
from mediarelay.sdp import SdpError, is_rtx
from shared.logs import call_log
from shared.messages import MEDIA_KINDS, LegName, RidOrder

log = logging.getLogger(__name__)

#: Dynamic payload types, in the order a new one is picked (RFC 3551: 96-127, then 35-63 as browsers do).
FREE_PAYLOAD_TYPES: tuple[int, ...] = (*range(96, 128), *range(35, 64))
#: One-byte header extension ids (RFC 8285).
FREE_EXTENSION_IDS: tuple[int, ...] = tuple(range(1, 15))


@dataclass
class Pending:
    """An offer mirrored to the other client, waiting for its answer."""

    offerer: LegName
    #: (offerer's transceiver, other leg's transceiver) for each media m-line the offer added.
    added: list[tuple[RTCRtpTransceiver, RTCRtpTransceiver]] = field(default_factory=list)
    ice_restart: IceRestart | None = None
    remote_ice: RTCIceParameters | None = None


class Renegotiation:
    """The renegotiations of one call: at most one pending, and the ICE restarts it started.

    ``pairs`` is the call's own list (m-lines added by a renegotiation are appended to it);
    ``on_change`` is told "renegotiated" after each answer and "ice-restarted" when a restarted
    ICE agent takes over; it must not block.
    """

    def __init__(self, call_id: str, legs: Mapping[LegName, Leg], pairs: list[MediaPair],
                 on_change: Callable[[str], None]) -> None:
        self.call_id = call_id
        self.legs = legs
        self.pairs = pairs
        self.on_change = on_change
        self.pending: Pending | None = None
        self.restarts: list[IceRestart] = []

    async def offer(self, leg: LegName, text: str, restart: bool = False, rid_order: RidOrder = "hml") -> str:
        """Set a client's new offer on its leg; returns the relay's offer for the other client."""
        if self.pending is not None:
            raise SdpError("a renegotiation is already waiting for its answer")
        offerer, other = self.legs[leg], self.legs[other_leg(leg)]
        offer = sdp.parse(text, "offer")
        lines = sdp.plan_offer(offer)  # each m-line must have a codec the relay can relay
        # Only the caller simulcasts (as in Janus): its new offer says what it sends now.
        simulcast = simulcast_sdp.read_offer(text, rid_order) if leg == "caller" else None
        current = SessionDescription.parse(offerer.pc.localDescription.sdp).media
        if [(m.kind, m.rtp.muxId) for m in offer.media[:len(current)]] != [(m.kind, m.rtp.muxId) for m in current]:
            raise SdpError("the offer must keep the call's m-lines (same kinds and mids, same order) and may only add m-lines")
        mine = {str(pair.side(leg).mid): pair for pair in self.pairs}
        for m in offer.media[:len(current)]:
            pair = mine.get(m.rtp.muxId) if m.kind in MEDIA_KINDS else None
            if pair is None:
                continue
            main = next(c for c in aiortc_hooks.negotiated_codecs(pair.side(leg)) if not is_rtx(c))
            if not any(is_codec_compatible(main, c) for c in m.rtp.codecs):
                raise SdpError(
                    f"the offer's {m.kind} m-line (mid {m.rtp.muxId}) no longer offers the call's codec {main.mimeType}")

        remote_ice = offer.media[0].ice
        known = SessionDescription.parse(offerer.pc.remoteDescription.sdp).media[0].ice
        ice_restart = None
        assert remote_ice is not None and known is not None  # sdp.parse requires ICE credentials
        if (remote_ice.usernameFragment, remote_ice.password) != (known.usernameFragment, known.password):
            ice_restart = await IceRestart.prepare(offerer.pc)
        elif restart:
            log.info("call %s: %s asked for an ICE restart with the same ICE credentials: none done", self.call_id, leg,
                     extra=call_log(self.call_id))
        try:
            await offerer.set_remote(text, "offer")
        except BaseException:
            if ice_restart is not None:
                await ice_restart.abort()
            raise
        if ice_restart is not None:
            self.restarts.append(ice_restart)
        if leg == "caller":
            offerer.simulcast = simulcast

        # Mirror it on the other leg: directions of the m-lines it has, then the added m-lines.
        theirs = {str(pair.side(leg).mid): pair.side(other_leg(leg)) for pair in self.pairs}
        for m in offer.media[:len(current)]:
            if m.rtp.muxId in theirs:
                theirs[m.rtp.muxId].direction = m.direction or "sendrecv"
        by_mid = {t.mid: t for t in offerer.pc.getTransceivers()}
        pending = Pending(leg, ice_restart=ice_restart, remote_ice=remote_ice)
        for line in lines[len(current):]:
            if line.kind == "application":
                aiortc_hooks.add_sctp_transport(other.pc)
                continue
            transceiver = other.pc.addTransceiver(line.kind, direction=line.direction)
            transceiver.setCodecPreferences(list(line.codecs))
            pending.added.append((by_mid[line.mid], transceiver))
        kept = {str(t.mid): aiortc_hooks.negotiated_codecs(t) for t in other.pc.getTransceivers() if t.mid is not None}
        extensions = {m.rtp.muxId: m.rtp.headerExtensions
                      for m in SessionDescription.parse(other.pc.localDescription.sdp).media}
        added: dict[str, list[RTCRtpCodecParameters]] = {}

        def edit(relay_offer: str) -> str:
            text, codecs = keep_negotiated(relay_offer, kept, extensions)
            added.update(codecs)
            return text

        mirrored = await other.set_local("offer", edit=edit)
        for transceiver in other.pc.getTransceivers():  # aiortc's state as the SDP says, until the answer
            codecs = kept.get(str(transceiver.mid)) or added.get(str(transceiver.mid))
            if codecs:
                aiortc_hooks.set_negotiated_codecs(transceiver, codecs)
        self.pending = pending
        log.info("call %s: %s offered again (%d m-line(s) added%s); offer mirrored to the %s",
                 self.call_id, leg, len(lines) - len(current), ", ICE restart" if ice_restart else "", other_leg(leg),
                 extra=call_log(self.call_id))
        return mirrored

    async def answer(self, leg: LegName, text: str) -> str:
        """Set the other client's answer on its leg; returns the relay's answer for the offerer."""
        pending = self.pending
        if pending is None or pending.offerer == leg:
            raise SdpError("there is no renegotiation offer to answer")
        lines = [(p.side(pending.offerer), p.side(leg)) for p in self.pairs] + pending.added
        relay_answer, agreed = await apply_answer(
            text, answerer=self.legs[leg], offerer=self.legs[pending.offerer], lines=lines,
            offered_by="the other side")
        self.pending = None
        if pending.ice_restart is not None and pending.remote_ice is not None:
            pending.ice_restart.on_switched = lambda: self.on_change("ice-restarted")
            pending.ice_restart.start(pending.remote_ice)
        self.pairs.extend(MediaPair(mine.kind, mine, theirs) if pending.offerer == "caller"
                          else MediaPair(mine.kind, theirs, mine) for mine, theirs in pending.added)
        log.info("call %s: renegotiated (%s)", self.call_id, agreed, extra=call_log(self.call_id))
        self.on_change("renegotiated")
        return relay_answer

    async def close(self) -> None:
        """Stop ICE restarts under way (before the legs close: see ``IceRestart.close``)."""
        for restart in self.restarts:
            await restart.close()
        self.restarts.clear()


def keep_negotiated(
    text: str, kept: Mapping[str, Sequence[RTCRtpCodecParameters]],
    extensions: Mapping[str, Sequence[RTCRtpHeaderExtensionParameters]],
) -> tuple[str, dict[str, list[RTCRtpCodecParameters]]]:
    """aiortc's re-offer with the leg's negotiated m-lines kept, and collision-free added ones.

    ``kept``: mid -> negotiated codecs (with this leg's payload types); ``extensions``: mid ->
    header extensions the leg has. Returns the SDP and the codecs written for each added m-line.
    """
    description = SessionDescription.parse(text)
    media = [m for m in description.media if m.kind in MEDIA_KINDS]
    types: dict[int, RTCRtpCodecParameters] = {}
    ids: dict[int, str] = {}
    for m in media:
        if m.rtp.muxId in kept:
            _set_codecs(m, [copy.deepcopy(c) for c in kept[m.rtp.muxId]])
            m.rtp.headerExtensions = list(extensions.get(m.rtp.muxId, m.rtp.headerExtensions))
            types.update((_pt(c), c) for c in m.rtp.codecs)
            ids.update((e.id, e.uri) for e in m.rtp.headerExtensions)
    added = {}
    for m in media:
        if m.rtp.muxId in kept:
            continue
        codecs = _renumber(m.rtp.codecs, types)
        _set_codecs(m, codecs)
        types.update((_pt(c), c) for c in codecs)
        m.rtp.headerExtensions = _reassign(m.rtp.headerExtensions, ids)
        ids.update((e.id, e.uri) for e in m.rtp.headerExtensions)
        added[m.rtp.muxId] = codecs
    return str(description), added


def _set_codecs(m: MediaDescription, codecs: list[RTCRtpCodecParameters]) -> None:
    m.rtp.codecs = codecs
    m.fmt = [c.payloadType for c in codecs]


def _renumber(codecs: Sequence[RTCRtpCodecParameters], used: Mapping[int, RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    """Payload types for an added m-line: the leg's own for a codec it has, else a free one."""
    result: list[RTCRtpCodecParameters] = []
    mapping: dict[int, int] = {}
    taken = set(used)

    def pick(codec: RTCRtpCodecParameters, same: int | None) -> int:
        if same is not None and same not in mapping.values():
            return same
        if _pt(codec) not in taken:
            return _pt(codec)
        return next(pt for pt in FREE_PAYLOAD_TYPES if pt not in taken)

    for codec in (c for c in codecs if not is_rtx(c)):
        same = next((pt for pt, u in used.items() if not is_rtx(u) and is_codec_compatible(u, codec)
                     and u.parameters == codec.parameters), None)
        new = copy.deepcopy(codec)
        new.payloadType = pick(codec, same)
        mapping[_pt(codec)] = _pt(new)
        taken.add(_pt(new))
        result.append(new)
    for codec in (c for c in codecs if is_rtx(c)):
        apt = mapping.get(int(str(codec.parameters.get("apt", -1))))
        if apt is None:
            continue
        same = next((pt for pt, u in used.items() if is_rtx(u) and u.parameters.get("apt") == apt), None)
        new = copy.deepcopy(codec)
        new.payloadType = pick(codec, same)
        new.parameters = {**codec.parameters, "apt": apt}
        taken.add(_pt(new))
        result.append(new)
    return result


def _reassign(extensions: Sequence[RTCRtpHeaderExtensionParameters],
              used: Mapping[int, str]) -> list[RTCRtpHeaderExtensionParameters]:
    """Extension ids for an added m-line: the leg's own id for a URI it has, else a free one."""
    by_uri = {uri: ext_id for ext_id, uri in used.items()}
    taken = set(used)
    result = []
    for extension in extensions:
        ext_id = by_uri.get(extension.uri)
        if ext_id is None:
            ext_id = extension.id if extension.id not in taken else next(
                (i for i in FREE_EXTENSION_IDS if i not in taken), None)
        if ext_id is None:
            continue  # no one-byte id left: not offered
        taken.add(ext_id)
        result.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=extension.uri))
    return result


def _pt(codec: RTCRtpCodecParameters) -> int:
    assert codec.payloadType is not None  # every codec in an SDP has one
    return codec.payloadType
