"""A call through the relay with real aiortc clients on 127.0.0.1 (mediarelay/call.py, leg.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from mediarelay import aiortc_hooks, ice
from mediarelay.call import Call
from mediarelay.ice import LOOPBACK, IcePolicy
from mediarelay.leg import Leg
from mediarelay.sdp import SdpError
from mediarelay.sdp import parse as parse_sdp
from tests.support.relay_clients import (
    Notifications,
    apply_answer,
    client,
    m_lines,
    make_answer,
    make_offer,
    split_candidates,
    wait_connected,
)

pytestmark = pytest.mark.usefixtures("relay_on_loopback")


@pytest.fixture
def notes() -> Notifications:
    return Notifications()


class Clients:
    """The two users' PeerConnections, and the calls made, closed after each test."""

    def __init__(self) -> None:
        self.caller = client()
        self.callee = client()
        self.calls: list[Call] = []

    async def call(self, notes: Notifications, policy: IcePolicy = LOOPBACK) -> tuple[Call, str, str]:
        """Caller offers, relay mirrors, callee answers, relay answers the caller: the whole exchange."""
        call, callee_offer = await Call.create("call-1", await make_offer(self.caller), policy=policy, notify=notes)
        self.calls.append(call)
        caller_answer = await call.accept(await make_answer(self.callee, callee_offer))
        await apply_answer(self.caller, caller_answer)
        return call, callee_offer, caller_answer


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    both = Clients()
    yield both
    for call in both.calls:
        await call.close()
    await both.caller.close()
    await both.callee.close()


def both_connected(notes: Notifications) -> bool:
    return {("caller", "connected", ""), ("callee", "connected", "")} <= set(notes.states())


def codecs(kind: str, *names: str) -> list:
    return [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.split("/")[1] in names]


# --- connecting -------------------------------------------------------------------------------


async def test_both_legs_connect_with_audio_video_and_data(clients: Clients, notes: Notifications) -> None:
    clients.caller.addTransceiver("audio")
    clients.caller.addTransceiver("video")
    clients.caller.createDataChannel("chat")
    _, callee_offer, caller_answer = await clients.call(notes)
    assert [line["kind"] for line in m_lines(callee_offer)] == ["audio", "video", "application"]
    assert [line["kind"] for line in m_lines(caller_answer)] == ["audio", "video", "application"]
    await notes.wait(both_connected)
    await wait_connected(clients.caller, clients.callee)
    assert notes.states() in ([("callee", "connected", ""), ("caller", "connected", "")],
                              [("caller", "connected", ""), ("callee", "connected", "")])


async def test_the_media_links_as_the_second_leg_reports_connected(clients: Clients, notes: Notifications) -> None:
    # Each leg is its PC's only connection-state listener and tells the call after it updated
    # its state; the media, told by the call, then sees both legs connected and links at once.
    clients.caller.addTransceiver("audio")
    call, _, _ = await clients.call(notes)
    assert [len(leg.pc.listeners("connectionstatechange")) for leg in (call.caller, call.callee)] == [1, 1]
    await notes.wait(both_connected)
    assert call.media.linked
    assert [(k.source, k.sink, k.recv_stream.kind) for k in call.media.links] == [("caller", "callee", "audio")]


async def test_a_data_channel_m_line_first_stays_first(clients: Clients, notes: Notifications) -> None:
    await clients.caller.close()
    clients.caller = RTCPeerConnection(RTCConfiguration(iceServers=[], alwaysNegotiateDataChannels=True))
    clients.caller.addTransceiver("audio")  # offered after the data channel m-line
    _, callee_offer, _ = await clients.call(notes)
    assert [line["kind"] for line in m_lines(callee_offer)] == ["application", "audio"]
    await notes.wait(both_connected)


