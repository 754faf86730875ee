"""Simulcast through the relay's fast path with real aiortc clients on loopback.

aiortc cannot simulcast, so the caller is built from its pieces: its PeerConnection sends the
top substream (640x480) on its video m-line, and two more ``RTCRtpSender``s on the same DTLS
transport send 320x240 and 160x120 with their own SSRCs, each a real VP8 encoder answering
PLIs. The offer announces the three as SSRC simulcast (``a=ssrc-group:SIM``), or, for rid
simulcast, the SSRCs go unannounced and each packet leaving the caller gets its
``rtp-stream-id`` header extension as a browser's would. The callee is a plain aiortc client
that decodes what it gets: its decoded resolution says which substream the relay forwards.
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from struct import unpack_from
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack
from aiortc.rtcrtpparameters import RTCRtcpParameters, RTCRtpHeaderExtensionParameters, RTCRtpSendParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from mediarelay import aiortc_hooks, layer_policy, mjr
from mediarelay.call import Call
from mediarelay.ice import LOOPBACK
from mediarelay.rtp_header import header_length, vp8_descriptor
from mediarelay.simulcast_sdp import RID_URI
from tests.support.relay_clients import Notifications, apply_answer, client, make_answer, make_offer, wait_connected

pytestmark = pytest.mark.usefixtures("relay_on_loopback")

SIZES = ((160, 120), (320, 240), (640, 480))
RID_ID = 10


class SizedVideo(VideoStreamTrack):
    """A picture of one size, 30 fps, that can be paused (the substream stops): black, or
    noise (``noisy``: the encoder then spends the bitrate it is given)."""

    def __init__(self, width: int, height: int, noisy: bool = False) -> None:
        super().__init__()
        self.size = (width, height)
        self.noisy = noisy
        self.running = asyncio.Event()
        self.running.set()

    async def recv(self) -> av.VideoFrame:
        await self.running.wait()
        pts, time_base = await self.next_timestamp()
        width, height = self.size
        if self.noisy:
            pixels = np.frombuffer(os.urandom(width * height * 3 // 2), dtype=np.uint8).reshape(height * 3 // 2, width)
            frame = av.VideoFrame.from_ndarray(pixels, format="yuv420p")
        else:
            frame = av.VideoFrame(width=width, height=height)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
        frame.pts, frame.time_base = pts, time_base or fractions.Fraction(1, 90000)
        return frame


class SimulcastCaller:
    """An aiortc client sending three VP8 substreams of one m-line."""

    def __init__(self, form: str, sizes: tuple[tuple[int, int], ...] = SIZES, noisy: bool = False) -> None:
        self.form = form
        self.pc = client()
        self.tracks = [SizedVideo(*size, noisy=noisy) for size in sizes]
        self.top = self.pc.addTrack(self.tracks[2])
        self.transceiver = next(t for t in self.pc.getTransceivers() if t.sender is self.top)
        self.transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                              if c.mimeType in ("video/VP8", "video/rtx")])
        transport = self.top.transport
        self.extra = [RTCRtpSender(self.tracks[i], transport) for i in (0, 1)]
        self.senders = [*self.extra, self.top]  # substream 0, 1, 2

    async def offer(self) -> str:
        sdp = await make_offer(self.pc)
        head, video = sdp.split("m=video", 1)
        lines = ("m=video" + video).split("\r\n")
        cname = next(line.split("cname:")[1] for line in lines if "cname:" in line)
        if self.form == "ssrc":
            extra = []
            for sender in self.extra:
                extra += [f"a=ssrc-group:FID {sender._ssrc} {sender._rtx_ssrc}",
                          f"a=ssrc:{sender._ssrc} cname:{cname}", f"a=ssrc:{sender._rtx_ssrc} cname:{cname}"]
            extra.append("a=ssrc-group:SIM " + " ".join(str(s._ssrc) for s in self.senders))
        else:  # rid: no SSRC announced, the rid extension names each substream
            lines = [line for line in lines if not line.startswith(("a=ssrc", "a=msid"))]
            extra = [f"a=extmap:{RID_ID} {RID_URI}", "a=rid:h send", "a=rid:m send", "a=rid:l send",
                     "a=simulcast:send h;m;l"]
        end = lines.index("") if "" in lines else len(lines)
        return head + "\r\n".join(lines[:end] + extra + lines[end:])

    def name_substreams(self) -> None:
        """rid form: each packet leaving carries its substream's rid, as a browser's do."""
        if self.form != "rid":
            return
        rids = {s._ssrc: rid for s, rid in zip(self.senders, "lmh", strict=True)}
        rids.update({s._rtx_ssrc: rid for s, rid in zip(self.senders, "lmh", strict=True)})
        extensions = HeaderExtensionsMap()
        extensions.configure(RTCRtpSendParameters(headerExtensions=[
            *self.transceiver._headerExtensions, RTCRtpHeaderExtensionParameters(id=RID_ID, uri=RID_URI)]))
        dtls = self.top.transport
        send_rtp = dtls._send_rtp

        async def named(data: bytes) -> None:
            if 191 < data[1] < 224:  # RTCP goes the same way
                await send_rtp(data)
                return
            packet = RtpPacket.parse(data, extensions)
            rid = rids.get(packet.ssrc)
            if rid is not None:
                if packet.ssrc in {s._rtx_ssrc for s in self.senders}:
                    packet.extensions.repaired_rtp_stream_id = rid
                else:
                    packet.extensions.rtp_stream_id = rid
                data = packet.serialize(extensions)
            await send_rtp(data)

        dtls._send_rtp = named

    async def start_extra(self) -> None:
        """The two lower substreams start sending (their PeerConnection is connected)."""
        cname = "simulcast"
        for sender in self.extra:
            await sender.send(RTCRtpSendParameters(codecs=self.transceiver._codecs,
                                                   headerExtensions=self.transceiver._headerExtensions,
                                                   muxId=self.transceiver.mid, rtcp=RTCRtcpParameters(cname=cname)))

    async def close(self) -> None:
        for sender in self.extra:
            await sender.stop()
        await self.pc.close()


class Callee:
    """A plain aiortc client: decodes the video it gets and notes its size."""

    def __init__(self) -> None:
        self.pc = client()
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", lambda track: self.tasks.append(asyncio.ensure_future(self._consume(track))))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # noqa: BLE001 - the track ended
                return
            self.frames += 1
            self.size = (frame.width, frame.height)

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()


class SimulcastCall:
    def __init__(self, form: str, remb: bool = True, **caller: Any) -> None:
        self.caller = SimulcastCaller(form, **caller)
        #: False: the callee's receiver estimates nothing and sends no REMB (aiortc's estimator,
        #: sharing one loop with three encoders, says what that loop manages, not the path).
        self.remb = remb
        self.callee = Callee()
        self.notes = Notifications()
        self.call: Call | None = None

    async def start(self) -> Call:
        call, offer = await Call.create("sim", await self.caller.offer(), policy=LOOPBACK, notify=self.notes)
        self.call = call
        callee_answer = await make_answer(self.callee.pc, offer)
        if not self.remb:
            for transceiver in self.callee.pc.getTransceivers():
                aiortc_hooks.without_remb(transceiver.receiver)
        answer = await call.accept(callee_answer)
        self.caller.name_substreams()
        await apply_answer(self.caller.pc, answer)
        await wait_connected(self.caller.pc, self.callee.pc)
        await self.caller.start_extra()
        return call

    @property
    def events(self) -> list[tuple[str, str, str, int]]:
        """The ``leg.simulcast`` notifications (the VideoCall ``simulcast`` events)."""
        return [(m.leg, m.videocodec, "substream" if m.substream is not None else "temporal",  # type: ignore[attr-defined]
                 m.substream if m.substream is not None else m.temporal)  # type: ignore[attr-defined]
                for name, m in self.notes.seen if name == "leg.simulcast"]

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(0.02)
        await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        if self.call is not None:
            await self.call.close()
        await self.caller.close()
        await self.callee.close()


@pytest.fixture(params=["ssrc", "rid"])
async def simulcast(request: Any) -> AsyncIterator[SimulcastCall]:
    holder = SimulcastCall(request.param)
    yield holder
    await holder.close()


async def test_the_callee_gets_the_top_substream_and_follows_set_substream(simulcast: SimulcastCall) -> None:
    call = await simulcast.start()
    await simulcast.until(lambda: simulcast.callee.size == SIZES[2])
    assert ("callee", "vp8", "substream", 2) in simulcast.events
    for substream in (0, 1, 2):
        seen = len(simulcast.events)
        call.configure("callee", substream=substream)
        await simulcast.until(lambda substream=substream: simulcast.callee.size == SIZES[substream])
        assert ("callee", "vp8", "substream", substream) in simulcast.events[seen:]
        frames = simulcast.callee.frames
        await simulcast.until(lambda frames=frames: simulcast.callee.frames > frames + 10)  # and it keeps going
    call.configure("callee", substream=0)
    await simulcast.until(lambda: simulcast.callee.size == SIZES[0])
    seen = len(simulcast.events)
    call.configure("callee", auto=True)  # the relay chooses again: loopback carries the top one
    await simulcast.until(lambda: simulcast.callee.size == SIZES[2])
    assert ("callee", "vp8", "substream", 2) in simulcast.events[seen:]
    counters = call.media.counters
    assert counters.other_layer > 0 and counters.forwarded > 0 and counters.unknown == 0
    video = [r for r in call.media.stats()["routes"] if r["source"] == "caller" and r["kind"] == "video"]  # type: ignore[union-attr,index]
    assert sorted(r["substream"] for r in video) == [0, 1, 2] and {r["forwarded_substream"] for r in video} == {2}
    streams = [link.recv_stream for link in call.media.links if link.source == "caller" and link.recv_stream.kind == "video"]
    assert sorted((s.layer, s.ssrc) for s in streams) == [(i, s._ssrc) for i, s in enumerate(simulcast.caller.senders)]


async def test_a_substream_that_stops_falls_back_and_comes_back(simulcast: SimulcastCall) -> None:
    await simulcast.start()
    await simulcast.until(lambda: simulcast.callee.size == SIZES[2])
    simulcast.caller.tracks[2].running.clear()  # the top encoder stops: nothing on its SSRC
    await simulcast.until(lambda: simulcast.callee.size == SIZES[1])
    assert ("callee", "vp8", "substream", 1) in simulcast.events
    simulcast.caller.tracks[2].running.set()
    await simulcast.until(lambda: simulcast.callee.size == SIZES[2])
    assert simulcast.events[-1][2:] == ("substream", 2)


def keyframe_sizes(packets: list[bytes]) -> list[tuple[int, int]]:
    """The picture size of each VP8 keyframe in these packets (RFC 6386 9.1: start code, then
    14-bit width and height), in order."""
    sizes = []
    for packet in packets:
        header = header_length(packet)
        d = vp8_descriptor(packet, header)
        if d is None or not d.keyframe:
            continue
        at = packet.find(b"\x9d\x01\x2a", header)  # 3 bytes into the frame, after the descriptor
        if at >= 0:
            width, height = unpack_from("<HH", packet, at + 3)
            sizes.append((width & 0x3FFF, height & 0x3FFF))
    return sizes


async def test_a_simulcast_callers_recording_holds_the_forwarded_substream(simulcast: SimulcastCall,
                                                                            tmp_path: Path) -> None:
    call = await simulcast.start()
    await simulcast.until(lambda: simulcast.callee.size == SIZES[2])
    states: list[tuple[str, list[str], str]] = []
    await call.record("caller", str(tmp_path), "sim", lambda state, files, reason: states.append((state, files, reason)))
    await asyncio.sleep(1.0)
    call.configure("callee", substream=0)
    await simulcast.until(lambda: simulcast.callee.size == SIZES[0])
    await asyncio.sleep(0.5)
    await call.stop_recording("caller")
    recording = mjr.read((tmp_path / "sim-video.mjr").read_bytes())
    assert recording.info is not None and recording.info.codec == "vp8"
    packets = [frame.packet for frame in recording.frames]
    assert len({unpack_from("!I", p, 8)[0] for p in packets}) == 1  # one SSRC across the switch
    seqs = [unpack_from("!H", p, 2)[0] for p in packets]
    assert sum((b - a) % 65536 - 1 for a, b in itertools.pairwise(seqs) if (b - a) % 65536 < 0x8000) == 0
    sizes = keyframe_sizes(packets)
    assert sizes[0] == SIZES[2] and sizes[-1] == SIZES[0]  # it starts on a keyframe of the top substream


#: Small noisy substreams at bitrates the automatic choice can tell apart (bits/s).
NOISY_SIZES = ((80, 64), (160, 128), (320, 256))
NOISY_BITRATES = (50_000, 300_000, 1_000_000)


#: The calm wait before each step up (``layer_policy.UP_AFTER``, 4 s) in the test below: how long
#: it is, and its backoff, are test_layer_policy.py's; here a second is enough to see the steps.
TEST_UP_AFTER = 1.0


async def test_the_automatic_choice_follows_the_callees_bitrate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layer_policy, "UP_AFTER", TEST_UP_AFTER)
    simulcast = SimulcastCall("ssrc", remb=False, sizes=NOISY_SIZES, noisy=True)
    try:
        call = await simulcast.start()

        def encoders_set() -> bool:  # each substream's encoder at its own bitrate, as a browser's are
            encoders = [getattr(s, "_RTCRtpSender__encoder", None) for s in simulcast.caller.senders]
            for encoder, bitrate in zip(encoders, NOISY_BITRATES, strict=True):
                if encoder is not None:
                    encoder.target_bitrate = bitrate
            return all(encoders)

        await simulcast.until(encoders_set)
        await simulcast.until(lambda: simulcast.callee.size == NOISY_SIZES[2], 15)
        policies = call.media.rtcp._policies.values()  # the relay measures each substream's bitrate
        await simulcast.until(lambda: bool(policies) and all(len(p.rates) == len(NOISY_SIZES) for p in policies))
        seen = len(simulcast.events)
        call.configure("callee", bitrate=150_000)  # only the bottom substream fits under it
        await simulcast.until(lambda: simulcast.callee.size == NOISY_SIZES[0], 15)
        assert ("callee", "vp8", "substream", 0) in simulcast.events[seen:]
        seen = len(simulcast.events)
        call.configure("callee", bitrate=0)  # lifted: the relay goes back up, a step at a time
        await simulcast.until(lambda: simulcast.callee.size == NOISY_SIZES[2], 30)
        assert ("callee", "vp8", "substream", 2) in simulcast.events[seen:]
    finally:
        await simulcast.close()
