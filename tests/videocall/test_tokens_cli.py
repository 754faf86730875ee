"""``videocall tokens add|list|remove`` as a user runs it, and a running node that obeys the file;
the auth secrets never show in a log line, ``/metrics`` or a worker's environment."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

from shared.settings import Settings
from signaling.server import SignalingServer
from tests.support.servers import free_port, videocall_command
from videocall.supervisor import settings_env

UNAUTHORIZED = {"code": 403, "reason": "Unauthorized request (wrong or missing secret/token)"}


def tokens(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*videocall_command(), "tokens", *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})}, check=False)


def test_add_list_remove(tmp_path: Path) -> None:
    store = tmp_path / "conf" / "tokens.json"
    added = tokens("add", "--token-store", str(store), "tok-a")
    assert (added.returncode, added.stdout) == (0, "token added; plugins: janus.plugin.videocall\n")
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    echo = tokens("add", "--token-store", str(store), "--plugin", "janus.plugin.echotest", "tok-b")
    assert (echo.returncode, echo.stdout, echo.stderr) == (
        0, "token added; plugins: (none)\n", "no such plugin 'janus.plugin.echotest', skipped\n")
    listed = tokens("list", env={"VIDEOCALL_TOKEN_STORE": str(store)})
    assert (listed.returncode, listed.stdout) == (0, "tok-a\tjanus.plugin.videocall\ntok-b\t\n")
    assert json.loads(store.read_text()) == {"tokens": {"tok-a": ["janus.plugin.videocall"], "tok-b": []}}
    removed = tokens("remove", "--token-store", str(store), "tok-a")
    assert (removed.returncode, removed.stdout) == (0, "token removed\n")
    again = tokens("remove", "--token-store", str(store), "tok-a")
    assert (again.returncode, again.stderr) == (1, "no such token\n")
    assert tokens("list", "--token-store", str(store)).stdout == "tok-b\t\n"
    assert sorted(path.name for path in store.parent.iterdir()) == ["tokens.json", "tokens.json.lock"]  # no temp left


def test_without_a_token_store_it_says_how_to_name_one() -> None:
    result = tokens("list", env={"VIDEOCALL_TOKEN_STORE": ""})
    assert result.returncode == 2 and "no token_store: give --token-store FILE" in result.stderr


async def test_a_running_node_takes_a_token_added_from_the_command_line(tmp_path: Path) -> None:
    store = tmp_path / "tokens.json"
    server = SignalingServer(Settings(port=0, token_auth=True, token_store=str(store)))
    await server.start()
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            async def create() -> dict[str, object]:
                await ws.send(json.dumps({"janus": "create", "transaction": "t", "token": "from-cli"}))
                return dict(json.loads(await asyncio.wait_for(ws.recv(), 3)))

            assert (await create())["error"] == UNAUTHORIZED
            assert (await asyncio.to_thread(tokens, "add", "--token-store", str(store), "from-cli")).returncode == 0
            assert (await create())["janus"] == "success"
            assert (await asyncio.to_thread(tokens, "remove", "--token-store", str(store), "from-cli")).returncode == 0
            assert (await create())["error"] == UNAUTHORIZED
    finally:
        await server.close()


def test_secrets_stay_out_of_worker_environments() -> None:
    settings = Settings(api_secret="api-s3cret", token_auth=True, token_auth_secret="sign-s3cret")
    env = settings_env(settings)
    assert env["VIDEOCALL_TOKEN_AUTH"] == "True"
    assert "VIDEOCALL_API_SECRET" not in env and "VIDEOCALL_TOKEN_AUTH_SECRET" not in env
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


@pytest.mark.timeout(60)
def test_secrets_never_in_logs_or_metrics(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "VIDEOCALL_API_SECRET": "api-s3cret", "VIDEOCALL_TOKEN_AUTH": "true",
           "VIDEOCALL_TOKEN_AUTH_SECRET": "sign-s3cret", "VIDEOCALL_LOG_LEVEL": "DEBUG"}
    process = subprocess.Popen([*videocall_command(), "signaling", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "videocall signaling did not start"
                time.sleep(0.2)

        async def refused_and_accepted() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send(json.dumps({"janus": "create", "transaction": "t", "apisecret": "api-s3cre"}))
                assert json.loads(await ws.recv())["error"] == UNAUTHORIZED
                await ws.send(json.dumps({"janus": "create", "transaction": "t", "apisecret": "api-s3cret"}))
                assert json.loads(await ws.recv())["janus"] == "success"

        asyncio.run(refused_and_accepted())
        metrics += urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    assert "videocall signalling on" in output
    assert "s3cret" not in output and "s3cret" not in metrics
