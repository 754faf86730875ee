"""A caller's simulcast offer, read and accepted (mediarelay/simulcast_sdp.py), on real SDP.

The offers in ``sdp/`` are Chromium's own (``sdp/capture.py``): janus.js's ``simulcast: true``
(rid, h/m/l) and a munged SSRC simulcast, each with VP8, VP9 and H.264 first. The call tests
set them on a real relay call with an aiortc callee.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc import RTCSessionDescription
from pydantic import ValidationError

from mediarelay import aiortc_hooks, routes
from mediarelay.call import Call
from mediarelay.ice import LOOPBACK
from mediarelay.sdp import SdpError
from mediarelay.simulcast import LayerSource, SimulcastSettings, layer_sources
from mediarelay.simulcast_sdp import REPAIRED_RID_URI, RID_URI, Simulcast, accept, read_offer
from mediarelay.worker import Worker
from shared import ipc
from shared.ipc import IpcError
from shared.messages import CallAccept, CallCreate, CallHangup, LegConfigure
from tests.support.relay_clients import Notifications, client, make_answer, make_offer

SDP = Path(__file__).resolve().parent / "sdp"
CODECS = ("vp8", "vp9", "h264")


def chromium(form: str, codec: str) -> str:
    return (SDP / f"chromium-{form}-{codec}.sdp").read_bytes().decode()  # as sent: CRLF


def extmap(text: str, uri: str) -> int | None:
    found = re.search(rf"^a=extmap:(\d+) {re.escape(uri)}\r?$", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def video_section(text: str) -> str:
    return "m=video" + text.split("m=video", 1)[1].split("\nm=", 1)[0]


# --- reading the offer ------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_janus_js_rid_simulcast_is_three_layers_lowest_first(codec: str) -> None:
    text = chromium("rid", codec)
    simulcast = read_offer(text)
    assert simulcast is not None
    # janus.js's sendEncodings are h, m, l (scaleResolutionDownBy 1, 2, 4): "l" is substream 0.
    assert "a=simulcast:send h;m;l" in text
    assert (simulcast.form, simulcast.mid, simulcast.rids, simulcast.offered_order) == ("rid", "1", ("l", "m", "h"),
                                                                                      ("h", "m", "l"))
    assert simulcast.rid_extension == extmap(text, RID_URI) is not None
    assert simulcast.repaired_rid_extension == extmap(text, REPAIRED_RID_URI) is not None
    assert simulcast.ssrcs == () and simulcast.paused == frozenset()


@pytest.mark.parametrize("codec", CODECS)
def test_munged_ssrc_simulcast_is_the_sim_group_in_order_with_its_rtx(codec: str) -> None:
    text = chromium("ssrc", codec)
    simulcast = read_offer(text)
    assert simulcast is not None
    [sim] = re.findall(r"^a=ssrc-group:SIM (.*?)\r?$", text, re.MULTILINE)
    fid = dict(tuple(map(int, g.split())) for g in re.findall(r"^a=ssrc-group:FID (.*?)\r?$", text, re.MULTILINE))
    assert (simulcast.form, simulcast.mid) == ("ssrc", "1")
    assert simulcast.ssrcs == tuple(int(s) for s in sim.split())
    assert simulcast.rtx == fid and set(fid) == set(simulcast.ssrcs)
    assert simulcast.rids == ()


async def test_an_aiortc_offer_and_a_plain_chromium_one_do_not_simulcast() -> None:
    pc = client()
    pc.addTransceiver("audio")
    pc.addTransceiver("video")
    try:
        assert read_offer(await make_offer(pc)) is None
    finally:
        await pc.close()
    plain = re.sub(r"^a=(rid|simulcast):.*\r\n", "", chromium("rid", "vp8"), flags=re.MULTILINE)
    assert read_offer(plain) is None


def with_lines(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def test_only_the_first_video_m_line_counts() -> None:
    """As Janus: a second video m-line's simulcast is not read (its browser sends one stream)."""
    text = chromium("rid", "vp8")
    video = video_section(text)
    second = re.sub(r"^a=mid:1\r$", "a=mid:2", video.replace("a=rid:", "a=x-rid:")
                    .replace("a=simulcast:", "a=x-simulcast:"), flags=re.MULTILINE)
    swapped = text.replace(video, second + video.replace("a=mid:1", "a=mid:3"))
    assert read_offer(swapped) is None


