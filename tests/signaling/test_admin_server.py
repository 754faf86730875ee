"""The Admin API of a real in-process node, over real WebSockets (``janus-admin-protocol``), and
its HTTP adapter fed ``HttpRequest`` objects: every verb, the secret, what affected clients see.

No relay worker runs here (no call is placed): ``tests/e2e/test_e2e_admin.py`` has live calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from shared.settings import Settings
from signaling.admin_server import SECRET_GUESS_BURST
from signaling.http_types import HttpRequest
from signaling.server import SignalingServer

SECRET = "admin-secret-for-tests"
VIDEOCALL = "janus.plugin.videocall"
ADMIN = "janus-admin-protocol"
UNAUTHORIZED = {"code": 403, "reason": "Unauthorized request (wrong or missing secret/token)"}


class Socket:
    """One WebSocket client: requests with transactions, and the other messages it got."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.n = 0
        self.events: list[dict[str, Any]] = []

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        tx = f"t{self.n}"
        await self.ws.send(json.dumps({"transaction": tx, **msg}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), 5))
            if reply.get("transaction") == tx and (reply.get("janus") != "ack" or msg["janus"] != "message"):
                return dict(reply)
            self.events.append(reply)

    async def event(self, janus: str) -> dict[str, Any]:
        for index, message in enumerate(self.events):
            if message.get("janus") == janus:
                return self.events.pop(index)
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 5))
            if message.get("janus") == janus:
                return dict(message)
            self.events.append(message)


class Node:
    def __init__(self, server: SignalingServer) -> None:
        self.server = server
        self.sockets: list[ClientConnection] = []

    async def connect(self, *, admin: bool = False) -> Socket:
        port, protocol = (self.server.admin.port, "janus-admin-protocol") if admin and self.server.admin else \
            (self.server.port, "janus-protocol")
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/", subprotocols=[websockets.Subprotocol(protocol)])
        self.sockets.append(ws)
        return Socket(ws)

    async def admin(self, verb: str, **fields: Any) -> dict[str, Any]:
        socket = await self.connect(admin=True)
        return await socket.request({"janus": verb, "admin_secret": SECRET, **fields})

    async def user(self, name: str | None = None) -> tuple[Socket, int, int]:
        """A client with a session and a VideoCall handle (registered as ``name``)."""
        client = await self.connect()
        session = (await client.request({"janus": "create"}))["data"]["id"]
        handle = (await client.request({"janus": "attach", "session_id": session, "plugin": VIDEOCALL}))["data"]["id"]
        if name is not None:
            reply = await client.request({"janus": "message", "session_id": session, "handle_id": handle,
                                          "body": {"request": "register", "username": name}})
            assert reply["plugindata"]["data"]["result"]["event"] == "registered", reply
        return client, session, handle


@contextlib.asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[Node]:
    server = SignalingServer(Settings(port=0, admin_port=0, admin_secret=SECRET, session_timeout=60, **settings))
    await server.start()
    made = Node(server)
    try:
        yield made
    finally:
        for ws in made.sockets:
            await ws.close()
        await server.close()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with running() as made:
        yield made


def test_no_admin_port_without_a_secret() -> None:
    assert SignalingServer(Settings(port=0)).admin is None


async def test_the_admin_socket_speaks_janus_admin_protocol(node: Node) -> None:
    socket = await node.connect(admin=True)
    assert socket.ws.subprotocol == "janus-admin-protocol"


async def test_info_and_ping_need_no_secret(node: Node) -> None:
    socket = await node.connect(admin=True)
    info = await socket.request({"janus": "info"})
    assert info["janus"] == "server_info" and VIDEOCALL in info["plugins"]
    assert (await socket.request({"janus": "ping"}))["janus"] == "pong"


