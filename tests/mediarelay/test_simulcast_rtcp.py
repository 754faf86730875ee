"""The relay's RTCP around a simulcast m-line (mediarelay/rtcp.py): the receiver's feedback
reaches the forwarded substream, per hop, once. Synthetic substreams (``test_simulcast.Rig``)
and the RTCP bytes a receiver sends; nothing goes on a socket, the ports' ``sendto`` collects."""

from __future__ import annotations

import asyncio
import itertools

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from mediarelay import feedback
from mediarelay.leg import LegSettings
from mediarelay.port import Link, Port
from mediarelay.rtcp import SIMULCAST_REMB, CallRtcp
from tests.mediarelay.test_simulcast import OUT_SSRC, Rig


class Clear:
    """An SRTP session that leaves the bytes as they are."""

    @staticmethod
    def protect_rtcp(data: bytes) -> bytes:
        return data


class Hops:
    """The rig's substreams as the caller's links to the callee, with the call's RTCP."""

    def __init__(self) -> None:
        self.rig = rig = Rig()
        self.sent: dict[str, list[bytes]] = {"caller": [], "callee": []}
        self.settings = {"caller": LegSettings(), "callee": LegSettings()}
        self.links = [Link("caller", "callee", stream, rig.out) for stream in rig.streams.values()]
        self.ports: dict[str, Port] = {}
        self.rtcp = CallRtcp("sim", self.links, self.ports, self.settings, rig.counters)
        for name in self.sent:
            port = self.ports[name] = Port(name, rig.counters, lambda: rig.now, self.rtcp.on_rtcp)
            port.connect(Clear(), Clear(), lambda data, _addr, name=name: self.sent[name].append(data), None)
        self.rtcp.start({"caller": 11, "callee": 22})

    def from_callee(self, packet: bytes) -> None:
        self.rtcp.on_rtcp(self.ports["callee"], packet, self.rig.now)

    def to_caller(self) -> list[object]:
        return [p for data in self.sent["caller"] for p in feedback.parse(data)]


async def test_a_pli_from_the_receiver_goes_to_the_forwarded_substream_only() -> None:
    hops = Hops()
    hops.rig.run(0.5)
    hops.rig.selector.set_auto(False)
    hops.rig.selector.set_target(1, None, hops.rig.now)
    hops.rig.run(0.5)
    hops.sent["caller"].clear()
    hops.rig.now += 1
    hops.from_callee(feedback.pli(99, OUT_SSRC))
    plis = [p for p in hops.to_caller() if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI]
    assert [p.media_ssrc for p in plis] == [hops.rig.layers[1].ssrc]
    hops.rtcp.stop()


async def test_a_nack_is_answered_once_and_a_miss_goes_to_the_forwarded_substream() -> None:
    hops = Hops()
    hops.rig.run(0.5)
    lost = hops.rig.layers[2].seq + 1  # lost between the sender and the relay
    hops.rig.tick(lose={2: 1}, packets=3)
    hops.rig.run(0.1)
    out = hops.rig.received()
    seqs = [o.seq for o in out]
    hole = next((a + 1) % 65536 for a, b in itertools.pairwise(seqs) if (b - a) % 65536 == 2)
    hops.sent["caller"].clear()
    hops.from_callee(feedback.nack(99, OUT_SSRC, [seqs[-3], hole]))
    assert hops.rig.counters.rtx_sent == 1  # from the history, once (not once per substream)
    nacks = [p for p in hops.to_caller() if isinstance(p, RtcpRtpfbPacket)]
    assert [(p.media_ssrc, p.lost) for p in nacks] == [(hops.rig.layers[2].ssrc, [lost])]
    hops.rtcp.stop()


async def test_one_sender_report_per_outgoing_stream() -> None:
    hops = Hops()
    hops.rig.run(0.5)
    reports = [p for p in feedback.parse(hops.rtcp._report("callee", hops.rig.now)) if isinstance(p, RtcpSrPacket)]
    assert [p.ssrc for p in reports] == [OUT_SSRC]
    assert reports[0].sender_info.packet_count == hops.rig.out.packets
    hops.rtcp.stop()


def rembs(packets: list[object]) -> list[tuple[int, list[int]]]:
    return [unpack_remb_fci(p.fci) for p in packets if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_APP]


