"""From a recording's RTP packets to codec frames, without decoding (pure).

What ``janus-pp-rec`` does before it muxes (``src/postprocessing/janus-pp-rec.c``,
``pp-webm.c``, ``pp-h264.c``, ``pp-opus.c``): keep the first SSRC's packets, put them in
sequence-number order (across 16-bit wraps) and drop duplicates (retransmissions), strip
the RTP header, CSRCs, header extension and padding, then join each frame's payloads
(the packets sharing one RTP timestamp) after the codec's payload descriptor:

- VP8, RFC 7741: the payload descriptor (X, I/M picture id, L, T/K), S=1 with PID=0 starts
  a frame; the VP8 header's P bit clear marks a keyframe.
- VP9, draft-ietf-payload-vp9 as ``pp-webm.c`` reads it: I/M picture id, L (and TL0PICIDX
  in non-flexible mode), P/F reference indices, the scalability structure (V, Y, G).
  B starts a frame; P clear on a frame's start marks a keyframe.
- H.264, RFC 6184 packetization mode 1: single NAL units, STAP-A and FU-A, out as Annex B
  (start codes); a frame with an IDR slice is a keyframe.
- Opus: one RTP payload is one Opus packet (RFC 7587); its duration is read from its TOC.

A frame's ``pts`` is its RTP timestamp, unwrapped past 32 bits, minus the first packet's
(the first one written, which the info header's ``u`` dates): units of the codec's clock
(90 kHz video, 48 kHz Opus). Frames missing a packet, and frames before the first
keyframe, cannot be decoded: they are left out and counted, never guessed at.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

VIDEO_CLOCK = 90_000
OPUS_CLOCK = 48_000
VIDEO_CODECS = frozenset({"vp8", "vp9", "h264"})
AUDIO_CODECS = frozenset({"opus"})
_ANNEX_B = b"\x00\x00\x00\x01"


@dataclass(frozen=True)
class RtpPacket:
    """The fields of one RTP packet a converter needs, its payload without padding."""

    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """``ValueError`` naming the defect for anything that is not RTP version 2."""
        if len(data) < 12:
            raise ValueError(f"RTP packet of {len(data)} bytes is shorter than its header")
        first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", data)
        if first >> 6 != 2:
            raise ValueError(f"RTP version {first >> 6}, not 2")
        start = 12 + 4 * (first & 0x0F)
        if first & 0x10:
            if len(data) < start + 4:
                raise ValueError("RTP header extension cut short")
            (words,) = struct.unpack_from("!H", data, start + 2)
            start += 4 + 4 * words
        end = len(data)
        if first & 0x20:
            end -= data[-1]
        if start > len(data) or end < start:
            raise ValueError("RTP header, extension or padding longer than the packet")
        return cls(sequence, timestamp, ssrc, bool(second & 0x80), data[start:end])


@dataclass(frozen=True)
class OrderedPacket:
    """A packet with its sequence number and timestamp unwrapped (``timestamp`` from 0)."""

    sequence: int
    timestamp: int
    marker: bool
    payload: bytes


@dataclass
class Drops:
    """What was left out of a conversion, by reason (reported, never silently)."""

    not_rtp: int = 0
    other_ssrc: int = 0
    duplicates: int = 0
    empty: int = 0
    incomplete_frames: int = 0
    before_keyframe: int = 0

    def describe(self) -> str:
        """One short phrase, or "" when nothing was dropped."""
        parts = [
            (self.not_rtp, "not RTP"), (self.other_ssrc, "from another SSRC"),
            (self.duplicates, "duplicate packets"), (self.empty, "empty packets"),
            (self.incomplete_frames, "frames missing a packet"),
            (self.before_keyframe, "frames before the first keyframe"),
        ]
        return ", ".join(f"{count} {what}" for count, what in parts if count)


def _unwrap(previous: int, value: int, bits: int) -> int:
    """``value`` (``bits`` wide) placed nearest to the unwrapped ``previous``."""
    span = 1 << bits
    delta = (value - previous) % span
    if delta >= span // 2:
        delta -= span
    return previous + delta


def order(packets: Iterable[bytes], drops: Drops) -> list[OrderedPacket]:
    """The first SSRC's packets in sequence order, duplicates out, times from the first.

    Both numbers are unwrapped against the packet written before (a jump of less than half
    their range either way), so a wrap or a late packet lands where it belongs.
    """
    ssrc: int | None = None
    last_sequence = last_timestamp = first_timestamp = 0
    by_sequence: dict[int, OrderedPacket] = {}
    for data in packets:
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            drops.not_rtp += 1
            continue
        if ssrc is None:
            ssrc = packet.ssrc
            last_sequence, last_timestamp = packet.sequence, packet.timestamp
            first_timestamp = packet.timestamp
        elif packet.ssrc != ssrc:
            drops.other_ssrc += 1  # as janus-pp-rec: "Dropping packet with unexpected SSRC"
            continue
        sequence = _unwrap(last_sequence, packet.sequence, 16)
        timestamp = _unwrap(last_timestamp, packet.timestamp, 32)
        last_sequence, last_timestamp = sequence, timestamp
        if sequence in by_sequence:
            drops.duplicates += 1
            continue
        if not packet.payload:
            drops.empty += 1  # padding only (bandwidth probes): janus-pp-rec drops them too
            continue
        by_sequence[sequence] = OrderedPacket(sequence, timestamp - first_timestamp, packet.marker, packet.payload)
    return [by_sequence[key] for key in sorted(by_sequence)]


# --- codec payloads ------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """One packet's share of a frame: does it start the frame, is that a keyframe, the bytes."""

    starts_frame: bool
    keyframe: bool
    data: bytes


