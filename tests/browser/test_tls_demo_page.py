"""The demo page over https:// and its janus.js over wss:// on a self-signed certificate: what a
phone on the LAN gets from ``videocall serve --tls-self-signed``. Chromium accepts that one
certificate (its key pinned, :func:`trust_only`), as a person does once on the phone's warning
page; the page is then a secure context, so it may use the camera, and a call carries media.
``test_lan_device.py`` does the same from another network namespace, at a LAN address."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.browser_support import VideocallServer
from tests.browser.test_demo_page import DESKTOP, PHONE, DemoPage, call_with_media

pytestmark = pytest.mark.timeout(90)


def test_a_call_with_media_over_https_and_wss(tls_browser: Any, tls_server: VideocallServer) -> None:
    url = f"https://127.0.0.1:{tls_server.port}/"
    pages: list[DemoPage] = []
    try:
        for label, viewport in (("alice", DESKTOP), ("bob", PHONE)):
            pages.append(DemoPage(label, tls_browser.new_context(viewport=viewport), tls_server).open(url))
        alice, bob = pages
        for page in pages:
            assert page.page.evaluate("() => [location.protocol, window.isSecureContext]") == ["https:", True]
        sockets: list[str] = []
        alice.page.on("websocket", lambda ws: sockets.append(ws.url))
        alice.page.reload()  # the page's WebSocket, seen from its start
        alice.expect("#conn-text", "Connected to", timeout=10)
        assert sockets == [f"wss://127.0.0.1:{tls_server.port}/"]
        call_with_media(alice, bob, "tls")
    finally:
        for page in pages:
            page.close()