def test_rid_order_lmh_reads_the_first_rid_as_substream_0() -> None:
    """As Janus's jsep ``rid_order``: "lmh" for an app whose encodings go lowest first."""
    text = with_lines(chromium("rid", "vp8"), "a=simulcast:send h;m;l", "a=simulcast:send l;m;h")
    simulcast = read_offer(text, "lmh")
    assert simulcast is not None and simulcast.rids == ("l", "m", "h") and simulcast.offered_order == ("l", "m", "h")
    assert read_offer(text).rids == ("h", "m", "l")  # "hml", the default, reads it the other way
    assert "a=simulcast:recv l;m;h" in accept(answer_like(text), simulcast)  # the answer keeps the offer's order


def test_a_paused_layer_stays_a_layer_and_the_answer_keeps_it_paused() -> None:
    text = with_lines(chromium("rid", "vp8"), "a=simulcast:send h;m;l", "a=simulcast:send h;~m;l")
    simulcast = read_offer(text)
    assert simulcast is not None and simulcast.rids == ("l", "m", "h") and simulcast.paused == {"m"}
    answer = accept(answer_like(text), simulcast)
    assert "a=simulcast:recv h;~m;l" in answer


def test_alternatives_take_the_first_and_firefox_draft_form_is_read() -> None:
    text = with_lines(chromium("rid", "vp8"), "a=simulcast:send h;m;l", "a=simulcast: send rid=h;m,l")
    simulcast = read_offer(text)
    assert simulcast is not None and simulcast.rids == ("m", "h")


def test_two_layers_are_substreams_0_and_1_and_one_is_a_plain_stream() -> None:
    two = read_offer(with_lines(chromium("rid", "vp8"), "a=simulcast:send h;m;l", "a=simulcast:send h;m"))
    assert two is not None and two.rids == ("m", "h")
    assert read_offer(with_lines(chromium("rid", "vp8"), "a=simulcast:send h;m;l", "a=simulcast:send h")) is None
    text = chromium("ssrc", "vp8")
    [sim] = re.findall(r"^a=ssrc-group:SIM .*?\r?$", text, re.MULTILINE)
    two_ssrc = read_offer(text.replace(sim, " ".join(sim.split()[:3])))
    assert two_ssrc is not None and len(two_ssrc.ssrcs) == 2


@pytest.mark.parametrize(("old", "new", "reason"), [
    ("a=simulcast:send h;m;l", "a=simulcast:send h;m;l;x", "without an a=rid:x send line"),
    ("a=rid:l send", "a=rid:l send\r\na=rid:x send", None),  # declared but not simulcast: fine
    ("a=simulcast:send h;m;l", "a=simulcast:send h;m;l;x\r\na=rid:x send", "at most 3"),
    ("a=simulcast:send h;m;l", "a=simulcast:send h;m;h", "twice"),
    ("a=simulcast:send h;m;l", "a=simulcast:send h;m;l\r\na=simulcast:send h;m", "more than one a=simulcast"),
    ("a=simulcast:send h;m;l", "a=simulcast:send h;m;l/x", "malformed a=simulcast"),
    ("a=simulcast:send h;m;l", "a=simulcast:sned h;m;l", "malformed a=simulcast"),
    ("a=rid:h send", "a=rid:h", "malformed a=rid"),
    (f"a=extmap:10 {RID_URI}", "a=extmap:10 urn:x-other", "without the urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
])
def test_bad_rid_simulcast_is_refused_with_a_reason(old: str, new: str, reason: str | None) -> None:
    text = with_lines(chromium("rid", "vp8"), old, new)
    if reason is None:
        assert read_offer(text) is not None
        return
    with pytest.raises(SdpError, match=re.escape(reason)):
        read_offer(text)


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda ssrcs: ssrcs + ["99"], "at most 3"),
    (lambda ssrcs: ssrcs[:1] + ssrcs[:1] + ssrcs[1:2], "malformed a=ssrc-group:SIM"),
    (lambda ssrcs: ssrcs[:1] + ["x"], "malformed a=ssrc-group line"),
    (lambda ssrcs: ssrcs[:1] + ["0"], "malformed a=ssrc-group:SIM"),
])
def test_bad_ssrc_simulcast_is_refused_with_a_reason(edit, reason: str) -> None:
    text = chromium("ssrc", "vp8")
    [sim] = re.findall(r"^a=ssrc-group:SIM .*?\r?$", text, re.MULTILINE)
    ssrcs = sim.split()[1:]
    with pytest.raises(SdpError, match=re.escape(reason)):
        read_offer(text.replace(sim, "a=ssrc-group:SIM " + " ".join(edit(ssrcs))))


