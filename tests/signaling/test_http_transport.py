"""The Janus HTTP transport adapter, called with ``HttpRequest`` objects (no socket), on a
running in-process server whose relay answers as a worker would (``ToyRelay``); the claim
tests use a real WebSocket to the same server. Over real HTTP: tests/e2e/test_e2e_http.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from shared.settings import Settings
from signaling.http_types import HttpRequest, HttpResponse
from signaling.server import SignalingServer
from tests.support.janus_ws import JanusConnection, new_transaction
from tests.support.toy_relay import ToyRelay

SDP = "v=0\r\no=- {0} {0} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
OFFER = {"type": "offer", "sdp": SDP.format(1)}
VIDEOCALL = "janus.plugin.videocall"

Start = Callable[..., Awaitable["Api"]]


class Api:
    """An HTTP client of the adapter: requests in, ``HttpResponse`` out."""

    def __init__(self, server: SignalingServer) -> None:
        self.server = server

    async def call(self, method: str, target: str, body: bytes | Any = b"", headers: dict[str, str] | None = None,
                   ) -> HttpResponse:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = await self.server.http_transport.handle(
            HttpRequest.from_target(method, target, headers or {}, data, peer="127.0.0.1"))
        assert answer is not None, f"{method} {target} was not the transport's"
        return answer

    async def post(self, target: str, body: bytes | Any, **headers: str) -> dict[str, Any]:
        answer = await self.call("POST", target, body, headers)
        assert answer.status == 200 and answer.content_type == "application/json", answer
        return json.loads(answer.body)

    async def get(self, target: str) -> Any:
        answer = await self.call("GET", target)
        assert answer.status == 200, answer
        return json.loads(answer.body)

    async def session(self) -> int:
        reply = await self.post("/janus", {"janus": "create", "transaction": "c"})
        assert reply["janus"] == "success", reply
        return int(reply["data"]["id"])

    async def user(self, name: str) -> tuple[int, int]:
        sid = await self.session()
        reply = await self.post(f"/janus/{sid}", {"janus": "attach", "plugin": VIDEOCALL, "transaction": "a"})
        handle = int(reply["data"]["id"])
        await self.message(sid, handle, {"request": "register", "username": name})
        assert result(await self.get(f"/janus/{sid}")) == {"event": "registered", "username": name}
        return sid, handle

    async def message(self, sid: int, handle: int, body: Any, jsep: Any = None) -> None:
        request = {"janus": "message", "transaction": new_transaction(), "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        reply = await self.post(f"/janus/{sid}/{handle}", request)
        assert reply == {"janus": "ack", "session_id": sid, "transaction": request["transaction"]}


def result(event: dict[str, Any]) -> Any:
    return event["plugindata"]["data"].get("result", event["plugindata"]["data"])


def error_of(answer: HttpResponse) -> tuple[int, str]:
    reply = json.loads(answer.body)
    assert reply["janus"] == "error", reply
    return reply["error"]["code"], reply["error"]["reason"]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[SignalingServer] = []

    async def make(**settings: Any) -> Api:
        server = SignalingServer(Settings(port=0, **{"long_poll_wait": 0.3, **settings}))
        server.plugin.relay = ToyRelay()
        await server.start()
        servers.append(server)
        return Api(server)

    yield make
    for server in servers:
        await server.close()


async def test_only_paths_under_base_path_are_the_transports(start: Start) -> None:
    api = await start(base_path="/gw/janus/")
    handle = api.server.http_transport.handle
    for path in ("/", "/janus", "/gw", "/gw/janusx", "/healthz"):
        assert await handle(HttpRequest("POST", path, body=b"{}")) is None, path
    reply = await api.post("/gw/janus", {"janus": "ping", "transaction": "p"})
    assert reply == {"janus": "pong", "transaction": "p"}


async def test_info_and_ping_by_post_and_by_get(start: Start) -> None:
    api = await start()
    assert (await api.post("/janus", {"janus": "info", "transaction": "i"}))["janus"] == "server_info"
    info = await api.get("/janus/info")
    assert info["janus"] == "server_info" and "janus.transport.http" in info["transports"]
    assert (await api.get("/janus/ping"))["janus"] == "pong"
    answer = await api.call("POST", "/janus/info", {"janus": "info", "transaction": "i"})
    assert answer.status == 400 and error_of(answer) == (450, "Use GET for the info endpoint")


async def test_a_message_is_acked_and_its_event_comes_by_long_poll_one_object_for_maxev_1(start: Start) -> None:
    api = await start()
    sid, handle = await api.user("alice")
    await api.message(sid, handle, {"request": "list"})
    event = await api.get(f"/janus/{sid}?rid=1&maxev=1")
    assert event["janus"] == "event" and event["sender"] == handle and result(event) == {"list": ["alice"]}
    assert await api.get(f"/janus/{sid}?rid=2") == {"janus": "keepalive"}  # after long_poll_wait


async def test_maxev_10_answers_an_array_of_what_is_held(start: Start) -> None:
    api = await start()
    sid, handle = await api.user("alice")
    for _ in range(3):
        await api.message(sid, handle, {"request": "list"})
    await asyncio.sleep(0.1)  # the three answers are held
    events = await api.get(f"/janus/{sid}?maxev=10")
    assert isinstance(events, list) and [result(e) for e in events] == [{"list": ["alice"]}] * 3
    assert await api.get(f"/janus/{sid}?maxev=10") == [{"janus": "keepalive"}]
    for maxev in ("0", "-3", "x"):  # Janus's atoi: below 1 is 1
        assert await api.get(f"/janus/{sid}?maxev={maxev}") == {"janus": "keepalive"}


async def test_a_waiting_long_poll_gets_the_event_when_it_comes(start: Start) -> None:
    api = await start(long_poll_wait=10)
    alice, alice_handle = await api.user("alice")
    bob, _ = await api.user("bob")
    waiting = asyncio.create_task(api.get(f"/janus/{bob}"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await api.message(alice, alice_handle, {"request": "call", "username": "bob"}, OFFER)
    incoming = await asyncio.wait_for(waiting, 5)
    assert result(incoming) == {"event": "incomingcall", "username": "alice"} and incoming["jsep"]["type"] == "offer"


async def test_long_polls_keep_a_session_alive_and_it_times_out_without_them(start: Start) -> None:
    api = await start(session_timeout=0.6, long_poll_wait=0.3)
    kept, idle = await api.session(), await api.session()
    for _ in range(5):  # 1.5 s of polls: longer than the timeout
        assert await api.get(f"/janus/{kept}") == {"janus": "keepalive"}
    assert kept in api.server.sessions.sessions and idle not in api.server.sessions.sessions
    answer = await api.call("GET", f"/janus/{idle}")
    assert answer.status == 404 and error_of(answer) == (458, f"No such session {idle}")
    reply = await api.post(f"/janus/{idle}", {"janus": "keepalive", "transaction": "k"})
    assert reply["error"]["code"] == 458


async def test_a_get_on_a_handle_path_is_redirected_to_its_session(start: Start) -> None:
    api = await start()
    sid, handle = await api.user("alice")
    answer = await api.call("GET", f"/janus/{sid}/{handle}")
    assert answer.status == 302 and ("Location", f"/janus/{sid}") in answer.headers


async def test_destroy_ends_a_waiting_long_poll(start: Start) -> None:
    api = await start(long_poll_wait=10)
    sid = await api.session()
    waiting = asyncio.create_task(api.call("GET", f"/janus/{sid}"))
    await asyncio.sleep(0.2)
    assert await api.post(f"/janus/{sid}", {"janus": "destroy", "transaction": "d"}) == {
        "janus": "success", "session_id": sid, "transaction": "d"}
    answer = await asyncio.wait_for(waiting, 5)
    assert answer.status == 404 and error_of(answer)[0] == 458


HOSTILE: list[tuple[str, str, bytes, int, int, str]] = [
    ("POST", "/janus", b"", 200, 454, "Request payload missing"),
    ("POST", "/janus", b"   ", 200, 454, "Request payload missing"),
    ("PUT", "/janus", b'{"janus": "create", "transaction": "x"}', 200, 450, "Unsupported method PUT"),
    ("DELETE", "/janus/1", b"", 200, 450, "Unsupported method DELETE"),
    ("POST", "/janus/1/2/3", b"{}", 404, 457, "Too many path components (at most /janus/<session>/<handle>)"),
    ("GET", "/janus/1/2/3/4", b"", 404, 457, "Too many path components (at most /janus/<session>/<handle>)"),
    ("POST", "/janus/abc", b"{}", 404, 457, "Invalid session in the path: 'abc'"),
    ("POST", "/janus/0", b"{}", 404, 457, "Invalid session in the path: '0'"),
    ("POST", "/janus/1/-2", b"{}", 404, 457, "Invalid handle in the path: '-2'"),
    ("GET", "/janus/99999999999999999999", b"", 404, 457, "Invalid session in the path: '99999999999999999999'"),
    ("GET", "/janus", b"", 404, 457, "A long poll needs a session: GET /janus/<session>"),
    ("POST", "/janus", b"{not json", 200, 454, ""),
    ("POST", "/janus", b'{"janus": "ping", "transaction": "x", "n": NaN}', 200, 454, ""),
    ("POST", "/janus", b"[" * 5000, 200, 454, ""),
    ("POST", "/janus", b"[1, 2]", 200, 455, "JSON error: not an object"),
    ("POST", "/janus", b"\xff\xfe", 200, 454, ""),
    ("POST", "/janus", b'{"janus": "ping", "transaction": "' + b"x" * 300_000 + b'"}', 200, 450, ""),
    ("POST", "/janus/5", b'{"janus": "keepalive", "transaction": "x", "session_id": 6}', 200, 457,
     "Conflicting session ID (payload and path)"),
    ("POST", "/janus/5/7", b'{"janus": "detach", "transaction": "x", "handle_id": 8}', 200, 457,
     "Conflicting handle ID (payload and path)"),
    ("POST", "/janus/5", b'{"janus": "keepalive", "transaction": "x"}', 200, 458, "No such session 5"),
]


@pytest.mark.parametrize(("method", "target", "body", "status", "code", "reason"), HOSTILE,
                         ids=[f"{m} {t[:20]} {b[:16]!r}" for m, t, b, *_ in HOSTILE])
async def test_hostile_requests_get_a_janus_error(start: Start, method: str, target: str, body: bytes, status: int,
                                                 code: int, reason: str) -> None:
    api = await start()
    answer = await api.call(method, target, body)
    assert answer.status == status and answer.content_type == "application/json", answer
    got_code, got_reason = error_of(answer)
    assert got_code == code and (not reason or got_reason == reason), (got_code, got_reason)
    assert ("Access-Control-Allow-Origin", "*") in answer.headers
    assert (await api.post("/janus", {"janus": "ping", "transaction": "p"}))["janus"] == "pong"  # still serving


async def test_cors_preflight_as_janus(start: Start) -> None:
    api = await start()
    answer = await api.call("OPTIONS", "/janus/123", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert (answer.status, answer.body) == (200, b"")
    assert set(answer.headers) == {("Access-Control-Allow-Origin", "*"), ("Access-Control-Max-Age", "86400"),
                                   ("Access-Control-Allow-Methods", "POST"),
                                   ("Access-Control-Allow-Headers", "content-type")}


async def test_with_allowed_origins_only_those_pages_may_use_it(start: Start) -> None:
    api = await start(allowed_origins=["https://app.example"])
    ok = await api.call("POST", "/janus", {"janus": "ping", "transaction": "p"}, {"Origin": "https://app.example"})
    assert ok.status == 200 and ("Access-Control-Allow-Origin", "https://app.example") in ok.headers
    assert ("Vary", "Origin") in ok.headers
    refused = await api.call("POST", "/janus", {"janus": "create", "transaction": "c"}, {"Origin": "https://evil.example"})
    assert refused.status == 403 and error_of(refused)[0] == 403
    assert not any(name == "Access-Control-Allow-Origin" for name, _ in refused.headers)
    assert not api.server.sessions.sessions  # nothing was created
    script = await api.call("POST", "/janus", {"janus": "ping", "transaction": "p"})  # no Origin: not a page
    assert script.status == 200


async def test_api_secret_guards_posts_and_long_polls(start: Start) -> None:
    api = await start(api_secret=SecretStr("s3cret"))
    refused = await api.post("/janus", {"janus": "create", "transaction": "c"})
    assert refused["error"]["code"] == 403
    created = await api.post("/janus", {"janus": "create", "transaction": "c", "apisecret": "s3cret"})
    sid = created["data"]["id"]
    answer = await api.call("GET", f"/janus/{sid}")
    assert answer.status == 403 and error_of(answer)[0] == 403
    assert await api.get(f"/janus/{sid}?apisecret=s3cret") == {"janus": "keepalive"}


async def test_a_session_made_over_http_is_claimed_over_websocket_and_back(start: Start) -> None:
    api = await start(long_poll_wait=0.3)
    alice, alice_handle = await api.user("alice")
    bob, bob_handle = await api.user("bob")
    await api.message(bob, bob_handle, {"request": "call", "username": "alice"}, OFFER)  # held for alice
    await asyncio.sleep(0.1)
    ws = await JanusConnection.connect(f"ws://127.0.0.1:{api.server.port}/")
    try:
        tx = new_transaction()
        assert await ws.request({"janus": "claim", "session_id": alice, "transaction": tx}) == {
            "janus": "success", "session_id": alice, "transaction": tx}
        incoming = await ws.wait_for(lambda m: m.get("janus") == "event", what="the held incomingcall")
        assert result(incoming) == {"event": "incomingcall", "username": "bob"}
        # HTTP no longer holds it: 458 there, as for any session of another connection.
        assert (await api.call("GET", f"/janus/{alice}")).status == 404
        # ...until HTTP claims it back; then its events are held for GETs again.
        assert await api.post(f"/janus/{alice}", {"janus": "claim", "transaction": "c"}) == {
            "janus": "success", "session_id": alice, "transaction": "c"}
        await api.message(bob, bob_handle, {"request": "hangup"})
        hangup = await api.get(f"/janus/{alice}")
        assert result(hangup)["event"] == "hangup"
        tx = new_transaction()
        reply = await ws.request({"janus": "keepalive", "session_id": alice, "transaction": tx})
        assert reply["error"]["code"] == 458
    finally:
        await ws.close()
    assert alice_handle in api.server.sessions.sessions[alice].handles
