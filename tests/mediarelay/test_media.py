"""Media through the relay's fast path (mediarelay/media.py, forwarder.py) with real aiortc clients.

Each client encodes what it sends and decodes what it receives, as a browser would; the relay
in between only forwards. Frame counts are compared over a window once media flows, so the
first frames (before both legs are up) do not count.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtpPacket, pack_remb_fci, unpack_remb_fci

from mediarelay import aiortc_hooks
from mediarelay.call import Call
from mediarelay.ice import LOOPBACK
from mediarelay.worker_stats import call_stats
from shared import ipc
from shared.messages import CallAccept, CallCreate, CallHangup
from tests.support.relay_clients import Notifications, apply_answer, client, make_answer, make_offer

pytestmark = pytest.mark.usefixtures("relay_on_loopback")


class CountingVideo(VideoStreamTrack):
    """aiortc's test pattern (640x480, 30 fps), counting the frames it hands the encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def recv(self) -> Any:
        frame = await super().recv()
        self.sent += 1
        return frame


def keyframe_spy(keyframes: list[float], codec: str) -> Callable[[bytes], None]:
    """For ``watch_decoder_input``: notes when a whole keyframe goes to the decoder."""
    loop = asyncio.get_running_loop()

    def seen(data: bytes) -> None:
        if codec == "VP8" and data and not data[0] & 0x01:  # RFC 6386 frame tag: key frame
            keyframes.append(loop.time())
        elif codec == "H264" and b"\x00\x00\x01\x65" in data:  # an IDR slice (Annex B)
            keyframes.append(loop.time())

    return seen


class Peer:
    """A client: sends audio and video, decodes what it receives, counts it."""

    def __init__(self, video_codec: str = "VP8") -> None:
        self.pc = client()
        self.video = CountingVideo()
        self.pc.addTrack(AudioStreamTrack())
        sender = self.pc.addTrack(self.video)
        transceiver = next(t for t in self.pc.getTransceivers() if t.sender is sender)
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                         if c.mimeType in (f"video/{video_codec}", "video/rtx")])
        self.frames: dict[str, int] = {"audio": 0, "video": 0}
        self.keyframes: list[float] = []
        self.resolution: tuple[int, int] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", lambda track: self.tasks.append(asyncio.ensure_future(self._consume(track))))
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":  # libvpx does not flag decoded keyframes: look at what is decoded
                aiortc_hooks.watch_decoder_input(transceiver.receiver, keyframe_spy(self.keyframes, video_codec))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # noqa: BLE001 - the track ended (MediaStreamError) or its PC closed
                return
            self.frames[track.kind] += 1
            if track.kind == "video":
                self.resolution = (frame.width, frame.height)

    @property
    def video_sender(self) -> RTCRtpSender:
        return next(t.sender for t in self.pc.getTransceivers() if t.kind == "video")

    def rtcp_to_video_sender(self) -> list[Any]:
        """Start recording the RTCP the relay sends about this client's video."""
        seen: list[Any] = []
        aiortc_hooks.intercept_rtcp(self.video_sender, seen.append)
        return seen

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()


class Relayed:
    """A call through ``Call`` between two Peers."""

    def __init__(self, video_codec: str = "VP8") -> None:
        self.caller, self.callee = Peer(video_codec), Peer(video_codec)
        self.notes = Notifications()
        self.call: Call | None = None

    async def start(self, edit_offer: Callable[[str], str] = lambda sdp: sdp) -> Call:
        call, offer = await Call.create("m1", edit_offer(await make_offer(self.caller.pc)), policy=LOOPBACK,
                                        notify=self.notes)
        self.call = call
        await apply_answer(self.caller.pc, await call.accept(await make_answer(self.callee.pc, offer)))
        await self.until(lambda: self.caller.frames["video"] > 3 and self.callee.frames["video"] > 3, 10)
        return call

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(0.02)
        await asyncio.wait_for(wait(), timeout)

    async def window(self, seconds: float) -> dict[str, tuple[int, int]]:
        """(sent, decoded) video frames per direction over ``seconds``."""
        peers = {"caller->callee": (self.caller, self.callee), "callee->caller": (self.callee, self.caller)}
        before = {name: (a.video.sent, b.frames["video"]) for name, (a, b) in peers.items()}
        await asyncio.sleep(seconds)
        return {name: (a.video.sent - before[name][0], b.frames["video"] - before[name][1])
                for name, (a, b) in peers.items()}

    async def close(self) -> None:
        if self.call is not None:
            await self.call.close()
        await self.caller.close()
        await self.callee.close()


