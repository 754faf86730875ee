"""ICE restart by a real browser: Chromium's ``restartIce()`` on the caller leg of a relay call.

Chromium (libwebrtc) keeps its DTLS association across an ICE restart, as every browser does;
the relay's leg must answer with new ICE credentials and candidates and carry the same DTLS
over the new path (``aiortc_hooks.IceRestart``). The callee is an aiortc client. Skipped when
Debian's Chromium or Playwright is missing, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc.sdp import SessionDescription

from mediarelay.call import Call
from mediarelay.ice import LOOPBACK
from tests.support.relay_clients import Notifications, client, make_answer

CHROMIUM = os.environ.get("VIDEOCALL_CHROMIUM", "/usr/bin/chromium")

PAGE = """
window.pc = new RTCPeerConnection({iceServers: []});
window.got = [];
window.dc = pc.createDataChannel('chat');
dc.onmessage = e => got.push(e.data);
window.gathered = () => new Promise(r => {
  if (pc.iceGatheringState === 'complete') r();
  pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
});
window.offer = async (restart) => {
  if (restart) pc.restartIce();
  else (await navigator.mediaDevices.getUserMedia({audio: true})).getTracks().forEach(t => pc.addTrack(t));
  await pc.setLocalDescription(await pc.createOffer());
  await gathered();
  return pc.localDescription.sdp;
};
"""



pytestmark = pytest.mark.usefixtures("relay_on_loopback")


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("Playwright (pip install playwright)")
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        _unavailable(f"Chromium at {CHROMIUM} (apt-get install -y chromium)")
    # getUserMedia needs a secure context: an empty page from http://localhost.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        _Quiet, directory=tempfile.mkdtemp(prefix="page-")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
        try:
            tab = await browser.new_page()
            await tab.goto(f"http://localhost:{server.server_address[1]}/")
            await tab.evaluate(PAGE)
            yield tab
        finally:
            await browser.close()
            server.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _unavailable(what: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"CI=true and this test needs {what}", pytrace=False)
    pytest.skip(f"needs {what}")


def ufrag(sdp: str) -> str:
    parameters = SessionDescription.parse(sdp).media[0].ice
    assert parameters is not None
    return parameters.usernameFragment


async def test_chromium_restarting_ice_keeps_its_call_through_the_relay(page: Any) -> None:
    notes, heard = Notifications(), []
    callee = client()
    inbox: asyncio.Queue[object] = asyncio.Queue()
    callee.on("datachannel", lambda channel: channel.on("message", inbox.put_nowait))
    offer = await page.evaluate("offer(false)")
    call, callee_offer = await Call.create("c1", offer, policy=LOOPBACK, notify=notes)
    call.listeners.append(heard.append)
    try:
        answer = await call.accept(await make_answer(callee, callee_offer))
        await page.evaluate("a => pc.setRemoteDescription({type: 'answer', sdp: a})", answer)
        await notes.wait(lambda n: {("caller", "connected", ""), ("callee", "connected", "")} <= set(n.states()), 15)
        await page.wait_for_function("dc.readyState === 'open'")
        await page.evaluate("dc.send('before')")
        assert await asyncio.wait_for(inbox.get(), 10) == "before"

        restart_offer = await page.evaluate("offer(true)")
        assert ufrag(restart_offer) != ufrag(offer)
        mirrored = await call.renegotiate("caller", "offer", restart_offer, restart=True)
        restart_answer = await call.renegotiate("callee", "answer", await make_answer(callee, mirrored))
        assert ufrag(restart_answer) != ufrag(answer)
        await page.evaluate("a => pc.setRemoteDescription({type: 'answer', sdp: a})", restart_answer)
        for _ in range(200):
            if "ice-restarted" in heard:
                break
            await asyncio.sleep(0.05)
        assert heard == ["renegotiated", "ice-restarted"]  # the relay's old agent is closed now

        packets = call.caller.flows[0].packets
        await page.evaluate("dc.send('after')")  # Chromium's SCTP/DTLS, unchanged, on the new path
        assert await asyncio.wait_for(inbox.get(), 10) == "after"
        for channel in callee.sctp._data_channels.values() if callee.sctp else []:
            channel.send("back")
        await page.wait_for_function("got.includes('back')", timeout=10_000)
        await asyncio.sleep(0.3)
        assert call.caller.flows[0].packets > packets  # its audio goes on too
        assert await page.evaluate("pc.connectionState") == "connected"
        assert [s for s in notes.states() if s[1] != "connected"] == []
    finally:
        await call.close()
        await callee.close()
