"""What goes where (mediarelay/routes.py), read from both legs' SDP; no PeerConnection."""

from __future__ import annotations

from mediarelay.routes import Section, plan, sections

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

VP8 = ("VP8/90000", "", ["nack", "nack pli", "goog-remb"])
H264_42E01F = ("H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
               ["nack", "nack pli"])
H264_640C1F = ("H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f", ["nack"])
OPUS = ("opus/48000/2", "minptime=10;useinbandfec=1", [])


def m_line(kind: str, mid: str, codecs: dict[int, tuple[str, str, list[str]]], *, rtx: dict[int, int] | None = None,
           extmap: dict[str, int] | None = None, direction: str = "sendrecv", ssrcs: tuple[int, ...] = (),
           cname: str = "c") -> str:
    rtx = rtx or {}
    pts = [*codecs, *rtx]
    lines = [f"m={kind} 9 UDP/TLS/RTP/SAVPF {' '.join(map(str, pts))}", "c=IN IP4 0.0.0.0", f"a={direction}",
             f"a=mid:{mid}"]
    lines += [f"a=extmap:{x_id} {uri}" for uri, x_id in (extmap or {}).items()]
    lines += ["a=rtcp-mux", "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
              "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass"]
    for pt, (name, fmtp, fbs) in codecs.items():
        lines.append(f"a=rtpmap:{pt} {name}")
        lines += [f"a=rtcp-fb:{pt} {fb}" for fb in fbs]
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
    for pt, apt in rtx.items():
        lines += [f"a=rtpmap:{pt} rtx/90000", f"a=fmtp:{pt} apt={apt}"]
    if len(ssrcs) == 2:
        lines.append(f"a=ssrc-group:FID {ssrcs[0]} {ssrcs[1]}")
    lines += [f"a=ssrc:{ssrc} cname:{cname}" for ssrc in ssrcs]
    return "\r\n".join(lines) + "\r\n"


def sdp(*media: str) -> str:
    mids = " ".join(line.split("a=mid:")[1].split("\r\n")[0] for line in media)
    return ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" + f"a=group:BUNDLE {mids}\r\n" + "".join(media))


def test_a_leg_s_sections_use_its_answer_and_both_sides_ssrcs() -> None:
    offer = sdp(m_line("audio", "0", {111: OPUS}, extmap={MID: 4}, ssrcs=(1,)),
                m_line("video", "1", {96: VP8, 102: H264_42E01F}, rtx={97: 96, 103: 102}, extmap={MID: 4, ABS: 2},
                       ssrcs=(2, 3)))
    answer = sdp(m_line("audio", "0", {111: OPUS}, extmap={MID: 4}, ssrcs=(10,), cname="relay"),
                 m_line("video", "1", {96: VP8}, rtx={97: 96}, extmap={MID: 4}, ssrcs=(11, 12), cname="relay",
                        direction="recvonly"))
    audio, video = sections(answer, offer, local_is_answer=True)
    assert (audio.kind, audio.mid, audio.local_ssrc, audio.cname, audio.remote_ssrcs) == ("audio", "0", 10, "relay", (1,))
    assert [c.payloadType for c in video.codecs] == [96, 97]  # the answer's, not all the offer's
    assert video.extensions == {MID: 4}
    assert (video.local_ssrc, video.local_rtx_ssrc, video.remote_ssrcs, video.remote_rtx) == (11, 12, (2,), {3: 2})
    assert (video.relay_receives, video.relay_sends) == (True, False)
    # the other way round: the relay offered, the client answered sendonly (so the relay only receives)
    [offered] = sections(sdp(m_line("video", "v", {100: VP8}, ssrcs=(5,))),
                         sdp(m_line("video", "v", {100: VP8}, direction="sendonly", ssrcs=(6,))), local_is_answer=False)
    assert (offered.relay_receives, offered.relay_sends, offered.local_ssrc, offered.remote_ssrcs) == (
        True, False, 5, (6,))


def section(kind: str = "video", mid: str = "1", codecs: list[tuple[int, tuple[str, str, list[str]]]] | None = None,
            rtx: dict[int, int] | None = None, extensions: dict[str, int] | None = None, index: int = 1,
            **kwargs: object) -> Section:
    text = sdp(m_line(kind, mid, dict(codecs or [(96, VP8)]), rtx=rtx, extmap=extensions, ssrcs=(1000, 1001)))
    [parsed] = sections(text, text, local_is_answer=True)
    return Section(**{**parsed.__dict__, "index": index, **kwargs})  # type: ignore[arg-type]


def test_payload_types_map_codec_to_codec_across_legs_that_number_them_differently() -> None:
    caller = section(codecs=[(96, VP8), (102, H264_42E01F)], rtx={97: 96, 103: 102})
    callee = section(codecs=[(120, H264_42E01F), (98, VP8)], rtx={99: 98, 121: 120}, local_ssrc=555,
                     local_rtx_ssrc=556)
    [route] = plan([caller], [callee])
    assert route.payload_types == {96: 98, 102: 120}
    assert route.source_rtx == {97: 96, 103: 102}
    assert route.sink_rtx == {98: 99, 120: 121}
    assert route.codec_names == {96: "VP8", 102: "H264"}
    assert (route.sink_ssrc, route.sink_rtx_ssrc, route.clock_rate, route.nack) == (555, 556, 90000, True)


def test_an_h264_profile_the_other_leg_lacks_is_not_mapped() -> None:
    caller = section(codecs=[(102, H264_42E01F), (104, H264_640C1F)])
    callee = section(codecs=[(100, H264_42E01F)])
    [route] = plan([caller], [callee])
    assert route.payload_types == {102: 100}


def test_no_route_without_a_common_codec_or_against_the_direction() -> None:
    assert plan([section(codecs=[(96, VP8)])], [section(codecs=[(100, H264_42E01F)])]) == []
    assert plan([section(relay_receives=False)], [section()]) == []
    assert plan([section()], [section(relay_sends=False)]) == []
    assert plan([section(kind="audio", codecs=[(111, OPUS)])], [section(codecs=[(96, VP8)])]) == []
    assert plan([section(index=0)], [section(index=1)]) == []


def test_extensions_rewritten_only_when_ids_or_mids_differ() -> None:
    same = plan([section(extensions={MID: 4, ABS: 2})], [section(extensions={MID: 4, ABS: 2})])
    assert same[0].extensions is None
    other_ids = plan([section(extensions={MID: 4, ABS: 2})], [section(extensions={MID: 1, ABS: 3})])
    assert other_ids[0].extensions is not None and other_ids[0].extensions.ids == {4: 1, 2: 3}
    other_mid = plan([section(mid="video0", extensions={MID: 1})], [section(mid="1", extensions={MID: 1})])
    assert other_mid[0].extensions is not None and other_mid[0].extensions.mid == b"1"


def test_no_nack_towards_a_source_that_did_not_negotiate_it() -> None:
    [route] = plan([section(kind="audio", codecs=[(111, OPUS)])], [section(kind="audio", codecs=[(109, OPUS)])])
    assert route.nack is False and route.payload_types == {111: 109}
