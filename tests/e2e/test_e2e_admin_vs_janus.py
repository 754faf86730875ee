"""Our Admin API next to the real Janus 1.1.2's (``shared/janus/run-janus-full.sh``, admin secret
and stored tokens on): the same requests, the same answers, ids and transactions aside.

Runs only with ``VIDEOCALL_TEST_JANUS=1``. Where we answer differently on purpose (``get_status``
and ``handle_info`` show only what is true of us) the test says what differs.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets

from shared.settings import Settings
from signaling.server import SignalingServer
from tests.e2e.conftest import JANUS_DIR, ServerProcess, require_janus
from tests.support.janus_admin import AdminClient

pytestmark = pytest.mark.timeout(60)

SECRET = "compare-admin-secret"
#: handle_info keys Janus has and we do not: its ICE loop, the handle's token, SDPs it keeps,
#: its packet queue. Our flags are a subset of its flags.
JANUS_ONLY_INFO = {"loop-running", "token", "sdps", "queued-packets"}


def free_block(size: int = 4) -> int:
    """A port whose next ``size - 1`` ports are free too (run-janus-full.sh takes BASE..BASE+3)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        try:
            for port in range(base, base + size):
                with socket.socket() as taken:
                    taken.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no block of free ports")


@pytest.fixture(scope="module")
def janus_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    require_janus()
    tmp = tmp_path_factory.mktemp("janus-admin")
    base = free_block()
    env = {"JANUS_ADMIN_SECRET": SECRET, "JANUS_TOKEN_AUTH": "true", "TMPDIR": str(tmp)}
    process = ServerProcess("janus-full", [str(JANUS_DIR / "run-janus-full.sh"), str(base)], host="127.0.0.1",
                            port=base + 3, logdir=tmp, env=env)
    process.start()
    try:
        yield f"ws://127.0.0.1:{base}/", f"ws://127.0.0.1:{base + 3}/"
    finally:
        process.stop()


@pytest.fixture
async def ours() -> AsyncIterator[tuple[str, str]]:
    server = SignalingServer(Settings(port=0, admin_port=0, admin_secret=SECRET, token_auth=True))
    await server.start()
    assert server.admin is not None
    try:
        yield f"ws://127.0.0.1:{server.port}/", f"ws://127.0.0.1:{server.admin.port}/"
    finally:
        await server.close()


async def scenario(api_url: str, admin_url: str) -> dict[str, Any]:
    """The same requests to either server; answers with ids and transactions replaced by names."""
    answers: dict[str, Any] = {}
    async with AdminClient.connect(admin_url, SECRET) as admin, websockets.connect(
            api_url, subprotocols=[websockets.Subprotocol("janus-protocol")]) as ws:
        async def api(message: dict[str, Any]) -> dict[str, Any]:
            await ws.send(json.dumps({**message, "token": "tk1"}))
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("transaction") == message["transaction"] and reply["janus"] != "ack":
                    return dict(reply)

        async def ask(name: str, verb: str, **fields: Any) -> None:
            answers[name] = await admin.request(verb, **fields)

        await ask("add_token", "add_token", token="tk1", plugins=["janus.plugin.videocall", "janus.plugin.nope"])
        session = (await api({"janus": "create", "transaction": "c"}))["data"]["id"]
        handle = (await api({"janus": "attach", "transaction": "a", "session_id": session,
                             "plugin": "janus.plugin.videocall"}))["data"]["id"]
        await api({"janus": "message", "transaction": "r", "session_id": session, "handle_id": handle,
                   "body": {"request": "register", "username": "compare-alice"}})
        await ask("wrong_secret", "list_sessions", admin_secret="nope")
        await ask("ping", "ping", admin_secret="nope")
        await ask("list_sessions", "list_sessions")
        await ask("list_handles", "list_handles", session_id=session)
        await ask("handle_info", "handle_info", session_id=session, handle_id=handle)
        await ask("no_session", "list_handles", session_id=12345)
        await ask("no_handle", "handle_info", session_id=session, handle_id=999)
        await ask("handle_without_session", "handle_info", handle_id=handle)
        await ask("bad_timeout", "set_session_timeout", timeout=-2)
        await ask("set_timeout", "set_session_timeout", timeout=90)
        await ask("bad_session_timeout", "set_session_timeout", session_id=session, timeout=-2)
        await ask("accept_false", "accept_new_sessions", accept=False)
        await ask("accept_true", "accept_new_sessions", accept=True)
        await ask("list_tokens", "list_tokens")
        await ask("remove_missing", "remove_token", token="nope")
        await ask("unknown", "frobnicate")
        await ask("unknown_on_session", "frobnicate", session_id=session)
        await ask("detach_handle", "detach_handle", session_id=session, handle_id=handle)
        while (detached := json.loads(await ws.recv()))["janus"] != "detached":
            pass
        answers["client_detached"] = detached
        await ask("destroy_session", "destroy_session", session_id=session)
        await ask("remove_token", "remove_token", token="tk1")
    named = renamed(answers, {session: "SESSION", handle: "HANDLE"})
    for answer in named.values():
        answer.pop("transaction", None)
    return dict(named)


def renamed(value: Any, names: dict[int, str]) -> Any:
    """``value`` with each id in ``names`` replaced by its name, wherever it appears whole."""
    if isinstance(value, dict):
        return {key: renamed(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [renamed(item, names) for item in value]
    if type(value) is int and value in names:
        return names[value]
    if isinstance(value, str):
        for number, name in names.items():
            value = value.replace(str(number), name)
    return value


async def test_admin_answers_match_janus(janus_admin: tuple[str, str], ours: tuple[str, str]) -> None:
    theirs, mine = await scenario(*janus_admin), await scenario(*ours)
    janus_info, our_info = theirs.pop("handle_info")["info"], mine.pop("handle_info")["info"]
    assert set(janus_info) - set(our_info) == JANUS_ONLY_INFO
    assert set(our_info["flags"]) < set(janus_info["flags"])
    for key in ("session_id", "handle_id", "session_timeout", "session_transport", "plugin", "plugin_specific"):
        assert our_info[key] == janus_info[key], key
    assert mine == theirs
