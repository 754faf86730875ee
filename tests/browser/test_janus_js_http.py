"""janus.js in Chromium with an ``http://…/janus`` server URL: its REST + long-poll path (the
one Janus's own demo pages use by default) makes a call with media, its page on another
origin (so every request is a CORS one, preflights included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.browser.browser_support import Peer, start_call, wait_inbound, wait_webrtcup

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def http_peer(stack) -> Iterator[Callable[[str], Peer]]:
    """Pages whose janus.js speaks to the server over HTTP (``<server>/janus``)."""
    opened: list[Peer] = []

    def open_peer(name: str) -> Peer:
        server = stack.videocall()
        context = stack.chromium().new_context(viewport={"width": 680, "height": 320})
        peer = Peer(name, context, context.new_page(), server)
        opened.append(peer)
        return peer.open(stack.page_url(), server_url=f"http://127.0.0.1:{server.port}/janus")

    yield open_peer
    for peer in opened:
        peer.close()


def test_janus_js_over_http_long_poll_makes_a_call_with_media(http_peer) -> None:
    alice, bob = http_peer("alice"), http_peer("bob")
    assert not alice.frames and not bob.frames  # no WebSocket at all
    start_call(alice, bob)
    wait_webrtcup(alice, bob)
    for peer in (alice, bob):
        wait_inbound(peer, "video", True)
        wait_inbound(peer, "audio", True)
    alice.js("() => vc.hangup()")
    bob.wait_event("hangup")
    for peer in (alice, bob):
        assert not peer.log("error"), peer.log("error")
        assert not peer.frames
