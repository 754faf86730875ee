"""RTP header bytes (mediarelay/rtp_header.py): lengths, extensions, RTX, keyframes."""

from __future__ import annotations

from struct import pack

import pytest
from aiortc.rtp import RtpPacket

from mediarelay.rtp_header import (
    ONE_BYTE_PROFILE,
    ExtensionRewriter,
    header_length,
    is_keyframe,
    pack_extensions,
    parse_extensions,
    payload_length,
    rtx_unwrap,
    rtx_wrap,
)

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


def rtp(payload: bytes = b"\x10\x00payload", *, pt: int = 96, seq: int = 7, ts: int = 1234, ssrc: int = 0xAABBCCDD,
        csrcs: tuple[int, ...] = (), extensions: list[tuple[int, bytes]] | None = None, marker: bool = False,
        padding: int = 0) -> bytes:
    block = pack_extensions(extensions or [])
    b0 = 0x80 | (0x10 if block else 0) | (0x20 if padding else 0) | len(csrcs)
    body = b"".join(pack("!I", c) for c in csrcs) + block + payload
    if padding:
        body += b"\x00" * (padding - 1) + bytes([padding])
    return pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc) + body


# --- lengths ----------------------------------------------------------------------------------


@pytest.mark.parametrize("packet, header", [
    (rtp(), 12),
    (rtp(csrcs=(1, 2)), 20),
    (rtp(extensions=[(1, b"0")]), 20),
    (rtp(csrcs=(9,), extensions=[(1, b"0"), (3, b"\x01\x02\x03")]), 12 + 4 + 4 + 8),
])
def test_header_length(packet: bytes, header: int) -> None:
    assert header_length(packet) == header
    assert RtpPacket.parse(packet).payload == packet[header:]  # as aiortc reads it


