"""RTP packets as bytes: header length, header extensions, RTX, keyframes (pure functions).

The forwarder never builds an ``RtpPacket``: it reads the 12 fixed bytes with one struct
call, writes new ones and copies the rest. What cannot be one struct call lives here:

- ``header_length``: fixed header + CSRCs + the RFC 8285 extension block.
- ``ExtensionRewriter``: for legs whose extension ids (or mids) differ, the extension block
  rebuilt with the outgoing leg's ids and mid; extensions the outgoing leg did not negotiate
  are dropped. ``ExtensionRewriter.between`` returns None when the bytes can go as they are.
- ``rtx_unwrap`` / ``rtx_wrap``: RFC 4588 retransmissions (the original sequence number is the
  first two payload bytes).
- ``is_keyframe``: whether a packet starts a VP8, VP9 or H.264 keyframe, read only while the
  relay waits for one.

Malformed input raises ``ValueError`` with a sentence; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from struct import Struct

#: RFC 8285 profiles of the extension block.
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000  # the low 4 bits are "appbits", ignored

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"

_FIXED = Struct("!BBHII")  # V/P/X/CC, M/PT, sequence number, timestamp, SSRC
_U16 = Struct("!H")


def header_length(packet: bytes | bytearray) -> int:
    """Bytes before the payload: fixed header, CSRC list and extension block."""
    if len(packet) < 12:
        raise ValueError("RTP packet is shorter than its 12-byte fixed header")
    b0 = packet[0]
    length = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(packet) < length + 4:
            raise ValueError("RTP header extension is truncated")
        length += 4 + 4 * ((packet[length + 2] << 8) | packet[length + 3])
    if len(packet) < length:
        raise ValueError("RTP header is longer than the packet")
    return length


def payload_length(packet: bytes, header: int) -> int:
    """Payload bytes (RFC 3550 octet count): the packet without header and padding."""
    padding = packet[-1] if packet[0] & 0x20 and len(packet) > header else 0
    return max(0, len(packet) - header - padding)


def parse_extensions(packet: bytes) -> list[tuple[int, bytes]]:
    """The (id, value) elements of the extension block, in order; [] without one."""
    if not packet[0] & 0x10:
        return []
    start = 12 + 4 * (packet[0] & 0x0F)
    end = header_length(packet)
    profile = (packet[start] << 8) | packet[start + 1]
    return _elements(profile, packet, start + 4, end)


def _elements(profile: int, data: bytes, pos: int, end: int) -> list[tuple[int, bytes]]:
    elements = []
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            byte = data[pos]
            if byte == 0:  # padding
                pos += 1
                continue
            x_id, size = byte >> 4, (byte & 0x0F) + 1
            if x_id == 15:  # RFC 8285 4.2: reserved, stop reading
                break
            pos += 1
            if pos + size > end:
                raise ValueError("RTP one-byte header extension element is truncated")
            elements.append((x_id, data[pos:pos + size]))
            pos += size
    elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while pos < end:
            if data[pos] == 0:
                pos += 1
                continue
            if pos + 2 > end:
                raise ValueError("RTP two-byte header extension element is truncated")
            x_id, size = data[pos], data[pos + 1]
            pos += 2
            if pos + size > end:
                raise ValueError("RTP two-byte header extension element is truncated")
            elements.append((x_id, data[pos:pos + size]))
            pos += size
    return elements  # other profiles: not RFC 8285, nothing we can map


def pack_extensions(elements: list[tuple[int, bytes]]) -> bytes:
    """The extension block (profile, length, elements, padding) for ``elements``; b"" if none.

    One-byte form when every element fits it (id 1..14, 1..16 bytes), else two-byte form.
    """
    if not elements:
        return b""
    one_byte = all(0 < x_id < 15 and 0 < len(value) <= 16 for x_id, value in elements)
    if one_byte:
        body = b"".join(bytes([(x_id << 4) | (len(value) - 1)]) + value for x_id, value in elements)
        profile = ONE_BYTE_PROFILE
    else:
        if any(not 0 < x_id < 256 or len(value) > 255 for x_id, value in elements):
            raise ValueError("RTP header extension id or value does not fit the two-byte form")
        body = b"".join(bytes([x_id, len(value)]) + value for x_id, value in elements)
        profile = TWO_BYTE_PROFILE
    body += b"\x00" * (-len(body) % 4)
    return _U16.pack(profile) + _U16.pack(len(body) // 4) + body


class ExtensionRewriter:
    """Rebuilds a packet's extension block for the outgoing leg.

    ``ids`` maps each incoming extension id to the outgoing id (ids absent are dropped);
    ``mid_id`` is the incoming id of the mid extension, whose value becomes ``mid`` (the
    outgoing leg's m-line: browsers demultiplex by it).
    """

    __slots__ = ("ids", "mid_id", "mid")

    def __init__(self, ids: Mapping[int, int], mid_id: int | None = None, mid: str = "") -> None:
        self.ids = dict(ids)
        self.mid_id = mid_id
        self.mid = mid.encode()

    @classmethod
    def between(cls, incoming: Mapping[str, int], outgoing: Mapping[str, int], incoming_mid: str,
                outgoing_mid: str) -> ExtensionRewriter | None:
        """The rewriter from one leg's negotiated extensions (uri -> id) to the other's, or None
        when the incoming bytes are already right for the outgoing leg (same ids, same mid)."""
        ids = {x_id: outgoing[uri] for uri, x_id in incoming.items() if uri in outgoing}
        mid_id = incoming.get(MID_URI)
        same_mid = mid_id is None or MID_URI not in outgoing or incoming_mid == outgoing_mid
        if same_mid and len(ids) == len(incoming) and all(a == b for a, b in ids.items()):
            return None
        return cls(ids, mid_id if MID_URI in outgoing else None, outgoing_mid)

    def rewrite(self, packet: bytes) -> tuple[int, bytes]:
        """(first byte, everything after the fixed header) of the packet with its extensions
        rewritten: the X bit is cleared when no extension is left."""
        b0 = packet[0]
        csrc_end = 12 + 4 * (b0 & 0x0F)
        if not b0 & 0x10:
            return b0, packet[12:]
        end = header_length(packet)
        profile = (packet[csrc_end] << 8) | packet[csrc_end + 1]
        kept = []
        for x_id, value in _elements(profile, packet, csrc_end + 4, end):
            out_id = self.ids.get(x_id)
            if out_id is None:
                continue
            kept.append((out_id, self.mid if x_id == self.mid_id else value))
        block = pack_extensions(kept)
        b0 = (b0 | 0x10) if block else (b0 & ~0x10)
        return b0, packet[12:csrc_end] + block + packet[end:]


def rtx_unwrap(packet: bytes, header: int, payload_type: int, ssrc: int) -> bytes | None:
    """The original packet inside an RTX packet (RFC 4588), or None for a padding-only probe."""
    if payload_length(packet, header) < 2:
        return None
    b0, b1, _, timestamp, _ = _FIXED.unpack_from(packet)
    osn = (packet[header] << 8) | packet[header + 1]
    return _FIXED.pack(b0, (b1 & 0x80) | payload_type, osn, timestamp, ssrc) + packet[12:header] + packet[header + 2:]


def rtx_wrap(packet: bytes | bytearray, header: int, payload_type: int, sequence_number: int, ssrc: int) -> bytes:
    """``packet`` as an RTX retransmission: RTX payload type, sequence number and SSRC, the
    original sequence number in front of the payload."""
    b0, b1, osn, timestamp, _ = _FIXED.unpack_from(packet)
    return (_FIXED.pack(b0, (b1 & 0x80) | payload_type, sequence_number, timestamp, ssrc)
            + packet[12:header] + _U16.pack(osn) + packet[header:])


# --- keyframes ------------------------------------------------------------------------------


def is_keyframe(codec: str, payload: bytes) -> bool:
    """Whether this RTP payload starts a keyframe of ``codec`` (VP8, VP9, H264; else False)."""
    if not payload:
        return False
    name = codec.upper()
    if name == "VP8":
        return _vp8_keyframe(payload)
    if name == "VP9":
        return _vp9_keyframe(payload)
    if name == "H264":
        return _h264_keyframe(payload)
    return False


def _vp8_keyframe(payload: bytes) -> bool:
    # RFC 7741 4.2: payload descriptor, then the VP8 header whose bit 0 is the inverse key flag.
    first = payload[0]
    if not first & 0x10 or first & 0x07:  # S (start of partition) and PID 0: the frame's first packet
        return False
    pos = 1
    if first & 0x80:  # X: extension byte I L T K
        if len(payload) < 2:
            return False
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= pos:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    return len(payload) > pos and not payload[pos] & 0x01


def _vp9_keyframe(payload: bytes) -> bool:
    # draft-ietf-payload-vp9 4.2: I P L F B E V Z; a keyframe's first packet has P=0 and B=1.
    first = payload[0]
    return not first & 0x40 and bool(first & 0x08)


def _h264_keyframe(payload: bytes) -> bool:
    # RFC 6184 5.6-5.8: single NAL unit, STAP-A (24) or FU-A (28); IDR (5) or SPS (7) starts one.
    nal = payload[0] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:
        pos = 1
        while pos + 2 < len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            if payload[pos + 2] & 0x1F in (5, 7):
                return True
            pos += 2 + size
        return False
    if nal == 28 and len(payload) > 1:
        return bool(payload[1] & 0x80) and payload[1] & 0x1F in (5, 7)
    return False


# --- VP8 / VP9 payload descriptors (temporal layers, picture ids) ----------------------------


class Descriptor:
    """What simulcast needs of a VP8 or VP9 payload descriptor: where a picture starts, its
    temporal layer, whether it is a layer-sync (switching-up) point, and where its picture id
    and TL0PICIDX are so they can be rewritten in place. Positions are offsets in the packet;
    -1 where the field is absent."""

    __slots__ = ("start", "keyframe", "tid", "sync", "pid", "pid_pos", "wide", "tl0", "tl0_pos")

    def __init__(self) -> None:
        self.start = False      # the first packet of a picture
        self.keyframe = False   # ... of a keyframe
        self.tid = -1           # temporal layer id, -1 when the descriptor has none
        self.sync = False       # VP8 Y / VP9 U: decodable from the base layer alone
        self.pid = 0
        self.pid_pos = -1
        self.wide = False       # 15-bit picture id (M bit), else 7-bit
        self.tl0 = 0
        self.tl0_pos = -1


def vp8_descriptor(packet: bytes, header: int) -> Descriptor | None:
    """The VP8 payload descriptor (RFC 7741 4.2) of the packet whose payload starts at
    ``header``; None when it is truncated. TID -1 without the T bit: no temporal layers (Janus
    reads 0 there, and so announces temporal layer 0 of a stream that has none)."""
    end = len(packet)
    if header >= end:
        return None
    d = Descriptor()
    first = packet[header]
    d.start = bool(first & 0x10) and not first & 0x07
    pos = header + 1
    if first & 0x80:
        if pos >= end:
            return None
        ext = packet[pos]
        pos += 1
        if ext & 0x80:  # I: picture id
            if (after := _picture_id(d, packet, pos)) is None:
                return None
            pos = after
        if ext & 0x40:  # L: TL0PICIDX
            if pos >= end:
                return None
            d.tl0_pos, d.tl0 = pos, packet[pos]
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            if pos >= end:
                return None
            if ext & 0x20:
                d.tid = packet[pos] >> 6
                d.sync = bool(packet[pos] & 0x20)
            pos += 1
    d.keyframe = d.start and pos < end and not packet[pos] & 0x01
    return d


def _picture_id(d: Descriptor, packet: bytes, pos: int) -> int | None:
    """Read the picture id at ``pos`` into ``d`` (VP8 and VP9 write it alike: 7 bits, or 15
    with the M bit); the position after it, or None when the packet ends first."""
    end = len(packet)
    if pos >= end:
        return None
    d.pid_pos = pos
    if packet[pos] & 0x80:
        if pos + 1 >= end:
            return None
        d.wide = True
        d.pid = ((packet[pos] & 0x7F) << 8) | packet[pos + 1]
        return pos + 2
    d.pid = packet[pos]
    return pos + 1


def vp9_descriptor(packet: bytes, header: int) -> Descriptor | None:
    """The VP9 payload descriptor (RFC 9628 4.2) of the packet whose payload starts at
    ``header``; None when it is truncated. TID -1 without layer indices (L bit clear)."""
    end = len(packet)
    if header >= end:
        return None
    d = Descriptor()
    first = packet[header]
    begin = bool(first & 0x08)
    pos = header + 1
    if first & 0x80:  # I: picture id
        if (after := _picture_id(d, packet, pos)) is None:
            return None
        pos = after
    sid = 0
    if first & 0x20:  # L: layer indices TID U SID D, then TL0PICIDX in non-flexible mode
        if pos >= end:
            return None
        d.tid = packet[pos] >> 5
        d.sync = bool(packet[pos] & 0x10)
        sid = (packet[pos] >> 1) & 0x07
        pos += 1
        if not first & 0x10:
            if pos >= end:
                return None
            d.tl0_pos, d.tl0 = pos, packet[pos]
    d.start = begin and sid == 0
    d.keyframe = d.start and not first & 0x40
    return d
