"""Calls between two Chromium pages through the official janus.js (issues 5 and 6).

Each test opens fresh pages (``new_peer``), registers unique names and sets up its own call.
"""

from __future__ import annotations

import pytest

from tests.browser.browser_support import (
    inbound,
    register,
    screenshot,
    start_call,
    wait_inbound,
    wait_video_playing,
    wait_webrtcup,
)

pytestmark = pytest.mark.timeout(60)


# --- tests ------------------------------------------------------------------------------------

def test_both_pages_reach_webrtcup(new_peer) -> None:
    alice, bob = new_peer("alice"), new_peer("bob")
    start_call(alice, bob)
    wait_webrtcup(alice, bob)
    for peer in (alice, bob):
        assert peer.stats()["connectionState"] == "connected", peer.stats()
        assert [e["what"] for e in peer.log("error")] == []


def test_remote_video_plays_on_both_sides(new_peer) -> None:
    alice, bob = new_peer("alice"), new_peer("bob")
    start_call(alice, bob)
    wait_webrtcup(alice, bob)
    try:
        for peer in (alice, bob):
            wait_inbound(peer, "video", flowing=True)
            wait_inbound(peer, "audio", flowing=True)
            wait_video_playing(peer)
            assert inbound(peer, "video")["framesDecoded"] > 0
    finally:
        screenshot([alice, bob], "live-call")


def test_video_off_stops_the_peers_inbound_video_and_on_resumes_it(new_peer) -> None:
    alice, bob = new_peer("alice"), new_peer("bob")
    start_call(alice, bob)
    wait_webrtcup(alice, bob)
    wait_inbound(bob, "video", flowing=True)
    alice.js("() => vc.set({video: false})")
    alice.wait_event("set")
    wait_inbound(bob, "video", flowing=False, timeout=5)
    wait_inbound(alice, "video", flowing=True)  # only alice's outgoing video was stopped
    alice.js("() => vc.set({video: true})")
    wait_inbound(bob, "video", flowing=True, timeout=5)
    wait_video_playing(bob, timeout=5)


def test_hangup_ends_the_call_cleanly_on_both_sides(new_peer) -> None:
    alice, bob = new_peer("alice"), new_peer("bob")
    a, b = start_call(alice, bob)
    wait_webrtcup(alice, bob)
    alice.js("() => vc.hangup()")
    for peer in (alice, bob):
        peer.wait_event("hangup")
        peer.wait_webrtc(False)
        peer.wait("() => vc.events('cleanup').length > 0", what="oncleanup")
        peer.wait("() => vc.handle.webrtcStuff.pc == null", what="PeerConnection closed")
    [bob_hangup] = bob.plugin_results("hangup")
    assert bob_hangup["username"] == a, bob_hangup
    for peer in (alice, bob):
        assert peer.log("error") == [], peer.log("error")
    # Both can call again: the names stay registered and the handles reusable.
    alice.js("(n) => vc.call(n)", b)
    bob.wait_event("incomingcall", count=2)


def test_reload_mid_call_hangs_up_the_other_side(new_peer) -> None:
    alice, bob = new_peer("alice"), new_peer("bob")
    a, _ = start_call(alice, bob)
    wait_webrtcup(alice, bob)
    alice.page.reload()
    bob.wait_event("hangup", timeout=10)
    bob.wait_webrtc(False)
    bob.wait("() => vc.events('cleanup').length > 0", what="oncleanup")
    hangups = bob.plugin_results("hangup")
    assert hangups and hangups[0].get("username") == a, hangups
    assert bob.log("error") == []
    # The reloaded page starts over: its old session is gone, so the name is free again.
    alice.open(alice.page.url)
    register(alice, a)


def test_renegotiation_from_one_side_reaches_the_other_as_update(new_peer) -> None:
    """alice re-offers with `set` + jsep; bob gets `update` with the offer and answers with
    `set` + answer (the harness does, as the demo does); alice gets `update` with the answer."""
    alice, bob = new_peer("alice"), new_peer("bob")
    start_call(alice, bob)
    wait_webrtcup(alice, bob)
    alice.js("() => vc.renegotiate()")
    bob.wait_event("update")
    alice.wait_event("update")
    assert [e["jsep"] for e in bob.log("message") if e["msg"].get("result", {}).get("event") == "update"] == \
        [{"type": "offer"}]
    assert [e["jsep"] for e in alice.log("message") if e["msg"].get("result", {}).get("event") == "update"] == \
        [{"type": "answer"}]
    for peer in (alice, bob):
        peer.wait("() => vc.handle.webrtcStuff.pc.signalingState === 'stable'", what="signalingState stable")
        assert peer.log("error") == [], peer.log("error")
        assert peer.stats()["connectionState"] == "connected"
    for peer in (alice, bob):  # media goes on across the renegotiation
        wait_inbound(peer, "video", flowing=True)


@pytest.mark.parametrize("hangs_up", ["caller", "callee"])
def test_a_call_with_a_data_channel_ends_without_a_janus_js_error(new_peer, hangs_up: str) -> None:
    """A whole call with a data channel, texts both ways, then a hangup from one side: janus.js
    logs nothing on either page (``Janus.error`` / ``Janus.warn``: it logs "Got error on data
    channel" when the relay ends SCTP with an ABORT while the page's PeerConnection is open).
    The pages leave closing their PeerConnection to janus.js (on the core ``hangup`` event, sent
    once the relay closed the leg), so the relay's close always reaches an open one."""
    alice, bob = new_peer("alice"), new_peer("bob")
    for peer in (alice, bob):
        peer.js("() => { vc.closeOnHangupEvent = false; }")
    start_call(alice, bob, data=True)
    wait_webrtcup(alice, bob)
    for peer in (alice, bob):
        peer.wait("() => vc.events('dataopen').length > 0", what="the data channel open")
    for sender, receiver in ((alice, bob), (bob, alice)):
        text = f"hello from {sender.name}"
        sender.js("(t) => vc.sendData(t)", text)
        receiver.wait("(t) => vc.events('data').some((e) => e.data === t)", text, what=f"{text!r} received")
    (alice if hangs_up == "caller" else bob).js("() => vc.hangup()")
    for peer in (alice, bob):
        peer.wait_event("hangup")
        peer.wait("() => vc.handle.webrtcStuff.pc == null", what="PeerConnection closed")
    alice.sleep(1.0)  # an error event from the relay's close would arrive within this
    assert {peer.name: peer.janus_problems for peer in (alice, bob)} == {"alice": [], "bob": []}
    for peer in (alice, bob):
        assert peer.log("error") == [], peer.log("error")