def vp8_payload(payload: bytes) -> Payload:
    """RFC 7741 section 4.2: the payload descriptor, then the VP8 bitstream."""
    if not payload:
        raise ValueError("empty VP8 payload")
    first = payload[0]
    index = 1
    if first & 0x80:  # X: extended control bits
        extended = payload[1] if len(payload) > 1 else 0
        index = 2
        if extended & 0x80:  # I: picture id, 7 or 15 bits (M)
            index += 2 if len(payload) > index and payload[index] & 0x80 else 1
        if extended & 0x40:  # L: TL0PICIDX
            index += 1
        if extended & 0x30:  # T or K: TID/Y/KEYIDX
            index += 1
    if index >= len(payload):
        raise ValueError("VP8 payload descriptor longer than the packet")
    starts = bool(first & 0x10) and first & 0x07 == 0  # S, partition 0
    keyframe = starts and not payload[index] & 0x01  # the frame tag's P bit: 0 = key frame
    return Payload(starts, keyframe, payload[index:])


def vp9_payload(payload: bytes) -> Payload:
    """The VP9 payload descriptor as ``pp-webm.c`` skips it, then the VP9 bitstream."""
    if not payload:
        raise ValueError("empty VP9 payload")
    first = payload[0]
    inter, layer, flexible = first & 0x40, first & 0x20, first & 0x10
    index = 1
    if first & 0x80:  # I: picture id, 7 or 15 bits (M)
        index += 2 if len(payload) > index and payload[index] & 0x80 else 1
    if layer:
        index += 1 if flexible else 2  # layer indices, and TL0PICIDX in non-flexible mode
    if flexible and inter:  # reference indices, N marks one more
        while index < len(payload) and payload[index] & 0x01:
            index += 1
        index += 1
    if first & 0x02 and index < len(payload):  # V: scalability structure
        ss = payload[index]
        index += 1
        if ss & 0x10:  # Y: a width and height per spatial layer
            index += 4 * ((ss >> 5) + 1)
        if ss & 0x08:  # G: picture group description
            count = payload[index] if index < len(payload) else 0
            index += 1
            for _ in range(count):
                if index >= len(payload):
                    break
                index += 1 + ((payload[index] >> 2) & 0x03)
    if index >= len(payload):
        raise ValueError("VP9 payload descriptor longer than the packet")
    starts = bool(first & 0x08)  # B: beginning of a frame
    return Payload(starts, starts and not inter, payload[index:])


class H264Depacketizer:
    """RFC 6184 to Annex B, carrying FU-A fragments from packet to packet."""

    def __init__(self) -> None:
        self._fragment: bytearray | None = None

    def reset(self) -> None:
        """Forget a half-assembled FU-A (its frame lost a packet)."""
        self._fragment = None

    def payload(self, payload: bytes) -> Payload:
        if not payload:
            raise ValueError("empty H.264 payload")
        kind = payload[0] & 0x1F
        nals: list[bytes] = []
        starts = True
        if 1 <= kind <= 23:  # a single NAL unit
            nals.append(payload)
        elif kind == 24:  # STAP-A: 16-bit sizes before each NAL unit
            index = 1
            while index + 2 <= len(payload):
                (size,) = struct.unpack_from("!H", payload, index)
                index += 2
                if size == 0 or index + size > len(payload):
                    raise ValueError("STAP-A unit longer than the packet")
                nals.append(payload[index:index + size])
                index += size
        elif kind == 28:  # FU-A
            if len(payload) < 2:
                raise ValueError("FU-A without its header")
            header = payload[1]
            if header & 0x80:  # S
                self._fragment = bytearray([(payload[0] & 0xE0) | (header & 0x1F)])
            elif self._fragment is None:
                raise ValueError("FU-A fragment without its start")
            starts = bool(header & 0x80)
            self._fragment += payload[2:]
            if header & 0x40:  # E
                nals.append(bytes(self._fragment))
                self._fragment = None
        else:
            raise ValueError(f"H.264 NAL unit type {kind} is not in packetization mode 1")
        keyframe = any(nal[0] & 0x1F in (5, 7) for nal in nals)
        return Payload(starts, keyframe, b"".join(_ANNEX_B + nal for nal in nals))


