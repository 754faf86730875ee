"""janus.js's own ``reconnect`` keeps a call: its WebSocket breaks mid-call (a proxy between
the page and the server is cut, as a network drop would), media goes on, ``reconnect()``
claims the session on a new WebSocket and gets what it missed meanwhile.

The server runs with the default ``reclaim_session_timeout`` (what makes ``reconnect`` useful).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.browser_support import Peer, start_call, wait_inbound, wait_webrtcup
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def proxied_peer(stack) -> Iterator[tuple[Peer, TcpProxy]]:
    """A page whose janus.js reaches the server through a proxy the test can cut."""
    server = stack.videocall()
    proxy = TcpProxy(server.port)
    context = stack.chromium().new_context(viewport={"width": 680, "height": 320})
    peer = Peer("alice", context, context.new_page(), server).open(stack.page_url(), server_url=proxy.ws_url)
    yield peer, proxy
    peer.close()
    proxy.close()


def test_reconnect_claims_the_session_and_the_call_goes_on(proxied_peer, new_peer) -> None:
    alice, proxy = proxied_peer
    bob = new_peer("bob")
    start_call(alice, bob)
    wait_webrtcup(alice, bob)
    wait_inbound(alice, "video", True)
    session = alice.js("() => vc.janus.getSessionId()")

    assert proxy.cut() == 1  # alice's WebSocket breaks, no goodbye either way
    alice.wait("() => vc.events('error').some((e) => e.where === 'session')", what="janus.js noticing the drop")
    # Media does not go through the WebSocket: both keep receiving while alice has none.
    wait_inbound(bob, "video", True)
    wait_inbound(alice, "video", True)
    # bob renegotiates meanwhile: his offer ("update") waits on the server for alice.
    bob.js("() => vc.renegotiate()")
    assert "update" not in alice.js("() => vc.pluginEvents()")

    assert alice.js("() => vc.reconnect()") == session
    claims = [m for _, d, m in alice.frames if d == "sent" and m.get("janus") == "claim"]
    assert [c["session_id"] for c in claims] == [session]
    answers = [m for _, d, m in alice.frames
               if d == "received" and m.get("transaction") == claims[0]["transaction"]]
    assert answers == [{"janus": "success", "session_id": session, "transaction": claims[0]["transaction"]}]
    alice.wait_event("update")  # the held offer; the harness answers it with `set`
    bob.wait_event("update")  # ...and bob gets that answer
    wait_inbound(alice, "video", True)
    wait_inbound(bob, "video", True)

    # The claimed session is an ordinary one: alice hangs up through it and bob is told.
    alice.js("() => vc.hangup()")
    bob.wait_event("hangup")
    assert not [e for e in alice.js("() => vc.events('error')") if e.get("where") != "session"]