@pytest.fixture
async def relayed() -> AsyncIterator[Relayed]:
    holder = Relayed()
    yield holder
    await holder.close()


def about_equal(sent: int, decoded: int) -> bool:
    """Decoded within a few percent of sent (frames in flight at either end of the window)."""
    return abs(sent - decoded) <= max(2, 0.05 * sent)


# --- forwarding -------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_each_side_decodes_what_the_other_sent(codec: str) -> None:
    relayed = Relayed(codec)
    try:
        call = await relayed.start()
        counts = await relayed.window(2.0)
        assert all(about_equal(sent, decoded) and sent > 40 for sent, decoded in counts.values()), counts
        assert relayed.caller.resolution == relayed.callee.resolution == (640, 480)
        audio = (relayed.caller.frames["audio"], relayed.callee.frames["audio"])
        await asyncio.sleep(0.2)
        assert relayed.caller.frames["audio"] > audio[0] and relayed.callee.frames["audio"] > audio[1]
        routes = call.media.stats()["routes"]
        assert sorted((r["source"], r["kind"]) for r in routes) == [  # type: ignore[union-attr]
            ("callee", "audio"), ("callee", "video"), ("caller", "audio"), ("caller", "video")]
        counters = call.media.counters
        assert (counters.errors, counters.srtp_failed, counters.unknown, counters.payload_type) == (0, 0, 0, 0)
    finally:
        await relayed.close()


async def test_without_a_send_batch_media_goes_by_the_transports_sendto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``SrtpSendBatch`` cannot be had (not Linux, another pylibsrtp), a leg's RTP is
    protected and held as bytes, then sent by the transport's ``sendto``: the same media."""
    monkeypatch.setattr(aiortc_hooks, "srtp_send_batch", lambda *args: None)
    relayed = Relayed("VP8")
    try:
        call = await relayed.start()
        counts = await relayed.window(2.0)
        assert all(about_equal(sent, decoded) and sent > 40 for sent, decoded in counts.values()), counts
        counters = call.media.counters
        assert (counters.errors, counters.srtp_failed, counters.send_failed) == (0, 0, 0)
    finally:
        await relayed.close()


async def test_the_relay_reports_what_it_forwards_in_its_sender_reports(relayed: Relayed) -> None:
    seen: list[Any] = []
    receiver = next(t.receiver for t in relayed.callee.pc.getTransceivers() if t.kind == "video")
    aiortc_hooks.intercept_rtcp(receiver, seen.append)
    call = await relayed.start()
    await relayed.until(lambda: any(hasattr(p, "sender_info") for p in seen), 3)
    report = [p for p in seen if hasattr(p, "sender_info")][-1]
    out = next(r for r in call.media.stats()["routes"] if r["sink"] == "callee" and r["kind"] == "video")  # type: ignore[union-attr,index]
    assert 0 < report.sender_info.packet_count <= out["packets"]  # type: ignore[index]
    assert 0 < report.sender_info.octet_count <= out["octets"]  # type: ignore[index]
    assert call.media.stats()["rtt"]["caller"] < 0.5  # type: ignore[index]  # from the clients' report blocks