async def test_the_simulcast_sender_hears_its_cap_or_janus_default_not_the_receivers_estimate() -> None:
    """Janus tells a sender its cap or 10 Mbit/s; Chromium starts its estimate there (without a
    REMB its top substream waits for a slow ramp). The receiver's estimate is for one substream."""
    hops = Hops()
    hops.rig.run(0.5)
    layer_ssrcs = sorted(layer.ssrc for layer in hops.rig.layers.values())
    hops.sent["caller"].clear()
    hops.from_callee(feedback.remb(99, 250_000, [OUT_SSRC]))
    assert hops.rig.out.estimate == 250_000
    assert [(b, sorted(s)) for b, s in rembs(hops.to_caller())] == [(SIMULCAST_REMB, layer_ssrcs)]
    hops.sent["caller"].clear()
    assert [b for b, _ in rembs(feedback.parse(hops.rtcp._report("caller", hops.rig.now)))] == [SIMULCAST_REMB]
    assert rembs(feedback.parse(hops.rtcp._report("callee", hops.rig.now))) == []  # it does not simulcast
    hops.settings["caller"].bitrate = 1_000_000
    hops.rtcp.send_remb("caller")
    [(bitrate, ssrcs)] = rembs(hops.to_caller())
    assert bitrate == 1_000_000 and sorted(ssrcs) == layer_ssrcs
    assert [b for b, _ in rembs(feedback.parse(hops.rtcp._report("caller", hops.rig.now)))] == [1_000_000]
    hops.rtcp.stop()
    await asyncio.sleep(0)


async def test_a_low_estimate_lowers_the_automatic_choice_unless_the_receiver_pinned_one() -> None:
    for pinned in (False, True):
        hops = Hops()
        if pinned:
            hops.rig.selector.set_auto(False)
            hops.rig.selector.set_target(2, None, hops.rig.now)
        for _ in range(3):
            hops.rig.run(1.0)
            hops.rtcp._measure_substreams(hops.rig.now)
        assert hops.rig.selector.substream == 2
        hops.rig.events.clear()
        for _ in range(3):  # the receiver's path carries 150 kbit/s: the middle substream does not fit
            hops.from_callee(feedback.remb(99, 150_000, [OUT_SSRC]))
            hops.rig.run(1.0)
            hops.rtcp._measure_substreams(hops.rig.now)
        hops.rig.run(0.5)
        assert hops.rig.selector.auto_substream == 0
        assert hops.rig.selector.substream == (2 if pinned else 0)
        assert (("substream", 0) in hops.rig.events) is not pinned
        hops.rtcp.stop()


async def test_lasting_loss_reported_by_the_receiver_lowers_the_automatic_choice() -> None:
    hops = Hops()
    for _ in range(3):
        hops.rig.run(1.0)
        hops.rtcp._measure_substreams(hops.rig.now)
    for _ in range(2):
        block = RtcpReceiverInfo(ssrc=OUT_SSRC, fraction_lost=64, packets_lost=10, highest_sequence=1, jitter=0,
                                 lsr=0, dlsr=0)
        hops.from_callee(feedback.receiver_report(99, [block]))
        hops.rig.run(0.5)
    hops.rig.run(0.5)
    assert hops.rig.selector.substream == 1
    hops.rtcp.stop()


async def test_the_sender_gets_a_report_block_per_substream() -> None:
    hops = Hops()
    hops.rig.run(0.5, lose={0: 1})  # substream 0 (not forwarded) loses a packet of each picture
    packets = feedback.parse(hops.rtcp._report("caller", hops.rig.now))
    blocks = {block.ssrc: block for p in packets if isinstance(p, RtcpRrPacket) for block in p.reports}
    assert sorted(blocks) == sorted(layer.ssrc for layer in hops.rig.layers.values())
    assert blocks[hops.rig.layers[0].ssrc].packets_lost > 0
    assert blocks[hops.rig.layers[2].ssrc].packets_lost == 0
    hops.rtcp.stop()


async def test_the_receivers_new_cap_moves_the_automatic_choice_at_once() -> None:
    hops = Hops()
    for _ in range(2):
        hops.rig.run(1.0)
        hops.rtcp._measure_substreams(hops.rig.now)
    assert hops.rig.selector.auto_substream == 2
    hops.settings["callee"].bitrate = 1  # nothing fits: the bottom substream
    hops.rtcp.cap_changed("callee")
    assert hops.rig.selector.auto_substream == 0
    hops.rtcp.stop()
