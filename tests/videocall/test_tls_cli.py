"""TLS in the real process: a key that does not match refuses the start in one line, and SIGHUP
makes new handshakes get the new certificate while an open WebSocket (a call's signalling) stays."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import ssl
import subprocess
from pathlib import Path

import pytest
import websockets

from signaling.tls import fingerprint, make_self_signed
from tests.signaling.test_tls import served_fingerprint
from tests.support.servers import free_port, videocall_command

pytestmark = pytest.mark.slow

NAMES = ["localhost", "127.0.0.1"]


def test_a_key_that_does_not_match_refuses_the_start(tmp_path: Path) -> None:
    cert, _, _ = make_self_signed(NAMES, tmp_path / "a")
    _, other_key, _ = make_self_signed(NAMES, tmp_path / "b")
    done = subprocess.run([*videocall_command(), "signaling", "--port", str(free_port()), "--tls-cert", str(cert),
                           "--tls-key", str(other_key)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"cannot serve TLS: tls_key {other_key} does not match the certificate in tls_cert {cert}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_sighup_reloads_the_certificate_and_keeps_open_websockets(tmp_path: Path) -> None:
    first_cert, first_key, _ = make_self_signed(NAMES, tmp_path / "first")
    second_cert, second_key, _ = make_self_signed(NAMES, tmp_path / "second")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(first_cert, cert)
    shutil.copy(first_key, key)
    port = free_port()
    log = (tmp_path / "stderr.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *videocall_command(), "signaling", "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key),
        stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for _ in range(200):
            try:
                old = await websockets.connect(f"wss://localhost:{port}/", ssl=ssl.create_default_context(
                    cafile=str(first_cert)), subprotocols=["janus-protocol"])  # type: ignore[list-item]
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the server did not come up: " + (tmp_path / "stderr.log").read_text())
        assert await served_fingerprint(port) == fingerprint(first_cert.read_bytes())
        shutil.copy(second_key, key)
        shutil.copy(second_cert, cert)
        process.send_signal(signal.SIGHUP)
        wanted = fingerprint(second_cert.read_bytes())
        for _ in range(100):
            if await served_fingerprint(port) == wanted:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("SIGHUP did not bring the new certificate: " + (tmp_path / "stderr.log").read_text())
        await old.send(json.dumps({"janus": "ping", "transaction": "still-here"}))
        assert json.loads(await asyncio.wait_for(old.recv(), 5)) == {"janus": "pong", "transaction": "still-here"}
        assert process.returncode is None
        await old.close()
        assert "certificate reloaded from" in (tmp_path / "stderr.log").read_text()
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 10)
        log.close()