@pytest.mark.parametrize("data_channel", [False, True])
async def test_the_relay_says_bye_for_each_stream_it_sent_when_the_call_ends(data_channel: bool) -> None:
    relayed = Relayed()
    if data_channel:  # the leg ends the data channels' DTLS first: the BYE goes out after it
        relayed.caller.pc.createDataChannel("chat")
    sources: set[int] = set()
    byes: set[int] = set()
    for transceiver in relayed.callee.pc.getTransceivers():
        aiortc_hooks.intercept_rtp(transceiver.receiver, lambda packet: sources.add(packet.ssrc), then_aiortc=True)
    try:
        call = await relayed.start()
        assert len(sources) == 2  # the relay's audio and video SSRCs towards the callee
        # SRTCP leaves its first header in the clear: a BYE's type (203) and its first SSRC.
        dtls = relayed.callee.pc.getTransceivers()[0].receiver.transport
        for protocol in dtls.transport._connection._protocols:
            def seen(data: bytes, addr: Any, original: Any = protocol.datagram_received) -> None:
                if len(data) >= 8 and data[1] == 203:
                    byes.add(int.from_bytes(data[4:8], "big"))
                original(data, addr)
            protocol.datagram_received = seen  # type: ignore[method-assign]
        await call.close()
        await relayed.until(lambda: sources <= byes, 3)
    finally:
        await relayed.close()


# --- set: audio, video, bitrate ---------------------------------------------------------------


async def test_muting_video_stops_it_and_unmuting_brings_a_keyframe_within_a_second(relayed: Relayed) -> None:
    call = await relayed.start()
    call.configure("caller", video=False)  # the caller's video is no longer relayed ...
    await asyncio.sleep(0.3)
    muted = relayed.callee.frames["video"]
    await asyncio.sleep(0.7)
    assert relayed.callee.frames["video"] == muted
    assert relayed.caller.frames["video"] > 0  # ... the other direction goes on
    loop = asyncio.get_running_loop()
    keyframes = len(relayed.callee.keyframes)
    unmuted = loop.time()
    call.configure("caller", video=True)
    await relayed.until(lambda: len(relayed.callee.keyframes) > keyframes, 1.0)
    assert relayed.callee.keyframes[-1] - unmuted < 1.0
    counts = await relayed.window(1.0)
    assert about_equal(*counts["caller->callee"]), counts


async def test_muting_audio_stops_it_and_unmuting_resumes_it(relayed: Relayed) -> None:
    call = await relayed.start()
    call.configure("callee", audio=False)
    await asyncio.sleep(0.3)
    muted = relayed.caller.frames["audio"]
    await asyncio.sleep(0.5)
    assert relayed.caller.frames["audio"] == muted
    call.configure("callee", audio=True)
    await relayed.until(lambda: relayed.caller.frames["audio"] > muted + 10, 2.0)
    assert call.media.counters.stale == 0  # the numbering went on where it stopped


async def test_a_bitrate_cap_reaches_the_sender_as_remb(relayed: Relayed) -> None:
    seen = relayed.caller.rtcp_to_video_sender()
    callee_video = next(t.receiver for t in relayed.callee.pc.getTransceivers() if t.kind == "video")
    aiortc_hooks.without_remb(callee_video)  # REMBs sent by hand
    call = await relayed.start()
    sender = relayed.caller.video_sender

    def rembs() -> list[int]:
        return [unpack_remb_fci(p.fci)[0] for p in seen if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_APP
                and sender._ssrc in unpack_remb_fci(p.fci)[1]]

    async def callee_estimates(bitrate: int) -> None:
        [source] = callee_video.getSynchronizationSources()
        await callee_video._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0,
                                                     fci=pack_remb_fci(bitrate, [source.source])))

    await callee_estimates(900_000)  # no cap: the receiver's estimate goes to the sender as it is
    await relayed.until(lambda: rembs()[-1:] == [900_000], 2.0)
    call.configure("caller", bitrate=300_000)
    await relayed.until(lambda: rembs()[-1:] == [300_000], 1.0)  # at once
    count = len(rembs())
    await callee_estimates(5_000_000)
    await relayed.until(lambda: len(rembs()) > count + 2, 3.0)  # and again every second while the cap holds
    assert set(rembs()[count:]) == {300_000}
    assert sender._RTCRtpSender__encoder.target_bitrate == 300_000  # type: ignore[attr-defined]
    await callee_estimates(200_000)  # below the cap: the receiver's word
    await relayed.until(lambda: rembs()[-1:] == [200_000], 2.0)


