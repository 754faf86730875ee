"""The front door under attack while a call goes on: `videocall serve --workers 1` with small
limits, a call between two aiortc peers, and a client that floods connections, creates and
registers, idles and trickles a frame; the call keeps its media and its signalling.

The server trusts 127.0.0.1 as a proxy (``trusted_proxies``), so the attacker names its own
address with X-Forwarded-For and the call's users, connecting directly, are 127.0.0.1: two
clients on one machine, as they would be two machines.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from tests.e2e.conftest import clients_of, start_videocall
from tests.e2e.e2e_support import MEDIA_TIMEOUT, Clients, connect_call
from tests.support.raw_ws import close_frame, frame, open_raw

pytestmark = [pytest.mark.timeout(90), pytest.mark.videocall]

ATTACKER = "198.51.100.66"
CAP = 4
LIMITS = {
    "VIDEOCALL_TRUSTED_PROXIES": "127.0.0.1",
    "VIDEOCALL_MAX_CONNECTIONS_PER_ADDRESS": str(CAP),
    "VIDEOCALL_CREATE_RATE": "2", "VIDEOCALL_CREATE_BURST": "3",
    "VIDEOCALL_REGISTER_RATE": "2", "VIDEOCALL_REGISTER_BURST": "3",
    "VIDEOCALL_IDLE_TIMEOUT": "1.5", "VIDEOCALL_FRAME_TIMEOUT": "1.5",
}


@pytest.fixture(scope="module")
def guarded_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start_videocall(tmp_path_factory.mktemp("videocall-frontdoor"), "videocall-serve-frontdoor", None, LIMITS)


@pytest.fixture
async def calls(guarded_url: str) -> AsyncIterator[Clients]:
    async with clients_of(guarded_url) as clients:
        yield clients


async def _attacker(url: str) -> ClientConnection:
    return await websockets.connect(url, subprotocols=["janus-protocol"],  # type: ignore[list-item]
                                    additional_headers={"X-Forwarded-For": ATTACKER}, open_timeout=5, proxy=None)


async def _request(ws: ClientConnection, msg: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(msg))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if reply.get("transaction") == msg["transaction"] and reply["janus"] != "ack":
            return dict(reply)


async def test_attacks_are_refused_and_a_live_call_keeps_its_media(calls: Clients, tmp_path: Path) -> None:
    url = calls.server.url
    alice, bob = await calls.user("alice"), await calls.user("bob")
    await connect_call(alice, bob)
    assert alice.peer is not None and bob.peer is not None

    # Trickle a frame on one connection, idle on another, flood on the rest, all at once.
    reader, writer = await open_raw("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/")), ATTACKER)
    slow = frame(b'{"janus": "ping", "transaction": "slowloris"}')

    async def trickle() -> None:
        for byte in slow:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.2)

    trickler = asyncio.get_running_loop().create_task(trickle())
    idle = await _attacker(url)
    flood = [await _attacker(url), await _attacker(url)]
    with pytest.raises(InvalidStatus) as refused:
        await _attacker(url)
    assert refused.value.response.status_code == 429

    codes = []
    for n in range(10):
        reply = await _request(flood[0], {"janus": "create", "transaction": f"c{n}"})
        codes.append(reply["error"]["code"] if reply["janus"] == "error" else 0)
    assert codes[:3] == [0, 0, 0] and set(codes[3:]) <= {0, 490} and codes.count(490) >= 5, codes
    sid = (await _request(flood[1], {"janus": "create", "transaction": "s"}))
    if sid["janus"] == "error":  # the shared create bucket may still be empty
        await asyncio.sleep(0.6)
        sid = await _request(flood[1], {"janus": "create", "transaction": "s2"})
    session_id = sid["data"]["id"]
    handle = (await _request(flood[1], {"janus": "attach", "transaction": "a", "session_id": session_id,
                                        "plugin": "janus.plugin.videocall"}))["data"]["id"]
    errors = []
    for n in range(8):
        event = await _request(flood[1], {"janus": "message", "transaction": f"r{n}", "session_id": session_id,
                                          "handle_id": handle, "body": {"request": "register", "username": ""}})
        errors.append(event["plugindata"]["data"]["error_code"])
    assert errors[:3] == [474, 474, 474] and errors.count(499) >= 4, errors

    # The call's media flows meanwhile, and its users still get answers.
    await alice.peer.wait_frames("video", 10, timeout=MEDIA_TIMEOUT)
    await bob.peer.wait_frames("video", 10, timeout=MEDIA_TIMEOUT)
    assert "alice" in " ".join(await bob.list())

    assert await close_frame(reader) == (1008, "frame too slow")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(idle.recv(), 5)
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "idle")
    trickler.cancel()
    writer.close()
    for ws in flood:
        await ws.close()

    # The attacker's slots come back once its connections are gone.
    for _ in range(100):
        try:
            again = await _attacker(url)
            break
        except InvalidStatus:
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the attacker's address never got a connection back")
    await again.close()

    await alice.peer.wait_frames("video", 10, timeout=MEDIA_TIMEOUT)
    await bob.peer.wait_frames("audio", 10, timeout=MEDIA_TIMEOUT)