@pytest.mark.parametrize("secret", [None, "wrong", SECRET.upper()])
async def test_a_wrong_or_missing_secret_is_refused_with_403(node: Node, secret: str | None) -> None:
    _, session, handle = await node.user()
    socket = await node.connect(admin=True)
    for request in ({"janus": "list_sessions"}, {"janus": "list_handles", "session_id": session},
                    {"janus": "handle_info", "session_id": session, "handle_id": handle},
                    {"janus": "destroy_session", "session_id": session}):
        if secret is not None:
            request["admin_secret"] = secret
        reply = await socket.request(request)
        assert reply["janus"] == "error" and reply["error"] == UNAUTHORIZED, reply
    assert session in (await node.admin("list_sessions"))["sessions"]  # nothing was destroyed


async def test_list_sessions_list_handles_and_handle_info_of_an_idle_user(node: Node) -> None:
    _, session, handle = await node.user("alice")
    sessions = await node.admin("list_sessions")
    assert sessions["janus"] == "success" and session in sessions["sessions"]
    handles = await node.admin("list_handles", session_id=session)
    assert (handles["session_id"], handles["handles"]) == (session, [handle])
    info = await node.admin("handle_info", session_id=session, handle_id=handle)
    assert (info["session_id"], info["handle_id"]) == (session, handle)
    details = info["info"]
    assert details["plugin"] == VIDEOCALL and details["session_timeout"] == 60
    assert details["created"] <= details["current_time"] and details["session_last_activity"] <= details["current_time"]
    assert details["plugin_specific"] == {"state": "idle", "username": "alice", "incall": 0, "hangingup": 0,
                                          "destroyed": 0}
    assert details["flags"] == {"negotiated": False, "ready": False, "has-audio": False, "has-video": False}
    assert "webrtc" not in details
    only = await node.admin("handle_info", session_id=session, handle_id=handle, plugin_only=True)
    assert "flags" not in only["info"] and only["info"]["plugin_specific"]["username"] == "alice"
    missing = await node.admin("handle_info", session_id=session, handle_id=handle + 1)
    assert missing["error"] == {"code": 459, "reason": f"No such handle {handle + 1} in session {session}"}


async def test_get_status_and_set_session_timeout(node: Node) -> None:
    status = await node.admin("get_status")
    assert status["status"]["session_timeout"] == 60 and status["status"]["token_auth"] is False
    assert (await node.admin("set_session_timeout", timeout=120))["timeout"] == 120
    assert (await node.admin("get_status"))["status"]["session_timeout"] == 120
    socket = await node.connect()
    assert (await socket.request({"janus": "info"}))["session-timeout"] == 120
    bad = await node.admin("set_session_timeout", timeout=-5)
    assert bad["error"]["code"] == 467


async def test_a_session_of_its_own_timeout_expires_and_its_client_is_told(node: Node) -> None:
    client, session, _ = await node.user()
    reply = await node.admin("set_session_timeout", session_id=session, timeout=1)
    assert (reply["janus"], reply["session_id"], reply["timeout"]) == ("success", session, 1)
    assert (await client.event("timeout"))["session_id"] == session
    assert session not in (await node.admin("list_sessions"))["sessions"]


async def test_accept_new_sessions_false_refuses_create_with_472(node: Node) -> None:
    assert (await node.admin("accept_new_sessions", accept=False))["accept"] is False
    client = await node.connect()
    refused = await client.request({"janus": "create"})
    assert refused["error"] == {"code": 472, "reason": "Currently not accepting new sessions"}
    assert (await client.request({"janus": "info"}))["accepting-new-sessions"] is False
    assert (await node.admin("get_status"))["status"]["accepting_new_sessions"] is False
    await node.admin("accept_new_sessions", accept=True)
    assert (await client.request({"janus": "create"}))["janus"] == "success"


