"""The demo page ``videocall serve`` serves at ``/`` (signaling/demo/, issue 6).

- The static responder (``signaling/http_static.py``) over HTTP from the real server (where
  WebSocket upgrades on any path stay the API); as a function it is tested in
  ``tests/signaling/test_http_static.py``.
- The page in Debian's Chromium, used as a person would, through its own buttons: register,
  see each other, call, accept, remote video on both sides, video and audio off/on, a
  bitrate cap, a renegotiation, hang up; decline; a busy user; a reload mid-call; errors in
  words; the server unreachable and lost. The page talks to the server only through the
  official janus.js, loaded from the same server.

The live-call test saves a screenshot in ``artifacts/demo-live-call.png`` on every run and
refreshes ``docs/live-call.png`` (the README's) when that is missing or when
``VIDEOCALL_UPDATE_SCREENSHOT=1``, so ordinary runs leave the committed PNG alone.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from signaling import http_static
from signaling.http_static import NPM_FILES, StaticFiles
from tests.browser.browser_support import (
    ARTIFACTS,
    MEDIA_TIMEOUT,
    NODE_MODULES,
    REPO,
    VideocallServer,
    unavailable,
    unique,
    wait_playing,
    watch_bytes,
)
from tests.support.static_paths import TRAVERSALS
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)

DOCS_SCREENSHOT = REPO / "docs" / "live-call.png"
DESKTOP = {"width": 800, "height": 540}
PHONE = {"width": 390, "height": 760}
#: How long the page waits before it connects again after losing the server (app.js RETRY_MS).
RETRY_MS = 5000


# --- over HTTP, from the real server ------------------------------------------------------------

def http_get(port: int, target: str) -> tuple[int, dict[str, str], bytes]:
    """One raw GET (the target goes out byte for byte: no client-side normalising); the
    answer is read to the close the request asks for (the server keeps connections open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: test\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def server_with_npm(videocall_server: VideocallServer) -> VideocallServer:
    missing = [str(NODE_MODULES / rel) for rel, _ in NPM_FILES.values() if not (NODE_MODULES / rel).is_file()]
    if missing:
        unavailable(f"the npm packages janus-gateway and webrtc-adapter (missing: {', '.join(missing)})")
    return videocall_server


def test_the_server_serves_the_allow_list_and_404s_the_rest(server_with_npm: VideocallServer) -> None:
    port = server_with_npm.port
    for path, (name, content_type) in http_static.DEMO_FILES.items():
        status, headers, body = http_get(port, path)
        assert (status, headers["content-type"]) == (200, content_type), path
        assert body == (http_static.DEMO_DIR / name).read_bytes()
    for path, (rel, content_type) in NPM_FILES.items():
        status, headers, body = http_get(port, path)
        assert (status, headers["content-type"]) == (200, content_type), path
        assert body == (NODE_MODULES / rel).read_bytes()
    for path in TRAVERSALS:
        status, headers, body = http_get(port, path)
        assert status == 404 and headers["content-type"] == "text/plain; charset=utf-8", (path, status, body[:80])
    status, headers, _ = http_get(port, "/")
    assert "connect-src 'self'" in headers["content-security-policy"]


def test_websocket_upgrades_on_any_path_are_still_the_api(server_with_npm: VideocallServer) -> None:
    from websockets.sync.client import connect
    for path in ("/", "/app.js", "/janus", "/anything/at/all"):
        with connect(f"ws://127.0.0.1:{server_with_npm.port}{path}", subprotocols=["janus-protocol"]) as ws:  # type: ignore[list-item]
            ws.send(json.dumps({"janus": "info", "transaction": "t1"}))
            reply = json.loads(ws.recv(timeout=5))
        assert reply["janus"] == "server_info" and reply["transaction"] == "t1", (path, reply)


# --- the page in Chromium ------------------------------------------------------------------------

class DemoPage:
    """One person's browser tab on the demo page."""

    def __init__(self, label: str, context: Any, server: VideocallServer) -> None:
        self.label, self.context, self.server = label, context, server
        self.page = context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        self.page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))
        self.name = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/"

    def open(self, url: str | None = None, connected: bool = True) -> DemoPage:
        self.page.goto(url or self.url)
        if connected:
            self.expect("#conn-text", "Connected to", timeout=10)
        return self

    # what a person sees
    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text())

    def expect(self, selector: str, pattern: str, timeout: float = 10.0) -> None:
        """Wait until ``selector`` is visible and its text contains ``pattern``."""
        from playwright.sync_api import expect
        try:
            expect(self.page.locator(selector)).to_contain_text(pattern, timeout=timeout * 1000)
        except AssertionError as exc:
            self.server.check_alive()
            pytest.fail(f"{self.label}: {selector} never showed {pattern!r}: {exc}\n{self.diagnostics()}", pytrace=False)

    def message(self, pattern: str, timeout: float = 10.0) -> None:
        """The message bar is showing (not a hidden, earlier text) and says ``pattern``."""
        self.expect("#message:not([hidden]) #message-text", pattern, timeout)

    def wait(self, expression: str, arg: Any = None, timeout: float = 15.0, what: str = "") -> None:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        try:
            self.page.wait_for_function(expression, arg=arg, timeout=timeout * 1000, polling=100)
        except PlaywrightTimeout:
            self.server.check_alive()
            pytest.fail(f"{self.label}: timed out waiting for {what or expression}\n{self.diagnostics()}", pytrace=False)

    def phase(self, phase: str, timeout: float = 15.0) -> None:
        self.wait("(p) => videocallDemo.phase === p", phase, timeout, f"phase {phase!r}")

    def diagnostics(self) -> str:
        from playwright.sync_api import Error as PlaywrightError
        try:
            state = self.page.evaluate("() => ({phase: videocallDemo.phase, me: videocallDemo.me, peer: videocallDemo.peer,"
                                       " message: document.getElementById('message-text').textContent,"
                                       " callState: document.getElementById('call-state').textContent})")
        except PlaywrightError as exc:
            state = f"(unavailable: {exc})"
        return f"page state: {state}\nconsole: {self.console[-20:]}\nserver log:\n{self.server.log_tail(15)}"

    # what a person does
    def register(self, name: str) -> None:
        self.name = name
        self.page.fill("#username", name)
        self.page.click("#register")
        self.expect("#me", name)

    def sees(self, other: str, timeout: float = 10.0) -> None:
        self.wait("(n) => !!document.querySelector(`#people li[data-user=\"${CSS.escape(n)}\"]`)", other, timeout,
                  f"{other} in the people list")

    def call(self, other: str) -> None:
        self.sees(other)
        self.page.click(f'#people li[data-user="{other}"] button')

    def accept(self, caller: str) -> None:
        self.expect("#incoming-title", f"{caller} is calling you")
        self.page.click("#accept")

    def dismiss_message(self) -> None:
        if self.page.locator("#message").is_visible():
            self.page.click("#message-close")

    # media
    def stats(self) -> dict[str, Any]:
        return dict(self.page.evaluate("() => videocallDemo.stats()"))

    def inbound(self, kind: str) -> dict[str, Any]:
        return dict(self.stats()["inbound"].get(kind) or {"bytesReceived": 0, "framesDecoded": 0})

    def wait_inbound(self, kinds: str, flowing: bool, timeout: float = MEDIA_TIMEOUT) -> None:
        """Wait until inbound RTP of each of ``kinds`` ("audio video") rises (``flowing``), or
        stays flat for half a second (not ``flowing``); see :func:`watch_bytes`."""
        def read() -> dict[str, int]:
            inbound = self.stats()["inbound"]
            return {kind: (inbound.get(kind) or {}).get("bytesReceived", 0) for kind in kinds.split()}
        seen = watch_bytes(read, flowing, timeout, 0.5, self.sleep)
        if seen is not None:
            pytest.fail(f"{self.label}: inbound {kinds} {'never rose' if flowing else 'never stopped'} within "
                        f"{timeout:g} s (bytesReceived about every second: {seen})\n{self.diagnostics()}", pytrace=False)

    def wait_video_playing(self, timeout: float = MEDIA_TIMEOUT) -> None:
        if (last := wait_playing(lambda: self.page.evaluate("() => videocallDemo.video('remote')"), timeout,
                                 self.sleep, unpaused=True)) is not None:
            pytest.fail(f"{self.label}: remote video not playing: {last}\n{self.diagnostics()}", pytrace=False)

    def sleep(self, seconds: float) -> None:
        """Wait while Playwright goes on delivering this page's events (see ``Peer.sleep``)."""
        self.page.wait_for_timeout(seconds * 1000)

    def problems(self) -> list[str]:
        return [line for line in self.console if line.startswith(("pageerror", "error"))]

    def close(self) -> None:
        from playwright.sync_api import Error as PlaywrightError
        with contextlib.suppress(PlaywrightError):
            self.context.close()


