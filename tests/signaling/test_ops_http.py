"""/healthz, /readyz, /metrics and draining on a real in-process server (scripted relay workers).

The process-level checks (a real call's numbers, SIGTERM, JSON logs) are in
``tests/e2e/test_ops_process.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from shared.settings import Settings
from signaling.registry import MemoryRegistry
from signaling.server import SignalingServer
from tests.signaling.test_relay_pool import ScriptedWorker, until


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class Registry(MemoryRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.up = True

    async def ready(self) -> bool:
        return self.up


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[ScriptedWorker]:
    w = ScriptedWorker(f"unix:{tmp_path}/w.sock")
    await w.start()
    yield w
    if w.server is not None:
        await w.stop()


async def started(settings: Settings, registry: MemoryRegistry | None = None) -> SignalingServer:
    server = SignalingServer(settings, registry)
    server.relay.stats_interval = 0.05
    await server.start()
    return server


@pytest.fixture
async def server(worker: ScriptedWorker) -> AsyncIterator[SignalingServer]:
    srv = await started(Settings(port=0, worker_addresses=[worker.address]), Registry())
    await until(lambda: bool(srv.relay.connected()))
    yield srv
    await srv.close()


async def api(port: int) -> Any:
    return await websockets.connect(f"ws://127.0.0.1:{port}/", subprotocols=["janus-protocol"])  # type: ignore[list-item]


async def ask(ws: Any, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return reply


async def test_healthz_answers_ok_even_with_no_worker() -> None:
    srv = await started(Settings(port=0))
    try:
        assert (await http_get(srv.port, "/healthz"))[::2] == (200, "ok\n")
        status, _, body = await http_get(srv.port, "/readyz")
        assert (status, body) == (503, "no relay worker connected\n")
    finally:
        await srv.close()


async def test_readyz_follows_workers_registry_and_drain(server: SignalingServer, worker: ScriptedWorker) -> None:
    assert (await http_get(server.port, "/readyz?verbose"))[::2] == (200, "ready\n")
    registry = server.registry
    assert isinstance(registry, Registry)
    registry.up = False
    assert (await http_get(server.port, "/readyz"))[::2] == (503, "registry not ready\n")
    registry.up = True
    await worker.stop()
    await until(lambda: not server.relay.connected())
    assert (await http_get(server.port, "/readyz"))[::2] == (503, "no relay worker connected\n")
    await worker.start()
    await until(lambda: bool(server.relay.connected()))
    assert (await http_get(server.port, "/readyz"))[::2] == (200, "ready\n")
    await server.drain(0)
    assert (await http_get(server.port, "/readyz"))[::2] == (503, "draining\n")
    assert (await http_get(server.port, "/healthz"))[::2] == (200, "ok\n")


async def test_draining_refuses_new_sessions_as_janus_and_keeps_old_ones(server: SignalingServer) -> None:
    ws = await api(server.port)
    try:
        created = await ask(ws, {"janus": "create", "transaction": "a"})
        session = created["data"]["id"]
        await server.drain(0)
        refused = await ask(ws, {"janus": "create", "transaction": "b"})
        assert refused == {"janus": "error", "transaction": "b",
                           "error": {"code": 472, "reason": "Currently not accepting new sessions"}}
        # a session made before the drain goes on
        attached = await ask(ws, {"janus": "attach", "transaction": "c", "session_id": session,
                                  "plugin": "janus.plugin.videocall"})
        assert attached["janus"] == "success"
    finally:
        await ws.close()


async def test_drain_waits_for_calls_then_for_the_timeout(server: SignalingServer) -> None:
    loop = asyncio.get_running_loop()
    server.plugin.plugin.calls["c1"] = object()  # type: ignore[assignment]  # a call in progress
    started_at = loop.time()
    drain = asyncio.ensure_future(server.drain(5.0))
    await asyncio.sleep(0.3)
    assert not drain.done()
    del server.plugin.plugin.calls["c1"]  # the call ends: the drain is over
    await asyncio.wait_for(drain, 1.0)
    assert loop.time() - started_at < 1.5
    server.plugin.plugin.calls["c2"] = object()  # type: ignore[assignment]
    started_at = loop.time()
    await asyncio.wait_for(server.drain(0.3), 2.0)  # a call that does not end: the timeout
    assert 0.25 < loop.time() - started_at < 1.5
    await asyncio.wait_for(server.drain(0), 0.5)  # 0: at once
    del server.plugin.plugin.calls["c2"]


async def test_metrics_show_sessions_handles_users_errors_and_workers(
        server: SignalingServer, worker: ScriptedWorker) -> None:
    worker.other_calls = 2
    await until(lambda: server.relay.workers[0].load.stats is not None
                and server.relay.workers[0].load.stats.calls == 2)
    ws = await api(server.port)
    try:
        session = (await ask(ws, {"janus": "create", "transaction": "a"}))["data"]["id"]
        handle = (await ask(ws, {"janus": "attach", "transaction": "b", "session_id": session,
                                 "plugin": "janus.plugin.videocall"}))["data"]["id"]
        await ws.send(json.dumps({"janus": "message", "transaction": "c", "session_id": session,
                                  "handle_id": handle, "body": {"request": "register", "username": "alice"}}))
        await asyncio.wait_for(ws.recv(), 5)  # ack
        await asyncio.wait_for(ws.recv(), 5)  # registered
        await ws.send(json.dumps({"janus": "message", "transaction": "d", "session_id": session,
                                  "handle_id": handle, "body": {"request": "call", "username": "nobody"}}))
        await asyncio.wait_for(ws.recv(), 5)  # ack
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))  # 478 no such username
        assert error["plugindata"]["data"]["error_code"] == 478
        assert (await ask(ws, {"janus": "keepalive", "transaction": "e", "session_id": 1}))["error"]["code"] == 458
        status, headers, text = await http_get(server.port, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        got = samples(text)
        w = (("worker", worker.address),)
        assert got[("videocall_sessions", ())] == 1
        assert got[("videocall_handles", ())] == 1
        assert got[("videocall_registered_users", ())] == 1
        assert got[("videocall_calls", (("state", "active"),))] == 0
        assert got[("videocall_errors_total", (("code", "478"), ("kind", "plugin")))] == 1
        assert got[("videocall_errors_total", (("code", "458"), ("kind", "core")))] == 1
        assert got[("videocall_worker_connected", w)] == 1
        assert got[("videocall_worker_calls", w)] == 2
        assert got[("videocall_worker_placed_calls", w)] == 0
        assert 0 < got[("videocall_worker_ipc_round_trip_seconds", w)] < 1
        assert got[("videocall_registry_up", ())] == 1
        assert got[("videocall_draining", ())] == 0
        assert got[("videocall_call_setup_seconds_count", ())] == 0
        assert ("process_cpu_seconds_total", ()) in got  # the node's own process
    finally:
        await ws.close()
    await until(lambda: not server.sessions.sessions)
    assert samples((await http_get(server.port, "/metrics"))[2])[("videocall_sessions", ())] == 0


async def test_metrics_carry_no_secret(worker: ScriptedWorker) -> None:
    """Nothing from the settings reaches a scrape, except the worker addresses it is about."""
    secret = "s3cr3t-token-value"
    srv = await started(Settings(port=0, worker_addresses=[worker.address], node_id=f"node-{secret}",
                                 nat_1_1_mapping="203.0.113.7", ice_servers=[f"turn:user:{secret}@turn.example"]))
    try:
        text = (await http_get(srv.port, "/metrics"))[2]
        assert secret not in text and "203.0.113.7" not in text
    finally:
        await srv.close()
