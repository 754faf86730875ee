"""Janus's auth through the WebSocket adapter: real connections to an in-process server.

Refusals come before any session lookup (403, never 458), ``attach`` with a token that does
not allow the plugin gets 405, a token naming "alice" cannot register "bob", and stored
tokens added to the ``token_store`` file apply to the next request without a restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from shared.settings import Settings
from signaling.auth import sign
from signaling.server import SignalingServer
from signaling.tokens import TokenStore

SECRET = "signing-key"
VIDEOCALL = "janus.plugin.videocall"
UNAUTHORIZED = {"code": 403, "reason": "Unauthorized request (wrong or missing secret/token)"}
NO_PLUGIN = {"code": 405, "reason": "Provided token can't access plugin 'janus.plugin.videocall'"}


def token(*plugins: str, user: str | None = None, ttl: int = 600) -> str:
    return sign(SECRET, int(time.time()) + ttl, plugins, username=user)


class Client:
    def __init__(self, ws: websockets.ClientConnection, **credentials: str) -> None:
        self.ws = ws
        self.credentials = credentials
        self.n = 0

    async def recv(self) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), 3))

    async def request(self, msg: dict[str, Any], **credentials: str) -> dict[str, Any]:
        self.n += 1
        await self.ws.send(json.dumps({"transaction": f"t{self.n}", **self.credentials, **credentials, **msg}))
        return await self.recv()

    async def session(self) -> int:
        reply = await self.request({"janus": "create"})
        assert reply["janus"] == "success", reply
        return int(reply["data"]["id"])

    async def handle(self, session_id: int, **credentials: str) -> int:
        reply = await self.request({"janus": "attach", "session_id": session_id, "plugin": VIDEOCALL}, **credentials)
        assert reply["janus"] == "success", reply
        return int(reply["data"]["id"])

    async def register(self, session_id: int, handle: int, name: str, **credentials: str) -> dict[str, Any]:
        """The plugin event answering ``register`` (its ack is skipped)."""
        self.n += 1
        await self.ws.send(json.dumps({
            "janus": "message", "transaction": f"t{self.n}", "session_id": session_id, "handle_id": handle,
            "body": {"request": "register", "username": name}, **self.credentials, **credentials,
        }))
        replies = [await self.recv(), await self.recv()]
        assert sorted(r["janus"] for r in replies) == ["ack", "event"], replies
        event = next(r for r in replies if r["janus"] == "event")
        return dict(event["plugindata"]["data"])


Connect = Callable[..., Awaitable[Client]]


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Connect]]]:
    servers: list[SignalingServer] = []
    sockets: list[websockets.ClientConnection] = []

    async def make_server(**settings: Any) -> Connect:
        server = SignalingServer(Settings(port=0, **settings))
        await server.start()
        servers.append(server)

        async def connect(**credentials: str) -> Client:
            ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["janus-protocol"])  # type: ignore[list-item]
            sockets.append(ws)
            return Client(ws, **credentials)

        return connect

    yield make_server
    for ws in sockets:
        await ws.close()
    for server in servers:
        await server.close()


async def test_api_secret_refuses_before_any_session_lookup(start: Callable[..., Awaitable[Connect]]) -> None:
    connect = await start(api_secret="s3cret")
    anon = await connect()
    info = await anon.request({"janus": "info"})
    assert (info["janus"], info["api_secret"], info["auth_token"]) == ("server_info", True, False)
    assert (await anon.request({"janus": "ping"}))["janus"] == "pong"
    assert await anon.request({"janus": "create"}) == {"janus": "error", "transaction": "t3", "error": UNAUTHORIZED}
    # An unknown session: 403, not 458 "No such session".
    refused = await anon.request({"janus": "keepalive", "session_id": 987654})
    assert refused == {"janus": "error", "session_id": 987654, "transaction": "t4", "error": UNAUTHORIZED}

    trusted = await connect(apisecret="s3cret")
    session = await trusted.session()
    assert (await trusted.request({"janus": "keepalive", "session_id": 987654}))["error"]["code"] == 458
    # Someone else's session id without the secret learns nothing about it.
    assert (await anon.request({"janus": "keepalive", "session_id": session}))["error"] == UNAUTHORIZED
    handle = await trusted.handle(session)
    assert (await trusted.register(session, handle, "anyone"))["result"] == {"event": "registered", "username": "anyone"}
    wrong = await trusted.request({"janus": "keepalive", "session_id": session}, apisecret="s3cre")
    assert wrong["error"] == UNAUTHORIZED


async def test_signed_tokens_attach_and_the_named_user(start: Callable[..., Awaitable[Connect]]) -> None:
    connect = await start(token_auth=True, token_auth_secret=SECRET)
    info = await (await connect()).request({"janus": "info"})
    assert (info["api_secret"], info["auth_token"]) == (False, True)
    for bad in (token(VIDEOCALL, ttl=-5), sign("other", int(time.time()) + 60, [VIDEOCALL]), "nonsense"):
        assert (await (await connect(token=bad)).request({"janus": "create"}))["error"] == UNAUTHORIZED

    # A token without the plugin can create a session but not attach to VideoCall.
    echo_only = await connect(token=token("janus.plugin.echotest"))
    session = await echo_only.session()
    refused = await echo_only.request({"janus": "attach", "session_id": session, "plugin": VIDEOCALL})
    assert refused == {"janus": "error", "session_id": session, "transaction": "t2", "error": NO_PLUGIN}

    alice = await connect(token=token(VIDEOCALL, user="alice"))
    session = await alice.session()
    handle = await alice.handle(session)
    assert await alice.register(session, handle, "bob") == {
        "videocall": "event", "error_code": 474, "error": "Username 'bob' is not the one your token names",
    }
    assert (await alice.register(session, handle, "alice"))["result"] == {"event": "registered", "username": "alice"}

    # A token naming nobody registers anyone.
    anyone = await connect(token=token(VIDEOCALL))
    session = await anyone.session()
    handle = await anyone.handle(session)
    assert (await anyone.register(session, handle, "bob"))["result"]["username"] == "bob"


async def test_either_credential_suffices_with_both_on(start: Callable[..., Awaitable[Connect]]) -> None:
    connect = await start(api_secret="s3cret", token_auth=True, token_auth_secret=SECRET)
    by_secret, by_token = await connect(apisecret="s3cret"), await connect(token=token(VIDEOCALL))
    for client in (by_secret, by_token):
        await client.handle(await client.session())
    assert (await (await connect(apisecret="no", token="no")).request({"janus": "create"}))["error"] == UNAUTHORIZED
    # The secret lets a request in, but a token it carries must still allow the plugin.
    session = await by_secret.session()
    refused = await by_secret.request({"janus": "attach", "session_id": session, "plugin": VIDEOCALL}, token="bad")
    assert refused["error"] == NO_PLUGIN


async def test_stored_tokens_apply_from_the_next_request(start: Callable[..., Awaitable[Connect]], tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    connect = await start(token_auth=True, token_store=str(path))
    client = await connect(token="t-1")
    assert (await client.request({"janus": "create"}))["error"] == UNAUTHORIZED
    TokenStore(path).add("t-1")
    session = await client.session()
    await client.handle(session)
    TokenStore(path).add("t-bare", ["janus.plugin.echotest"])  # unknown plugin skipped: none allowed
    bare = await connect(token="t-bare")
    refused = await bare.request({"janus": "attach", "session_id": await bare.session(), "plugin": VIDEOCALL})
    assert refused["error"] == NO_PLUGIN
    assert TokenStore(path).remove("t-1")
    assert (await client.request({"janus": "keepalive", "session_id": session}))["error"] == UNAUTHORIZED
