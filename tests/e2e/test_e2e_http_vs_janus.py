"""The same HTTP requests to real Janus 1.1.2's HTTP transport and to ours: statuses, CORS
headers and bodies (ids and transactions aside) must match, except where we differ on purpose
(an error body where Janus answers an empty 404/400; strict JSON's own 454 text).

Runs with ``VIDEOCALL_TEST_JANUS=1`` (Janus installed); Janus gets only its HTTP transport
and the VideoCall plugin, on loopback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import ServerProcess, require_janus, start_videocall
from tests.support.servers import free_port, wait_ready

pytestmark = pytest.mark.timeout(120)

LIB = Path("/usr/lib/x86_64-linux-gnu/janus")


def janus_config(run: Path, port: int) -> Path:
    for folder in ("conf", "plugins", "transports", "events", "loggers"):
        (run / folder).mkdir(parents=True, exist_ok=True)
    (run / "plugins" / "libjanus_videocall.so").symlink_to(LIB / "plugins" / "libjanus_videocall.so")
    (run / "transports" / "libjanus_http.so").symlink_to(LIB / "transports" / "libjanus_http.so")
    folders = "\n".join(f'\t{name}_folder = "{run / name}"' for name in ("plugins", "transports", "events", "loggers"))
    (run / "conf" / "janus.jcfg").write_text(
        f'general: {{\n\tconfigs_folder = "{run / "conf"}"\n{folders}\n\tdebug_level = 3\n\tsession_timeout = 60\n}}\n'
        'certificates: {\n}\nmedia: {\n}\nnat: {\n\tice_enforce_list = "lo"\n\tignore_mdns = true\n}\n'
        'plugins: {\n}\ntransports: {\n}\nevents: {\n\tbroadcast = false\n}\n')
    (run / "conf" / "janus.transport.http.jcfg").write_text(
        f'general: {{\n\tjson = "compact"\n\tbase_path = "/janus"\n\thttp = true\n\tport = {port}\n'
        '\tip = "127.0.0.1"\n\thttps = false\n}\nadmin: {\n\tadmin_http = false\n}\ncors: {\n}\n')
    return run / "conf"


@pytest.fixture(scope="module")
def janus_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_janus()
    tmp = tmp_path_factory.mktemp("janus-http")
    port = free_port()
    conf = janus_config(tmp / "run", port)
    process = ServerProcess("janus-http", ["/usr/bin/janus", "-F", str(conf), "-C", str(conf / "janus.jcfg")],
                            host="127.0.0.1", port=port, logdir=tmp)
    process.start()
    try:
        yield f"http://127.0.0.1:{port}/janus"
    finally:
        process.stop()


@pytest.fixture(scope="module")
def ours_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_janus()  # only worth starting for the comparison
    server = start_videocall(tmp_path_factory.mktemp("videocall-http-vs"), "videocall-serve-http-vs", None,
                             {"VIDEOCALL_LONG_POLL_WAIT": "2"})
    url = next(server)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    wait_ready(port)
    yield f"http://127.0.0.1:{port}/janus"
    next(server, None)


def shape(body: bytes, anonymous: Callable[[str], str]) -> Any:
    """The body with ids and transactions left out (they differ by nature), and ids inside
    texts (a reason) named by their role."""
    if not body:
        return b""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: "<id>" if k in ("session_id", "sender", "id") else strip(v)
                    for k, v in value.items() if k != "transaction"}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return anonymous(value) if isinstance(value, str) else value
    return strip(json.loads(body))


async def exchange(base: str) -> dict[str, tuple[int, dict[str, str], Any]]:
    """One scripted conversation; every answer by name."""
    answers: dict[str, tuple[int, dict[str, str], Any]] = {}
    async with aiohttp.ClientSession() as client:
        async def request(name: str, method: str, path: str, body: Any = None,
                          headers: dict[str, str] | None = None) -> Any:
            data = body if body is None or isinstance(body, str) else json.dumps(body)
            async with client.request(method, base + path, data=data, headers=headers or {},
                                      allow_redirects=False) as answer:
                raw = await answer.read()
                kept = {k: anonymous(v) for k, v in answer.headers.items()
                        if k.lower().startswith("access-control") or k.lower() == "location"}
                answers[name] = (answer.status, kept, shape(raw, anonymous))
                return json.loads(raw) if raw else None

        ids: dict[str, str] = {}

        def anonymous(text: str) -> str:
            """Ids inside texts (a reason, a Location) named by their role."""
            for value, role in ids.items():
                text = text.replace(value, role)
            return text

        sid = (await request("create", "POST", "", {"janus": "create", "transaction": "t"}))["data"]["id"]
        handle = (await request("attach", "POST", f"/{sid}", {"janus": "attach", "plugin": "janus.plugin.videocall",
                                                              "transaction": "t"}))["data"]["id"]
        ids.update({str(sid): "<session>", str(handle): "<handle>"})
        await request("preflight", "OPTIONS", f"/{sid}", headers={
            "Origin": "http://page.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        await request("keepalive", "POST", f"/{sid}", {"janus": "keepalive", "transaction": "t"})
        await request("message", "POST", f"/{sid}/{handle}", {"janus": "message", "body": {"request": "list"},
                                                              "transaction": "t"})
        await request("poll maxev 1", "GET", f"/{sid}?rid=1&maxev=1")
        for _ in range(2):
            await request("message", "POST", f"/{sid}/{handle}", {"janus": "message", "body": {"request": "list"},
                                                                  "transaction": "t"})
        await request("poll maxev 10", "GET", f"/{sid}?rid=2&maxev=10")
        await request("GET on a handle", "GET", f"/{sid}/{handle}")
        await request("unknown session", "POST", "/123", {"janus": "keepalive", "transaction": "t"})
        await request("conflicting session", "POST", f"/{sid}", {"janus": "keepalive", "transaction": "t",
                                                                 "session_id": 5})
        await request("conflicting handle", "POST", f"/{sid}/{handle}", {"janus": "detach", "transaction": "t",
                                                                         "handle_id": 5})
        await request("not an object", "POST", "", "[1]")
        await request("info", "GET", "/info")
        await request("info by POST", "POST", "/info", {"janus": "info", "transaction": "t"})
        await request("unknown session GET", "GET", "/123")
        await request("detach", "POST", f"/{sid}/{handle}", {"janus": "detach", "transaction": "t"})
        await request("detached", "GET", f"/{sid}?maxev=5")
        await request("destroy", "POST", f"/{sid}", {"janus": "destroy", "transaction": "t"})
        await request("destroyed", "POST", f"/{sid}", {"janus": "keepalive", "transaction": "t"})
    return answers


@pytest.fixture(scope="module")
def both(janus_http: str, ours_http: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return asyncio.run(exchange(janus_http)), asyncio.run(exchange(ours_http))


SAME = ["create", "attach", "preflight", "keepalive", "message", "poll maxev 1", "poll maxev 10", "unknown session",
        "conflicting session", "conflicting handle", "not an object", "detach", "detached", "destroy", "destroyed"]


@pytest.mark.parametrize("name", SAME)
def test_the_same_answer_as_janus(both: tuple[dict[str, Any], dict[str, Any]], name: str) -> None:
    janus, ours = both
    assert ours[name] == janus[name]


def test_info_matches_in_shape(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    janus, ours = both
    assert ours["info"][:2] == janus["info"][:2] and ours["info"][2]["janus"] == "server_info"


@pytest.mark.parametrize("name", ["GET on a handle", "unknown session GET", "info by POST"])
def test_same_status_and_cors_with_a_body_where_janus_has_none(
        both: tuple[dict[str, Any], dict[str, Any]], name: str) -> None:
    janus, ours = both
    assert ours[name][:2] == janus[name][:2]
    assert janus[name][2] == b""
    assert ours[name][2] == b"" or ours[name][2]["janus"] == "error"