@pytest.fixture
def open_page(stack: Any, server_with_npm: VideocallServer) -> Iterator[Callable[..., DemoPage]]:
    """``open_page("alice", viewport=..., connected=True, url=None, setup=None)``: a fresh
    browser context (its own profile state) with the demo page loaded from the server."""
    pages: list[DemoPage] = []

    def open_one(label: str, viewport: dict[str, int] | None = None, connected: bool = True,
                 url: str | None = None, setup: Callable[[Any], None] | None = None) -> DemoPage:
        context = stack.chromium().new_context(viewport=viewport or DESKTOP)
        page = DemoPage(label, context, server_with_npm)
        pages.append(page)
        if setup is not None:
            setup(page.page)
        return page.open(url, connected)

    yield open_one
    for page in pages:
        page.close()
    server_with_npm.check_alive()


def start_call(caller: DemoPage, callee: DemoPage) -> None:
    """Through the buttons: caller picks callee from the list, callee accepts; both in call.

    Register the callee first: the list the caller's page fetches when it registers then shows
    the callee at once, where a callee registered later shows up only at the page's next poll
    (every 3 s; ``test_a_call_through_the_page`` checks that poll, while its call goes on)."""
    caller.call(callee.name)
    caller.expect("#call-state", f"Ringing {callee.name}")
    callee.accept(caller.name)
    for page, other in ((caller, callee), (callee, caller)):
        page.expect("#call-state", f"In call with {other.name}", timeout=15)


