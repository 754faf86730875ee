"""Which packets go where: the forwarding plan of a call, read from both legs' SDP (pure).

A leg's m-line as negotiated is a ``Section``: its payload types and RTX payload types, its
header extension ids, the SSRCs the client announced and the ones the relay sends with (in
the relay's own SDP, so they are aiortc's sender SSRCs), and which way media flows. Payload
types and extension ids come from the *answer* of that leg (the relay's for the caller, the
callee's for the callee): that is what both ends use.

``plan`` pairs the m-lines of two legs (the callee's mirror the caller's, same order) and
gives a ``Route`` per direction that carries media: the source's payload types mapped to
the sink's for the same codec (the legs may number them differently), RTX payload types,
the header extension rewriter (None when the bytes can go as they are), SSRCs, clock rate,
and whether the source takes NACKs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import MediaDescription, SessionDescription

from mediarelay.aiortc_hooks import is_codec_compatible
from mediarelay.rtp_header import ExtensionRewriter
from mediarelay.sdp import is_rtx
from mediarelay.simulcast_sdp import Simulcast
from shared.messages import MEDIA_KINDS


@dataclass(frozen=True)
class Section:
    """One audio/video m-line of one leg, as negotiated."""

    index: int
    kind: str
    mid: str
    #: The answer's codecs, RTX included, with the payload types both ends use.
    codecs: tuple[RTCRtpCodecParameters, ...]
    #: Header extension uri -> id, as negotiated.
    extensions: dict[str, int]
    #: The relay's SSRCs on this m-line (its sender's, in its own SDP), and their cname.
    local_ssrc: int | None = None
    local_rtx_ssrc: int | None = None
    cname: str = ""
    #: SSRCs the client announced: media ones, and RTX SSRC -> media SSRC.
    remote_ssrcs: tuple[int, ...] = ()
    remote_rtx: dict[int, int] = field(default_factory=dict)
    #: Media flows client -> relay / relay -> client on this m-line.
    relay_receives: bool = True
    relay_sends: bool = True
    #: The layers the client simulcasts on this m-line (``simulcast_sdp``), if it does.
    simulcast: Simulcast | None = None

    @property
    def media_codecs(self) -> list[RTCRtpCodecParameters]:
        return [c for c in self.codecs if not is_rtx(c)]

    def rtx_for(self, payload_type: int | None) -> int | None:
        """The RTX payload type negotiated for a media payload type, if any."""
        return next((c.payloadType for c in self.codecs if is_rtx(c) and c.parameters.get("apt") == payload_type),
                    None)


@dataclass(frozen=True)
class Route:
    """Media of one m-line from the source leg to the sink leg."""

    kind: str
    source_mid: str
    sink_mid: str
    clock_rate: int
    #: Source media payload type -> sink media payload type, for each codec both have.
    payload_types: dict[int, int]
    #: Source RTX payload type -> the source media payload type it repairs.
    source_rtx: dict[int, int]
    #: Sink media payload type -> sink RTX payload type (to answer the sink's NACKs by RTX).
    sink_rtx: dict[int, int]
    #: Source media payload type -> codec name (to spot keyframes).
    codec_names: dict[int, str]
    #: None when the source's extension bytes are right for the sink as they are.
    extensions: ExtensionRewriter | None
    source_ssrcs: tuple[int, ...]
    source_rtx_ssrcs: dict[int, int]
    sink_ssrc: int
    sink_rtx_ssrc: int | None
    sink_cname: str
    #: The source negotiated generic NACK: the relay repairs its losses.
    nack: bool
    #: The source simulcasts on this m-line: its layers, for the fast path to select from.
    simulcast: Simulcast | None = None


def sections(local_sdp: str | SessionDescription, remote_sdp: str | SessionDescription,
             local_is_answer: bool, simulcast: Simulcast | None = None) -> list[Section]:
    """A leg's audio/video m-lines (index = position in the SDP) as negotiated (from SDP text, or
    from descriptions already parsed). ``simulcast``: what the leg's client simulcasts (read from
    its raw offer: aiortc's parser drops those lines), kept on its m-line if the relay receives it."""
    local = SessionDescription.parse(local_sdp) if isinstance(local_sdp, str) else local_sdp
    remote = SessionDescription.parse(remote_sdp) if isinstance(remote_sdp, str) else remote_sdp
    result = []
    # A pending offer may hold m-lines the other side has not answered yet: those wait.
    for index, (mine, theirs) in enumerate(zip(local.media, remote.media, strict=False)):
        if mine.kind not in MEDIA_KINDS or mine.port == 0 or theirs.port == 0:
            continue
        answer = mine if local_is_answer else theirs
        direction = (mine.direction if local_is_answer else _reverse(theirs.direction)) or "sendrecv"
        local_ssrc, local_rtx, cname = _own_ssrcs(mine)
        remote_ssrcs, remote_rtx = _announced_ssrcs(theirs)
        mid = str(mine.rtp.muxId or index)
        receives = direction in ("sendrecv", "recvonly")
        layers = simulcast if simulcast is not None and simulcast.mid == mid and mine.kind == "video" and receives \
            else None
        result.append(Section(
            index=index, kind=mine.kind, mid=mid,
            codecs=tuple(answer.rtp.codecs),
            extensions={ext.uri: ext.id for ext in answer.rtp.headerExtensions},
            local_ssrc=local_ssrc, local_rtx_ssrc=local_rtx, cname=cname,
            remote_ssrcs=remote_ssrcs, remote_rtx=remote_rtx,
            relay_receives=receives,
            relay_sends=direction in ("sendrecv", "sendonly"),
            simulcast=layers,
        ))
    return result


