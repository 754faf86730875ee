"""Simulcast selection and rewriting (mediarelay/simulcast.py) through the real forwarder
streams (mediarelay/forwarder.py), with synthetic packets and time passed in: three substreams
of one sender feed one ``SendStream`` whose output is read back as the receiver would."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from struct import pack, unpack_from

import pytest

from mediarelay.forwarder import Counters, RecvStream, SendStream
from mediarelay.media_flow import MediaFlow
from mediarelay.rtp_header import header_length, rtx_wrap, vp8_descriptor, vp9_descriptor
from mediarelay.simulcast import (
    DEFAULT_FALLBACK_US,
    KEYFRAME_REQUESTS,
    LayerSource,
    PictureRewriter,
    SimulcastSelector,
)

PT, RTX_PT, OUT_PT, OUT_SSRC = 96, 97, 100, 0x0BADCAFE
FRAME = 1 / 30
#: libwebrtc's three temporal layers: TL0, TL2, TL1, TL2, ...
PATTERN = (0, 2, 1, 2)


def vp8_payload(pid: int, tl0: int, tid: int, *, start: bool, key: bool, sync: bool = False, wide: bool = True,
                size: int = 40, temporal: bool = True) -> bytes:
    pid_bytes = pack("!H", 0x8000 | pid) if wide else bytes([pid & 0x7F])
    if temporal:
        descriptor = (bytes([0x90 if start else 0x80, 0xE0]) + pid_bytes
                      + bytes([tl0, (tid << 6) | (0x20 if sync else 0)]))
    else:  # picture id only, as aiortc's encoder writes it
        descriptor = bytes([0x90 if start else 0x80, 0x80]) + pid_bytes
    vp8 = bytes([0x00 if key else 0x01]) if start else b"\x55"
    return descriptor + vp8 + b"\x00" * size


def vp9_payload(pid: int, tl0: int, tid: int, *, start: bool, key: bool, sync: bool = False, size: int = 40) -> bytes:
    # I=1, P=!key, L=1, F=0, B=start, E=!start; 15-bit picture id; TID U SID=0 D=0; TL0PICIDX
    first = 0x80 | (0 if key else 0x40) | 0x20 | (0x08 if start else 0x04)
    return bytes([first]) + pack("!H", 0x8000 | pid) + bytes([(tid << 5) | (0x10 if sync else 0), tl0]) + b"\x00" * size


def h264_payload(*, start: bool, key: bool, size: int = 40) -> bytes:
    nal = 5 if key else 1
    return bytes([28, (0x80 if start else 0) | nal]) + b"\x00" * size


@dataclass
class Layer:
    """One substream as the sending browser would make it."""

    index: int
    codec: str = "vp8"
    ssrc: int = 0
    seq: int = 0
    ts: int = 0
    pid: int = 0
    tl0: int = 0
    frame_no: int = 0
    wide: bool = True
    key_due: bool = True
    #: Payload bytes per packet (the higher substreams are bigger, as real ones).
    size: int = 40
    #: VP8: with temporal layers (T bit, TID), else picture ids only (every picture TL0).
    temporal: bool = True
    sent: dict[int, bytes] = field(default_factory=dict)

    def frame(self, packets: int = 2, key: bool | None = None) -> list[bytes]:
        """The next picture's packets (a keyframe when asked for one, or ``key``)."""
        key = self.key_due if key is None else key
        self.key_due = False
        if key:
            self.frame_no = 0
        tid = PATTERN[self.frame_no % len(PATTERN)] if self.temporal else 0
        if tid == 0:
            self.tl0 = (self.tl0 + 1) & 0xFF
        sync = key or (self.frame_no % len(PATTERN) == 1 and self.frame_no < len(PATTERN))
        out = []
        for i in range(packets):
            if self.codec == "vp8":
                payload = vp8_payload(self.pid, self.tl0, tid, start=i == 0, key=key, sync=sync, wide=self.wide,
                                      size=self.size, temporal=self.temporal)
            elif self.codec == "vp9":
                payload = vp9_payload(self.pid, self.tl0, tid, start=i == 0, key=key, sync=sync, size=self.size)
            else:
                payload = h264_payload(start=i == 0, key=key, size=self.size)
            marker = 0x80 if i == packets - 1 else 0
            packet = pack("!BBHII", 0x80, marker | PT, self.seq, self.ts, self.ssrc) + payload
            self.sent[self.seq] = packet
            out.append(packet)
            self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 3000) & 0xFFFFFFFF
        self.pid = (self.pid + 1) & (0x7FFF if self.wide else 0x7F)
        self.frame_no += 1
        return out


