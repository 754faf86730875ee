"""SDP from clients, checked and planned before any PeerConnection sees it (pure functions).

Everything here treats its input as hostile: a client's offer or answer, or a trickled
candidate, arrives over the socket unchecked. A refusal is an ``SdpError`` (a ValueError)
whose text is one sentence a client can read; the signalling side puts it after Janus's
"Error parsing offer: " (483). Nothing here echoes the input back.

It also owns the relay's media decisions, in one place:
- ``plan_offer``: what the callee leg offers, mirroring the caller (kinds, order, directions;
  codecs both the caller offered and aiortc supports, in the caller's order).
- ``answer_codecs``: the caller's answer keeps only what the callee chose (VideoCall rule: the
  callee's codecs are the call's codecs, both directions).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from aiortc import RTCIceCandidate
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import DIRECTIONS, MediaDescription, SessionDescription

from mediarelay.aiortc_hooks import CODECS, find_common_codecs, is_codec_compatible
from shared.messages import MAX_SDP, MEDIA_KINDS

#: More m-lines than a 1:1 call needs is a sign of abuse (each costs a transceiver).
MAX_MLINES = 16

_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]{1,32}")
_MDNS = re.compile(r"[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*\.local")


class SdpError(ValueError):
    """A client's SDP or candidate was refused; ``str()`` is a sentence for the client."""


@dataclass(frozen=True)
class MediaLine:
    """One m-line of the caller's offer, as the callee leg must mirror it."""

    index: int
    kind: str  # audio | video | application
    mid: str
    #: The direction the caller wrote, which the relay offers the callee as its own.
    direction: str
    #: The relay's codec preferences for the mirrored m-line (empty for application).
    codecs: tuple[RTCRtpCodecCapability, ...] = ()