# --- losses ------------------------------------------------------------------------------------


def lossy(pc: RTCPeerConnection, rate: float, direction: str, seed: int) -> list[int]:
    """Drop ``rate`` of the video RTP ``pc`` receives (``in``) or sends (``out``) on its socket."""
    rng = random.Random(seed)
    video = next(t for t in pc.getTransceivers() if t.kind == "video")
    payload_types = {c.payloadType for c in video._codecs if c.name != "rtx"}

    def is_video_rtp(data: bytes) -> bool:
        return 127 < data[0] < 192 and data[1] & 0x7F in payload_types and not 191 < data[1] < 224

    dropped: list[int] = []
    dtls = pc.getTransceivers()[0].receiver.transport
    for protocol in dtls.transport._connection._protocols:
        if direction == "in":
            original_in = protocol.datagram_received

            def datagram_received(data: bytes, addr: Any, original: Any = original_in) -> None:
                if is_video_rtp(data) and rng.random() < rate:
                    dropped.append(len(data))
                    return
                original(data, addr)

            protocol.datagram_received = datagram_received  # type: ignore[method-assign]
        else:
            original_out = protocol.send_data

            async def send_data(data: bytes, addr: Any, original: Any = original_out) -> None:
                if is_video_rtp(data) and rng.random() < rate:
                    dropped.append(len(data))
                    return
                await original(data, addr)

            protocol.send_data = send_data  # type: ignore[method-assign]
    return dropped


async def test_losses_between_relay_and_receiver_are_repaired_from_the_relays_history(relayed: Relayed) -> None:
    call = await relayed.start()
    dropped = lossy(relayed.callee.pc, 0.05, "in", seed=1)
    counts = await relayed.window(3.0)
    assert len(dropped) >= 3
    assert call.media.counters.rtx_sent >= len(dropped) - 1  # the callee NACKed, the relay resent by RTX
    assert about_equal(*counts["caller->callee"]), counts
    callee = call_stats(call).callee  # what the Admin API shows of it
    assert callee.nacks_received >= callee.retransmitted >= len(dropped) - 1


async def test_losses_between_sender_and_relay_are_nacked_by_the_relay_and_repaired(relayed: Relayed) -> None:
    call = await relayed.start()
    dropped = lossy(relayed.caller.pc, 0.05, "out", seed=2)
    counts = await relayed.window(3.0)
    assert len(dropped) >= 3
    assert call.media.counters.rtx_received >= len(dropped) - 1  # the relay NACKed, the caller resent by RTX
    assert about_equal(*counts["caller->callee"]), counts
    assert call_stats(call).caller.nacks_sent >= len(dropped) - 1  # what the Admin API shows of it


# --- legs that differ --------------------------------------------------------------------------


async def test_header_extensions_are_renumbered_for_a_leg_with_other_ids(relayed: Relayed) -> None:
    seen: list[RtpPacket] = []
    receiver = next(t.receiver for t in relayed.callee.pc.getTransceivers() if t.kind == "video")
    aiortc_hooks.intercept_rtp(receiver, seen.append, then_aiortc=True)

    def other_ids(sdp: str) -> str:  # the caller's client numbers mid 5 and abs-send-time 7
        return (sdp.replace("a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid", "a=extmap:5 urn:ietf:params:rtp-hdrext:sdes:mid")
                .replace("a=extmap:3 http://www.webrtc.org", "a=extmap:7 http://www.webrtc.org"))

    # The caller's own client keeps sending with ids 1/3 unless told otherwise: give it the
    # relay's answer (ids 5/7), and it sends with those; the callee's leg uses aiortc's 1/3.
    await relayed.start(other_ids)
    assert seen and all(p.extensions.mid == "1" and p.extensions.abs_send_time is not None for p in seen[-20:])