class Rig:
    """Three substreams' ``RecvStream``s, their selector and the receiver's ``SendStream``."""

    def __init__(self, codec: str = "vp8", wide: bool = True, indexes: tuple[int, ...] = (0, 1, 2),
                 temporal: bool = True) -> None:
        self.counters = Counters()
        self.sent: list[bytes] = []
        self.events: list[tuple[str, int]] = []
        self.plis: list[tuple[int, float]] = []
        self.nacked: list[tuple[int, list[int] | None]] = []
        self.layers = {i: Layer(i, codec, ssrc=0x1000 + i, seq=1000 * (i + 7), ts=77777 * (i + 1), pid=300 * i + 5,
                                tl0=40 * i, wide=wide, size=100 * 4 ** i, temporal=temporal) for i in indexes}
        sources = [LayerSource(i, None, layer.ssrc, 0x2000 + i) for i, layer in self.layers.items()]
        self.selector = SimulcastSelector(codec, sources, OUT_SSRC, on_change=lambda k, v: self.events.append((k, v)),
                                          request_keyframe=self.pli)
        self.out = SendStream("video", "0", OUT_SSRC, 90000, self.counters, seq_start=5000, ts_start=10)
        self.out.connect(lambda packet: packet, lambda packet, _addr: self.sent.append(packet), None)
        self.streams: dict[int, RecvStream] = {}
        for i, layer in self.layers.items():
            stream = RecvStream("video", "0", 90000, MediaFlow("video", "0"), self.counters, on_media=lambda _f: None,
                                nack=True)
            stream.new_source(layer.ssrc)
            stream.rtx_ssrc = 0x2000 + i
            stream.link(self.out, {PT: OUT_PT}, {RTX_PT: PT}, {PT: codec.upper()}, None)
            stream.selector, stream.layer = self.selector, i
            stream.on_gap = lambda stream, seqs, now: self.nacked.append((stream.layer, seqs))
            self.streams[i] = stream
        self.now = 100.0

    def pli(self, index: int, now: float) -> None:
        self.plis.append((index, now))
        self.layers[index].key_due = True

    def tick(self, silent: tuple[int, ...] = (), lose: dict[int, int] | None = None, packets: int = 2) -> None:
        """One frame interval: every substream not ``silent`` sends a picture (its packet number
        ``lose[index]`` of it lost on the way)."""
        for i, layer in self.layers.items():
            if i in silent:
                continue
            for n, packet in enumerate(layer.frame(packets)):
                if lose and lose.get(i) == n:
                    continue
                self.streams[i].receive(packet, self.now)
        self.now += FRAME

    def run(self, seconds: float, **kwargs: object) -> None:
        for _ in range(round(seconds / FRAME)):
            self.tick(**kwargs)  # type: ignore[arg-type]

    def received(self) -> list[Out]:
        return [Out.of(packet, self.selector.codec) for packet in self.sent]


@dataclass
class Out:
    seq: int
    ts: int
    ssrc: int
    pt: int
    pid: int
    tl0: int
    tid: int
    start: bool
    key: bool
    source_len: int

    @classmethod
    def of(cls, packet: bytes, codec: str) -> Out:
        _, b1, seq, ts, ssrc = unpack_from("!BBHII", packet)
        header = header_length(packet)
        d = vp8_descriptor(packet, header) if codec == "vp8" else vp9_descriptor(packet, header)
        if codec == "h264" or d is None:
            key = packet[header + 1] & 0x1F == 5 and bool(packet[header + 1] & 0x80)
            return cls(seq, ts, ssrc, b1 & 0x7F, -1, -1, -1, bool(packet[header + 1] & 0x80), key, len(packet))
        return cls(seq, ts, ssrc, b1 & 0x7F, d.pid, d.tl0, d.tid, d.start, d.keyframe, len(packet))