@pytest.mark.parametrize("packet, message", [
    (b"\x80\x60" + b"\x00" * 8, "shorter than its 12-byte fixed header"),
    (bytes([0x90]) + rtp(b"")[1:12] + b"\xbe\xde", "extension is truncated"),
    (bytes([0x90]) + rtp(b"")[1:12] + b"\xbe\xde\x00\x05", "longer than the packet"),
    (bytes([0x82]) + rtp(b"")[1:12] + b"\x00\x00", "longer than the packet"),
])
def test_header_length_refuses_truncated_headers(packet: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        header_length(packet)


def test_payload_length_leaves_out_padding() -> None:
    packet = rtp(b"abcdef", padding=4)
    assert payload_length(packet, header_length(packet)) == 6


# --- extensions -------------------------------------------------------------------------------


def test_one_and_two_byte_extensions_round_trip() -> None:
    one = [(1, b"0"), (3, b"\x01\x02\x03")]
    assert pack_extensions(one)[:2] == pack("!H", ONE_BYTE_PROFILE)
    assert parse_extensions(rtp(extensions=one)) == one
    two = [(1, b"0"), (20, b"x" * 20)]  # id 20 and 20 bytes need the two-byte form
    assert pack_extensions(two)[:2] == b"\x10\x00"
    assert parse_extensions(rtp(extensions=two)) == two
    assert parse_extensions(rtp()) == []
    assert pack_extensions([]) == b""


def test_padding_bytes_between_elements_are_skipped() -> None:
    block = b"\xbe\xde\x00\x02" + b"\x10" + b"0" + b"\x00\x00" + b"\x32\x01\x02\x03"
    packet = bytes([0x90]) + rtp(b"")[1:12] + block + b"payload"
    assert parse_extensions(packet) == [(1, b"0"), (3, b"\x01\x02\x03")]


def test_no_rewriter_when_the_bytes_are_already_right() -> None:
    assert ExtensionRewriter.between({MID: 1, ABS: 3}, {MID: 1, ABS: 3}, "1", "1") is None
    assert ExtensionRewriter.between({ABS: 3}, {ABS: 3}, "0", "video") is None  # no mid extension at all


@pytest.mark.parametrize("incoming, outgoing, in_mid, out_mid, elements, expected", [
    ({MID: 1, ABS: 3}, {MID: 4, ABS: 2}, "1", "1", [(1, b"1"), (3, b"abc")], [(4, b"1"), (2, b"abc")]),
    ({MID: 1, ABS: 3}, {MID: 1, ABS: 3}, "0", "video", [(1, b"0"), (3, b"abc")], [(1, b"video"), (3, b"abc")]),
    ({MID: 1, LEVEL: 2}, {MID: 1}, "0", "0", [(2, b"\x9f"), (1, b"0")], [(1, b"0")]),  # not negotiated: dropped
    ({MID: 1}, {MID: 5}, "0", "0", [(1, b"0"), (9, b"?")], [(5, b"0")]),  # an id nobody negotiated
])
def test_extensions_are_rewritten_for_the_other_leg(incoming: dict[str, int], outgoing: dict[str, int], in_mid: str,
                                                    out_mid: str, elements: list[tuple[int, bytes]],
                                                    expected: list[tuple[int, bytes]]) -> None:
    rewriter = ExtensionRewriter.between(incoming, outgoing, in_mid, out_mid)
    assert rewriter is not None
    packet = rtp(b"PAYLOAD", csrcs=(77,), extensions=elements)
    b0, rest = rewriter.rewrite(packet)
    result = bytes([b0]) + packet[1:12] + rest
    assert parse_extensions(result) == expected
    assert result[header_length(result):] == b"PAYLOAD"
    assert result[12:16] == pack("!I", 77)  # CSRCs kept


def test_the_x_bit_goes_when_no_extension_is_left() -> None:
    rewriter = ExtensionRewriter.between({LEVEL: 2}, {MID: 1}, "0", "0")
    assert rewriter is not None
    packet = rtp(b"data", extensions=[(2, b"\x80")])
    b0, rest = rewriter.rewrite(packet)
    assert not b0 & 0x10 and rest == b"data"
    assert rewriter.rewrite(rtp(b"data")) == (0x80, b"data")  # no extension block: nothing to do


# --- RTX --------------------------------------------------------------------------------------


def test_rtx_wrap_and_unwrap_round_trip() -> None:
    original = rtp(b"frame-bytes", pt=96, seq=65535, ts=99, ssrc=1111, extensions=[(1, b"1")], marker=True)
    wrapped = rtx_wrap(original, header_length(original), 97, 12, 2222)
    parsed = RtpPacket.parse(wrapped)
    assert (parsed.payload_type, parsed.sequence_number, parsed.ssrc, parsed.marker) == (97, 12, 2222, 1)
    assert parsed.payload == b"\xff\xff" + b"frame-bytes"
    assert rtx_unwrap(wrapped, header_length(wrapped), 96, 1111) == original


def test_an_rtx_padding_probe_unwraps_to_nothing() -> None:
    probe = rtp(b"", pt=97, padding=200)
    assert rtx_unwrap(probe, header_length(probe), 96, 1) is None


# --- keyframes --------------------------------------------------------------------------------


def vp8(descriptor: bytes, first_payload_byte: int) -> bytes:
    return descriptor + bytes([first_payload_byte]) + b"\x00" * 9


@pytest.mark.parametrize("codec, payload, key", [
    ("VP8", vp8(b"\x10", 0x00), True),                     # S=1 PID=0, P=0
    ("VP8", vp8(b"\x10", 0x01), False),                    # inter frame
    ("VP8", vp8(b"\x00", 0x00), False),                    # not the start of the partition
    ("VP8", vp8(b"\x90\x80\x05", 0x00), True),             # X, I with a 7-bit picture id
    ("VP8", vp8(b"\x90\x80\x80\x05", 0x00), True),         # X, I with a 15-bit picture id
    ("VP8", vp8(b"\x90\xe0\x80\x05\x11\x20", 0x00), True),  # X, I (15 bits), L, T
    ("VP8", vp8(b"\x90\xe0\x80\x05\x11\x20", 0x01), False),
    ("VP9", b"\x08" + b"\x00" * 5, True),                  # P=0, B=1
    ("VP9", b"\x48" + b"\x00" * 5, False),                 # P=1
    ("VP9", b"\x00" + b"\x00" * 5, False),                 # not the beginning of a frame
    ("H264", b"\x65\x88", True),                           # IDR slice
    ("H264", b"\x67\x42", True),                           # SPS
    ("H264", b"\x41\x9a", False),                          # non-IDR slice
    ("H264", b"\x18\x00\x02\x67\x42\x00\x02\x68\xce", True),  # STAP-A with SPS, PPS
    ("H264", b"\x18\x00\x02\x06\x05\x00\x02\x41\x9a", False),  # STAP-A with SEI, slice
    ("H264", b"\x7c\x85\x88", True),                       # FU-A start of an IDR
    ("H264", b"\x7c\x05\x88", False),                      # FU-A continuation
    ("opus", b"\xfc\xff", False),
    ("VP8", b"", False),
])
def test_keyframes_are_spotted(codec: str, payload: bytes, key: bool) -> None:
    assert is_keyframe(codec, payload) is key
