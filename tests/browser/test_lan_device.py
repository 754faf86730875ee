"""The demo page over https:// from another device on the network: two people in Chromium on
a "phone" that reaches this machine only at its LAN address call each other with media.

The other device is a network namespace joined to this one by a veth pair
(:mod:`tests.support.lan_device`): its own loopback, one address on a private /30, no other way
to the server. The server is started as the README tells an operator (``--tls-self-signed
--host 0.0.0.0``, every ICE setting left at its default), the certificate it makes names the
LAN address by itself, and the page is opened at the URL the server logs "from another device".
Chromium trusts that one certificate (:func:`trust_only`), as a person accepts it once.

Needs root and ``ip netns`` (CI runs as root): skipped without, failed with ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.browser_support import (
    CHROMIUM,
    VideocallServer,
    certificate_names,
    self_signed_cert,
    start_tls_server,
    trust_only,
    unavailable,
)
from tests.browser.test_demo_page import DESKTOP, PHONE, DemoPage, call_with_media
from tests.support.lan_device import LanDevice, LanUnavailable, lan_device

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[LanDevice]:
    try:
        with lan_device(tmp_path) as device:
            yield device
    except LanUnavailable as exc:
        unavailable(str(exc), how="run as root with iproute2 (CI does)")


@pytest.fixture
def lan_server(tmp_path: Path, lan: LanDevice) -> Iterator[VideocallServer]:
    # After the veth exists: the certificate and the relay's candidates pick its address up.
    # ICE_ENFORCE_LIST empty is the default (every non-loopback address), undoing the
    # 127.0.0.1 the other browser tests use.
    server = start_tls_server(tmp_path, {"VIDEOCALL_HOST": "0.0.0.0", "VIDEOCALL_ICE_ENFORCE_LIST": ""})
    yield server
    server.stop()


def test_the_demo_page_over_https_from_another_device(stack: Any, lan: LanDevice,
                                                      lan_server: VideocallServer) -> None:
    port = lan_server.port
    url = f"https://{lan.host_address}:{port}/"
    assert lan.host_address in certificate_names(self_signed_cert(lan_server))  # no --tls-host-names
    assert url in lan_server.stderr.read_text(), lan_server.log_tail()  # "from another device: …"

    browser = stack.launch_chromium(trust_only(self_signed_cert(lan_server)), executable=lan.wrap(CHROMIUM))
    pages: list[DemoPage] = []
    try:
        # The other device: this machine's loopback is not there, only its LAN address.
        probe = browser.new_page()
        from playwright.sync_api import Error as PlaywrightError
        with pytest.raises(PlaywrightError, match="ERR_CONNECTION_REFUSED"):
            probe.goto(f"https://127.0.0.1:{port}/healthz")
        probe.close()

        for label, viewport in (("alice", DESKTOP), ("bob", PHONE)):
            pages.append(DemoPage(label, browser.new_context(viewport=viewport), lan_server))
        sockets: list[str] = []
        pages[0].page.on("websocket", lambda ws: sockets.append(ws.url))
        for page in pages:
            page.open(url)
            assert page.page.evaluate("() => [location.protocol, window.isSecureContext]") == ["https:", True]
        assert sockets == [f"wss://{lan.host_address}:{port}/"]
        call_with_media(*pages, "lan")
    finally:
        for page in pages:
            page.close()
        browser.close()
        lan_server.check_alive()