def assert_continuous(out: list[Out], holes: int = 0, wide: bool = True, picture_gaps: bool = False) -> None:
    """One stream to the receiver: one SSRC, consecutive sequence numbers (``holes`` missing),
    timestamps that never go back, picture ids +1 per picture (``picture_gaps``: VP9, whose
    dropped temporal pictures stay gaps: at most one pattern), TL0PICIDX +1 per
    base picture."""
    assert out, "nothing was forwarded"
    assert {o.ssrc for o in out} == {OUT_SSRC}
    assert {o.pt for o in out} == {OUT_PT}
    gaps = sum(((b.seq - a.seq) % 65536) - 1 for a, b in itertools.pairwise(out))
    assert gaps == holes, [o.seq for o in out]
    for a, b in itertools.pairwise(out):
        assert 0 <= (b.ts - a.ts) % 2**32 < 2**31, "a timestamp went back"
    if out[0].pid < 0:
        return
    mod = 0x8000 if wide else 0x80
    starts = [o for o in out if o.start]
    for a, b in itertools.pairwise(starts):
        if picture_gaps:
            assert 1 <= (b.pid - a.pid) % mod <= len(PATTERN), f"picture id {a.pid} -> {b.pid}"
        else:
            assert (b.pid - a.pid) % mod == 1, f"picture id {a.pid} -> {b.pid}"
        if b.tid == 0:
            assert (b.tl0 - a.tl0) % 256 == 1, f"TL0PICIDX {a.tl0} -> {b.tl0}"
        else:
            assert b.tl0 == a.tl0


# --- substreams ---------------------------------------------------------------------------------


def test_the_receiver_starts_on_the_top_substream_with_all_temporal_layers() -> None:
    rig = Rig()
    rig.run(1.0)
    assert rig.selector.substream == 2 and rig.selector.temporal == 2
    assert ("substream", 2) in rig.events and ("temporal", 2) in rig.events
    assert rig.events[-1] in (("substream", 2), ("temporal", 2))
    out = rig.received()
    assert_continuous(out)
    assert rig.counters.other_layer > 0 and rig.counters.temporal == 0


@pytest.mark.parametrize("codec", ["vp8", "vp9", "h264"])
def test_switching_down_and_up_keeps_one_continuous_stream(codec: str) -> None:
    rig = Rig(codec)
    rig.run(0.5)
    for target in (0, 1, 2, 0, 2):
        before = rig.selector.switches
        rig.events.clear()
        rig.selector.set_auto(False)
        rig.selector.set_target(target, None, rig.now)
        assert rig.plis and rig.plis[-1][0] == target  # the sender is asked for a keyframe at once
        rig.run(0.5)
        assert rig.selector.substream == target
        assert rig.selector.switches == before + 1
        assert ("substream", target) in rig.events
    assert_continuous(rig.received())


def test_the_switch_waits_for_a_keyframe_of_the_target() -> None:
    rig = Rig()
    rig.run(0.3)
    rig.selector.set_auto(False)
    rig.plis.clear()
    rig.layers[0].key_due = False
    rig.selector.request_keyframe = lambda index, now: rig.plis.append((index, now))  # the sender does not answer
    rig.selector.set_target(0, None, rig.now)
    rig.run(0.5)
    assert rig.selector.substream == 2  # still the top one, still forwarded
    rig.layers[0].key_due = True  # the keyframe comes at last
    rig.run(0.2)
    assert rig.selector.substream == 0
    assert_continuous(rig.received())


def test_a_keyframe_that_never_comes_is_asked_for_a_bounded_number_of_times() -> None:
    rig = Rig()
    rig.run(0.3)
    rig.selector.set_auto(False)
    rig.plis.clear()
    rig.selector.request_keyframe = lambda index, now: rig.plis.append((index, now))  # never answered
    rig.selector.set_target(1, None, rig.now)
    rig.run(20)
    asked = [index for index, _ in rig.plis]
    assert asked == [1] * KEYFRAME_REQUESTS
    times = [t for _, t in rig.plis]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
    assert rig.selector.substream == 2
    assert_continuous(rig.received())