async def test_trickled_candidates_connect_both_legs(clients: Clients, notes: Notifications) -> None:
    clients.caller.addTransceiver("audio")
    offer, caller_candidates = split_candidates(await make_offer(clients.caller))
    call, callee_offer = await Call.create("call-1", offer, policy=LOOPBACK, notify=notes)
    clients.calls.append(call)
    await call.add_candidates("caller", caller_candidates, completed=True)
    answer, callee_candidates = split_candidates(await make_answer(clients.callee, callee_offer))
    await call.add_candidates("callee", callee_candidates)  # before the answer: kept until it comes
    await apply_answer(clients.caller, await call.accept(answer))
    await call.add_candidates("callee", [], completed=True)
    assert caller_candidates and callee_candidates
    await notes.wait(both_connected)


# --- what the callee is offered and what the caller is answered -------------------------------


async def test_a_leg_takes_the_relays_parse_of_the_clients_sdp(clients: Clients, notes: Notifications) -> None:
    """The parse that checked a client's SDP is the one aiortc keeps (no second parse); this
    fails when aiortc no longer parses first thing in setRemoteDescription. Any other text, even
    an equal one, is parsed as before."""
    clients.caller.addTransceiver("audio")
    clients.caller.addTransceiver("video")
    text = await make_offer(clients.caller)
    parsed = parse_sdp(text, "offer")
    legs = [Leg("call-1", "caller", LOOPBACK, notes), Leg("call-2", "caller", LOOPBACK, notes)]
    try:
        await legs[0].set_remote(text, "offer", parsed)
        assert aiortc_hooks.session_descriptions(legs[0].pc)[1] is parsed
        await legs[1].set_remote("".join(list(text)), "offer")  # equal, not the same object
        other = aiortc_hooks.session_descriptions(legs[1].pc)[1]
        assert other is not None and other is not parsed
        assert str(other) == str(parsed)
    finally:
        await asyncio.gather(*(leg.close(report=False) for leg in legs))


async def test_callee_offer_mirrors_the_callers_directions(clients: Clients, notes: Notifications) -> None:
    for kind, direction in [("audio", "sendonly"), ("video", "recvonly"), ("audio", "inactive")]:
        clients.caller.addTransceiver(kind, direction=direction)
    for kind in ["audio", "video", "audio"]:
        clients.callee.addTransceiver(kind, direction="sendrecv")  # the callee would send everything
    _, callee_offer, caller_answer = await clients.call(notes)
    assert [line["direction"] for line in m_lines(callee_offer)] == ["sendonly", "recvonly", "inactive"]
    assert [line["direction"] for line in m_lines(caller_answer)] == ["recvonly", "sendonly", "inactive"]
    await notes.wait(both_connected)


@pytest.mark.parametrize("offered, expected", [("VP8", ["VP8", "rtx"]), ("H264", ["H264", "rtx", "H264", "rtx"])])
async def test_callee_is_offered_only_codecs_the_caller_offered(clients: Clients, notes: Notifications,
                                                                offered: str, expected: list[str]) -> None:
    clients.caller.addTransceiver("video").setCodecPreferences(codecs("video", offered, "rtx"))
    call, callee_offer = await Call.create("call-1", await make_offer(clients.caller), policy=LOOPBACK, notify=notes)
    clients.calls.append(call)
    assert m_lines(callee_offer)[0]["codecs"] == expected


async def test_the_callees_codec_choice_fixes_the_callers_answer(clients: Clients, notes: Notifications) -> None:
    clients.caller.addTransceiver("video")  # offers VP8 and H264
    h264 = [c for c in codecs("video", "H264") if c.parameters.get("profile-level-id") == "42e01f"]
    clients.callee.addTransceiver("video").setCodecPreferences(h264)  # chooses H264, no RTX
    _, callee_offer, caller_answer = await clients.call(notes)
    assert "VP8" in m_lines(callee_offer)[0]["codecs"]
    assert m_lines(caller_answer)[0]["codecs"] == ["H264"]
    await notes.wait(both_connected)


# --- untrusted input --------------------------------------------------------------------------


