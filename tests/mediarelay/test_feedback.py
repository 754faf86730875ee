"""The relay's RTCP duties (mediarelay/feedback.py): time is passed in, nothing waits."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtcpPsfbPacket, RtcpRrPacket, RtcpRtpfbPacket, RtcpSdesPacket, RtcpSrPacket, unpack_remb_fci

from mediarelay import feedback
from mediarelay.feedback import KeyframeRequester, NackRequester, ReceiveStats, RttEstimator, capped_remb

# --- receive statistics -----------------------------------------------------------------------


def test_in_order_packets_have_no_hole_and_no_jitter() -> None:
    stats = ReceiveStats(90000)
    for i in range(10):
        assert stats.on_packet(100 + i, 3000 * i, i / 30) == 0
    block = stats.report(1234, 1.0)
    assert (block.ssrc, block.highest_sequence, block.packets_lost, block.fraction_lost, block.jitter) == (
        1234, 109, 0, 0, 0)


@pytest.mark.parametrize("seqs, holes", [
    ([1, 2, 5], [0, 0, 2]),            # 3 and 4 missing
    ([1, 3, 2], [0, 1, 0]),            # 2 late: no hole when it comes
    ([1, 1], [0, 0]),                  # duplicate
    ([65534, 1], [0, 2]),              # 65535 and 0 across the wrap
    ([10, 9000], [0, 0]),              # a restart, not 8989 losses
])
def test_holes_are_reported_as_they_appear(seqs: list[int], holes: list[int]) -> None:
    stats = ReceiveStats(90000)
    assert [stats.on_packet(seq, 0, 0.0) for seq in seqs] == holes


def test_losses_per_interval_and_cumulative() -> None:
    stats = ReceiveStats(48000)
    for seq in [*range(50), *range(60, 100)]:  # 10 of 100 lost
        stats.on_packet(seq, seq * 960, seq * 0.02)
    first = stats.report(1, 2.0)
    assert (first.packets_lost, first.fraction_lost) == (10, 25)  # 10/100 * 256
    stats.on_packet(100, 96000, 2.0)
    assert stats.report(1, 2.1).fraction_lost == 0  # a new interval without loss
    stats.on_recovered()  # ten minus one repaired by RTX later
    assert stats.report(1, 2.2).packets_lost == 9


def test_the_extended_highest_sequence_counts_cycles() -> None:
    stats = ReceiveStats(90000)
    for seq in [65533, 65534, 65535, 0, 1]:
        stats.on_packet(seq, 0, 0.0)
    assert stats.report(1, 0.0).highest_sequence == 65536 + 1


def test_jitter_follows_rfc_3550() -> None:
    stats = ReceiveStats(90000)
    stats.on_packet(0, 0, 0.0)
    stats.on_packet(1, 3000, 0.0333333 + 0.010)  # 10 ms late = 900 timestamp units
    assert stats.report(1, 1.0).jitter == pytest.approx(900 / 16, abs=1)
    stats.on_packet(2, 3000, 0.5)  # same timestamp (same frame): jitter untouched
    assert stats.report(1, 1.0).jitter == pytest.approx(900 / 16, abs=1)


def test_lsr_and_dlsr_come_from_the_sources_sender_report() -> None:
    stats = ReceiveStats(90000)
    stats.on_packet(0, 0, 0.0)
    assert (stats.report(1, 0.0).lsr, stats.report(1, 0.0).dlsr) == (0, 0)
    ntp = (0x11223344 << 32) | 0x55667788
    stats.on_sender_report(ntp, 10.0)
    block = stats.report(1, 10.5)
    assert (block.lsr, block.dlsr) == (0x33445566, 32768)


# --- NACK -------------------------------------------------------------------------------------


def test_a_hole_is_nacked_at_once_then_every_round_trip() -> None:
    nacks = NackRequester()
    assert nacks.on_gap(10, 2, 0.0) == [11, 12]
    assert nacks.due(0.05, rtt=0.1) == []
    assert nacks.deadline(0.1) == pytest.approx(0.1)
    assert nacks.due(0.1, rtt=0.1) == [11, 12]
    assert nacks.received(11) is True and nacks.received(11) is False
    assert nacks.due(0.2, rtt=0.1) == [12]


def test_nacks_stop_after_max_age_or_max_retries() -> None:
    nacks = NackRequester(max_age=1.0, max_retries=3)
    nacks.on_gap(0, 1, 0.0)
    assert [nacks.due(t, rtt=0.1) for t in (0.1, 0.2, 0.3)] == [[1], [1], []]  # 3 NACKs in all
    assert not nacks
    nacks.on_gap(0, 1, 0.0)
    nacks.due(0.1, rtt=0.5)
    assert nacks.due(1.01, rtt=0.01) == [] and nacks.deadline(0.1) is None


def test_a_hole_too_big_to_repair_asks_for_a_keyframe() -> None:
    nacks = NackRequester(max_missing=100)
    nacks.on_gap(0, 3, 0.0)
    assert nacks.on_gap(50, 101, 0.0) is None
    assert not nacks  # and forgets what it was waiting for


def test_holes_across_the_wrap() -> None:
    assert NackRequester().on_gap(65534, 3, 0.0) == [65535, 0, 1]


# --- keyframes --------------------------------------------------------------------------------


def test_keyframe_requests_are_throttled_and_a_late_one_is_sent_when_allowed() -> None:
    keyframes = KeyframeRequester(interval=0.3, retry=1.0)
    assert keyframes.request(0.0) is True
    assert keyframes.request(0.1) is False  # too soon: waits
    assert keyframes.deadline() == pytest.approx(0.3)
    assert keyframes.due(0.2) is False and keyframes.due(0.3) is True
    keyframes.received()
    assert keyframes.deadline() is None and not keyframes.waiting


def test_a_keyframe_that_does_not_come_is_asked_again() -> None:
    keyframes = KeyframeRequester(interval=0.3, retry=1.0, max_retries=2)
    keyframes.request(0.0)
    assert keyframes.due(0.9) is False
    assert keyframes.due(1.0) is True
    assert keyframes.due(2.0) is True
    assert keyframes.due(3.0) is False and not keyframes.waiting  # gives up after max_retries


# --- round trip and REMB ----------------------------------------------------------------------


def test_rtt_from_a_report_block_about_our_sender_report() -> None:
    rtt = RttEstimator(initial=0.5)
    ntp = feedback.ntp_timestamp(1000.0)
    rtt.sender_report_sent(ntp, now=50.0)
    rtt.report_block(feedback.ntp_middle(ntp), dlsr=65536 // 10, now=50.3)  # held 0.1 s by the client
    assert rtt.rtt == pytest.approx(0.85 * 0.5 + 0.15 * 0.2, abs=1e-3)
    rtt.report_block(12345, 0, 51.0)  # about an SR we never sent
    assert rtt.rtt == pytest.approx(0.455, abs=1e-3)


@pytest.mark.parametrize("estimate, cap, told", [
    (1_000_000, 0, 1_000_000), (1_000_000, 300_000, 300_000), (200_000, 300_000, 200_000), (None, 300_000, 300_000),
    (None, 0, None),
])
def test_remb_under_a_cap(estimate: int | None, cap: int, told: int | None) -> None:
    assert capped_remb(estimate, cap) == told


# --- bytes ------------------------------------------------------------------------------------


def test_nack_bytes_group_numbers_and_wrap() -> None:
    [packet] = feedback.parse(feedback.nack(1, 2, [65534, 65535, 0, 1, 40]))
    assert isinstance(packet, RtcpRtpfbPacket)
    assert (packet.ssrc, packet.media_ssrc, packet.lost) == (1, 2, [65534, 65535, 0, 1, 40])
    assert len(feedback.nack(1, 2, [5, 6, 7])) == 16  # one FCI entry


def test_a_compound_report_parses_back() -> None:
    stats = ReceiveStats(90000)
    stats.on_packet(7, 0, 0.0)
    compound = (feedback.sender_report(11, feedback.ntp_timestamp(0.0), 5000, 3, 300)
                + feedback.receiver_report(11, [stats.report(22, 0.0)]) + feedback.sdes({11: "relay"})
                + feedback.remb(11, 300_000, [22]) + feedback.pli(11, 22))
    sr, rr, sdes, remb, pli = feedback.parse(compound)
    assert isinstance(sr, RtcpSrPacket) and (sr.sender_info.packet_count, sr.sender_info.octet_count) == (3, 300)
    assert isinstance(rr, RtcpRrPacket) and rr.reports[0].ssrc == 22 and rr.reports[0].highest_sequence == 7
    assert isinstance(sdes, RtcpSdesPacket) and sdes.chunks[0].items == [(1, b"relay")]
    assert isinstance(remb, RtcpPsfbPacket) and unpack_remb_fci(remb.fci) == (300_000, [22])
    assert isinstance(pli, RtcpPsfbPacket) and (pli.fmt, pli.media_ssrc) == (1, 22)


def test_malformed_rtcp_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="RTCP packet is truncated"):
        feedback.parse(b"\x81\xc9\x00\x07\x00")