def test_asking_for_the_substream_already_forwarded_is_answered_at_once() -> None:
    rig = Rig()
    rig.run(0.3)
    rig.events.clear()
    rig.plis.clear()
    rig.selector.set_auto(False)
    rig.selector.set_target(2, 2, rig.now)
    assert rig.events == [("substream", 2), ("temporal", 2)]
    assert rig.plis == []


def test_a_late_packet_of_the_old_substream_is_not_forwarded_after_a_switch() -> None:
    rig = Rig()
    rig.run(0.3)
    old = rig.layers[2]
    late = old.frame()[0]
    rig.selector.set_auto(False)
    rig.selector.set_target(1, None, rig.now)
    rig.run(0.3)
    assert rig.selector.substream == 1
    count = len(rig.sent)
    rig.streams[2].receive(late, rig.now)
    assert len(rig.sent) == count
    assert_continuous(rig.received())


def test_lost_packets_around_a_switch_stay_holes_the_receiver_can_nack() -> None:
    rig = Rig()
    rig.run(0.3)
    rig.selector.set_auto(False)
    rig.tick(lose={2: 1}, packets=3)  # the top substream's last picture before the switch loses one
    rig.selector.set_target(1, None, rig.now)
    rig.tick()  # substream 1's keyframe: the switch
    assert rig.selector.substream == 1
    rig.tick(lose={1: 1}, packets=3)  # and the first picture after it loses one
    rig.run(0.2)
    out = rig.received()
    assert_continuous(out, holes=2)
    seqs = [o.seq for o in out]
    holes = [(a + 1) % 65536 for a, b in itertools.pairwise(seqs) if (b - a) % 65536 == 2]
    # the second hole is in substream 1: the receiver's NACK maps back to substream 1's own number
    source = rig.out.seq.source(holes[1])
    assert source is not None and source in rig.layers[1].sent
    assert (1, [source]) in rig.nacked  # and the relay asked substream 1 for it already


def test_the_rtx_of_the_forwarded_substream_fills_its_hole_and_others_are_not_sent() -> None:
    rig = Rig()
    rig.run(0.3)
    rig.selector.set_auto(False)
    rig.selector.set_target(1, None, rig.now)
    rig.run(0.3)
    lost_seq = rig.layers[1].seq + 1
    rig.tick(lose={1: 1})
    rig.tick()
    count = len(rig.sent)
    for index in (1, 0):
        layer = rig.layers[index]
        original = layer.sent[lost_seq if index == 1 else layer.seq - 1]
        rtx = rtx_wrap(original, 12, RTX_PT, 7, 0x2000 + index)
        rig.streams[index].receive_rtx(rtx, rig.now)
    assert len(rig.sent) == count + 1  # substream 1's repair only
    out = rig.received()
    assert sorted(o.seq for o in out) == list(range(out[0].seq, out[0].seq + len(out)))  # hole filled
    assert rig.counters.rtx_received == 2


# --- temporal layers ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["vp8", "vp9"])
def test_temporal_layers_are_dropped_without_a_hole_and_come_back(codec: str) -> None:
    rig = Rig(codec)
    rig.run(0.5)
    rig.events.clear()
    rig.selector.set_target(None, 0, rig.now)
    mark = len(rig.sent)
    rig.run(1.0)
    assert rig.events == [("temporal", 0)]
    dropped = rig.received()[mark + 2:]  # the picture that was being sent may finish
    assert {o.tid for o in dropped} == {0}
    assert rig.counters.temporal > 0
    rig.selector.set_target(None, 1, rig.now)
    assert rig.plis[-1][0] == 2  # going up: a keyframe (or a layer-sync picture) is the way
    rig.run(1.0)
    assert rig.selector.temporal == 1 and ("temporal", 1) in rig.events
    assert {o.tid for o in rig.received()[-20:]} == {0, 1}
    rig.selector.set_target(None, 2, rig.now)
    rig.run(0.5)
    assert rig.selector.temporal == 2
    assert_continuous(rig.received(), picture_gaps=codec == "vp9")
    if codec == "vp9":  # its pictures after a dropped one keep their own picture ids
        assert any((b.pid - a.pid) % 0x8000 > 1 for a, b in itertools.pairwise(o for o in rig.received() if o.start))