def call_with_media(alice: DemoPage, bob: DemoPage, suffix: str) -> None:
    """Two open pages register (``alice-<suffix>``, ``bob-<suffix>``), alice calls bob, audio and
    video flow both ways and play, bob hangs up; neither page logged an error."""
    bob.register(f"bob-{suffix}")  # first: see start_call
    alice.register(f"alice-{suffix}")
    start_call(alice, bob)
    for page in (alice, bob):
        page.wait_inbound("audio video", flowing=True)
        page.wait_video_playing()
        assert page.inbound("video")["framesDecoded"] > 0
    bob.page.click("#hangup")
    alice.message("hung up after")
    for page in (alice, bob):
        assert page.problems() == [], page.console


def rates_per_second(samples: list[dict[str, Any]], kind: str, windows: int) -> list[float]:
    """Inbound ``kind`` bit/s over the last ``windows`` back-to-back windows of a second or a
    little more each, oldest first, from ``DemoPage.stats()`` samples (``at``: the page's clock,
    in ms); fewer when the samples do not span that many."""
    def received(sample: dict[str, Any]) -> int:
        return int((sample["inbound"].get(kind) or {}).get("bytesReceived", 0))

    rates: list[float] = []
    end = len(samples) - 1
    while len(rates) < windows:
        start = next((i for i in range(end - 1, -1, -1) if samples[end]["at"] - samples[i]["at"] >= 1000), None)
        if start is None:
            break
        seconds = (samples[end]["at"] - samples[start]["at"]) / 1000
        rates.append((received(samples[end]) - received(samples[start])) * 8 / seconds)
        end = start
    return rates[::-1]


