"""Client SDP and candidates checked, mirrored and restricted (mediarelay/sdp.py): no sockets."""

from __future__ import annotations

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from mediarelay import sdp
from mediarelay.sdp import SdpError
from shared.messages import MAX_SDP

SESSION = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=msid-semantic: WMS
"""
TRANSPORT = """a=ice-ufrag:Ab12
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 4D:1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8
a=setup:actpass
"""
AUDIO = """m=audio 9 UDP/TLS/RTP/SAVPF 111 0
c=IN IP4 0.0.0.0
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:0 PCMU/8000
""" + TRANSPORT
VIDEO = """m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99
c=IN IP4 0.0.0.0
a=mid:1
a=sendonly
a=rtcp-mux
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 nack
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:98 H264/90000
a=fmtp:98 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
""" + TRANSPORT
DATA = """m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=mid:2
a=sctp-port:5000
""" + TRANSPORT


def offer(*sections: str, session: str = SESSION) -> str:
    return (session + "".join(sections or (AUDIO, VIDEO, DATA))).replace("\n", "\r\n")


def codec(pt: int, name: str, rate: int = 90000, **params: object) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType=f"video/{name}", clockRate=rate, payloadType=pt, parameters=dict(params))


# --- whole SDP --------------------------------------------------------------------------------


def test_plan_mirrors_kinds_order_directions_and_codecs() -> None:
    lines = sdp.plan_offer(sdp.parse(offer(), "offer"))
    assert [(line.kind, line.mid, line.direction) for line in lines] == [
        ("audio", "0", "sendrecv"), ("video", "1", "sendonly"), ("application", "2", "sendrecv")]
    assert [c.mimeType for c in lines[0].codecs] == ["audio/opus", "audio/PCMU"]
    assert [c.mimeType for c in lines[1].codecs] == ["video/VP8", "video/H264", "video/rtx"]
    assert lines[1].codecs[1].parameters["profile-level-id"] == "42e01f"


def test_plan_keeps_only_codecs_the_relay_supports() -> None:
    only_amr = AUDIO.replace("111 0\n", "112\n").replace("a=rtpmap:111 opus/48000/2\na=fmtp:111 minptime=10;useinbandfec=1\n"
                                                        "a=rtpmap:0 PCMU/8000\n", "a=rtpmap:112 AMR-WB/16000\n")
    with pytest.raises(SdpError, match=r"audio m-line \(mid 0\) has no codec the relay supports \(offered: AMR-WB/16000\)"):
        sdp.plan_offer(sdp.parse(offer(only_amr, session=SESSION.replace("0 1 2", "0")), "offer"))


@pytest.mark.parametrize("text, reason", [
    (42, "the offer SDP must be a string"),
    ("v=0\r\n" + "a=x\r\n" * (MAX_SDP // 5), f"larger than {MAX_SDP} bytes"),
    ("hello", "the offer is not SDP"),
    ("v=0\r\nm=audio notaport RTP 0\r\n", "could not be parsed"),
    (SESSION.replace("\n", "\r\n"), "the offer has no media"),
    (offer(AUDIO.replace("a=mid:0\n", "")), r"m-line 0 \(audio\) of the offer has no a=mid"),
    (offer(AUDIO.replace("a=ice-pwd:abcdefghijklmnopqrstuvwx\n", "")), "has no ICE credentials"),
    (offer(AUDIO.replace("a=fingerprint", "a=x-fingerprint")), "has no DTLS fingerprint"),
    (offer(AUDIO.replace("a=rtcp-mux\n", "")), "does not use rtcp-mux"),
    (offer(AUDIO, "m=text 9 RTP/AVP 98\r\na=mid:1\r\n" + TRANSPORT), "is not audio, video or application"),
])
def test_unusable_offers_are_refused_with_a_reason(text: object, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        sdp.parse(text, "offer")


@pytest.mark.parametrize("text, reason", [
    (offer(session=SESSION.replace("a=group:BUNDLE 0 1 2\n", "")), "must BUNDLE all its m-lines"),
    (offer(session=SESSION.replace("BUNDLE 0 1 2", "BUNDLE 0 1")), "must BUNDLE all its m-lines"),
    (offer(session=SESSION.replace("BUNDLE 0 1 2", "BUNDLE 9 0 1 2")), "and only those"),
    (offer(AUDIO, AUDIO), "the same a=mid twice"),
])
def test_offers_that_do_not_bundle_exactly_their_m_lines_are_refused(text: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        sdp.parse(text, "offer")


@pytest.mark.parametrize("text, reason", [
    (offer(AUDIO, DATA, DATA.replace("a=mid:2", "a=mid:1")), "more than one data channel"),
])
def test_offers_the_relay_cannot_mirror_are_refused(text: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        sdp.plan_offer(sdp.parse(text, "offer"))


def test_an_answer_must_pick_a_dtls_role() -> None:
    with pytest.raises(SdpError, match="a=setup:active or a=setup:passive"):
        sdp.parse(offer(), "answer")


# --- codecs of the answer ---------------------------------------------------------------------


def test_caller_answer_keeps_the_callees_codecs_in_its_order_with_caller_payload_types() -> None:
    caller = [codec(96, "VP8"), codec(97, "rtx", apt=96), codec(102, "H264", **{"packetization-mode": 1,
              "profile-level-id": "42e01f"}), codec(103, "rtx", apt=102)]
    chosen = [codec(99, "H264", **{"packetization-mode": 1, "profile-level-id": "42e01f"}), codec(100, "rtx", apt=99)]
    assert [c.payloadType for c in sdp.answer_codecs(caller, chosen)] == [102, 103]
    assert [c.payloadType for c in sdp.answer_codecs(caller, chosen[:1])] == [102]  # no RTX unless the callee kept it
    assert sdp.answer_codecs(caller[:2], chosen) == []


def test_directions_reverse() -> None:
    assert [sdp.reverse_direction(d) for d in ["sendonly", "recvonly", "sendrecv", "inactive", None]] == [
        "recvonly", "sendonly", "sendrecv", "inactive", "sendrecv"]


# --- trickled candidates ------------------------------------------------------------------------


def test_a_trickled_candidate_is_parsed_field_by_field() -> None:
    parsed = sdp.parse_candidate(
        "candidate:842163049 1 udp 1677729535 198.51.100.7 50000 typ srflx raddr 10.0.0.2 rport 50000 generation 0",
        "0", 0)
    assert parsed is not None
    assert (parsed.ip, parsed.port, parsed.type, parsed.protocol, parsed.relatedAddress, parsed.sdpMid) == (
        "198.51.100.7", 50000, "srflx", "udp", "10.0.0.2", "0")
    mdns = sdp.parse_candidate("a=candidate:1 1 UDP 2122260223 5f2a3b9e-1c1d.local 61000 typ host", None, 1)
    assert mdns is not None and mdns.ip == "5f2a3b9e-1c1d.local" and mdns.protocol == "udp"


def test_an_empty_candidate_means_end_of_candidates() -> None:
    assert sdp.parse_candidate("", "0", 0) is None


@pytest.mark.parametrize("candidate, mid, index, reason", [
    (None, "0", 0, "must be a string"),
    ("candidate:1 1 udp 1 127.0.0.1 5000 typ host", None, None, "needs an sdpMid or an sdpMLineIndex"),
    ("candidate:1 1 udp 1 127.0.0.1 5000 typ host", 7, None, "sdpMid must be a short string"),
    ("candidate:1 1 udp 1 127.0.0.1 5000 typ host", None, True, "sdpMLineIndex must be an integer"),
    ("garbage", "0", 0, "must look like"),
    ("candidate:1 1 udp 1 127.0.0.1 5000 kind host", "0", 0, "must look like"),
    ("candidate:fo@ 1 udp 1 127.0.0.1 5000 typ host", "0", 0, "foundation"),
    ("candidate:1 0 udp 1 127.0.0.1 5000 typ host", "0", 0, "component"),
    ("candidate:1 1 sctp 1 127.0.0.1 5000 typ host", "0", 0, "transport"),
    ("candidate:1 1 udp -5 127.0.0.1 5000 typ host", "0", 0, "priority"),
    ("candidate:1 1 udp 1 not_an_ip 5000 typ host", "0", 0, "address"),
    ("candidate:1 1 udp 1 127.0.0.1 70000 typ host", "0", 0, "port"),
    ("candidate:1 1 udp 1 127.0.0.1 5000 typ prflx", "0", 0, "type"),
])
def test_malformed_candidates_are_refused_with_a_reason(candidate: object, mid: object, index: object,
                                                        reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        sdp.parse_candidate(candidate, mid, index)