def test_vp8_without_temporal_layers_has_no_temporal_selection() -> None:
    rig = Rig(temporal=False)
    rig.run(0.5)
    assert rig.selector.substream == 2 and ("temporal", 2) not in rig.events
    rig.selector.set_target(None, 0, rig.now)
    rig.run(0.5)
    assert rig.selector.temporal is None and rig.counters.temporal == 0
    assert_continuous(rig.received())


def test_temporal_up_waits_for_a_layer_sync_picture() -> None:
    rig = Rig()
    rig.run(0.5)
    rig.selector.set_target(None, 0, rig.now)
    rig.run(0.5)
    rig.selector.request_keyframe = lambda index, now: None  # no keyframe: only sync pictures can lift it
    rig.selector.set_target(None, 2, rig.now)
    rig.run(1.0)
    assert rig.selector.temporal == 0  # libwebrtc marks sync pictures only after a keyframe here
    rig.layers[2].key_due = True
    rig.run(0.3)
    assert rig.selector.temporal == 2
    assert_continuous(rig.received())


def test_h264_has_no_temporal_selection() -> None:
    rig = Rig("h264")
    rig.run(0.5)
    rig.events.clear()
    rig.selector.set_target(None, 0, rig.now)
    rig.run(0.5)
    assert rig.events == [] and rig.selector.temporal is None and rig.counters.temporal == 0


def test_seven_bit_picture_ids_wrap_continuously() -> None:
    rig = Rig(wide=False)
    rig.run(3.0)  # past 127 pictures
    rig.selector.set_auto(False)
    rig.selector.set_target(0, 0, rig.now)
    rig.run(3.0)
    assert_continuous(rig.received(), wide=False)


# --- fallback -------------------------------------------------------------------------------------


def test_a_silent_substream_falls_back_to_the_next_lower_one_and_returns() -> None:
    rig = Rig()
    rig.run(0.5)
    rig.events.clear()
    rig.plis.clear()
    rig.run(0.2, silent=(2,))  # < 250 ms: nothing yet
    assert rig.selector.substream == 2 and rig.plis == []
    rig.run(0.3, silent=(2,))
    assert rig.selector.substream == 1 and rig.events[0] == ("substream", 1)
    assert rig.plis[0][0] == 1
    rig.run(0.5, silent=(2, 1))  # and lower again
    assert rig.selector.substream == 0
    rig.run(0.5)  # both come back: the target is taken again
    assert rig.selector.substream == 2 and rig.events[-1][1] == 2 and ("substream", 2) in rig.events
    assert_continuous(rig.received())


def stall(rig: Rig, seconds: float, order: tuple[int, ...] = (0, 1, 2)) -> None:
    """The relay's loop stalls ``seconds``: the pictures sent meanwhile wait in the socket and
    are all read at its end, 0.1 ms apart, substreams interleaved in ``order``."""
    queued = []
    for _ in range(round(seconds / FRAME)):
        for i in order:
            queued += [(i, packet) for packet in rig.layers[i].frame()]
        rig.now += FRAME
    for n, (i, packet) in enumerate(queued):
        rig.streams[i].receive(packet, rig.now + n * 1e-4)
    rig.now += len(queued) * 1e-4


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0)])
@pytest.mark.parametrize("pinned", [None, 0, 2])
def test_a_stall_of_the_relay_itself_is_no_fallback(pinned: int | None, order: tuple[int, ...]) -> None:
    """All substreams resume together after the stall: none went silent while others came."""
    rig = Rig()
    if pinned is not None:
        rig.selector.set_auto(False)
        rig.selector.set_target(pinned, None, rig.now)
    rig.run(0.5)
    forwarded = rig.selector.substream
    assert forwarded == (2 if pinned is None else pinned)
    rig.events.clear()
    rig.plis.clear()
    for _ in range(5):
        stall(rig, 1.0, order)
        rig.run(0.3)
    assert rig.plis == [] and rig.events == []
    assert rig.selector.substream == forwarded and rig.selector.want == forwarded
    assert_continuous(rig.received())


