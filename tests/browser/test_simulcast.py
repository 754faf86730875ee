"""Simulcast between two Chromium pages through the official janus.js (issue 13).

The caller sends three layers of its 1280x720 fake camera (1280x720, 640x360, 320x180): rid
simulcast as janus.js's ``simulcast: true`` sends it, or SSRC simulcast by munging the offer
(``page/simulcast_sdp.js``); VP8 and H.264 both ways, VP9 by rid (Chromium simulcasts VP9
only with encodings). The callee receives one of them: the top one first; ``set
substream`` switches it (its decoded ``frameWidth`` follows, with Janus's ``simulcast``
event); with VP8, ``set temporal 0`` then lowers the decoded frame rate and ``temporal 2``
restores it (in the same call: a call with three layers takes seconds to set up).
Throughout, the callee's decoder never stops (``framesDecoded`` rises in every window).

No timing is asserted: each wait has a generous timeout, and the figures seen (switch
times, frame rates) are printed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser.browser_support import (
    Peer,
    inbound,
    register,
    unique,
    wait_inbound,
    wait_webrtcup,
)

pytestmark = pytest.mark.timeout(180)

#: The fake camera's size and janus.js's scaleResolutionDownBy 4, 2, 1: substreams 0, 1, 2.
WIDTHS = {0: 320, 1: 640, 2: 1280}
#: How long the callee's picture may take to follow a switch (the issue says 3 s; the wait is
#: generous on a loaded machine, the time it took is printed).
SWITCH_TIMEOUT = 15.0
#: A window over which the callee must decode at least one frame (no freeze).
FREEZE_WINDOW = 2.0
#: The window a decoded frame rate is measured over.
TEMPORAL_WINDOW = 2.0
#: How long the caller may take to send its top layer at all (its bandwidth estimate ramps up).
TOP_LAYER_TIMEOUT = 60.0


def simulcast_call(alice: Peer, bob: Peer, form: str, codec: str) -> None:
    a, b = unique("alice"), unique("bob")
    register(alice, a)
    register(bob, b)
    alice.js("([n, form, codec]) => vc.callSimulcast(n, form, codec)", [b, form, codec])
    bob.wait_event("incomingcall")
    bob.js("() => vc.accept(false)")
    alice.wait_event("accepted")
    bob.wait_event("accepted")
    wait_webrtcup(alice, bob)


class Watch:
    """The callee's inbound video, sampled; fails as soon as ``framesDecoded`` has not risen
    since a sample at least ``FREEZE_WINDOW`` old (once the first frame was decoded)."""

    def __init__(self, peer: Peer, caller: Peer) -> None:
        self.peer = peer
        self.caller = caller
        self.samples: list[tuple[float, dict[str, Any]]] = []

    def sample(self) -> dict[str, Any]:
        now, video = time.monotonic(), inbound(self.peer, "video")
        older = [v for t, v in self.samples if now - t >= FREEZE_WINDOW]
        self.samples.append((now, video))
        if older and older[-1]["framesDecoded"] > 0 and video["framesDecoded"] <= older[-1]["framesDecoded"]:
            pytest.fail(f"{self.peer.name}: no frame decoded for {FREEZE_WINDOW:g} s or more "
                        f"(framesDecoded stays {video['framesDecoded']}); stats: {video}; "
                        f"simulcast events: {self.peer.plugin_results('simulcast')}\n"
                        f"server log:\n{self.peer.server.log_tail(30)}", pytrace=False)
        return video

    def until(self, predicate: Any, what: str, timeout: float = SWITCH_TIMEOUT) -> float:
        """Sample every 0.5 s until ``predicate(video)``; the seconds it took."""
        start = time.monotonic()
        while True:
            video = self.sample()
            if predicate(video):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                pytest.fail(f"{self.peer.name}: {what} not seen within {timeout:g} s; last: {video}; "
                            f"caller layers: {self.caller_layers()}; "
                            f"simulcast events: {self.peer.plugin_results('simulcast')}\n"
                            f"server log:\n{self.peer.server.log_tail(15)}", pytrace=False)
            self.peer.sleep(0.5)

    def caller_layers(self) -> Any:
        return self.caller.stats().get("layers", {}).get("video")

    def fps(self, seconds: float = 3.0) -> float:
        """Frames decoded per second over ``seconds`` (sampled, so freezes are still caught)."""
        first = self.sample()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            self.peer.sleep(0.5)
            last = self.sample()
        return (last["framesDecoded"] - first["framesDecoded"]) / (time.monotonic() - start)

    def fps_until(self, predicate: Any, what: str, timeout: float = SWITCH_TIMEOUT) -> list[float]:
        """Frame rates over successive ``TEMPORAL_WINDOW`` windows until ``predicate(fps)``;
        every rate seen, rounded (the last one passed)."""
        start, seen = time.monotonic(), []
        while True:
            seen.append(round(self.fps(TEMPORAL_WINDOW), 1))
            if predicate(seen[-1]):
                return seen
            if time.monotonic() - start > timeout:
                pytest.fail(f"{self.peer.name}: decoded frame rate {what} not seen within {timeout:g} s: {seen}",
                            pytrace=False)


def simulcast_events(peer: Peer, key: str, value: int) -> int:
    return sum(1 for r in peer.plugin_results("simulcast") if r.get(key) == value)


def set_layer(peer: Peer, key: str, value: int, timeout: float = SWITCH_TIMEOUT) -> None:
    """``set`` ``{key: value}``, then wait for the ``simulcast`` event it brings (a new one:
    the call's start already announced a substream and a temporal layer)."""
    seen = simulcast_events(peer, key, value)
    peer.js("([k, v]) => vc.set({[k]: v})", [key, value])
    peer.wait("([k, v, n]) => vc.log.filter((e) => e.what === 'message' && e.msg.result"
              " && e.msg.result.event === 'simulcast' && e.msg.result[k] === v).length > n",
              [key, value, seen], timeout, f"a new simulcast event {key}={value}")


def temporal_layers_follow(bob: Peer, watch: Watch, form: str) -> None:
    """``set temporal 0`` lowers the callee's decoded frame rate; ``temporal 2`` restores it.
    Each rate is measured over windows of ``TEMPORAL_WINDOW`` until it is what it should be
    (a switch up waits for a frame the decoder can start the upper layers from), at most
    ``SWITCH_TIMEOUT``; the rates seen are printed."""
    full = watch.fps(TEMPORAL_WINDOW)
    set_layer(bob, "temporal", 0)
    # Chromium's VP8 simulcast has two or three temporal layers: the base one is at most half
    # of the frames.
    base = watch.fps_until(lambda fps: 0 < fps < 0.7 * full, f"under 70% of {full:.1f} fps with temporal 0")
    set_layer(bob, "temporal", 2)
    restored = watch.fps_until(lambda fps: fps > 0.7 * full, f"back over 70% of {full:.1f} fps with temporal 2")
    print(f"{form}/vp8 decoded frame rate: temporal 2 {full:.1f} fps, temporal 0 {base}, "
          f"temporal 2 again {restored}")


@pytest.mark.parametrize(("form", "codec"), [("rid", "vp8"), ("ssrc", "vp8"), ("rid", "h264"), ("ssrc", "h264"),
                                           ("rid", "vp9")])
def test_the_callee_switches_layers_without_a_freeze(new_peer, form: str, codec: str) -> None:
    """Substreams 0, 1, 2 and down again, each decoded at its width; for VP8 then temporal
    layers 0 and 2. The callee's decoder is sampled all along: no freeze anywhere."""
    alice, bob = new_peer("alice"), new_peer("bob")
    simulcast_call(alice, bob, form, codec)
    offer = alice.js("() => vc.offerSdp")
    assert ("a=simulcast:send h;m;l" in offer) == (form == "rid") and ("ssrc-group:SIM" in offer) == (form == "ssrc")
    wait_inbound(bob, "video", flowing=True)
    watch = Watch(bob, alice)
    took = watch.until(lambda v: v["framesDecoded"] > 0, "a first decoded frame")
    # The caller sends its top layer once its bandwidth estimate allows (the relay tells a
    # simulcasting caller 10 Mbit/s, as Janus does: Chromium's estimate starts there).
    took = watch.until(lambda v: v["frameWidth"] == WIDTHS[2], "the top layer (1280 wide) first", TOP_LAYER_TIMEOUT)
    print(f"\n{form}/{codec}: top layer decoded {took:.1f} s after the first frame")
    assert codec in (inbound(bob, "video")["mimeType"] or "").lower()
    for substream in (0, 1, 2, 0):
        asked = time.monotonic()
        set_layer(bob, "substream", substream)
        event = time.monotonic() - asked
        watch.until(lambda v, s=substream: v["frameWidth"] == WIDTHS[s], f"substream {substream} decoded")
        print(f"{form}/{codec}: set substream {substream}: event after {event:.1f} s, "
              f"{WIDTHS[substream]} wide decoded after {time.monotonic() - asked:.1f} s")
    # Every sample since the first frame is checked for a freeze; the last layer is watched
    # for one more window, so a freeze right after the last switch is caught too.
    watch.fps(FREEZE_WINDOW)
    if codec == "vp8":
        temporal_layers_follow(bob, watch, form)
    results = bob.plugin_results("simulcast")
    assert all(r["videocodec"] == codec for r in results), results
    assert alice.plugin_results("simulcast") == []  # only the receiver hears of its layers
    for peer in (alice, bob):
        assert peer.log("error") == [], peer.log("error")


def test_the_automatic_choice_follows_the_callees_bitrate_cap(new_peer) -> None:
    """Beyond Janus: unpinned, the relay picks the substream the callee can receive. Its
    ``bitrate`` cap brings the picture down a layer (with the event); lifting it brings the
    top layer back (the relay probes up one substream at a time)."""
    alice, bob = new_peer("alice"), new_peer("bob")
    simulcast_call(alice, bob, "rid", "vp8")
    wait_inbound(bob, "video", flowing=True)
    watch = Watch(bob, alice)
    watch.until(lambda v: v["framesDecoded"] > 0, "a first decoded frame")
    watch.until(lambda v: v["frameWidth"] == WIDTHS[2], "the top layer (1280 wide) first", TOP_LAYER_TIMEOUT)
    before = len(bob.plugin_results("simulcast"))
    bob.js("() => vc.set({bitrate: 250000})")  # under the top substream (janus.js: up to 900 kbit/s)
    took = watch.until(lambda v: 0 < v["frameWidth"] < WIDTHS[2], "a lower substream under the cap")
    lower = [r for r in bob.plugin_results("simulcast")[before:] if "substream" in r]
    # (The policy may probe up again later while the cap holds, if the top substream's measured
    # bitrate fits under it: what is checked here is the way down.)
    assert any(r["substream"] < 2 for r in lower), bob.plugin_results("simulcast")
    print(f"\nauto: down to {inbound(bob, 'video')['frameWidth']} wide {took:.1f} s after the cap")
    bob.js("() => vc.set({bitrate: 0})")
    took = watch.until(lambda v: v["frameWidth"] == WIDTHS[2], "the top layer again once the cap is lifted", 60.0)
    print(f"auto: back to the top layer {took:.1f} s after the cap was lifted")
    assert bob.plugin_results("simulcast")[-1] == {"event": "simulcast", "videocodec": "vp8", "substream": 2}
    for peer in (alice, bob):
        assert peer.log("error") == [], peer.log("error")
