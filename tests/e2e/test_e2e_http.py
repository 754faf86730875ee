"""The Janus HTTP transport over real HTTP on the API port of ``videocall serve``.

A client written for Janus's HTTP transport, the PyPI ``janus-client`` (its HTTP transport,
unmodified), runs the whole VideoCall flow with media; raw requests (aiohttp) check the long
poll (``maxev`` 1 and 10, the keepalive after ``long_poll_wait``), the session timeout when no
GET comes, hostile bodies and paths, and the CORS preflight.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import start_videocall
from tests.e2e.e2e_support import Server
from tests.support.janus_ws import offer_host_address
from tests.support.servers import wait_ready

pytestmark = pytest.mark.timeout(90)

#: This module's server: a short long poll and session timeout, so the tests wait little.
LONG_POLL_WAIT = 0.5
SESSION_TIMEOUT = 2.0
VIDEOCALL = "janus.plugin.videocall"


@pytest.fixture(scope="module")
def http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_videocall(tmp_path_factory.mktemp("videocall-http"), "videocall-serve-http", SESSION_TIMEOUT,
                             {"VIDEOCALL_LONG_POLL_WAIT": str(LONG_POLL_WAIT)})
    url = next(server)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    wait_ready(port)
    yield f"http://127.0.0.1:{port}/janus"
    next(server, None)


@pytest.fixture
async def http(http_url: str) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as client:
        yield Http(client, http_url)


class Http:
    def __init__(self, client: aiohttp.ClientSession, base: str) -> None:
        self.client, self.base = client, base

    async def post(self, path: str, body: Any) -> dict[str, Any]:
        async with self.client.post(self.base + path, data=json.dumps(body)) as answer:
            assert answer.status == 200, answer
            return await answer.json()

    async def get(self, path: str) -> Any:
        async with self.client.get(self.base + path) as answer:
            assert answer.status == 200, await answer.text()
            return await answer.json()

    async def session(self) -> int:
        return int((await self.post("", {"janus": "create", "transaction": "c"}))["data"]["id"])

    async def handle(self, sid: int) -> int:
        reply = await self.post(f"/{sid}", {"janus": "attach", "plugin": VIDEOCALL, "transaction": "a"})
        return int(reply["data"]["id"])

    async def message(self, sid: int, handle: int, body: Any) -> None:
        tx = secrets.token_hex(4)
        reply = await self.post(f"/{sid}/{handle}", {"janus": "message", "transaction": tx, "body": body})
        assert reply == {"janus": "ack", "session_id": sid, "transaction": tx}


def result(event: dict[str, Any]) -> Any:
    return event["plugindata"]["data"]["result"]


# --- a client written for Janus's HTTP transport --------------------------------------------------

async def test_janus_client_over_http_registers_calls_with_media_and_hangs_up(http_url: str) -> None:
    pytest.importorskip("janus_client")
    from janus_client import VideoCallEventType

    from tests.e2e.test_e2e_janus_client_lib import Side, connected_call, expect_hangup_event, synthetic_media

    server = Server("videocall", http_url, "127.0.0.1", SESSION_TIMEOUT)
    suffix = secrets.token_hex(3)
    with offer_host_address(server.ice_host):
        alice, bob = Side(server, f"alice-{suffix}"), Side(server, f"bob-{suffix}")
        assert type(alice.session.transport).__name__ == "JanusTransportHTTP"
        accepts: asyncio.Queue[asyncio.Task[bool]] = asyncio.Queue()

        async def on_incoming(data: dict[str, Any]) -> None:
            assert data["username"] == alice.name
            accepts.put_nowait(asyncio.create_task(bob.plugin.accept(data["jsep"], synthetic_media(), bob.recorder())))

        bob.plugin.on_event(VideoCallEventType.INCOMINGCALL, on_incoming)
        try:
            for side in (alice, bob):
                await side.plugin.attach(side.session)
                assert await side.plugin.register(side.name) is True
            assert {alice.name, bob.name} <= set(await alice.plugin.list_users())
            await connected_call(alice, bob, accepts)
            # The sessions outlive SESSION_TIMEOUT: the library's long polls are keepalives.
            await asyncio.sleep(SESSION_TIMEOUT + 1)
            assert bob.recorders[-1].frames["video"] > 3
            assert await alice.plugin.hangup() is True
            await expect_hangup_event(bob, by=alice, server=server)
        finally:
            await alice.close()
            await bob.close()


# --- the long poll --------------------------------------------------------------------------------

async def test_long_poll_maxev_1_gives_one_object_and_maxev_10_an_array(http: Http) -> None:
    sid = await http.session()
    handle = await http.handle(sid)
    name = f"u-{secrets.token_hex(3)}"
    await http.message(sid, handle, {"request": "register", "username": name})
    registered = await http.get(f"/{sid}?rid=1&maxev=1")
    assert isinstance(registered, dict) and result(registered) == {"event": "registered", "username": name}
    for _ in range(3):
        await http.message(sid, handle, {"request": "list"})
    await asyncio.sleep(0.3)
    events = await http.get(f"/{sid}?rid=2&maxev=10")
    assert isinstance(events, list) and len(events) == 3
    assert all(name in result(e)["list"] and e["sender"] == handle for e in events)
    await http.post(f"/{sid}", {"janus": "destroy", "transaction": "d"})


async def test_long_poll_answers_keepalive_after_the_wait(http: Http) -> None:
    sid = await http.session()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await http.get(f"/{sid}") == {"janus": "keepalive"}
    assert await http.get(f"/{sid}?maxev=5") == [{"janus": "keepalive"}]
    print(f"two empty long polls took {loop.time() - started:.2f} s (long_poll_wait {LONG_POLL_WAIT:g} s)")
    await http.post(f"/{sid}", {"janus": "destroy", "transaction": "d"})


async def test_a_session_without_gets_or_requests_times_out(http: Http) -> None:
    kept, idle = await http.session(), await http.session()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SESSION_TIMEOUT + 2
    while loop.time() < deadline:
        assert await http.get(f"/{kept}") == {"janus": "keepalive"}
    async with http.client.get(f"{http.base}/{idle}") as answer:
        assert answer.status == 404
        assert (await answer.json())["error"] == {"code": 458, "reason": f"No such session {idle}"}
    reply = await http.post(f"/{kept}", {"janus": "keepalive", "transaction": "k"})
    assert reply == {"janus": "ack", "session_id": kept, "transaction": "k"}


# --- hostile input and CORS, over real sockets ------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("POST", "", b"", 200, 454),
    ("PUT", "", b'{"janus": "create", "transaction": "x"}', 200, 450),
    ("POST", "/1/2/3", b"{}", 404, 457),
    ("POST", "/x", b"{}", 404, 457),
    ("POST", "", b"{broken", 200, 454),
    ("POST", "", b'{"janus": "ping", "transaction": "' + b"x" * 300_000 + b'"}', 200, 450),
])
async def test_hostile_requests_get_janus_errors(http: Http, method: str, path: str, body: bytes, status: int,
                                                 code: int) -> None:
    async with http.client.request(method, http.base + path, data=body) as answer:
        assert answer.status == status
        reply = await answer.json()
        assert reply["janus"] == "error" and reply["error"]["code"] == code, reply
    assert (await http.post("", {"janus": "ping", "transaction": "p"}))["janus"] == "pong"


async def test_a_body_past_the_listener_bound_is_413(http: Http) -> None:
    async with http.client.post(http.base, data=b"x" * (5 * 1024 * 1024)) as answer:
        assert answer.status == 413


async def test_cors_preflight_and_answers(http: Http) -> None:
    headers = {"Origin": "http://page.example", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type"}
    async with http.client.options(http.base, headers=headers) as answer:
        assert answer.status == 200 and await answer.read() == b""
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert answer.headers["Access-Control-Allow-Methods"] == "POST"
        assert answer.headers["Access-Control-Allow-Headers"] == "content-type"
    async with http.client.post(http.base, data=b'{"janus": "ping", "transaction": "p"}',
                                headers={"Origin": "http://page.example"}) as answer:
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert answer.headers["Content-Type"] == "application/json"