async def test_a_bad_offer_is_refused_and_creates_nothing(notes: Notifications) -> None:
    for bad, reason in [("v=0\r\n", "has no media"), ("x" * 70000, "larger than"), ("garbage", "not SDP")]:
        with pytest.raises(SdpError, match=reason):
            await Call.create("call-1", bad, policy=LOOPBACK, notify=notes)
    assert notes.seen == []


async def test_a_bad_answer_is_refused_and_a_good_one_still_works(clients: Clients, notes: Notifications) -> None:
    clients.caller.addTransceiver("audio")
    call, callee_offer = await Call.create("call-1", await make_offer(clients.caller), policy=LOOPBACK, notify=notes)
    clients.calls.append(call)
    clients.callee.addTransceiver("audio").setCodecPreferences(codecs("audio", "opus"))
    answer = await make_answer(clients.callee, callee_offer)
    with pytest.raises(SdpError, match="answer's m-lines do not match the offer"):
        await call.accept(answer.replace("a=mid:0", "a=mid:7").replace("BUNDLE 0", "BUNDLE 7"))
    with pytest.raises(SdpError, match="no codec the caller offered"):
        await call.accept(answer.replace("opus/48000/2", "AMR/8000"))
    with pytest.raises(SdpError, match="not SDP"):
        await call.accept("nonsense")
    await apply_answer(clients.caller, await call.accept(answer))
    await notes.wait(both_connected)
    with pytest.raises(ValueError, match="already accepted"):
        await call.accept(answer)