async def test_a_call_can_negotiate_vp9_which_the_relay_only_forwards(relayed: Relayed) -> None:
    vp9 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in ("video/VP9", "video/rtx")]
    caller, callee = client(), client()
    try:
        caller.addTransceiver("video", direction="recvonly").setCodecPreferences(vp9)
        callee.addTransceiver("video", direction="sendonly")  # no track: nothing to encode
        call, offer = await Call.create("vp9", await make_offer(caller), policy=LOOPBACK, notify=relayed.notes)
        relayed.call = call
        assert "VP9/90000" in offer
        answer = await call.accept(await make_answer(callee, offer))
        assert "VP9/90000" in answer
        await apply_answer(caller, answer)
        await relayed.until(lambda: call.media.linked, 5)
        assert [(r.source, list(r.recv_stream.codec_names.values())) for r in call.media.links] == [("callee", ["VP9"])]
    finally:
        await caller.close()
        await callee.close()


# --- the worker never decodes ------------------------------------------------------------------


async def test_the_worker_creates_no_decoder_and_no_encoder(tmp_path: Any) -> None:
    socket_path, counts = tmp_path / "w.sock", tmp_path / "codecs.json"
    worker = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).parents[1] / "support" / "codec_counting_worker.py"),
        "--listen", f"unix:{socket_path}",
        env={**os.environ, "VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "RELAY_CODEC_COUNTS": str(counts),
             "PYTHONPATH": str(Path(__file__).parents[2])},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    caller, callee = Peer("VP8"), Peer("VP8")
    try:
        for _ in range(500):
            if socket_path.exists() or worker.returncode is not None:
                break
            await asyncio.sleep(0.01)
        channel = await ipc.connect(f"unix:{socket_path}", node_id="test")
        created = await channel.request(CallCreate(call_id="c", caller_offer=await make_offer(caller.pc)))
        answer = await make_answer(callee.pc, created.callee_offer)  # type: ignore[attr-defined]
        accepted = await channel.request(CallAccept(call_id="c", callee_answer=answer))
        await apply_answer(caller.pc, accepted.caller_answer)  # type: ignore[attr-defined]
        for _ in range(500):
            if min(caller.frames["video"], callee.frames["video"], caller.frames["audio"], callee.frames["audio"]) > 30:
                break
            await asyncio.sleep(0.02)
        assert min(caller.frames["video"], callee.frames["video"]) > 30, (caller.frames, callee.frames)
        await channel.request(CallHangup(call_id="c"))
        await channel.close()
    finally:
        await caller.close()
        await callee.close()
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(worker.communicate(), 20)
    assert worker.returncode == 0, stderr.decode()
    assert json.loads(counts.read_text()) == {"decoders": [], "encoders": []}


async def test_video_added_by_renegotiation_is_relayed_and_decoded() -> None:
    caller, callee = Peer(), Peer()  # each starts with audio only: video comes with a re-offer
    for peer in (caller, callee):
        await peer.pc.close()
        peer.pc = client()
        peer.pc.on("track", lambda track, peer=peer: peer.tasks.append(asyncio.ensure_future(peer._consume(track))))
        peer.pc.addTrack(AudioStreamTrack())
    notes = Notifications()
    call, offer = await Call.create("reneg", await make_offer(caller.pc), policy=LOOPBACK, notify=notes)
    try:
        await apply_answer(caller.pc, await call.accept(await make_answer(callee.pc, offer)))
        await notes.wait(lambda n: {("caller", "audio", "0", True), ("callee", "audio", "0", True)} <= set(n.media()))
        caller.pc.addTrack(caller.video)
        mirrored = await call.renegotiate("caller", "offer", await make_offer(caller.pc))
        callee.pc.addTrack(callee.video)
        answer = await call.renegotiate("callee", "answer", await make_answer(callee.pc, mirrored))
        await apply_answer(caller.pc, answer)
        holder = Relayed()
        holder.caller, holder.callee = caller, callee
        await holder.until(lambda: caller.frames["video"] > 10 and callee.frames["video"] > 10, 10)
        counts = await holder.window(1.0)
        assert all(about_equal(sent, decoded) for sent, decoded in counts.values()), counts
        audio = callee.frames["audio"]
        await asyncio.sleep(0.2)
        assert callee.frames["audio"] > audio  # the audio went on through the re-link
    finally:
        await call.close()
        await caller.close()
        await callee.close()
