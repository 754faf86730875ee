"""The demo page over https:// and its janus.js over wss:// on a self-signed certificate: what a
phone on the LAN gets from ``videocall serve --tls-self-signed``. Chromium is told to accept
the certificate (``ignore_https_errors``), as a person does once on the phone's warning page;
the page is then a secure context, so it may use the camera, and a call carries media."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signaling.http_static import NPM_FILES
from tests.browser.browser_support import NODE_MODULES, VideocallServer, unavailable
from tests.browser.test_demo_page import DESKTOP, PHONE, DemoPage, start_call

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[VideocallServer]:
    missing = [str(NODE_MODULES / rel) for rel, _ in NPM_FILES.values() if not (NODE_MODULES / rel).is_file()]
    if missing:
        unavailable(f"the npm packages janus-gateway and webrtc-adapter (missing: {', '.join(missing)})")
    server = VideocallServer(tmp_path, env={"VIDEOCALL_TLS_SELF_SIGNED": "true", "VIDEOCALL_TLS_DIR": str(tmp_path / "tls"),
                                            "VIDEOCALL_TLS_HOST_NAMES": "127.0.0.1,localhost"})
    server.start()
    yield server
    server.stop()


def test_a_call_with_media_over_https_and_wss(stack: Any, tls_server: VideocallServer) -> None:
    url = f"https://127.0.0.1:{tls_server.port}/"
    pages: list[DemoPage] = []
    try:
        for label, viewport in (("alice", DESKTOP), ("bob", PHONE)):
            context = stack.chromium().new_context(viewport=viewport, ignore_https_errors=True)
            pages.append(DemoPage(label, context, tls_server).open(url))
        alice, bob = pages
        for page in pages:
            assert page.page.evaluate("() => [location.protocol, window.isSecureContext]") == ["https:", True]
        sockets: list[str] = []
        alice.page.on("websocket", lambda ws: sockets.append(ws.url))
        alice.page.reload()  # the page's WebSocket, seen from its start
        alice.expect("#conn-text", "Connected to", timeout=10)
        assert sockets == [f"wss://127.0.0.1:{tls_server.port}/"]
        alice.register("alice-tls")
        bob.register("bob-tls")
        start_call(alice, bob)
        for page in pages:
            page.wait_inbound("audio video", flowing=True)
            page.wait_video_playing()
            assert page.inbound("video")["framesDecoded"] > 0
        bob.page.click("#hangup")
        alice.message("hung up after")
        for page in pages:
            assert page.problems() == [], page.console
    finally:
        for page in pages:
            page.close()
        tls_server.check_alive()