async def test_bad_candidates_are_refused_with_a_reason(clients: Clients, notes: Notifications) -> None:
    clients.caller.addTransceiver("audio")
    call, _ = await Call.create("call-1", await make_offer(clients.caller), policy=LOOPBACK, notify=notes)
    clients.calls.append(call)
    with pytest.raises(ValueError, match="candidate must look like"):
        await call.add_candidates("caller", [{"candidate": "candidate:nonsense", "sdpMid": "0"}])
    with pytest.raises(ValueError, match="must be an object"):
        await call.add_candidates("caller", ["candidate:1 1 udp 1 127.0.0.1 9 typ host"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="leg must be 'caller' or 'callee'"):
        await call.add_candidates("alice", [])  # type: ignore[arg-type]
    good = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    for _ in range(2):  # 120 buffered: under the limit
        await call.add_candidates("callee", [good] * 60)
    with pytest.raises(ValueError, match="too many candidates before the callee's SDP"):
        await call.add_candidates("callee", [good] * 60)


# --- ending -----------------------------------------------------------------------------------


async def test_close_reports_closed_legs_and_frees_their_sockets(clients: Clients, notes: Notifications) -> None:
    clients.caller.addTransceiver("audio")
    call, callee_offer, caller_answer = await clients.call(notes)
    await notes.wait(both_connected)
    ports = [port for sdp in (callee_offer, caller_answer) for line in m_lines(sdp) for _, port in line["candidates"]]
    await call.close("Explicit hangup")
    await call.close("again")  # idempotent
    assert sorted(notes.states())[::2] == [("callee", "closed", "Explicit hangup"), ("caller", "closed", "Explicit hangup")]
    assert len(notes.states()) == 4
    for port in set(ports):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", port))  # would raise EADDRINUSE if the relay still held it


async def test_a_client_closing_its_pc_is_a_dtls_alert(clients: Clients, notes: Notifications) -> None:
    clients.caller.addTransceiver("audio")
    await clients.call(notes)
    await notes.wait(both_connected)
    await clients.caller.close()
    await notes.wait(lambda n: ("caller", "closed", "DTLS alert") in n.states())
    assert notes.states("callee") == [("callee", "connected", "")]  # signalling decides the rest


async def test_a_leg_whose_ice_fails_reports_ice_failed(clients: Clients, notes: Notifications) -> None:
    clients.caller.addTransceiver("audio")
    call, callee_offer = await Call.create("call-1", await make_offer(clients.caller), policy=LOOPBACK, notify=notes)
    clients.calls.append(call)
    answer, _ = split_candidates(await make_answer(clients.callee, callee_offer))
    await clients.callee.close()  # the callee's client is gone before its checks reach the relay
    await call.accept(answer)
    await call.add_candidates("callee", [], completed=True)  # and it has no candidate: nothing to check
    await notes.wait(lambda n: ("callee", "failed", "ICE failed") in n.states())
    await call.close()
    assert notes.states() == [("callee", "failed", "ICE failed"), ("caller", "closed", "Close PC")]


async def test_rtp_port_range_and_nat_1_1_mapping_apply_to_both_legs(clients: Clients, notes: Notifications) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        low = min(probe.getsockname()[1], 65000)
    policy = IcePolicy(addresses=("127.0.0.1",), port_range=(low, low + 30), public_address="203.0.113.7")
    clients.caller.addTransceiver("audio")
    with ice.installed(policy):
        call, callee_offer = await Call.create("call-1", await make_offer(clients.caller), policy=policy, notify=notes)
        clients.calls.append(call)
        caller_answer = await call.accept(await make_answer(clients.callee, callee_offer))
    for sdp in (callee_offer, caller_answer):
        [line] = m_lines(sdp)
        assert line["candidates"] and all(address == "203.0.113.7" and low <= port <= low + 30
                                          for address, port in line["candidates"])
        assert "c=IN IP4 203.0.113.7" in sdp and "127.0.0.1" not in sdp


# --- media ------------------------------------------------------------------------------------


async def test_incoming_rtp_is_reported_per_m_line_and_never_decoded(clients: Clients, notes: Notifications) -> None:
    decoders: list[str] = []
    with aiortc_hooks.watch_codecs(lambda kind, mime: decoders.append(mime) if kind == "decoder" else None):
        audio = clients.caller.addTrack(AudioStreamTrack())
        clients.caller.addTrack(VideoStreamTrack())
        call, _, _ = await clients.call(notes)
        call.configure("caller", audio=False, video=False)  # relayed, the callee's client would decode here
        await notes.wait(lambda n: {("caller", "audio", "0", True), ("caller", "video", "1", True)} <= set(n.media()))
        audio.replaceTrack(None)  # the caller stops sending audio ...
        await notes.wait(lambda n: ("caller", "audio", "0", False) in n.media(), timeout=5)
        audio.replaceTrack(AudioStreamTrack())  # ... and starts again
        await notes.wait(lambda n: n.media().count(("caller", "audio", "0", True)) == 2, timeout=5)
    assert decoders == []
    assert all(t.receiver._RTCRtpReceiver__decoder_thread is None for t in call.caller.pc.getTransceivers())
    assert {s.mid: s.packets > 0 for s in call.caller.flows} == {"0": True, "1": True}
    assert not any(leg == "callee" for leg, *_ in notes.media())  # the callee sends nothing


async def test_configure_stores_the_settings_of_a_leg(clients: Clients, notes: Notifications) -> None:
    clients.caller.addTransceiver("audio")
    call, _ = await Call.create("call-1", await make_offer(clients.caller), policy=LOOPBACK, notify=notes)
    clients.calls.append(call)
    call.configure("caller", audio=False, bitrate=128000)
    call.configure("caller", video=False)
    settings = call.caller.settings
    assert (settings.audio, settings.video, settings.bitrate) == (False, False, 128000)
    assert (call.callee.settings.audio, call.callee.settings.bitrate) == (True, 0)


async def test_a_hangup_during_accept_refuses_the_accept(clients: Clients, notes: Notifications) -> None:
    clients.caller.addTransceiver("audio")
    call, callee_offer = await Call.create("call-1", await make_offer(clients.caller), policy=LOOPBACK, notify=notes)
    clients.calls.append(call)
    answer = await make_answer(clients.callee, callee_offer)
    accepting = asyncio.ensure_future(call.accept(answer))
    await asyncio.sleep(0)  # the accept is under way
    with pytest.raises(ValueError, match="already accepted"):
        await call.accept(answer)
    await call.close("Explicit hangup")
    with pytest.raises(ValueError, match=r"hung up while being accepted|the call is over"):
        await accepting