def _reverse(direction: str | None) -> str | None:
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction or "", direction)


def _own_ssrcs(m: MediaDescription) -> tuple[int | None, int | None, str]:
    rtx = None
    for group in m.ssrc_group:
        if group.semantic == "FID" and len(group.items) == 2:
            rtx = int(group.items[1])
    media = next((s for s in m.ssrc if s.ssrc != rtx), None)
    return (media.ssrc if media else None), rtx, (media.cname or "" if media else "")


def _announced_ssrcs(m: MediaDescription) -> tuple[tuple[int, ...], dict[int, int]]:
    rtx = {}
    for group in m.ssrc_group:
        if group.semantic == "FID" and len(group.items) == 2:
            rtx[int(group.items[1])] = int(group.items[0])
    media = tuple(dict.fromkeys(s.ssrc for s in m.ssrc if s.ssrc not in rtx))
    return media, rtx


def plan(source: list[Section], sink: list[Section]) -> list[Route]:
    """The routes from one leg to the other: one per m-line the source sends on and the
    sink receives on, paired by position (the legs mirror each other)."""
    by_index = {s.index: s for s in sink}
    routes = []
    for src in source:
        dst = by_index.get(src.index)
        if dst is None or dst.kind != src.kind or not (src.relay_receives and dst.relay_sends):
            continue
        if dst.local_ssrc is None:
            continue
        payload_types, names, sink_rtx, source_rtx = {}, {}, {}, {}
        for codec in src.media_codecs:
            match = next((c for c in dst.media_codecs if is_codec_compatible(c, codec)), None)
            if match is None or codec.payloadType is None or match.payloadType is None:
                continue
            payload_types[codec.payloadType] = match.payloadType
            names[codec.payloadType] = codec.name.upper()
            rtx_in = src.rtx_for(codec.payloadType)
            if rtx_in is not None:
                source_rtx[rtx_in] = codec.payloadType
            rtx_out = dst.rtx_for(match.payloadType)
            if rtx_out is not None:
                sink_rtx[match.payloadType] = rtx_out
        if not payload_types:
            continue
        clock_rate = next(c.clockRate for c in src.media_codecs if c.payloadType in payload_types)
        nack = any(fb.type == "nack" and not fb.parameter for c in src.media_codecs for fb in c.rtcpFeedback)
        routes.append(Route(
            kind=src.kind, source_mid=src.mid, sink_mid=dst.mid, clock_rate=clock_rate,
            payload_types=payload_types, source_rtx=source_rtx, sink_rtx=sink_rtx, codec_names=names,
            extensions=ExtensionRewriter.between(src.extensions, dst.extensions, src.mid, dst.mid),
            source_ssrcs=src.remote_ssrcs, source_rtx_ssrcs=src.remote_rtx,
            sink_ssrc=dst.local_ssrc, sink_rtx_ssrc=dst.local_rtx_ssrc if sink_rtx else None,
            sink_cname=dst.cname, nack=nack, simulcast=src.simulcast,
        ))
    return routes
