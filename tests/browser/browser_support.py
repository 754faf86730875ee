"""What the browser tests share: the server and page-server processes, and ``Peer``, one
user's Chromium page running the official janus.js through the harness in ``page/``.

Nothing here is a fixture (those are in ``conftest.py``).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import itertools
import json
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.support.servers import free_port, videocall_command

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PAGE_DIR = HERE / "page"
ARTIFACTS = HERE / "artifacts"
NODE_MODULES = REPO / "node_modules"
CHROMIUM = os.environ.get("VIDEOCALL_CHROMIUM", "/usr/bin/chromium")
#: What the page loads from node_modules (the only files served from there): janus.js as the
#: package's ES module build, and webrtc-adapter's browser bundle (sets window.adapter).
NPM_FILES = {
    "/node_modules/janus-gateway/npm/dist/janus.es.js": NODE_MODULES / "janus-gateway/npm/dist/janus.es.js",
    "/node_modules/webrtc-adapter/out/adapter.js": NODE_MODULES / "webrtc-adapter/out/adapter.js",
}
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
STARTUP_TIMEOUT = 20.0
#: How long remote media gets to show up / stop / resume.
MEDIA_TIMEOUT = 10.0
#: How often media waits look at getStats or a <video> element (seconds): a change shows up
#: within this, not at the end of a fixed window.
POLL = 0.1
HOW_TO_INSTALL = ("apt-get install -y chromium && pip install -e '.[test]' && npm ci "
                  "(.ci/run installs all three)")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(what: str, how: str = HOW_TO_INSTALL) -> None:
    """Skip on a developer's machine, fail in CI: CI must never skip the browser tests."""
    message = f"browser tests need {what}: {how}"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


# --- the server under test --------------------------------------------------------------------

class VideocallServer:
    """``videocall serve --port <free> --workers 1`` in its own process group, logs to files."""

    def __init__(self, logdir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.env = env or {}  # more VIDEOCALL_* settings (e.g. auth)
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.cmd = [*videocall_command(), "serve", "--port", str(self.port), "--workers", "1"]
        self.stdout, self.stderr = logdir / "videocall.stdout.log", logdir / "videocall.stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "VIDEOCALL_HOST": "127.0.0.1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **self.env}
        try:
            with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
                self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=err, env=env, cwd=REPO,
                                             start_new_session=True)
        except OSError as exc:
            pytest.fail(f"cannot run {shlex.join(self.cmd)}: {exc}", pytrace=False)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                self.fail(f"exited with status {self.proc.returncode} before accepting connections")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                self.fail(f"did not accept connections within {STARTUP_TIMEOUT:g} s")
            time.sleep(0.1)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.fail(f"died during the tests (status {self.proc.returncode})")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.stderr.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"

    def fail(self, what: str) -> None:
        pytest.fail(f"videocall serve {what}.\ncommand: {shlex.join(self.cmd)}\n"
                    f"--- stderr ({self.stderr}) ---\n{self.log_tail()}", pytrace=False)

    def stop(self) -> None:
        """SIGTERM to the process group we started, SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(5)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


# --- TLS: a server with a self-signed certificate, and a browser that trusts only that one -----

def start_tls_server(logdir: Path, env: dict[str, str] | None = None) -> VideocallServer:
    """``videocall serve`` with ``VIDEOCALL_TLS_SELF_SIGNED`` (its certificate in
    ``logdir/tls``, see :func:`self_signed_cert`), started; ``env`` adds or overrides settings."""
    missing = [str(path) for path in NPM_FILES.values() if not path.is_file()]
    if missing:
        unavailable(f"the npm packages janus-gateway and webrtc-adapter (missing: {', '.join(missing)})")
    server = VideocallServer(logdir, env={"VIDEOCALL_TLS_SELF_SIGNED": "true", "VIDEOCALL_TLS_DIR": str(logdir / "tls"),
                                          **(env or {})})
    server.start()
    return server


def self_signed_cert(server: VideocallServer) -> Path:
    """The certificate a server from :func:`start_tls_server` made at its start."""
    return Path(server.env["VIDEOCALL_TLS_DIR"]) / "self-signed-cert.pem"


def trust_only(cert: Path) -> list[str]:
    """Chromium flags that accept this certificate and no other one: the base64 SHA-256 of its
    SubjectPublicKeyInfo (what ``--ignore-certificate-errors-spki-list`` pins; it needs a
    ``--user-data-dir``, which Playwright always passes), narrower than ignoring every error."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    spki = x509.load_pem_x509_certificate(cert.read_bytes()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return [f"--ignore-certificate-errors-spki-list={base64.b64encode(hashlib.sha256(spki).digest()).decode()}"]


def certificate_names(cert: Path) -> set[str]:
    """The DNS names and IP addresses a certificate is for (its subjectAltName)."""
    from cryptography import x509

    san = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return {str(name) for name in san.get_values_for_type(x509.DNSName)} | \
        {str(address) for address in san.get_values_for_type(x509.IPAddress)}


