"""The depacketizer's ordering and frame assembly, on hand-made packets (pure, fast)."""

from __future__ import annotations

from tests.support.mjr_media import rtp
from videocall import depacketize
from videocall.depacketize import Drops


def _vp8(sequence: int, timestamp: int, start: bool, key: bool, marker: bool, body: bytes = b"xy") -> bytes:
    descriptor = bytes([0x90 if start else 0x80, 0x80, 0x05])  # X, S; I with a 7-bit picture id
    frame_tag = bytes([0x00 if key else 0x01]) if start else b""
    return rtp(sequence, timestamp, marker, descriptor + frame_tag + body, 7, extension=sequence % 2 == 0)


def test_packets_are_ordered_across_wraps_and_duplicates_dropped() -> None:
    written = [_vp8(65535, 0xFFFFFF00, True, True, True), _vp8(1, 0xFFFFFF00 + 6000, True, False, True),
               _vp8(0, 0xFFFFFF00 + 3000, True, False, True), _vp8(1, 0xFFFFFF00 + 6000, True, False, True)]
    drops = Drops()
    ordered = depacketize.order(written, drops)
    assert [(p.sequence, p.timestamp) for p in ordered] == [(65535, 0), (65536, 3000), (65537, 6000)]
    assert drops.duplicates == 1


def test_a_frame_missing_a_packet_and_frames_before_a_keyframe_are_left_out() -> None:
    written = [
        _vp8(10, 0, True, False, True),  # a delta frame: nothing to decode it from
        _vp8(11, 3000, True, True, False), _vp8(12, 3000, False, False, True),  # keyframe in two packets
        _vp8(13, 6000, True, False, False),  # its second packet (14) is lost
        _vp8(15, 9000, True, False, True),
    ]
    track = depacketize.track("vp8", written)
    assert [(f.pts, f.keyframe) for f in track.frames] == [(3000, True), (9000, False)]
    assert track.frames[0].data == b"\x00xy" + b"xy"
    assert (track.drops.before_keyframe, track.drops.incomplete_frames) == (1, 1)


def test_h264_fu_a_and_stap_a_become_annex_b() -> None:
    sps, pps, idr = b"\x67\x42", b"\x68\xce", b"\x65" + bytes(range(10))
    stap = b"\x78" + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    fu_start = bytes([0x7C, 0x80 | 5]) + idr[1:6]
    fu_end = bytes([0x7C, 0x40 | 5]) + idr[6:]
    packets = [rtp(1, 0, False, stap, 1, False), rtp(2, 0, False, fu_start, 1, False), rtp(3, 0, True, fu_end, 1, False)]
    track = depacketize.track("h264", packets)
    start = b"\x00\x00\x00\x01"
    assert [f.data for f in track.frames] == [start + sps + start + pps + start + idr]
    assert track.frames[0].keyframe


def test_opus_duration_comes_from_the_toc() -> None:
    assert depacketize.opus_samples(b"\xfc\xff\xfe") == 960  # CELT FB 20 ms, one frame
    assert depacketize.opus_samples(b"\x19\x00") == 2 * 2880  # SILK NB 60 ms, code 1: two frames
