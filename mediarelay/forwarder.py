"""The hot path: SRTP from one leg's socket to the other leg's, rewritten, never decoded.

Per leg, a ``Port`` (``port.py``) sees every datagram at the leg's ICE sockets before aioice
parses it as STUN (``aiortc_hooks.tap_datagrams``). For RTP, synchronously, in the socket
callback, it and the streams here do:

    tap:     find the ``RecvStream`` by SSRC (cleartext), unprotect (aiortc's SRTP session)
    count:   receive statistics, holes (NACK), "media flowing?" (``leg.media``)
    record:  while its sender is recorded, the packet as it arrived (``recorder.py`` buffers it)
    select:  of a simulcasting sender's substreams (a ``RecvStream`` each), only what its
             ``SimulcastSelector`` lets through (``simulcast.py``): one substream, its chosen
             temporal layers; a switch re-syncs the numbering, a dropped layer closes it up
    rewrite: payload type, sequence number and timestamp by offset, SSRC, extensions if the
             legs' ids or mids differ (``RecvStream.forward``)
    send:    the other leg's ``SendStream``: protected with that leg's session into its send
             batch (``aiortc_hooks.SrtpSendBatch``) and sent on its nominated pair at the end of
             the loop iteration with the rest of the burst (``outbox.py``); RTCP is sent at once

No task, ``RtpPacket`` or log line per packet; a packet that is not forwarded is counted
under its reason in ``Counters``. SRTCP is unprotected and handed to ``Port.on_rtcp``
(``rtcp.py`` answers it); STUN, DTLS and SCTP go on to aioice and aiortc as before.

What to forward where (payload types, SSRCs, extension ids) comes from ``routes.py``; the
numbers from ``rewriter.py``; the RTCP bookkeeping objects from ``feedback.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from struct import Struct
from typing import Any

from pylibsrtp import Error as SrtpError

from mediarelay.feedback import KeyframeRequester, NackRequester, ReceiveStats
from mediarelay.media_flow import MediaFlow
from mediarelay.rewriter import SeqRewriter, TimestampRewriter
from mediarelay.rtp_header import (
    ExtensionRewriter,
    header_length,
    is_keyframe,
    rtx_unwrap,
    rtx_wrap,
)
from mediarelay.simulcast import SimulcastSelector, Verdict

_FIXED = Struct("!BBHII")  # V/P/X/CC, M/PT, sequence number, timestamp, SSRC
_HEAD = Struct("!BBHI")

#: Packets kept per video ``SendStream`` to answer NACKs (about 2 s of 1 Mbit/s video) at most;
#: ``SendStream.keep`` says how many of the newest are kept (``rtcp.py`` sizes it by time).
HISTORY_SIZE = 256
_HISTORY_MASK = HISTORY_SIZE - 1
#: Kept until the stream's rate is known (its first 1.5 s): 0.25-0.8 s of 2.5-0.8 Mbit/s video.
#: Up to the whole ring (~280 kB of packets a stream) made every call's first seconds its heaviest,
#: and the process's peak RSS with them (glibc keeps freed memory for the next allocations).
INITIAL_HISTORY = 64


@dataclass(slots=True)
class Counters:
    """What the fast path did, for one call: packets forwarded and packets dropped, by reason."""

    forwarded: int = 0
    forwarded_octets: int = 0
    rtx_received: int = 0   # retransmissions from a sender (mostly answers to the relay's NACKs)
    rtx_sent: int = 0       # retransmissions to a receiver, from the history
    rtcp_received: int = 0
    # dropped, by reason
    srtp_failed: int = 0    # authentication or replay check failed
    unknown: int = 0        # SSRC and payload type of no stream of the leg
    unlinked: int = 0       # the other leg is not connected (yet, or any more)
    muted: int = 0          # ``set`` audio/video false for this sender
    payload_type: int = 0   # a payload type the receiving leg did not negotiate
    stale: int = 0          # older than the last resync (unmute, new source SSRC)
    other_layer: int = 0    # simulcast: not the substream forwarded to the receiver
    temporal: int = 0       # simulcast: above the temporal layer forwarded to the receiver
    padding: int = 0        # RTX padding-only probe
    malformed: int = 0      # header longer than the packet, unparsable RTCP
    send_failed: int = 0    # protect or sendto refused it
    errors: int = 0         # anything else (a bug): counted, logged once

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SendStream:
    """What the relay sends one client on one m-line: its SSRC, numbering, history, SR counts
    (mediasoup's ``RtpStreamSend``). The ``RecvStream`` of the other leg's m-line feeds it."""

    __slots__ = ("kind", "mid", "ssrc", "rtx_ssrc", "rtx_payload_types", "cname", "seq", "ts", "history",
                 "packets", "octets", "rtx_seq", "counters", "_protect", "_sendto", "_remote", "_send", "estimate",
                 "keep")

    def __init__(self, kind: str, mid: str, ssrc: int, clock_rate: int, counters: Counters, *,
                 rtx_ssrc: int | None = None, rtx_payload_types: dict[int, int] | None = None, cname: str = "",
                 seq_start: int = 0, ts_start: int = 0, rtx_seq_start: int = 0) -> None:
        self.kind = kind
        self.mid = mid
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        #: Outgoing media payload type -> outgoing RTX payload type.
        self.rtx_payload_types = rtx_payload_types or {}
        self.cname = cname
        self.seq = SeqRewriter(seq_start)
        self.ts = TimestampRewriter(clock_rate, ts_start)
        self.history: list[bytes | bytearray | None] | None = [None] * HISTORY_SIZE if kind == "video" else None
        #: How many of the newest packets the history keeps (older slots are emptied as we go).
        self.keep = INITIAL_HISTORY
        self.packets = 0
        self.octets = 0
        self.rtx_seq = rtx_seq_start
        self.counters = counters
        #: The receiver's last REMB (bits/s), or None.
        self.estimate: int | None = None
        self._protect: Callable[[bytes], bytes] | None = None
        self._sendto: Callable[[bytes, Any], None] | None = None
        self._remote: Any = None
        #: Protects and sends a plain packet (raises as ``protect`` does); None: not connected.
        self._send: Callable[[bytes | bytearray], None] | None = None

    @property
    def connected(self) -> bool:
        return self._send is not None

    def connect(self, protect: Callable[[bytes], bytes], sendto: Callable[[bytes, Any], None], remote: Any) -> None:
        """Send through this SRTP session and socket (the leg's, once it is connected)."""
        self._protect, self._sendto, self._remote = protect, sendto, remote
        self._send = self._protect_and_send

    def attach(self, send: Callable[[bytes | bytearray], None]) -> None:
        """Send by ``send``, which protects and sends a plain packet (the leg's ``SrtpSendBatch``)."""
        self._protect = self._sendto = self._remote = None
        self._send = send

    def disconnect(self) -> None:
        self._protect = self._sendto = self._remote = self._send = None

    def _protect_and_send(self, packet: bytes | bytearray) -> None:
        self._sendto(self._protect(packet), self._remote)  # type: ignore[arg-type,misc]

    def resize(self, keep: int) -> None:
        """Keep the newest ``keep`` packets (at most the ring less one), and let go of older ones
        now: ``send`` only empties the slot ``keep`` behind it, so after a shrink the packets
        between the old and the new limit would stay until the ring came round again."""
        self.keep = keep = min(_HISTORY_MASK, keep)
        history = self.history
        if history is not None:
            newest = self.seq.max_out
            for back in range(keep, HISTORY_SIZE):
                history[(newest - back) & _HISTORY_MASK] = None

    def send(self, packet: bytes | bytearray, seq: int, payload: int) -> None:
        """Send a rewritten packet (plain RTP) and keep it for NACKs; counts it for the SR."""
        history = self.history
        if history is not None:
            history[seq & _HISTORY_MASK] = packet
            history[(seq - self.keep) & _HISTORY_MASK] = None  # memory: only the newest ``keep``
        self.packets += 1
        self.octets += payload
        try:
            self._send(packet)  # type: ignore[misc]
        except (SrtpError, ValueError, TypeError, OSError):
            self.counters.send_failed += 1

    def retransmit(self, seq: int) -> bool:
        """Answer a receiver's NACK for ``seq`` from the history (by RTX when negotiated);
        False when the packet is not there (never forwarded, or too old)."""
        history = self.history
        packet = history[seq & _HISTORY_MASK] if history is not None else None
        if packet is None or ((packet[2] << 8) | packet[3]) != seq or self._send is None:
            return False
        rtx = self.rtx_payload_types.get(packet[1] & 0x7F)
        if rtx is not None and self.rtx_ssrc is not None:
            packet = rtx_wrap(packet, header_length(packet), rtx, self.rtx_seq, self.rtx_ssrc)
            self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        try:
            self._send(packet)
        except (SrtpError, ValueError, TypeError, OSError):
            self.counters.send_failed += 1
            return False
        self.counters.rtx_sent += 1
        return True


class RecvStream:
    """What one client sends the relay on one m-line (mediasoup's ``RtpStreamRecv``): receive
    statistics, NACK and keyframe bookkeeping, its ``MediaFlow``, and where it goes
    (``send_stream``, on the other leg) with the rewriting that takes."""

    __slots__ = ("kind", "mid", "ssrc", "rtx_ssrc", "stats", "nack", "keyframes", "flow", "on_media", "on_gap",
                 "send_stream", "payload_types", "source_rtx", "codec_names", "extensions", "enabled", "counters",
                 "record", "selector", "layer", "octets")

    def __init__(self, kind: str, mid: str, clock_rate: int, flow: MediaFlow, counters: Counters, *,
                 on_media: Callable[[MediaFlow], None], nack: bool = False) -> None:
        self.kind = kind
        self.mid = mid
        self.ssrc: int | None = None
        self.rtx_ssrc: int | None = None
        self.stats = ReceiveStats(clock_rate)
        self.nack = NackRequester() if nack and kind == "video" else None
        self.keyframes = KeyframeRequester() if kind == "video" else None
        self.flow = flow
        self.on_media = on_media
        #: ``on_gap(stream, seqs_or_None, now)``: holes to NACK (None: too many, ask a keyframe).
        self.on_gap: Callable[[RecvStream, list[int] | None, float], None] | None = None
        self.counters = counters
        #: Set by ``link``: the other leg's stream and how to rewrite for it.
        self.send_stream: SendStream | None = None
        self.payload_types: dict[int, int] = {}
        self.source_rtx: dict[int, int] = {}
        self.codec_names: dict[int, str] = {}
        self.extensions: ExtensionRewriter | None = None
        #: False while ``set`` says this sender's audio/video is not relayed.
        self.enabled = True
        #: ``record(plain, now)`` while this sender is recorded (``recorder.Track.rtp``): each
        #: packet with a payload, as it arrived, while relayed; None (one test) when not.
        self.record: Callable[[bytes, float], None] | None = None
        #: Simulcast: this stream is substream ``layer`` of a sender; the ``selector`` shared by
        #: its substreams decides what reaches ``send_stream`` (which all of them feed).
        self.selector: SimulcastSelector | None = None
        self.layer = 0
        #: Payload octets received (a simulcast substream's bitrate, for the automatic choice).
        self.octets = 0

    def link(self, send_stream: SendStream | None, payload_types: dict[int, int], source_rtx: dict[int, int],
             codec_names: dict[int, str], extensions: ExtensionRewriter | None) -> None:
        """Forward to ``send_stream`` (None: drop), mapping payload types and extensions as given."""
        self.send_stream = send_stream
        self.payload_types = payload_types
        self.source_rtx = source_rtx
        self.codec_names = codec_names
        self.extensions = extensions

    def new_source(self, ssrc: int) -> None:
        """The client sends with a new SSRC: statistics restart, the output continues."""
        self.ssrc = ssrc
        self.stats.reset()
        if self.nack is not None:
            self.nack = NackRequester()
        # A simulcast substream not forwarded now leaves the receiver's numbering alone.
        if self.send_stream is not None and (self.selector is None or self.selector.substream == self.layer):
            self.send_stream.seq.sync()
            self.send_stream.ts.sync()

    def receive(self, plain: bytes, now: float) -> None:
        """A media packet (plain RTP) from the client: count it, forward it."""
        b0, b1, seq, ts = _HEAD.unpack_from(plain)
        missing = self.stats.on_packet(seq, ts, now)
        nack = self.nack
        if nack is not None:
            if missing:
                if self.on_gap is not None:
                    self.on_gap(self, nack.on_gap((seq - missing - 1) & 0xFFFF, missing, now), now)
            elif nack.holes:
                nack.received(seq)
        header = 12 + ((b0 & 0x0F) << 2)
        if b0 & 0x10:
            if len(plain) < header + 4:
                self.counters.malformed += 1
                return
            header += 4 + (((plain[header + 2] << 8) | plain[header + 3]) << 2)
        payload = len(plain) - header
        if b0 & 0x20 and payload > 0:
            payload -= plain[-1]
        if payload < 0:
            self.counters.malformed += 1
            return
        self.octets += payload
        if self.flow.on_packet(payload, now):
            self.on_media(self.flow)
        if self.record is not None and payload and self.enabled and self.selector is None:
            self.record(plain, now)  # a simulcast substream records what is forwarded (``forward``)
        if self.send_stream is None:
            self.counters.unlinked += 1
        elif not self.enabled:
            self.counters.muted += 1
        else:
            self.forward(plain, b0, b1, seq, ts, header, payload, now)

    def receive_rtx(self, plain: bytes, now: float) -> None:
        """A retransmission (RFC 4588) from the client, mostly an answer to the relay's NACK:
        unwrapped and forwarded as the packet it repairs, into the hole it left."""
        self.counters.rtx_received += 1
        media_pt = self.source_rtx.get(plain[1] & 0x7F)
        if media_pt is None or self.ssrc is None:
            self.counters.payload_type += 1
            return
        header = header_length(plain)
        original = rtx_unwrap(plain, header, media_pt, self.ssrc)
        if original is None:
            self.counters.padding += 1
            return
        b0, b1, seq, ts = _HEAD.unpack_from(original)
        if self.nack is not None and self.nack.received(seq):
            self.stats.on_recovered()
        if self.send_stream is None:
            self.counters.unlinked += 1
        elif not self.enabled:
            self.counters.muted += 1
        else:  # the header (CSRCs, extensions) is the RTX packet's; the payload lost its first two bytes
            payload = len(original) - header - (original[-1] if b0 & 0x20 else 0)
            self.forward(original, b0, b1, seq, ts, header, max(0, payload), now)

    def forward(self, plain: bytes, b0: int, b1: int, seq: int, ts: int, header: int, payload: int,
                now: float) -> None:
        out = self.send_stream
        assert out is not None
        pt = self.payload_types.get(b1 & 0x7F)
        if pt is None:
            self.counters.payload_type += 1
            return
        keyframes = self.keyframes
        if keyframes is not None and keyframes.waiting and is_keyframe(self.codec_names[b1 & 0x7F], plain[header:]):
            keyframes.received()
        selector = self.selector
        if selector is not None:
            verdict = selector.packet(self.layer, plain, header, now)
            if verdict == Verdict.OTHER:
                self.counters.other_layer += 1
                return
            if verdict == Verdict.DROP:
                out.seq.drop(seq)  # the receiver sees no hole where a temporal layer was left out
                self.counters.temporal += 1
                return
            if verdict == Verdict.SWITCHED:
                out.seq.sync()
                out.ts.sync()
            plain = selector.rewrite(plain)
        oseq = out.seq.input(seq)
        if oseq is None:
            self.counters.stale += 1
            return
        ots = out.ts.input(ts, now)
        packet: bytes | bytearray
        if self.extensions is None:  # one copy of the packet, rewritten in place
            packet = bytearray(plain)
            _FIXED.pack_into(packet, 0, b0, (b1 & 0x80) | pt, oseq, ots, out.ssrc)
        else:
            b0, rest = self.extensions.rewrite(plain)
            packet = _FIXED.pack(b0, (b1 & 0x80) | pt, oseq, ots, out.ssrc) + rest
        if selector is not None and self.record is not None and payload:
            # Janus records the relayed substream: one SSRC and numbering whatever the switches;
            # the source's payload type, which the recording's codec names know.
            self.record(_FIXED.pack(b0, b1, oseq, ots, out.ssrc) + packet[12:], now)
        out.send(packet, oseq, payload)
        counters = self.counters
        counters.forwarded += 1
        counters.forwarded_octets += payload