# --- the relay's SDP for the caller ----------------------------------------------------------


def answer_like(offer: str) -> str:
    """The offer without its rid lines and rid extensions, sendrecv: what aiortc's answer has."""
    text = re.sub(r"^a=(rid|simulcast):.*\r\n", "", offer, flags=re.MULTILINE)
    return re.sub(r"^a=extmap:\d+ urn:ietf:params:rtp-hdrext:sdes:(repaired-)?rtp-stream-id\r\n", "", text, flags=re.MULTILINE)


def test_accept_adds_rids_simulcast_recv_and_the_offers_extension_ids_once() -> None:
    offer = chromium("rid", "vp8")
    simulcast = read_offer(offer)
    answer = accept(answer_like(offer), simulcast)
    video = video_section(answer)
    assert re.findall(r"^a=rid:(\S+) recv\r?$", video, re.MULTILINE) == ["h", "m", "l"]
    assert re.findall(r"^a=simulcast:(.*?)\r?$", video, re.MULTILINE) == ["recv h;m;l"]
    assert extmap(answer, RID_URI) == extmap(offer, RID_URI)
    assert extmap(answer, REPAIRED_RID_URI) == extmap(offer, REPAIRED_RID_URI)
    assert accept(answer, simulcast) == answer  # idempotent: a re-offer edited twice stays right
    assert "a=rid" not in answer.split("m=video")[0]  # the audio m-line is left alone


@pytest.mark.parametrize("direction", ["sendonly", "inactive"])
def test_accept_leaves_an_m_line_the_relay_does_not_receive_on(direction: str) -> None:
    offer = chromium("rid", "vp8")
    answer = answer_like(offer).replace("a=sendrecv", f"a={direction}")
    assert accept(answer, read_offer(offer)) == answer


def test_accept_leaves_ssrc_simulcast_and_plain_answers_alone() -> None:
    answer = answer_like(chromium("rid", "vp8"))
    assert accept(answer, read_offer(chromium("ssrc", "vp8"))) == answer
    assert accept(answer, None) == answer
    assert accept(answer, Simulcast(mid="7", form="rid", rids=("l", "h"), offered_order=("h", "l"),
                                    rid_extension=10)) == answer  # no m-line with that mid


# --- a real call ------------------------------------------------------------------------------


@pytest.fixture
async def callee() -> AsyncIterator:
    pc = client()
    yield pc
    await pc.close()


@pytest.mark.usefixtures("relay_on_loopback")
@pytest.mark.parametrize(("form", "codec"), [(f, c) for f in ("rid", "ssrc") for c in CODECS])
async def test_a_simulcast_call_offers_the_callee_one_stream_and_answers_the_callers_layers(
        callee, form: str, codec: str) -> None:
    offer = chromium(form, codec)
    call, callee_offer = await Call.create("call-sim", offer, policy=LOOPBACK, notify=Notifications())
    try:
        callee_video = video_section(callee_offer)
        for absent in ("a=rid", "a=simulcast", "ssrc-group:SIM", "rtp-stream-id"):
            assert absent not in callee_video
        assert len(re.findall(r"^a=ssrc:(\d+) cname", callee_video, re.MULTILINE)) <= 2  # one stream (and its RTX)
        caller_answer = await call.accept(await make_answer(callee, callee_offer))
        video = video_section(caller_answer)
        assert video.split()[1] != "0"
        codec_name = {"vp8": "VP8", "vp9": "VP9", "h264": "H264"}[codec]
        assert re.findall(r"^a=rtpmap:\d+ (\w+)/90000", video, re.MULTILINE)[0] == codec_name
        if form == "rid":
            assert re.findall(r"^a=simulcast:(.*?)\r?$", video, re.MULTILINE) == ["recv h;m;l"]
            assert re.findall(r"^a=rid:(\S+) recv", video, re.MULTILINE) == ["h", "m", "l"]
            assert extmap(caller_answer, RID_URI) == extmap(offer, RID_URI)
            assert extmap(caller_answer, REPAIRED_RID_URI) == extmap(offer, REPAIRED_RID_URI)
        else:
            assert "a=simulcast" not in video and "a=rid" not in video
        # The forwarding plan carries the layers, on the caller -> callee video route only.
        local, remote = aiortc_hooks.session_descriptions(call.caller.pc)
        caller_sections = routes.sections(local, remote, local_is_answer=True, simulcast=call.caller.simulcast)
        local, remote = aiortc_hooks.session_descriptions(call.callee.pc)
        callee_sections = routes.sections(local, remote, local_is_answer=False, simulcast=call.callee.simulcast)
        forward = {r.kind: r for r in routes.plan(caller_sections, callee_sections)}
        back = routes.plan(callee_sections, caller_sections)
        assert forward["video"].simulcast == read_offer(offer) and forward["audio"].simulcast is None
        assert all(r.simulcast is None for r in back)
        assert forward["video"].extensions is not None  # the rid extensions are not forwarded to the callee
        layers = layer_sources(forward["video"].simulcast)
        if form == "rid":  # substream 0 is the lowest: janus.js's "l"; SSRCs come with the packets
            assert layers == (LayerSource(0, "l", None, None), LayerSource(1, "m", None, None),
                              LayerSource(2, "h", None, None))
        else:
            simulcast = read_offer(offer)
            assert layers == tuple(LayerSource(i, None, s, simulcast.rtx[s]) for i, s in enumerate(simulcast.ssrcs))
    finally:
        await call.close()


