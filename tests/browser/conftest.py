"""Browser tests: the official janus.js (npm janus-gateway) in Debian's Chromium, driven by
Playwright for Python, against ``videocall serve``.

- ``videocall_server``: ``videocall serve --port <free> --workers 1`` with
  ``VIDEOCALL_ICE_ENFORCE_LIST=127.0.0.1`` (``VIDEOCALL_SERVE_CMD`` overrides the command);
  not listening within 20 s: the tests error with its stderr.
- ``page_url``: a stdlib HTTP server on 127.0.0.1 serving ``page/`` (the harness) plus
  janus.js and webrtc-adapter from the repository's ``node_modules``.
- ``browser``: /usr/bin/chromium (``VIDEOCALL_CHROMIUM`` overrides), never a downloaded one;
  fake camera and microphone, a fresh temporary profile.
- ``new_peer("alice")``: a page in its own browser context, connected to the server with
  janus.plugin.videocall attached; closed after the test.
- ``tls_server``: ``videocall serve --tls-self-signed`` (its certificate for 127.0.0.1 and
  localhost, in its log folder); ``tls_browser``: a Chromium of its own that accepts that
  certificate only (:func:`trust_only`), not every bad one.

These are started once, on first use, and stopped when the last test of this folder ends
(not at the end of the whole run): Playwright's sync API keeps its own event loop current
while it is open, which would break the asyncio tests that run after this folder.

No Chromium, Playwright or npm packages: skipped with how to install them; with ``CI=true``
the tests fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tests.browser.browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    NPM_FILES,
    PageServer,
    Peer,
    VideocallServer,
    self_signed_cert,
    start_tls_server,
    trust_only,
    unavailable,
)

KEEPALIVE_TEST = "test_keepalives_every_25s_are_acked"


class Stack:
    """Everything the browser tests share, started lazily, stopped together."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.server: VideocallServer | None = None
        self.pages: PageServer | None = None
        self.playwright: Any = None
        self.browser: Any = None
        self.idle: Peer | None = None
        self.tls_server: VideocallServer | None = None
        self.tls_browser: Any = None

    def videocall(self) -> VideocallServer:
        if self.server is None:
            server = VideocallServer(self.tmp.mktemp("browser-videocall"))
            server.start()
            self.server = server
        return self.server

    def page_url(self) -> str:
        if self.pages is None:
            missing = [str(path) for path in NPM_FILES.values() if not path.is_file()]
            if missing:
                unavailable(f"the npm packages janus-gateway and webrtc-adapter (missing: {', '.join(missing)})")
            self.pages = PageServer()
        return self.pages.url

    def chromium(self) -> Any:
        if self.browser is None:
            self.browser = self.launch_chromium()
        return self.browser

    def launch_chromium(self, extra_args: Sequence[str] = (), executable: str = CHROMIUM) -> Any:
        """A browser of its own (the caller closes it), for flags the shared one must not have
        (a pinned certificate) or another way to run it (``executable``: a wrapper script)."""
        if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
            unavailable(f"Debian's Chromium at {CHROMIUM}")
        if self.playwright is None:
            try:
                from playwright.sync_api import sync_playwright
            except ImportError:
                unavailable("Playwright for Python (in the `test` extra)")
            self.playwright = sync_playwright().start()
        # launch() gives each run a fresh temporary profile; executable_path: never a downloaded browser.
        return self.playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=[*CHROMIUM_ARGS, *extra_args])

    def tls(self) -> VideocallServer:
        """``videocall serve`` over TLS on a self-signed certificate for 127.0.0.1 and localhost."""
        if self.tls_server is None:
            self.tls_server = start_tls_server(self.tmp.mktemp("browser-tls"),
                                               {"VIDEOCALL_TLS_HOST_NAMES": "127.0.0.1,localhost"})
        return self.tls_server

    def tls_chromium(self) -> Any:
        """A browser that accepts the certificate of :meth:`tls` and no other (:func:`trust_only`)."""
        if self.tls_browser is None:
            self.tls_browser = self.launch_chromium(trust_only(self_signed_cert(self.tls())))
        return self.tls_browser

    def open_peer(self, name: str) -> Peer:
        context = self.chromium().new_context(viewport={"width": 680, "height": 320})
        return Peer(name, context, context.new_page(), self.videocall()).open(self.page_url())

    def idle_peer(self) -> Peer:
        if self.idle is None:
            self.idle = self.open_peer("idle")
        return self.idle

    def close(self) -> None:
        if self.idle is not None:
            self.idle.close()
        for browser in (self.browser, self.tls_browser):
            if browser is not None:
                browser.close()
        if self.playwright is not None:
            self.playwright.stop()
        if self.pages is not None:
            self.pages.close()
        for server in (self.server, self.tls_server):
            if server is not None:
                server.stop()
        self.__init__(self.tmp)  # type: ignore[misc]


_stack: Stack | None = None


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    global _stack  # noqa: PLW0603 - one stack per folder run, torn down by the folder's finalizer
    if _stack is None:
        _stack = Stack(tmp_path_factory)
        # Stopped when pytest leaves this folder (its Dir node is torn down).
        folder = request.node.getparent(pytest.Directory) or request.session
        folder.addfinalizer(_close_stack)
    return _stack


def _close_stack() -> None:
    global _stack  # noqa: PLW0603 - see `stack`
    if _stack is not None:
        _stack.close()
        _stack = None


@pytest.fixture
def videocall_server(stack: Stack) -> VideocallServer:
    return stack.videocall()


@pytest.fixture
def page_url(stack: Stack) -> str:
    return stack.page_url()


@pytest.fixture
def browser(stack: Stack) -> Any:
    return stack.chromium()


@pytest.fixture
def new_peer(stack: Stack) -> Iterator[Callable[[str], Peer]]:
    peers: list[Peer] = []

    def open_peer(name: str) -> Peer:
        peer = stack.open_peer(name)
        peers.append(peer)
        return peer

    yield open_peer
    for peer in peers:
        peer.close()
    if stack.server is not None:
        stack.server.check_alive()


@pytest.fixture
def idle_peer(stack: Stack) -> Peer:
    """A page with a session and a handle that does nothing, on janus.js's default keepalive
    period (25 s), opened with the first browser test so that the keepalive test, which runs
    last, rarely has to wait."""
    return stack.idle_peer()


@pytest.fixture(autouse=True)
def _start_idle_peer_early(request: pytest.FixtureRequest) -> None:
    if any(item.name == KEEPALIVE_TEST for item in request.session.items):
        request.getfixturevalue("idle_peer")


@pytest.fixture
def tls_server(stack: Stack) -> Iterator[VideocallServer]:
    """``videocall serve`` over TLS on a self-signed certificate for 127.0.0.1 and localhost,
    shared like the plain one."""
    server = stack.tls()
    yield server
    server.check_alive()


@pytest.fixture
def tls_browser(stack: Stack) -> Any:
    """A Chromium that accepts ``tls_server``'s certificate and no other, shared; its tests
    close the contexts they open."""
    return stack.tls_chromium()