# --- frames --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One encoded frame: its pts in the codec's clock, its bytes, keyframe or not."""

    pts: int
    data: bytes
    keyframe: bool
    duration: int = 0


@dataclass
class Track:
    """One recording's frames, ready to mux."""

    codec: str
    clock_rate: int
    frames: list[Frame] = field(default_factory=list)
    drops: Drops = field(default_factory=Drops)

    @property
    def duration(self) -> int:
        """From the first frame's start to the last one's end, in clock units."""
        if not self.frames:
            return 0
        return self.frames[-1].pts + self.frames[-1].duration - self.frames[0].pts


def video_frames(codec: str, packets: Sequence[OrderedPacket], drops: Drops) -> list[Frame]:
    """Join each frame's packets; drop frames missing one, and those before a keyframe.

    A frame is the run of packets with one timestamp (the marker bit is not needed, and may
    be lost, as ``pp-webm.c`` notes); it is whole when its sequence numbers follow each other,
    it starts with a start-of-frame packet, and (when the next frame is there) the packet
    before the next frame's carried the marker or the numbers run straight into it.
    """
    h264 = H264Depacketizer() if codec == "h264" else None
    frames: list[Frame] = []
    index = 0
    while index < len(packets):
        end = index
        while end + 1 < len(packets) and packets[end + 1].timestamp == packets[index].timestamp:
            end += 1
        group = packets[index:end + 1]
        next_sequence = packets[end + 1].sequence if end + 1 < len(packets) else None
        index = end + 1
        whole = group[-1].sequence - group[0].sequence == len(group) - 1  # sorted and unique: no gap
        if next_sequence is not None and next_sequence != group[-1].sequence + 1 and not group[-1].marker:
            whole = False  # the frame's last packet(s) went missing
        parts: list[Payload] = []
        if h264 is not None:
            h264.reset()
        try:
            for packet in group:
                if codec == "vp8":
                    parts.append(vp8_payload(packet.payload))
                elif codec == "vp9":
                    parts.append(vp9_payload(packet.payload))
                elif h264 is not None:
                    parts.append(h264.payload(packet.payload))
        except ValueError:
            whole = False
        if not whole or not parts or not parts[0].starts_frame:
            drops.incomplete_frames += 1
            continue
        keyframe = parts[0].keyframe if codec != "h264" else any(p.keyframe for p in parts)
        if not frames and not keyframe:
            drops.before_keyframe += 1
            continue
        frames.append(Frame(group[0].timestamp, b"".join(p.data for p in parts), keyframe))
    return _with_durations(frames)


def _with_durations(frames: list[Frame]) -> list[Frame]:
    """Each frame lasts until the next; the last as long as the one before it."""
    out: list[Frame] = []
    for index, frame in enumerate(frames):
        if index + 1 < len(frames):
            duration = frames[index + 1].pts - frame.pts
        else:
            duration = out[-1].duration if out else 0
        out.append(Frame(frame.pts, frame.data, frame.keyframe, max(duration, 0)))
    return out


#: Opus TOC configurations 0..31: frame size in 48 kHz samples (RFC 6716 section 3.1).
_OPUS_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # SILK NB, MB, WB: 10, 20, 40, 60 ms
    + [480, 960] * 2  # hybrid SWB, FB: 10, 20 ms
    + [120, 240, 480, 960] * 4  # CELT NB, WB, SWB, FB: 2.5, 5, 10, 20 ms
)


def opus_samples(packet: bytes) -> int:
    """How many 48 kHz samples an Opus packet holds, from its TOC byte (RFC 6716 3.1)."""
    if not packet:
        return 0
    toc = packet[0]
    per_frame = _OPUS_FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        count = packet[1] & 0x3F if len(packet) > 1 else 0
    return per_frame * count


def opus_frames(packets: Sequence[OrderedPacket]) -> list[Frame]:
    """One Opus packet per RTP packet; every one of them decodes alone."""
    return [Frame(p.timestamp, p.payload, True, opus_samples(p.payload)) for p in packets]


def track(codec: str, packets: Iterable[bytes]) -> Track:
    """A recording's RTP packets (as written, in file order) as a track of frames."""
    drops = Drops()
    ordered = order(packets, drops)
    if codec in AUDIO_CODECS:
        return Track(codec, OPUS_CLOCK, opus_frames(ordered), drops)
    if codec in VIDEO_CODECS:
        return Track(codec, VIDEO_CLOCK, video_frames(codec, ordered, drops), drops)
    raise ValueError(f"codec {codec!r} is not one we convert (vp8, vp9, h264, opus)")