@pytest.mark.usefixtures("relay_on_loopback")
async def test_set_reaches_the_receivers_settings_and_a_layer_change_is_leg_simulcast(callee) -> None:
    """``Call.configure`` for what a leg receives (kept until the media links), and the fast
    path's ``on_simulcast`` as the worker's ``leg.simulcast`` notification."""
    notes = Notifications()
    call, callee_offer = await Call.create("call-sim", chromium("rid", "vp8"), policy=LOOPBACK, notify=notes)
    try:
        await call.accept(await make_answer(callee, callee_offer))
        call.configure("callee", substream=0, temporal=1, fallback=400000)
        settings = call.media.simulcast_settings["callee"]
        assert (settings.substream, settings.temporal, settings.fallback, settings.auto) == (0, 1, 400000, False)
        call.configure("callee", auto=True)
        assert call.media.simulcast_settings["callee"].auto is True
        for bad in ({"substream": 3}, {"temporal": -1}, {"fallback": -1}):
            with pytest.raises(ValueError, match="must"):
                call.configure("callee", **bad)
        assert call.media.on_simulcast is not None
        call.media.on_simulcast("callee", "VP8", "substream", 1)
        call.media.on_simulcast("callee", "VP8", "temporal", 0)
        seen = [model.model_dump() for name, model in notes.seen if name == "leg.simulcast"]
        assert seen == [
            {"call_id": "call-sim", "leg": "callee", "videocodec": "vp8", "substream": 1, "temporal": None},
            {"call_id": "call-sim", "leg": "callee", "videocodec": "vp8", "substream": None, "temporal": 0},
        ]
    finally:
        await call.close()


def simulcasting(offer: str, mid: str) -> str:
    """``offer`` (aiortc's) with rid simulcast h;m;l on the video m-line ``mid``, as a browser
    writes it: a=rid send lines, a=simulcast:send and the two rid header extensions."""
    lines = [f"a=extmap:10 {RID_URI}", f"a=extmap:11 {REPAIRED_RID_URI}",
             "a=rid:h send", "a=rid:m send", "a=rid:l send", "a=simulcast:send h;m;l"]
    return offer.replace(f"a=mid:{mid}\r\n", f"a=mid:{mid}\r\n" + "\r\n".join(lines) + "\r\n", 1)