def test_a_pinned_substream_that_goes_silent_is_not_left_for_a_higher_one() -> None:
    # Janus falls back only lower; the lowest pinned and silent has nothing lower: it waits.
    rig = Rig()
    rig.selector.set_auto(False)
    rig.selector.set_target(0, None, rig.now)
    rig.run(0.5)
    assert rig.selector.substream == 0
    rig.events.clear()
    rig.plis.clear()
    rig.run(1.0, silent=(0,))
    assert rig.selector.substream == 0 and rig.selector.want == 0
    assert rig.events == [] and {i for i, _ in rig.plis} <= {0}
    rig.run(0.5)
    assert rig.selector.substream == 0 and rig.events == []
    assert_continuous(rig.received())


def test_the_automatic_choice_may_fall_back_higher_when_nothing_lower_arrives() -> None:
    rig = Rig()
    rig.selector.set_auto_target(0, rig.now)
    rig.run(0.5)
    assert rig.selector.substream == 0
    rig.run(1.0, silent=(0,))
    assert rig.selector.substream == 1  # something rather than nothing
    rig.run(0.5)
    assert rig.selector.substream == 0  # the target is back


def test_a_substream_silent_while_another_arrives_alone_slowly_still_falls_back() -> None:
    # Only the bottom substream keeps coming, at 10 pictures a second (gaps above STALL_GAP):
    # its time still counts, a little slower.
    rig = Rig(indexes=(0, 2))
    rig.run(0.5)
    assert rig.selector.substream == 2
    for _ in range(10):
        for packet in rig.layers[0].frame(packets=1):
            rig.streams[0].receive(packet, rig.now)
        rig.now += 0.1
    assert rig.selector.substream == 0


def test_the_fallback_delay_is_settable() -> None:
    rig = Rig()
    rig.selector.set_fallback(2_000_000)
    rig.run(0.5)
    rig.run(1.0, silent=(2,))
    assert rig.selector.substream == 2
    rig.run(1.5, silent=(2,))
    assert rig.selector.substream == 1
    rig.selector.set_fallback(0)
    assert rig.selector.fallback == DEFAULT_FALLBACK_US / 1e6


def test_a_sender_with_two_substreams_starts_on_its_highest() -> None:
    rig = Rig(indexes=(0, 1))
    rig.run(0.5)
    assert rig.selector.substream == 1
    assert_continuous(rig.received())


# --- pure pieces ----------------------------------------------------------------------------------


def test_picture_ids_close_up_over_dropped_pictures_and_follow_across_a_switch() -> None:
    pictures = PictureRewriter()
    out = []
    for pid, tid in ((10, 0), (11, 2), (12, 1), (13, 2), (14, 0)):
        packet = b"\x00" * 12 + vp8_payload(pid, 3, tid, start=True, key=False)
        d = vp8_descriptor(packet, 12)
        assert d is not None
        if tid == 2:
            pictures.drop(d)
        else:
            out.append(vp8_descriptor(pictures.rewrite(packet, d), 12).pid)  # type: ignore[union-attr]
    assert out == [10, 11, 12]
    packet = b"\x00" * 12 + vp8_payload(5000, 200, 0, start=True, key=True)
    d = vp8_descriptor(packet, 12)
    assert d is not None
    pictures.switch(d)
    rewritten = vp8_descriptor(pictures.rewrite(packet, d), 12)
    assert rewritten is not None and (rewritten.pid, rewritten.tl0, rewritten.keyframe) == (13, 4, True)


def test_unsupported_codecs_and_layer_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="AV1"):
        SimulcastSelector("AV1", [LayerSource(0, None, 1, None)], 5)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        SimulcastSelector("vp8", [LayerSource(3, None, 1, None)], 5)


@pytest.mark.parametrize("codec", ["vp8", "vp9", "h264"])
def test_garbage_payloads_are_forwarded_or_not_but_never_break_the_selector(codec: str) -> None:
    rng = random.Random(13)
    rig = Rig(codec)
    rig.run(0.3)
    for n in range(3000):
        layer = rig.layers[rng.randrange(3)]
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 8)))
        packet = pack("!BBHII", 0x80, PT, layer.seq, layer.ts, layer.ssrc) + payload
        layer.seq = (layer.seq + 1) & 0xFFFF
        rig.streams[layer.index].receive(packet, rig.now + n / 1000)
    rig.now += 3.0
    count = len(rig.sent)
    rig.run(0.5)  # (no exception above) and real pictures still go through afterwards
    assert len(rig.sent) > count