async def test_destroy_session_tells_its_client_detached_and_forgets_it(node: Node) -> None:
    client, session, handle = await node.user("bob")
    assert (await node.admin("destroy_session", session_id=session)) == {
        "janus": "success", "session_id": session, "transaction": "t1"}
    detached = await client.event("detached")
    assert (detached["session_id"], detached["sender"]) == (session, handle)
    gone = await client.request({"janus": "keepalive", "session_id": session})
    assert gone["error"]["code"] == 458
    assert session not in (await node.admin("list_sessions"))["sessions"]
    _, other, _ = await node.user("bob")  # the name was released
    assert other != session


async def test_detach_handle_tells_its_client_and_keeps_the_session(node: Node) -> None:
    client, session, handle = await node.user("carol")
    assert (await node.admin("detach_handle", session_id=session, handle_id=handle))["janus"] == "success"
    assert (await client.event("detached"))["sender"] == handle
    assert (await node.admin("list_handles", session_id=session))["handles"] == []
    assert (await client.request({"janus": "keepalive", "session_id": session}))["janus"] == "ack"


async def test_hangup_webrtc_without_a_call_changes_nothing(node: Node) -> None:
    _, session, handle = await node.user("dave")
    assert (await node.admin("hangup_webrtc", session_id=session, handle_id=handle))["janus"] == "success"
    assert (await node.admin("list_handles", session_id=session))["handles"] == [handle]


async def test_token_verbs_over_the_stored_tokens() -> None:
    async with running(token_auth=True) as node:
        await token_verbs(node)


async def token_verbs(node: Node) -> None:
    added = await node.admin("add_token", token="tok-1", plugins=[VIDEOCALL, "janus.plugin.echotest"])
    assert added["data"] == {"plugins": [VIDEOCALL]}
    listed = await node.admin("list_tokens")
    assert listed["data"] == {"tokens": [{"token": "tok-1", "allowed_plugins": [VIDEOCALL]}]}
    client = await node.connect()
    created = await client.request({"janus": "create", "token": "tok-1"})
    assert created["janus"] == "success"  # the token lets its holder in at once
    assert (await node.admin("remove_token", token="tok-1")) == {"janus": "success", "transaction": "t1"}
    assert (await node.admin("remove_token", token="tok-1"))["error"] == {"code": 490, "reason": "Error removing token"}
    assert (await client.request({"janus": "create", "token": "tok-1"}))["error"] == UNAUTHORIZED


async def test_token_verbs_without_stored_tokens_are_refused(node: Node) -> None:
    for verb in ("add_token", "list_tokens", "remove_token"):
        reply = await node.admin(verb, token="x")
        assert reply["error"] == {"code": 490, "reason": "Stored-Token based authentication disabled"}


async def test_bad_frames_get_janus_errors_and_the_socket_goes_on(node: Node) -> None:
    socket = await node.connect(admin=True)
    await socket.ws.send("{nope")
    assert json.loads(await socket.ws.recv())["error"]["code"] == 454
    await socket.ws.send(json.dumps({"janus": "list_sessions"}))
    assert json.loads(await socket.ws.recv())["error"]["code"] == 456
    assert (await socket.request({"janus": "set_log_level", "level": 7, "admin_secret": SECRET}))["error"] == {
        "code": 457, "reason": "Unhandled request 'set_log_level' at this path"}


# --- HTTP, as admin.html speaks it -----------------------------------------------------------------


async def http(node: Node, method: str, target: str, body: Any = None, **headers: str) -> tuple[int, dict[str, str], Any]:
    assert node.server.admin is not None
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    response = await node.server.admin.http(HttpRequest.from_target(method, target, headers, data))
    assert response is not None
    return response.status, dict(response.headers), json.loads(response.body) if response.body else None