@pytest.mark.usefixtures("relay_on_loopback")
async def test_a_callees_simulcast_is_ignored_and_a_relay_re_offer_keeps_the_callers_layers(callee) -> None:
    """As in Janus, only the caller simulcasts: a callee's re-offer with layers gets a plain
    answer (its browser sends one stream). The relay's re-offer to the simulcasting caller
    still receives the caller's layers (else its browser would stop sending them)."""
    caller = client()
    caller.addTransceiver("audio")
    caller.addTransceiver("video")
    try:
        offer = simulcasting(await make_offer(caller), "1")
        call, callee_offer = await Call.create("call-sim", offer, policy=LOOPBACK, notify=Notifications())
        try:
            caller_answer = await call.accept(await make_answer(callee, callee_offer))
            await caller.setRemoteDescription(RTCSessionDescription(sdp=caller_answer, type="answer"))
            assert "a=simulcast:recv h;m;l" in caller_answer
            # The callee offers again, simulcasting.
            callee_reoffer = simulcasting(await make_offer(callee), "1")
            relay_reoffer = await call.renegotiate("callee", "offer", callee_reoffer)
            video = video_section(relay_reoffer)
            assert re.findall(r"^a=simulcast:(.*?)\r?$", video, re.MULTILINE) == ["recv h;m;l"]
            assert re.findall(r"^a=rid:(\S+) recv", video, re.MULTILINE) == ["h", "m", "l"]
            assert extmap(relay_reoffer, RID_URI) == 10 and extmap(relay_reoffer, REPAIRED_RID_URI) == 11
            relay_answer = await call.renegotiate("caller", "answer", await make_answer(caller, relay_reoffer))
            assert call.callee.simulcast is None
            for absent in ("a=simulcast", "a=rid", "rtp-stream-id"):
                assert absent not in relay_answer
            assert call.caller.simulcast is not None and call.caller.simulcast.rids == ("l", "m", "h")
        finally:
            await call.close()
    finally:
        await caller.close()


async def test_through_the_ipc_channel_rid_order_and_set_are_carried(address: str) -> None:
    """Over the real IPC channel: ``call.create`` with the jsep's ``rid_order`` (the answer
    keeps the offer's order), then ``leg.configure`` with the simulcast fields (out of range:
    refused by the model, on both ends)."""
    notes = Notifications()
    channel = await ipc.connect(address, node_id="test", on_notification=notes)
    caller, callee = client(), client()
    try:
        caller.addTransceiver("audio")
        caller.addTransceiver("video")
        offer = simulcasting(await make_offer(caller), "1").replace("a=simulcast:send h;m;l", "a=simulcast:send l;m;h")
        created = await channel.request(CallCreate(call_id="c1", caller_offer=offer, rid_order="lmh"))
        answer = await make_answer(callee, created.callee_offer)  # type: ignore[attr-defined]
        accepted = await channel.request(CallAccept(call_id="c1", callee_answer=answer))
        assert "a=simulcast:recv l;m;h" in accepted.caller_answer  # type: ignore[attr-defined]
        await channel.request(LegConfigure(call_id="c1", leg="callee", substream=0, temporal=1, fallback=300000))
        with pytest.raises(ValidationError):
            LegConfigure(call_id="c1", leg="callee", substream=3)
        with pytest.raises(IpcError):  # a hostile peer's frame is checked on arrival too
            await channel.request(LegConfigure.model_construct(call_id="c1", leg="callee", substream=3))
        await channel.request(CallHangup(call_id="c1"))
    finally:
        await channel.close()
        await caller.close()
        await callee.close()


@pytest.mark.usefixtures("relay_on_loopback")
async def test_the_worker_reads_rids_in_the_jseps_order_and_applies_set_to_the_receiver() -> None:
    worker = Worker(LOOPBACK)
    caller, callee = client(), client()
    try:
        caller.addTransceiver("audio")
        caller.addTransceiver("video")
        offer = simulcasting(await make_offer(caller), "1").replace("a=simulcast:send h;m;l", "a=simulcast:send l;m;h")
        created = await worker.handle(None, CallCreate(call_id="c1", caller_offer=offer, rid_order="lmh"))  # type: ignore[arg-type]
        call = worker.calls["c1"].call
        assert call.caller.simulcast is not None and call.caller.simulcast.rids == ("l", "m", "h")
        answer = await make_answer(callee, created.callee_offer)  # type: ignore[attr-defined]
        await worker.handle(None, CallAccept(call_id="c1", callee_answer=answer))  # type: ignore[arg-type]
        await worker.handle(None, LegConfigure(call_id="c1", leg="callee", substream=0, temporal=1,  # type: ignore[arg-type]
                                               fallback=300000))
        settings = call.media.simulcast_settings["callee"]
        assert (settings.substream, settings.temporal, settings.fallback, settings.auto) == (0, 1, 300000, False)
        assert call.media.simulcast_settings["caller"] == SimulcastSettings()  # the other user's stays as it was
    finally:
        await worker.close()
        await caller.close()
        await callee.close()
