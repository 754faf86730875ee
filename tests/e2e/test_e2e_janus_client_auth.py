"""PyPI ``janus-client`` 0.9.0 with ``api_secret`` and ``token`` (its WebSocket transport adds
``apisecret`` and ``token`` to every message it sends), unmodified, against an in-process node.

Good credentials create, attach and register; without them ``create`` fails with Janus's 403,
a token without the plugin fails ``attach`` with 405, a token naming alice cannot register bob.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from shared.settings import Settings
from signaling.auth import sign
from signaling.server import SignalingServer

janus_client = pytest.importorskip("janus_client")
logging.getLogger().setLevel(logging.WARNING)
from janus_client import JanusSession, JanusVideoCallPlugin  # noqa: E402 - after importorskip
from janus_client.plugin_video_call import VideoCallError  # noqa: E402
from janus_client.session import PluginAttachFail  # noqa: E402

pytestmark = pytest.mark.timeout(30)

SECRET = "client-signing-key"
UNAUTHORIZED = {"code": 403, "reason": "Unauthorized request (wrong or missing secret/token)"}
NO_PLUGIN = {"code": 405, "reason": "Provided token can't access plugin 'janus.plugin.videocall'"}


def token(*plugins: str, user: str | None = None, ttl: int = 600) -> str:
    return sign(SECRET, int(time.time()) + ttl, plugins, username=user)


@pytest.fixture
async def node() -> AsyncIterator[Callable[..., Any]]:
    servers: list[SignalingServer] = []
    sessions: list[JanusSession] = []

    async def start(**settings: Any) -> Callable[..., JanusSession]:
        server = SignalingServer(Settings(port=0, **settings))
        await server.start()
        servers.append(server)

        def session(**credentials: str) -> JanusSession:
            made = JanusSession(base_url=f"ws://127.0.0.1:{server.port}/", **credentials)
            sessions.append(made)
            return made

        return session

    yield start
    for made in sessions:
        try:
            if made.created:
                await made.destroy()
        finally:
            await made.transport.disconnect()
    for server in servers:
        await server.close()


async def test_api_secret(node: Callable[..., Any]) -> None:
    session = await node(api_secret="client-s3cret")
    good = session(api_secret="client-s3cret")
    plugin = JanusVideoCallPlugin()
    await plugin.attach(good)
    assert await plugin.register("anyone")
    for refused in (session(), session(api_secret="nope")):
        with pytest.raises(Exception, match="Create session fail") as caught:
            await refused.create()
        assert str(UNAUTHORIZED) in str(caught.value)


async def test_signed_tokens(node: Callable[..., Any]) -> None:
    session = await node(token_auth=True, token_auth_secret=SECRET)
    alice = JanusVideoCallPlugin()
    await alice.attach(session(token=token("janus.plugin.videocall", user="alice")))
    with pytest.raises(VideoCallError) as refused:
        await alice.register("bob")
    assert (refused.value.error_code, refused.value.error_message) == (474, "Username 'bob' is not the one your token names")
    assert await alice.register("alice")

    with pytest.raises(PluginAttachFail) as no_plugin:
        await JanusVideoCallPlugin().attach(session(token=token("janus.plugin.echotest")))
    assert str(NO_PLUGIN) in str(no_plugin.value)

    for bad in (token("janus.plugin.videocall", ttl=-1), "nonsense"):
        with pytest.raises(Exception, match="Create session fail") as caught:
            await session(token=bad).create()
        assert str(UNAUTHORIZED) in str(caught.value)


async def test_stored_tokens(node: Callable[..., Any], tmp_path: Any) -> None:
    from signaling.tokens import TokenStore

    store = tmp_path / "tokens.json"
    TokenStore(store).add("stored-1")
    session = await node(token_auth=True, token_store=str(store))
    plugin = JanusVideoCallPlugin()
    await plugin.attach(session(token="stored-1"))
    assert await plugin.register("stored-user")
    with pytest.raises(Exception, match="Create session fail"):
        await session(token="stored-2").create()