async def test_http_paths_fill_the_ids_as_janus_http_does(node: Node) -> None:
    _, session, handle = await node.user("erin")
    status, headers, info = await http(node, "GET", "/admin/info")
    assert (status, info["janus"], headers["Access-Control-Allow-Origin"]) == (200, "server_info", "*")
    _, _, listed = await http(node, "POST", "/admin", {"janus": "list_sessions", "transaction": "a", "admin_secret": SECRET})
    assert session in listed["sessions"]
    _, _, handles = await http(node, "POST", f"/admin/{session}", {"janus": "list_handles", "transaction": "b",
                                                                    "admin_secret": SECRET})
    assert handles["handles"] == [handle]
    _, _, info = await http(node, "POST", f"/admin/{session}/{handle}", {"janus": "handle_info", "transaction": "c",
                                                                         "admin_secret": SECRET})
    assert info["info"]["plugin_specific"]["username"] == "erin"
    _, _, refused = await http(node, "POST", f"/admin/{session}", {"janus": "list_handles", "transaction": "d"})
    assert refused["error"] == UNAUTHORIZED


async def test_http_refusals(node: Node) -> None:
    _, session, _ = await node.user()
    assert (await http(node, "GET", "/admin"))[2]["error"] == {"code": 454, "reason": "Request payload missing"}
    assert (await http(node, "POST", "/admin/info", {}))[2]["error"] == {
        "code": 450, "reason": "Use GET for the info endpoint"}
    assert (await http(node, "PUT", "/admin", {}))[2]["error"] == {"code": 450, "reason": "Unsupported method PUT"}
    assert (await http(node, "POST", "/admin/1/2/3", {}))[2]["error"]["code"] == 457
    assert (await http(node, "POST", "/admin/abc", {}))[2]["error"]["code"] == 457
    conflict = await http(node, "POST", f"/admin/{session}", {"janus": "list_handles", "transaction": "x",
                                                               "session_id": session + 1, "admin_secret": SECRET})
    assert conflict[2]["error"] == {"code": 457, "reason": "Conflicting session ID (payload and path)"}
    assert (await http(node, "POST", "/admin", b"{bad"))[2]["error"]["code"] == 454
    status, headers, body = await http(node, "OPTIONS", "/admin", None, **{
        "Origin": "http://x", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert (status, body) == (200, None)
    assert headers["Access-Control-Allow-Methods"] == "POST" and headers["Access-Control-Allow-Headers"] == "content-type"
    assert node.server.admin is not None
    assert await node.server.admin.http(HttpRequest.from_target("GET", "/janus")) is None
    assert await node.server.admin.http(HttpRequest.from_target("GET", "/administrator")) is None


def fetch(url: str, method: str = "GET", body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, dict(response.headers), response.read()


async def test_http_on_the_admin_port_over_a_real_socket(node: Node) -> None:
    """The same port answers plain HTTP (admin.html's transport) and WebSocket upgrades."""
    _, session, _ = await node.user("frank")
    assert node.server.admin is not None
    base = f"http://127.0.0.1:{node.server.admin.port}/admin"
    status, headers, body = await asyncio.to_thread(fetch, base + "/info")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["janus"] == "server_info" and headers["Access-Control-Allow-Origin"] == "*"
    request = {"janus": "list_sessions", "transaction": "h1", "admin_secret": SECRET}
    _, _, body = await asyncio.to_thread(fetch, base, "POST", request, {"Content-Type": "application/json"})
    assert session in json.loads(body)["sessions"]
    status, headers, body = await asyncio.to_thread(fetch, base, "OPTIONS", None, {
        "Origin": "http://elsewhere", "Access-Control-Request-Method": "POST"})
    assert (status, body, headers["Access-Control-Allow-Methods"]) == (200, b"", "POST")
    assert (await node.admin("ping"))["janus"] == "pong"  # and WebSockets on the same port


async def test_no_secret_reaches_the_log(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    """Neither the admin secret nor a wrong one a client tried is ever logged."""
    caplog.set_level("DEBUG")
    caplog.set_level("INFO", logger="websockets")  # as setup_logging keeps it: its DEBUG dumps frames
    _, session, handle = await node.user("gina")
    socket = await node.connect(admin=True)
    await socket.request({"janus": "list_sessions", "admin_secret": "a-wrong-guess"})
    for verb, extra in (("handle_info", {"handle_id": handle}), ("detach_handle", {"handle_id": handle}),
                        ("destroy_session", {})):
        assert (await node.admin(verb, session_id=session, **extra))["janus"] == "success"
    await node.admin("set_session_timeout", timeout=30)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Admin API: destroying session" in logged
    assert SECRET not in logged and "a-wrong-guess" not in logged


async def test_the_admin_port_speaks_tls_when_the_api_port_does(tmp_path: Path) -> None:
    """With TLS on, the admin port serves https:// and wss:// with the same certificate."""
    names = ["localhost", "127.0.0.1"]
    async with running(tls_self_signed=True, tls_host_names=names, tls_dir=str(tmp_path / "tls")) as node:
        assert node.server.tls is not None and node.server.admin is not None
        context = ssl.create_default_context(cafile=str(node.server.tls.cert))
        url = f"wss://localhost:{node.server.admin.port}/"
        async with websockets.connect(url, ssl=context, subprotocols=[websockets.Subprotocol(ADMIN)]) as ws:
            await ws.send(json.dumps({"janus": "list_sessions", "transaction": "s", "admin_secret": SECRET}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["sessions"] == []
        https = f"https://localhost:{node.server.admin.port}/admin/info"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(https, timeout=5, context=context).read())
        assert json.loads(body)["janus"] == "server_info"


async def test_allowed_origins_bind_the_admin_port_too() -> None:
    """With ``allowed_origins``, a page of another site can neither open the admin WebSocket
    (403) nor read an HTTP answer (no CORS header for it); the listed site can."""
    async with running(allowed_origins="https://ops.example") as node:
        assert node.server.admin is not None
        port = node.server.admin.port
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{port}/", subprotocols=[websockets.Subprotocol(ADMIN)],
                                     origin=websockets.Origin("https://evil.example"))
        assert refused.value.response.status_code == 403
        async with websockets.connect(f"ws://127.0.0.1:{port}/", subprotocols=[websockets.Subprotocol(ADMIN)],
                                      origin=websockets.Origin("https://ops.example")) as ws:
            await ws.send(json.dumps({"janus": "ping", "transaction": "p"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["janus"] == "pong"
        _, evil, _ = await http(node, "GET", "/admin/info", None, Origin="https://evil.example")
        assert "Access-Control-Allow-Origin" not in evil and evil["Vary"] == "Origin"
        _, ops, _ = await http(node, "GET", "/admin/info", None, Origin="https://OPS.example")
        assert ops["Access-Control-Allow-Origin"] == "https://OPS.example"
        assert ops["Access-Control-Allow-Credentials"] == "true"


async def test_an_address_guessing_the_secret_is_stopped_and_others_are_not(node: Node) -> None:
    """After ``SECRET_GUESS_BURST`` wrong secrets an address gets 490 even with the right one
    (so guessing cannot go on at line speed); ``info`` still answers, other addresses too."""
    assert node.server.admin is not None
    admin_server = node.server.admin

    async def ask(peer: str, secret: str, verb: str = "list_sessions") -> dict[str, Any]:
        body = json.dumps({"janus": verb, "transaction": "g", "admin_secret": secret}).encode()
        response = await admin_server.http(HttpRequest.from_target("POST", "/admin", {}, body, peer=peer))
        assert response is not None
        return dict(json.loads(response.body))

    guesser, operator = "198.51.100.9", "203.0.113.4"
    for attempt in range(SECRET_GUESS_BURST):
        assert (await ask(guesser, f"guess-{attempt}"))["error"]["code"] == 403
    limited = {"code": 490, "reason": "Rate limit: too many wrong admin_secret from this address, try again later"}
    assert (await ask(guesser, "guess-again"))["error"] == limited
    assert (await ask(guesser, SECRET))["error"] == limited
    assert (await ask(guesser, "", "info"))["janus"] == "server_info"
    assert (await ask(operator, SECRET))["janus"] == "success"