def is_rtx(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> bool:
    """An RTX "codec" (RFC 4588): retransmissions of the media codec its ``apt`` names."""
    return codec.mimeType.lower().endswith("/rtx")


def parse(text: object, what: Literal["offer", "answer"]) -> SessionDescription:
    """Parse a client's SDP, refusing oversize, unparseable, media-less or non-WebRTC SDP."""
    if not isinstance(text, str):
        raise SdpError(f"the {what} SDP must be a string")
    if len(text.encode("utf-8", "replace")) > MAX_SDP:
        raise SdpError(f"the {what} SDP is larger than {MAX_SDP} bytes")
    if not text.lstrip().startswith("v=0"):
        raise SdpError(f"the {what} is not SDP (it must start with v=0)")
    try:
        description = SessionDescription.parse(text)
    except Exception:  # noqa: BLE001 - aiortc's parser asserts, indexes and int()s its way through
        raise SdpError(f"the {what} SDP could not be parsed (malformed line)") from None
    media = description.media
    if not media:
        raise SdpError(f"the {what} has no media (no m-line)")
    if len(media) > MAX_MLINES:
        raise SdpError(f"the {what} has {len(media)} m-lines, more than the {MAX_MLINES} allowed")
    for index, m in enumerate(media):
        _check_media_line(m, index, what)
    mids = [m.rtp.muxId for m in media]
    if len(set(mids)) != len(mids):
        raise SdpError(f"the {what} uses the same a=mid twice")
    # Janus 1.x requires BUNDLE too; aiortc would lose its transport on a group naming an unknown mid.
    bundle = next((g for g in description.group if g.semantic == "BUNDLE"), None)
    if bundle is None or sorted(str(item) for item in bundle.items) != sorted(mids):
        raise SdpError(f"the {what} must BUNDLE all its m-lines, and only those")
    return description


def _check_media_line(m: MediaDescription, index: int, what: str) -> None:
    where = f"m-line {index} ({m.kind})"
    if m.kind not in (*MEDIA_KINDS, "application"):
        raise SdpError(f"{where} of the {what} is not audio, video or application")
    if not m.rtp.muxId:
        raise SdpError(f"{where} of the {what} has no a=mid")
    if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
        raise SdpError(f"{where} of the {what} has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
    if m.dtls is None or not m.dtls.fingerprints:
        raise SdpError(f"{where} of the {what} has no DTLS fingerprint or setup")
    if what == "answer" and m.dtls.role not in ("client", "server"):
        raise SdpError(f"{where} of the answer must have a=setup:active or a=setup:passive")
    if m.kind in MEDIA_KINDS:
        if not m.rtcp_mux:
            raise SdpError(f"{where} of the {what} does not use rtcp-mux")
        if m.direction is not None and m.direction not in DIRECTIONS:
            raise SdpError(f"{where} of the {what} has an unknown direction")
    elif m.kind == "application" and m.sctp_port is None and not m.sctpmap:
        raise SdpError(f"{where} of the {what} is not an SCTP data channel")


def plan_offer(offer: SessionDescription) -> list[MediaLine]:
    """The callee leg's m-lines: the caller's, mirrored, with codecs the relay can relay."""
    if sum(1 for m in offer.media if m.kind == "application") > 1:
        raise SdpError("the offer has more than one data channel m-line")
    lines = []
    for index, m in enumerate(offer.media):
        direction = m.direction or "sendrecv"
        if m.kind == "application":
            lines.append(MediaLine(index, m.kind, m.rtp.muxId, direction))
            continue
        common = find_common_codecs(CODECS[m.kind], m.rtp.codecs)
        if not any(not is_rtx(c) for c in common):
            offered = ", ".join(f"{c.name}/{c.clockRate}" for c in m.rtp.codecs[:6]) or "none"
            raise SdpError(
                f"the offer's {m.kind} m-line (mid {m.rtp.muxId}) has no codec the relay supports (offered: {offered})")
        lines.append(MediaLine(index, m.kind, m.rtp.muxId, direction, tuple(_preferences(common))))
    return lines


def _preferences(common: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecCapability]:
    """Capabilities (as ``setCodecPreferences`` wants them) for aiortc codecs, in order, RTX last."""
    prefs: list[RTCRtpCodecCapability] = []
    rtx: RTCRtpCodecCapability | None = None
    for codec in common:
        cap = RTCRtpCodecCapability(
            mimeType=codec.mimeType, clockRate=codec.clockRate, channels=codec.channels,
            parameters={} if is_rtx(codec) else dict(codec.parameters),
        )
        if is_rtx(codec):
            rtx = RTCRtpCodecCapability(mimeType=codec.mimeType, clockRate=codec.clockRate)
        elif cap not in prefs:
            prefs.append(cap)
    return prefs + ([rtx] if rtx else [])


def answer_codecs(
    caller: list[RTCRtpCodecParameters], chosen: list[RTCRtpCodecParameters]
) -> list[RTCRtpCodecParameters]:
    """The caller's codecs (with the caller's payload types) that match the callee's choice.

    Ordered as the callee ordered them; RTX is kept for a kept codec only if the callee
    kept RTX too. Empty when nothing matches.
    """
    kept: list[RTCRtpCodecParameters] = []
    for want in (c for c in chosen if not is_rtx(c)):
        match = next(
            (c for c in caller if not is_rtx(c) and c not in kept and is_codec_compatible(c, want)), None
        )
        if match is not None:
            kept.append(match)
    if any(is_rtx(c) for c in chosen):
        kept_pts = {c.payloadType for c in kept}
        kept += [c for c in caller if is_rtx(c) and c.parameters.get("apt") in kept_pts]
    return kept


def reverse_direction(direction: str | None) -> str:
    """The direction seen from the other end (None, as SDP says, means sendrecv)."""
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction or "sendrecv", direction or "sendrecv")


def parse_candidate(candidate: object, sdp_mid: object, sdp_mline_index: object) -> RTCIceCandidate | None:
    """A trickled candidate (``RTCIceCandidate.toJSON()`` fields), or None for end-of-candidates.

    aiortc's own parser asserts; here every field is checked so a bad candidate is refused
    with a reason and never reaches aioice.
    """
    if not isinstance(candidate, str) or len(candidate) > 1024:
        raise SdpError("a candidate must be a string of at most 1024 characters")
    if sdp_mid is not None and (not isinstance(sdp_mid, str) or len(sdp_mid) > 64):
        raise SdpError("a candidate's sdpMid must be a short string")
    if sdp_mline_index is not None and (
        isinstance(sdp_mline_index, bool) or not isinstance(sdp_mline_index, int) or not 0 <= sdp_mline_index < 256
    ):
        raise SdpError("a candidate's sdpMLineIndex must be an integer in 0..255")
    text = candidate.strip()
    if not text:
        return None  # what browsers send once gathering is over
    if sdp_mid is None and sdp_mline_index is None:
        raise SdpError("a candidate needs an sdpMid or an sdpMLineIndex")
    for prefix in ("a=", "candidate:"):
        text = text.removeprefix(prefix)
    bits = text.split()
    if len(bits) < 8 or bits[6] != "typ" or len(bits) % 2:
        raise SdpError("a candidate must look like 'candidate:<foundation> <component> udp <priority> <address> <port> typ host'")
    foundation, component, transport, priority, address, port, _, kind = bits[:8]
    if not _ICE_CHARS.fullmatch(foundation):
        raise SdpError("a candidate's foundation must be 1 to 32 ICE characters")
    if not component.isdigit() or not 1 <= int(component) <= 256:
        raise SdpError("a candidate's component must be an integer in 1..256")
    if transport.lower() not in ("udp", "tcp"):
        raise SdpError("a candidate's transport must be udp or tcp")
    if not priority.isdigit() or int(priority) >= 2**32:
        raise SdpError("a candidate's priority must be an integer below 2^32")
    if not _is_address(address):
        raise SdpError("a candidate's address must be an IP address or an mDNS .local name")
    if not port.isdigit() or int(port) > 65535:
        raise SdpError("a candidate's port must be an integer in 0..65535")
    if kind not in ("host", "srflx", "relay"):
        raise SdpError("a candidate's type must be host, srflx or relay")
    parsed = RTCIceCandidate(
        component=int(component), foundation=foundation, ip=address, port=int(port),
        priority=int(priority), protocol=transport.lower(), type=kind,
        sdpMid=sdp_mid, sdpMLineIndex=sdp_mline_index,
    )
    for name, value in zip(bits[8::2], bits[9::2], strict=False):  # a lone trailing word is ignored
        if name == "raddr" and _is_address(value):
            parsed.relatedAddress = value
        elif name == "rport" and value.isdigit() and int(value) <= 65535:
            parsed.relatedPort = int(value)
        elif name == "tcptype" and value in ("active", "passive", "so"):
            parsed.tcpType = value
    return parsed


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(_MDNS.fullmatch(text))
