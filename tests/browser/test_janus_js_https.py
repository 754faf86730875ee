"""janus.js in Chromium with an ``https://…/janus`` server URL: its REST + long-poll path over
TLS on the self-signed certificate ``--tls-self-signed`` makes, a call with media.

Chromium trusts that one certificate (its key pinned with ``--ignore-certificate-errors-spki-list``),
not every certificate; the shared browser, without the pin, is refused by the same server, so
the TLS handshake is real and checked.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.browser_support import (
    Peer,
    VideocallServer,
    start_call,
    wait_inbound,
    wait_webrtcup,
)

pytestmark = pytest.mark.timeout(90)

FETCH_INFO = "(url) => fetch(url + '/info').then((r) => r.ok ? 'answered' : `status ${r.status}`, (e) => String(e))"


def test_janus_js_over_https_long_poll_makes_a_call_with_media(stack: Any, tls_server: VideocallServer,
                                                                tls_browser: Any) -> None:
    api = f"https://127.0.0.1:{tls_server.port}/janus"
    page_url = stack.page_url()  # the harness on its own http://127.0.0.1 origin: CORS over TLS

    # Without the pin the certificate is refused (the same request answers with it, below).
    untrusting = stack.chromium().new_context()
    try:
        page = untrusting.new_page()
        page.goto(page_url)
        refused = page.evaluate(FETCH_INFO, api)
        assert refused.startswith("TypeError"), refused
    finally:
        untrusting.close()

    peers: list[Peer] = []
    requests: list[str] = []
    try:
        for name in ("alice", "bob"):
            context = tls_browser.new_context(viewport={"width": 680, "height": 320})
            peer = Peer(name, context, context.new_page(), tls_server)
            peer.page.on("request", lambda request: requests.append(request.url))
            peers.append(peer.open(page_url, server_url=api))
        alice, bob = peers
        assert alice.js(FETCH_INFO, api) == "answered"
        start_call(alice, bob)
        wait_webrtcup(alice, bob)
        for peer in peers:
            wait_inbound(peer, "video", True)
            wait_inbound(peer, "audio", True)
        alice.js("() => vc.hangup()")
        bob.wait_event("hangup")
        for peer in peers:
            assert not peer.log("error"), peer.log("error")
            assert not peer.frames  # no WebSocket: every request and event went over https
        to_server = [url for url in requests if not url.startswith(page_url)]
        assert to_server and all(url.startswith(f"{api}") for url in to_server), to_server
        assert any("maxev=" in url for url in to_server), to_server  # janus.js's long poll
    finally:
        for peer in peers:
            peer.close()
