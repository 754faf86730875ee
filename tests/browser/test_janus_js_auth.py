"""janus.js's ``apisecret`` and ``token`` options in Chromium against ``videocall serve`` with
``api_secret``, then with signed-token auth; and the demo page's ``?token=``.

Good credentials connect, attach and register; without them janus.js is refused with Janus's
codes (403 on ``create``, 405 on ``attach`` for a token without the plugin), read off the
WebSocket frames; a token naming "alice" cannot register anyone else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from signaling.auth import sign
from tests.browser.browser_support import NODE_MODULES, Peer, VideocallServer, unavailable, unique

pytestmark = pytest.mark.timeout(90)

SECRET = "browser-signing-key"
UNAUTHORIZED = {"code": 403, "reason": "Unauthorized request (wrong or missing secret/token)"}
NO_PLUGIN = {"code": 405, "reason": "Provided token can't access plugin 'janus.plugin.videocall'"}


def token(*plugins: str, user: str | None = None, ttl: int = 600) -> str:
    return sign(SECRET, int(time.time()) + ttl, plugins, username=user)


class AuthServer:
    """A ``videocall serve`` with auth settings (of this module's own, shared by its tests that
    ask for the same settings), and this test's pages of janus.js against it."""

    def __init__(self, server: VideocallServer, browser: Any, page_url: str) -> None:
        self.server, self.browser, self.page_url = server, browser, page_url
        self.peers: list[Peer] = []

    def page(self, name: str) -> Peer:
        context = self.browser.new_context(viewport={"width": 680, "height": 320})
        peer = Peer(name, context, context.new_page(), self.server)
        self.peers.append(peer)
        peer.page.goto(self.page_url)
        peer.page.wait_for_function("() => window.vcLoaded === true", timeout=10_000)
        return peer

    def connect(self, name: str, **auth: str) -> tuple[Peer, str]:
        """A page whose janus.js connects with ``auth``; "ok" or janus.js's error text."""
        peer = self.page(name)
        outcome = peer.js("([url, auth]) => vc.connect(url, auth).then(() => 'ok', (e) => 'error: ' + e.message)",
                          [self.server.url, auth])
        return peer, outcome

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        self.server.check_alive()


def errors(peer: Peer) -> list[dict[str, Any]]:
    return [m["error"] for _, d, m in peer.frames if d == "received" and m.get("janus") == "error"]


def sent(peer: Peer, verb: str) -> list[dict[str, Any]]:
    return [m for _, d, m in peer.frames if d == "sent" and m.get("janus") == verb]


def register_error(peer: Peer, name: str) -> dict[str, Any]:
    peer.js("(n) => vc.register(n)", name)
    peer.wait("() => vc.events('message').some((e) => e.msg.error_code)", what="a plugin error")
    return next(e["msg"] for e in peer.log("message") if e["msg"].get("error_code"))


@pytest.fixture(scope="module")
def servers_by_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, VideocallServer]]:
    """The servers this module started, one per set of settings, shared by its tests (each
    opens its own pages); stopped when the module ends."""
    servers: dict[str, VideocallServer] = {}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def auth_server(servers_by_settings: dict[str, VideocallServer], tmp_path_factory: pytest.TempPathFactory,
                browser: Any, page_url: str) -> Iterator[Any]:
    opened: list[AuthServer] = []

    def start(**env: str) -> AuthServer:
        key = repr(sorted(env.items()))
        if key not in servers_by_settings:
            server = VideocallServer(tmp_path_factory.mktemp("browser-auth"), env=env)
            server.start()
            servers_by_settings[key] = server
        opened.append(AuthServer(servers_by_settings[key], browser, page_url))
        return opened[-1]

    yield start
    for server in opened:
        server.close()


def test_api_secret(auth_server: Any) -> None:
    server = auth_server(VIDEOCALL_API_SECRET="browser-s3cret")
    good, outcome = server.connect("good", apisecret="browser-s3cret")
    assert outcome == "ok", good.console
    assert all(m["apisecret"] == "browser-s3cret" for m in sent(good, "create") + sent(good, "attach"))
    name = unique("anyone")
    good.js("(n) => vc.register(n)", name)
    good.wait_event("registered")

    for label, auth in (("none", {}), ("wrong", {"apisecret": "browser-s3cre"})):
        refused, outcome = server.connect(label, **auth)
        assert outcome.startswith("error"), outcome
        assert errors(refused) == [UNAUTHORIZED] and not sent(refused, "attach")


def test_signed_tokens_and_the_user_they_name(auth_server: Any) -> None:
    server = auth_server(VIDEOCALL_TOKEN_AUTH="true", VIDEOCALL_TOKEN_AUTH_SECRET=SECRET)
    alice_name = unique("alice")
    alice, outcome = server.connect("alice", token=token("janus.plugin.videocall", user=alice_name))
    assert outcome == "ok", alice.console
    assert register_error(alice, "bob") == {
        "videocall": "event", "error_code": 474, "error": "Username 'bob' is not the one your token names",
    }
    alice.js("(n) => vc.register(n)", alice_name)
    alice.wait_event("registered")

    echo_only, outcome = server.connect("echo-only", token=token("janus.plugin.echotest"))
    assert outcome.startswith("error"), outcome
    assert len(sent(echo_only, "create")) == 1 and errors(echo_only) == [NO_PLUGIN]

    for label, auth in (("none", {}), ("expired", {"token": token("janus.plugin.videocall", ttl=-1)}),
                        ("forged", {"token": sign("not the key", int(time.time()) + 60, ["janus.plugin.videocall"])})):
        refused, outcome = server.connect(label, **auth)
        assert outcome.startswith("error") and errors(refused) == [UNAUTHORIZED], (label, outcome)


def test_demo_page_passes_its_url_token_to_janus_js(auth_server: Any, browser: Any) -> None:
    if not (NODE_MODULES / "janus-gateway/npm/dist/janus.es.js").is_file():
        unavailable("the npm package janus-gateway")
    server = auth_server(VIDEOCALL_TOKEN_AUTH="true", VIDEOCALL_TOKEN_AUTH_SECRET=SECRET)
    good = token("janus.plugin.videocall")
    context = browser.new_context()
    try:
        page = context.new_page()
        peer = Peer("demo", context, page, server.server)
        # URL-encoded, as a link must carry it: its base64 signature may hold '+' (a space in a query)
        page.goto(f"http://127.0.0.1:{server.server.port}/?token={quote(good, safe='')}")
        page.wait_for_function("() => document.getElementById('conn-text').textContent.startsWith('Connected to')",
                               timeout=15_000)
        assert [m["token"] for m in sent(peer, "create") + sent(peer, "attach")] == [good, good]
        assert "token" not in (page.get_attribute("#share-link", "href") or "")

        page.goto(f"http://127.0.0.1:{server.server.port}/")  # no token: refused, with Janus's 403
        page.wait_for_function("() => !document.getElementById('conn-text').textContent.startsWith('Connect')",
                               timeout=15_000)
        assert UNAUTHORIZED in errors(peer)
    finally:
        context.close()