# --- the static pages ---------------------------------------------------------------------------

class _PageHandler(http.server.SimpleHTTPRequestHandler):
    """tests/browser/page/ at /, plus the two npm files the page loads; nothing else."""

    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".html": "text/html"}

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path in NPM_FILES:
            return str(NPM_FILES[path])
        if path.startswith("/node_modules/"):
            return str(PAGE_DIR / "no-such-file")
        return super().translate_path(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class PageServer:
    """A stdlib HTTP server on 127.0.0.1 in a daemon thread."""

    def __init__(self) -> None:
        handler = functools.partial(_PageHandler, directory=str(PAGE_DIR))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="browser-test-pages", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- one user's page ----------------------------------------------------------------------------

class Peer:
    """One user's page: the harness on ``window.vc``, and the Janus frames its WebSocket
    carried (``frames``: ``(monotonic time, "sent" | "received", parsed JSON)``)."""

    def __init__(self, name: str, context: Any, page: Any, server: VideocallServer) -> None:
        self.name, self.context, self.page, self.server = name, context, page, server
        self.frames: list[tuple[float, str, dict[str, Any]]] = []
        self.console: list[str] = []
        #: Errors and warnings janus.js itself logged (``Janus.error`` / ``Janus.warn``).
        self.janus_problems: list[str] = []
        self.connected_at = 0.0
        page.on("websocket", self._on_websocket)
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))

    def _on_console(self, msg: Any) -> None:
        line = f"{msg.type}: {msg.text}"
        self.console.append(line)
        if msg.type in ("error", "warning") and msg.location.get("url", "").endswith("/janus.es.js"):
            self.janus_problems.append(line)

    def _on_websocket(self, ws: Any) -> None:
        def keep(direction: str, payload: str | bytes) -> None:
            try:
                message = json.loads(payload)
            except ValueError:
                message = {"unparsed": str(payload)}
            self.frames.append((time.monotonic(), direction, message))
        ws.on("framesent", lambda payload: keep("sent", payload))
        ws.on("framereceived", lambda payload: keep("received", payload))

    def open(self, page_url: str, server_url: str | None = None) -> Peer:
        """Load the harness, create a Janus session and attach janus.plugin.videocall (on the
        server's own URL unless ``server_url`` says another way to it, e.g. a proxy)."""
        self.page.goto(page_url)
        self.page.wait_for_function("() => window.vcLoaded === true", timeout=10_000)
        from playwright.sync_api import Error as PlaywrightError
        try:
            self.js("(url) => vc.connect(url)", server_url or self.server.url)
        except PlaywrightError as exc:
            self.server.check_alive()
            pytest.fail(f"{self.name}: janus.js could not connect/attach: {exc}\n"
                        f"console: {self.console}", pytrace=False)
        self.connected_at = time.monotonic()
        return self

    def close(self) -> None:
        from playwright.sync_api import Error as PlaywrightError
        with contextlib.suppress(PlaywrightError):  # already gone with the browser
            self.context.close()

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def sleep(self, seconds: float) -> None:
        """Wait while Playwright goes on delivering events (``time.sleep`` would hold them:
        the sync API dispatches page and WebSocket events only inside its own calls)."""
        self.page.wait_for_timeout(seconds * 1000)

    def log(self, what: str | None = None) -> list[dict[str, Any]]:
        return self.js("(w) => vc.events(w)", what)

    def plugin_events(self) -> list[str]:
        return self.js("() => vc.pluginEvents()")

    def plugin_results(self, event: str) -> list[dict[str, Any]]:
        return [e["msg"]["result"] for e in self.log("message")
                if (e["msg"].get("result") or {}).get("event") == event]

    def safe_log(self) -> Any:
        from playwright.sync_api import Error as PlaywrightError
        try:
            return self.log()
        except PlaywrightError as exc:  # the page may be gone
            return f"(unavailable: {exc})"

    def wait(self, expression: str, arg: Any = None, timeout: float = 15.0, what: str = "") -> None:
        """Wait for a JS predicate; on timeout, fail with this page's harness log."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        try:
            self.page.wait_for_function(expression, arg=arg, timeout=timeout * 1000, polling=100)
        except PlaywrightTimeout:
            self.server.check_alive()
            pytest.fail(f"{self.name}: timed out after {timeout:g} s waiting for {what or expression}\n"
                        f"harness log: {self.safe_log()}\nconsole: {self.console[-20:]}\n"
                        f"server log:\n{self.server.log_tail(20)}", pytrace=False)

    def wait_event(self, event: str, timeout: float = 15.0, count: int = 1) -> None:
        self.wait("([e, n]) => vc.pluginEvents().filter((x) => x === e).length >= n", [event, count],
                  timeout, f"plugin event {event!r} (x{count})")

    def wait_webrtc(self, on: bool, timeout: float = 15.0) -> None:
        self.wait("(on) => vc.events('webrtcState').some((e) => e.on === on)", on, timeout,
                  f"webrtcState({str(on).lower()})")

    def stats(self) -> dict[str, Any]:
        return self.js("() => vc.stats()")

    def video(self, element: str = "remote") -> dict[str, Any]:
        return self.js("(id) => vc.video(id)", element)


_counter = itertools.count(1)


def unique(name: str) -> str:
    """A username unique to this run (all tests share one server)."""
    return f"{name}{next(_counter)}"


# --- call helpers -------------------------------------------------------------------------------

def register(peer: Peer, name: str) -> None:
    peer.js("(n) => vc.register(n)", name)
    peer.wait_event("registered")


def start_call(alice: Peer, bob: Peer, data: bool = False) -> tuple[str, str]:
    """alice calls bob (offer with fake audio+video, and a data channel if ``data``), bob
    accepts (answer): both in call."""
    a, b = unique("alice"), unique("bob")
    register(alice, a)
    register(bob, b)
    alice.js("([n, data]) => vc.call(n, data)", [b, data])
    bob.wait_event("incomingcall")
    assert bob.js("() => vc.peer") == a
    bob.js("(data) => vc.accept(data)", data)
    alice.wait_event("accepted")
    bob.wait_event("accepted")
    return a, b


def wait_webrtcup(*peers: Peer) -> None:
    for peer in peers:
        peer.wait_webrtc(True)


def inbound(peer: Peer, kind: str) -> dict[str, Any]:
    return peer.stats()["inbound"].get(kind) or {"bytesReceived": 0, "framesDecoded": 0}


def wait_inbound(peer: Peer, kind: str, flowing: bool, timeout: float = MEDIA_TIMEOUT,
                 window: float = 1.0) -> None:
    """Wait until inbound-rtp ``bytesReceived`` of ``kind`` rises (``flowing``) or stays flat
    for ``window`` seconds (not ``flowing``); see :func:`watch_bytes`."""
    seen = watch_bytes(lambda: {kind: inbound(peer, kind)["bytesReceived"]}, flowing, timeout, window, peer.sleep)
    if seen is not None:
        pytest.fail(f"{peer.name}: inbound {kind} {'never rose' if flowing else 'never stopped'} "
                    f"within {timeout:g} s; bytesReceived about every second: {seen}; "
                    f"stats: {peer.stats()}; plugin events: {peer.plugin_events()}", pytrace=False)


def watch_bytes(read: Callable[[], dict[str, int]], flowing: bool, timeout: float, window: float,
                sleep: Callable[[float], None]) -> list[dict[str, int]] | None:
    """Poll byte counters (``read``: kind -> cumulative bytes) every :data:`POLL` seconds until
    each has risen above its first reading (``flowing``), or until none has changed for
    ``window`` seconds, measured from the first reading that showed its current value (not
    ``flowing``). ``None`` when it happened within ``timeout``; else the readings, about one
    a second, for the failure message."""
    first = read()
    readings = [(time.monotonic(), first)]
    since = dict.fromkeys(first, readings[0][0])  # when each counter was first seen at its value
    deadline = readings[0][0] + timeout
    while True:
        now, values = readings[-1]
        if flowing and values and all(values[kind] > first.get(kind, 0) for kind in values):
            return None
        if not flowing and all(now - since[kind] >= window for kind in values):
            return None
        if now >= deadline:
            return [values for _, values in readings][:: round(1 / POLL)]
        sleep(POLL)
        current = read()
        at = time.monotonic()
        for kind, value in current.items():
            if value != values.get(kind):
                since[kind] = at
        readings.append((at, current))


def wait_playing(read: Callable[[], dict[str, Any]], timeout: float, sleep: Callable[[float], None],
                 unpaused: bool = False) -> dict[str, Any] | None:
    """Poll a video element's state (``read``: ``currentTime``, ``width``, ``paused``) every
    :data:`POLL` seconds until its ``currentTime`` advanced past the first reading and it knows
    the frame size (and is not ``paused``, if ``unpaused``). ``None`` when it did within
    ``timeout``; else its last state."""
    first = now = read()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sleep(POLL)
        now = read()
        if now["currentTime"] > first["currentTime"] and now["width"] > 0 and not (unpaused and now["paused"]):
            return None
    return now


def wait_video_playing(peer: Peer, timeout: float = MEDIA_TIMEOUT) -> None:
    """The remote <video> element's currentTime advances and it knows the frame size."""
    if (last := wait_playing(peer.video, timeout, peer.sleep)) is not None:
        pytest.fail(f"{peer.name}: remote video not playing after {timeout:g} s: {last}; "
                    f"stats: {peer.stats()}", pytrace=False)


def screenshot(peers: list[Peer], name: str) -> Path:
    """One PNG of the pages side by side (each page shows its local and remote video)."""
    ARTIFACTS.mkdir(exist_ok=True)
    paths = []
    for peer in peers:
        path = ARTIFACTS / f"{name}-{peer.name}.png"
        peer.page.screenshot(path=str(path))
        paths.append(path)
    return paths[0]
