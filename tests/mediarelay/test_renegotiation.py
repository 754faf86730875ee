"""Renegotiation of a live call (mediarelay/renegotiation.py), with aiortc clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.sdp import SessionDescription

from mediarelay.call import Call
from mediarelay.ice import LOOPBACK
from mediarelay.renegotiation import keep_negotiated
from mediarelay.sdp import SdpError
from shared.ipc import IpcError
from tests.support.relay_clients import Notifications, apply_answer, client, m_lines, make_answer, make_offer
from tests.support.worker_calls import WorkerCall

pytestmark = pytest.mark.usefixtures("relay_on_loopback")


def payload_types(sdp: str) -> dict[int, str]:
    """Every payload type of an SDP and its codec; fails if one means two codecs (a BUNDLE collision)."""
    seen: dict[int, str] = {}
    for m in SessionDescription.parse(sdp).media:
        for codec in m.rtp.codecs:
            name = f"{codec.mimeType}/{codec.clockRate}"
            assert seen.setdefault(codec.payloadType, name) == name, f"payload type {codec.payloadType} reused"
    return seen


# --- through the worker -----------------------------------------------------------------------


async def test_video_added_to_an_audio_only_call_then_removed(address: str) -> None:
    async with WorkerCall.start(address, lambda pc: pc.addTrack(AudioStreamTrack()),
                                lambda pc: pc.addTrack(AudioStreamTrack())) as call:
        await call.connected()
        await call.notes.wait(lambda n: {("caller", "audio", "0", True), ("callee", "audio", "0", True)} <= set(n.media()))

        # The caller adds video: the callee is offered it and sends video too.
        call.caller.addTrack(VideoStreamTrack())
        mirrored = await call.renegotiate("caller", "offer", await make_offer(call.caller))
        assert mirrored.sdp_type == "offer"
        assert [(m["kind"], m["direction"]) for m in m_lines(mirrored.sdp)] == [("audio", "sendrecv"), ("video", "sendrecv")]
        assert m_lines(mirrored.sdp)[1]["codecs"][0] == "VP8" and "rtx" in m_lines(mirrored.sdp)[1]["codecs"]
        await call.callee.setRemoteDescription(RTCSessionDescription(sdp=mirrored.sdp, type="offer"))
        call.callee.addTrack(VideoStreamTrack())
        await call.callee.setLocalDescription(await call.callee.createAnswer())
        answered = await call.renegotiate("callee", "answer", call.callee.localDescription.sdp)
        assert answered.sdp_type == "answer"
        assert [(m["kind"], m["direction"]) for m in m_lines(answered.sdp)] == [("audio", "sendrecv"), ("video", "sendrecv")]
        assert m_lines(answered.sdp)[1]["codecs"][0] == "VP8"
        payload_types(answered.sdp)
        await apply_answer(call.caller, answered.sdp)
        await call.notes.wait(lambda n: {("caller", "video", "1", True), ("callee", "video", "1", True)} <= set(n.media()))
        assert not [s for s in call.notes.states() if s[1] != "connected"]

        # The caller removes its video (as a browser's removeTrack does): the callee keeps sending.
        video = next(t for t in call.caller.getTransceivers() if t.kind == "video")
        video.sender.replaceTrack(None)
        video.direction = "recvonly"
        mirrored_sdp, answered_sdp = await call.update("caller")
        assert m_lines(mirrored_sdp)[1]["direction"] == "recvonly"
        assert m_lines(answered_sdp)[1]["direction"] == "sendonly"  # the relay still sends the callee's video
        await call.notes.wait(lambda n: ("caller", "video", "1", False) in n.media(), timeout=5)
        assert ("callee", "video", "1", False) not in call.notes.media()
        assert not [s for s in call.notes.states() if s[1] != "connected"]


async def test_a_data_channel_added_by_renegotiation_carries_messages(address: str) -> None:
    async with WorkerCall.start(address, lambda pc: pc.addTransceiver("audio")) as call:
        await call.connected()
        chat = call.callee.createDataChannel("chat")  # the callee renegotiates this time
        mirrored_sdp, _ = await call.update("callee")
        assert [m["kind"] for m in m_lines(mirrored_sdp)] == ["audio", "application"]
        received: asyncio.Queue[object] = asyncio.Queue()
        call.caller.on("datachannel", lambda channel: channel.on("message", received.put_nowait))
        for _ in range(500):
            if chat.readyState == "open":
                break
            await asyncio.sleep(0.01)
        chat.send("over the new m-line")
        assert await asyncio.wait_for(received.get(), 10) == "over the new m-line"


async def test_renegotiation_requests_are_refused_with_a_reason(address: str) -> None:
    async with WorkerCall.start(address, lambda pc: pc.addTransceiver("audio")) as call:
        with pytest.raises(IpcError, match="no renegotiation offer to answer"):
            await call.renegotiate("callee", "answer", "v=0")
        other = client()
        other.addTransceiver("video")
        unrelated = await make_offer(other)
        await other.close()
        with pytest.raises(IpcError, match="may only add m-lines"):
            await call.renegotiate("caller", "offer", unrelated)
        no_opus = (await make_offer(call.caller)).replace("opus/48000/2", "telephone-event/8000")
        with pytest.raises(IpcError, match="no longer offers the call's codec audio/opus"):
            await call.renegotiate("caller", "offer", no_opus)
        pending = await call.renegotiate("caller", "offer", await make_offer(call.caller))
        with pytest.raises(IpcError, match="already waiting for its answer"):
            await call.renegotiate("callee", "offer", "v=0")  # glare: refused before being read
        answer = await make_answer(call.callee, pending.sdp)
        with pytest.raises(IpcError, match="no codec the other side offered"):
            await call.renegotiate("callee", "answer", re.sub(r"a=rtpmap:(\d+) \S+", r"a=rtpmap:\1 ISAC/16000", answer))
        # A refused answer changes nothing: the offer can still be answered.
        await call.renegotiate("callee", "answer", answer)
        await call.connected()


# --- the call itself --------------------------------------------------------------------------


async def test_callee_adds_video_without_payload_type_collisions_on_the_callers_leg() -> None:
    caller, callee = client(), client()
    caller.addTrack(AudioStreamTrack())
    notes = Notifications()
    # The caller numbers opus 97, the number aiortc gives VP8: the relay must not reuse it for video.
    offer = (await make_offer(caller)).replace("m=audio 9 UDP/TLS/RTP/SAVPF 96 ", "m=audio 9 UDP/TLS/RTP/SAVPF 97 ")
    offer = offer.replace("a=rtpmap:96 opus", "a=rtpmap:97 opus")
    assert "a=rtpmap:97 opus/48000/2" in offer
    call, callee_offer = await Call.create("c1", offer, policy=LOOPBACK, notify=notes)
    heard: list[str] = []
    call.listeners.append(heard.append)
    try:
        await apply_answer(caller, await call.accept(await make_answer(callee, callee_offer)))
        callee.addTrack(VideoStreamTrack())
        mirrored = await call.renegotiate("callee", "offer", await make_offer(callee))
        types = payload_types(mirrored)
        assert types[97] == "audio/opus/48000"
        assert "video/VP8/90000" in types.values()
        answered = await call.renegotiate("caller", "answer", await make_answer(caller, mirrored))
        await apply_answer(callee, answered)
        assert [(p.kind, p.caller.mid, p.callee.mid) for p in call.pairs] == [("audio", "0", "0"), ("video", "1", "1")]
        assert heard == ["renegotiated"]
        await notes.wait(lambda n: ("callee", "video", "1", True) in n.media())
    finally:
        await call.close()
        await caller.close()
        await callee.close()


def test_keep_negotiated_reuses_the_legs_payload_types_and_extension_ids() -> None:
    relay_offer = "\r\n".join([
        "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=mid:0", "a=rtcp-mux", "a=sendrecv",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid", "a=rtpmap:96 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 97 98 99", "c=IN IP4 0.0.0.0", "a=mid:1", "a=rtcp-mux", "a=sendrecv",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=rtpmap:97 VP8/90000", "a=rtpmap:98 rtx/90000", "a=fmtp:98 apt=97", "a=rtpmap:99 H264/90000", "",
    ])
    leg = SessionDescription.parse(relay_offer.replace("a=rtpmap:96 opus", "a=rtpmap:97 opus").replace(
        "UDP/TLS/RTP/SAVPF 96", "UDP/TLS/RTP/SAVPF 97").replace("a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
                                                                 "a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:mid", 1))
    kept = {"0": leg.media[0].rtp.codecs}
    extensions = {"0": leg.media[0].rtp.headerExtensions}
    text, added = keep_negotiated(relay_offer, kept, extensions)
    result = SessionDescription.parse(text)
    assert [(c.mimeType, c.payloadType) for c in result.media[0].rtp.codecs] == [("audio/opus", 97)]
    assert [(c.mimeType, c.payloadType) for c in added["1"]] == [("video/VP8", 96), ("video/H264", 99), ("video/rtx", 98)]
    assert added["1"][2].parameters == {"apt": 96}
    assert [(e.id, e.uri.rsplit(":", 1)[-1]) for e in result.media[1].rtp.headerExtensions] == [
        (2, "mid"), (1, "//www.webrtc.org/experiments/rtp-hdrext/abs-send-time")]


async def test_an_offer_before_the_call_is_accepted_is_refused() -> None:
    caller = client()
    caller.addTransceiver("audio")
    call, _ = await Call.create("c1", await make_offer(caller), policy=LOOPBACK, notify=Notifications())
    try:
        with pytest.raises(ValueError, match="not accepted yet"):
            await call.renegotiate("caller", "offer", await make_offer(caller))
        call.accepted = True
        with pytest.raises(SdpError, match="offer or an answer"):
            await call.renegotiate("caller", "pranswer", "v=0")
    finally:
        await call.close()
        await caller.close()