def save_screenshot(page: DemoPage) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    artifact = ARTIFACTS / "demo-live-call.png"
    page.page.screenshot(path=str(artifact))
    if not DOCS_SCREENSHOT.exists() or os.environ.get("VIDEOCALL_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(artifact, DOCS_SCREENSHOT)


def test_a_call_through_the_page(open_page: Callable[..., DemoPage]) -> None:
    alice = open_page("alice", DESKTOP)
    bob = open_page("bob", PHONE)  # the phone layout, on the other side
    # Plain names look right in the README's screenshot; no other test uses them.
    bob.register("bob")
    alice.register("alice")
    alice.sees("bob")  # in the list her page fetched when she registered

    start_call(alice, bob)
    for page in (alice, bob):
        page.wait_inbound("audio video", flowing=True)
        page.wait_video_playing()
        assert page.inbound("video")["framesDecoded"] > 0
    assert alice.page.locator("#remote-overlay").is_hidden()

    # Video off on alice's side: bob's inbound video stops and his page says so; alice still sees bob.
    alice.page.click("#toggle-video")
    alice.expect("#toggle-video", "Start video")
    bob.wait_inbound("video", flowing=False, timeout=6)
    bob.expect("#remote-caption", "No video from alice")
    alice.wait_inbound("video", flowing=True)
    alice.page.click("#toggle-video")
    bob.wait_inbound("video", flowing=True, timeout=6)
    bob.wait_video_playing(timeout=6)
    bob.wait("() => document.getElementById('remote-overlay').hidden", what="the 'no video' overlay gone")

    # Mute on bob's side: alice's inbound audio stops; unmute: it resumes.
    uncapped = bob.stats()  # meanwhile bob receives alice's video, not capped yet (reported below)
    bob.page.click("#toggle-audio")
    bob.expect("#toggle-audio", "Unmute")
    alice.wait_inbound("audio", flowing=False, timeout=6)
    bob.page.click("#toggle-audio")
    alice.wait_inbound("audio", flowing=True, timeout=6)

    # Some seconds into the call (sharp video, a clock, the stats line): the README's picture.
    # (The clock and the stats line, each second, are checked here, not at the start of the
    # call, where they would take their first seconds to show.)
    for page in (alice, bob):
        page.expect("#call-timer", ":")
        page.expect("#stats", "Receiving")
    # The list refreshes by itself (in a call too): bob's page fetched it before alice
    # registered, and only its poll, every 3 s, can have brought her in since.
    bob.sees("alice")
    alice.wait_video_playing()
    alice.dismiss_message()
    save_screenshot(alice)

    # A bitrate cap on alice's side (REMB to her browser): what bob receives drops under it
    # (uncapped, the fake camera ramps up to 300-400 kbit/s on loopback) and keeps flowing:
    # three seconds in a row, each under the cap, the last three of samples 0.25 s apart (so
    # they end as soon as the rate is down, not at the end of a window).
    cap = 128_000
    before = rates_per_second([uncapped, bob.stats()], "video", 1)
    alice.page.select_option("#bitrate", str(cap))
    alice.message("capped at 128 kbit/s")
    samples = [bob.stats()]
    last: list[float] = []  # the last three seconds, oldest first
    deadline = time.monotonic() + 12
    while not (len(last) == 3 and max(last) <= cap * 1.2) and time.monotonic() < deadline:
        bob.sleep(0.25)
        samples.append(bob.stats())
        last = rates_per_second(samples, "video", 3)
    assert len(last) == 3 and max(last) <= cap * 1.2, \
        f"before the cap {before} bit/s, after it per second: {rates_per_second(samples, 'video', 20)}"
    assert min(last) > 0, "the cap must not stop the video"

    # A renegotiation from bob's side (janus.js re-offer with `set`): alice gets `update`
    # with the offer and answers it, bob gets `update` with the answer; media goes on.
    bob.page.evaluate("() => videocallDemo.renegotiate()")
    alice.wait("() => videocallDemo.updates >= 1", what="an update on alice's side")
    bob.wait("() => videocallDemo.updates >= 1", what="an update (the answer) on bob's side")
    for page in (alice, bob):
        assert page.page.evaluate("() => videocallDemo.phase") == "in-call"
        page.wait_inbound("audio video", flowing=True)

    # Bob hangs up: both sides are back to idle and told so.
    bob.page.click("#hangup")
    bob.message("Call with alice ended after")
    alice.message("bob hung up after")
    for page in (alice, bob):
        page.phase("idle")
        page.expect("#call-state", "Not in a call")
        assert page.page.evaluate("() => document.getElementById('remote-video').srcObject") is None
        assert page.problems() == [], page.console
    assert [line for line in alice.console + bob.console if line.startswith("warning")] == []


def test_decline_and_busy(open_page: Callable[..., DemoPage]) -> None:
    alice, bob, carol = open_page("alice"), open_page("bob"), open_page("carol", PHONE)
    for page, name in ((bob, unique("bob")), (alice, unique("alice")), (carol, unique("carol"))):
        page.register(name)  # bob before alice, who calls him: see start_call

    # carol calls bob, bob declines: carol is told, both are free again.
    carol.call(bob.name)
    bob.expect("#incoming-title", f"{carol.name} is calling you")
    bob.page.click("#decline")
    bob.message(f"You declined the call from {carol.name}")
    carol.message(f"{bob.name} declined the call")
    for page in (bob, carol):
        page.phase("idle")
        assert page.page.locator("#incoming").is_hidden()

    # alice and bob in a call; carol calls each of them: busy, and their call goes on.
    start_call(alice, bob)
    for busy in (bob, alice):
        carol.call(busy.name)
        carol.message(f"{busy.name} is busy in another call")
        carol.phase("idle")
    for page in (alice, bob):
        assert page.page.evaluate("() => videocallDemo.phase") == "in-call"
        assert page.page.locator("#incoming").is_hidden()
    bob.wait_inbound("video", flowing=True)

    # The caller cancels while it rings: the callee sees a missed call.
    alice.page.click("#hangup")
    bob.phase("idle")
    carol.call(bob.name)
    bob.expect("#incoming-title", f"{carol.name} is calling you")
    carol.page.click("#hangup")
    carol.message(f"Call to {bob.name} cancelled")
    bob.message(f"Missed call: {carol.name} hung up before you answered")
    for page in (alice, bob, carol):
        assert page.problems() == [], page.console


def test_a_connection_broken_mid_call_is_reclaimed_and_the_call_goes_on(
        open_page: Callable[..., DemoPage], server_with_npm: VideocallServer) -> None:
    """The page's WebSocket breaks (a proxy in between is cut, no goodbye): the page claims
    its session back (janus.js's reconnect) and the call, its name and its media go on."""
    proxy = TcpProxy(server_with_npm.port)
    try:
        alice = open_page("alice", url=f"http://127.0.0.1:{proxy.port}/")
        bob = open_page("bob")
        bob.register(unique("bob"))  # first: see start_call
        alice.register(unique("alice"))
        start_call(alice, bob)
        assert proxy.cut() >= 1
        deadline = time.monotonic() + 15
        while not any("reclaiming the session" in line for line in alice.console):
            assert time.monotonic() < deadline, f"the page never noticed the drop: {alice.console[-10:]}"
            alice.page.wait_for_timeout(100)
        alice.expect("#conn-text", "Connected to", timeout=20)
        for page in (alice, bob):
            page.phase("in-call")
            page.wait_inbound("video", flowing=True)
        alice.expect("#me", alice.name)  # the same name, never registered again
        alice.page.click("#hangup")
        bob.phase("idle")
        assert not alice.problems(), alice.problems()
    finally:
        proxy.close()


def test_reload_mid_call_ends_the_call_for_the_other_side(open_page: Callable[..., DemoPage]) -> None:
    alice, bob = open_page("alice"), open_page("bob")
    bob.register(unique("bob"))  # first: see start_call
    alice.register(unique("alice"))
    start_call(alice, bob)
    bob.wait_inbound("video", flowing=True)

    alice.page.reload()
    bob.message(f"{alice.name} left the call", timeout=10)
    bob.phase("idle")
    bob.expect("#call-state", "Not in a call")
    assert bob.page.evaluate("() => document.getElementById('remote-video').srcObject") is None
    bob.wait("(n) => !videocallDemo.people.includes(n)", alice.name, what="alice gone from the list")
    # The reloaded page starts over; the name it had is free again and remembered.
    alice.expect("#conn-text", "Connected to")
    assert alice.page.input_value("#username") == alice.name
    alice.page.click("#register")
    alice.expect("#me", alice.name)
    bob.sees(alice.name)
    assert bob.problems() == [], bob.console


def test_errors_are_said_in_words(open_page: Callable[..., DemoPage]) -> None:
    alice, bob = open_page("alice"), open_page("bob")
    alice.register(unique("alice"))

    bob.page.fill("#username", "   ")
    bob.page.click("#register")
    bob.message("Type a name first")
    bob.page.fill("#username", alice.name)
    bob.page.click("#register")
    bob.message(f"The name “{alice.name}” is taken. Pick another one.")
    bob.register(unique("bob"))

    nobody = unique("nobody")
    bob.page.fill("#callee", nobody)
    bob.page.click("#dial")
    bob.message(f"No one called “{nobody}” is online.")
    bob.phase("idle")
    bob.page.fill("#callee", bob.name)
    bob.page.click("#dial")
    bob.message("You can't call yourself")
    # After all that, a real call still works.
    start_call(bob, alice)
    for page in (alice, bob):
        assert page.problems() == [], page.console


class _PagesWithoutApi(http.server.BaseHTTPRequestHandler):
    """The demo page from a server that is not videocall: its WebSocket can't connect."""

    static = StaticFiles()

    def do_GET(self) -> None:
        reply = self.static.get(self.path)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def pages_without_api(static: StaticFiles | None = None) -> Iterator[str]:
    handler = type("Handler", (_PagesWithoutApi,), {"static": static or StaticFiles()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_without_npm_ci_the_page_says_what_to_run(open_page: Callable[..., DemoPage], tmp_path: Path) -> None:
    with pages_without_api(StaticFiles(tmp_path / "node_modules")) as url:
        page = open_page("newcomer", url=url, connected=False)
        page.message("needs to run `npm ci`")
        page.expect("#conn-text", "Unavailable")
        assert page.page.locator("#register").is_disabled()


def test_server_unreachable_and_connection_lost(open_page: Callable[..., DemoPage]) -> None:
    with pages_without_api() as url:
        lonely = open_page("lonely", url=url, connected=False)
        lonely.message(f"Can't reach the videocall server at {url[len('http://'):-1]}. Is it running?")
        lonely.expect("#conn-text", "Offline")
        assert lonely.page.locator("#username").is_disabled()

    # Connected and registered, then the WebSocket drops: said, and the page reconnects and
    # registers the same name again by itself.
    routes: list[Any] = []

    def through_proxy(page: Any) -> None:
        def handler(ws: Any) -> None:
            routes.append((ws, ws.connect_to_server()))
        page.route_web_socket(re.compile(r"^wss?://"), handler)
        page.clock.install()  # the page's timers, in real time unless the test jumps ahead (below)

    dana = open_page("dana", setup=through_proxy)
    dana.register(unique("dana"))
    dropped = routes.copy()  # not the page's reconnection, which the handler adds meanwhile
    for ws, server in dropped:
        server.close()
        ws.close()
    dana.message("Lost the connection to the server")
    dana.expect("#conn-text", "Offline")
    # The page tries again on its own timer, 5 s later: its clock jumps over that wait (as if
    # the computer slept through it) and the timer fires, not a test's click on "Try now".
    dana.page.clock.fast_forward(RETRY_MS)
    dana.expect("#conn-text", "Connected to", timeout=15)
    dana.expect("#me", dana.name)
    dana.phase("idle")


NO_CAMERA = """
const realGetUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = (constraints) => constraints && constraints.video
  ? Promise.reject(new DOMException("Requested device not found", "NotFoundError"))
  : realGetUserMedia(constraints);
"""
#: What a plain-http page on a LAN address gets: no navigator.mediaDevices at all.
INSECURE = "Object.defineProperty(Navigator.prototype, 'mediaDevices', { get: () => undefined });"


def test_without_a_camera_or_on_an_insecure_page_calls_still_work(open_page: Callable[..., DemoPage]) -> None:
    alice = open_page("alice", setup=lambda page: page.add_init_script(NO_CAMERA))
    bob = open_page("bob")
    carol = open_page("carol", setup=lambda page: page.add_init_script(INSECURE))
    carol.message("isn't served over https")
    for page, name in ((bob, unique("bob")), (alice, unique("alice")), (carol, unique("carol"))):
        page.register(name)  # bob before alice, who calls him: see start_call

    # No camera: the call goes ahead with the microphone; bob hears alice, sees that she has no video.
    start_call(alice, bob)
    alice.message(f"No camera available: {bob.name} will hear you but not see you")
    bob.wait_inbound("audio", flowing=True)
    alice.wait_inbound("audio video", flowing=True)
    alice.wait_video_playing()
    bob.expect("#remote-caption", f"No video from {alice.name}")
    alice.expect("#local-caption", "No camera")
    alice.page.click("#hangup")
    bob.phase("idle")

    # No camera or microphone allowed at all: receive only, and said so.
    start_call(carol, bob)
    carol.message(f"{bob.name} won't see or hear you")
    carol.wait_inbound("audio video", flowing=True)
    carol.wait_video_playing()
    bob.expect("#remote-caption", f"No video from {carol.name}")
    bob.page.click("#hangup")
    carol.phase("idle")
    # janus.js logs alice's failed getUserMedia (console.error) before the page falls back.
    assert [line for line in alice.problems() if "NotFoundError" not in line] == [], alice.console
    for page in (bob, carol):
        assert page.problems() == [], page.console
