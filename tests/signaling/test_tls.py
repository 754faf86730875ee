"""TLS on the API port: wss:// and https:// with a self-signed certificate (Python clients
trusting it as their CA), the certificate kept and reused, a reload that new handshakes see
while an open WebSocket stays open, and clear refusals of files that cannot be served."""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from shared.settings import Settings
from signaling.server import SignalingServer
from signaling.tls import TlsError, TlsSource, fingerprint, make_self_signed, server_context

NAMES = ["localhost", "127.0.0.1"]


def client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


async def served_fingerprint(port: int) -> str:
    """The SHA-256 fingerprint of the certificate a new TLS handshake gets."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return fingerprint(ssl.DER_cert_to_PEM_cert(der).encode())


async def https_get(port: int, path: str, cert: Path) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("localhost", port, ssl=client_context(cert),
                                                   server_hostname="localhost")
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[SignalingServer]:
    server = SignalingServer(Settings(port=0, tls_self_signed=True, tls_host_names=NAMES, tls_dir=str(tmp_path / "tls")))
    await server.start()
    yield server
    await server.close()


async def ping(ws: Any, tx: str = "t") -> None:
    await ws.send(json.dumps({"janus": "ping", "transaction": tx}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"janus": "pong", "transaction": tx}


async def test_wss_and_https_on_one_port(tls_server: SignalingServer, tmp_path: Path) -> None:
    assert tls_server.tls is not None
    cert = tls_server.tls.cert
    assert cert == tmp_path / "tls" / "self-signed-cert.pem"
    async with websockets.connect(f"wss://localhost:{tls_server.port}/", ssl=client_context(cert),
                                  subprotocols=["janus-protocol"]) as ws:  # type: ignore[list-item]
        await ping(ws)
    for host in ("localhost", "127.0.0.1"):  # both names are in the certificate
        async with websockets.connect(f"wss://{host}:{tls_server.port}/", ssl=client_context(cert)) as ws:
            await ping(ws)
    assert await https_get(tls_server.port, "/healthz", cert) == (200, b"ok\n")
    status, body = await https_get(tls_server.port, "/", cert)
    assert status == 200 and b"<html" in body.lower()
    with pytest.raises((websockets.InvalidMessage, ConnectionError, OSError, asyncio.TimeoutError)):
        async with websockets.connect(f"ws://127.0.0.1:{tls_server.port}/", open_timeout=3):
            pass  # plain WebSocket on the TLS port: no answer it can read


async def test_reload_serves_the_new_certificate_and_keeps_open_websockets(tls_server: SignalingServer,
                                                                           tmp_path: Path) -> None:
    tls = tls_server.tls
    assert tls is not None
    old_cert = tmp_path / "old-cert.pem"
    shutil.copy(tls.cert, old_cert)
    first = await served_fingerprint(tls_server.port)
    assert first == tls.fingerprint
    async with websockets.connect(f"wss://localhost:{tls_server.port}/", ssl=client_context(tls.cert)) as ws:
        await ping(ws, "before")
        # A new pair lands in the files (as an operator's renewal would), then SIGHUP's reload.
        (tls.cert.parent / "self-signed-cert.pem").unlink()
        assert tls.reload()
        second = await served_fingerprint(tls_server.port)
        assert second == tls.fingerprint != first
        await ping(ws, "after")  # the open connection was not touched
        async with websockets.connect(f"wss://localhost:{tls_server.port}/", ssl=client_context(tls.cert)) as new:
            await ping(new)
        with pytest.raises(ssl.SSLCertVerificationError):
            await websockets.connect(f"wss://localhost:{tls_server.port}/", ssl=client_context(old_cert))


async def test_a_reload_that_fails_keeps_the_old_certificate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert, key, _ = make_self_signed(NAMES, tmp_path / "a")
    source = TlsSource(cert, key, server_context(cert, key))
    before = source.fingerprint
    other_cert, _, _ = make_self_signed(NAMES, tmp_path / "b")
    shutil.copy(other_cert, cert)  # a new certificate without its key (a half-done renewal)
    assert not source.reload()
    assert "TLS reload failed, still serving the previous certificate" in caplog.text
    assert "does not match" in caplog.text
    assert before != source.fingerprint  # the file changed, the context did not:
    srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=source.context)
    port = srv.sockets[0].getsockname()[1]
    try:
        assert await served_fingerprint(port) == before
    finally:
        srv.close()
        await srv.wait_closed()


def test_self_signed_is_kept_reused_and_remade_when_it_no_longer_fits(tmp_path: Path) -> None:
    cert, key, made = make_self_signed(NAMES, tmp_path)
    assert made and key.stat().st_mode & 0o077 == 0  # the key is this user's only
    again_cert, _, made_again = make_self_signed(["127.0.0.1", "LOCALHOST"], tmp_path)
    assert (again_cert, made_again) == (cert, False)
    first = fingerprint(cert.read_bytes())
    _, _, remade = make_self_signed([*NAMES, "phone-lan.example"], tmp_path)  # a new name
    assert remade and fingerprint(cert.read_bytes()) != first
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=340)  # 25 days before it ends
    assert make_self_signed([*NAMES, "phone-lan.example"], tmp_path, now=later)[2]


def test_bad_files_are_refused_with_a_clear_reason(tmp_path: Path) -> None:
    cert, key, _ = make_self_signed(NAMES, tmp_path / "a")
    _, other_key, _ = make_self_signed(NAMES, tmp_path / "b")
    with pytest.raises(TlsError, match=r"tls_key .*b/self-signed-key.pem does not match the certificate in tls_cert"):
        server_context(cert, other_key)
    with pytest.raises(TlsError, match=r"tls_cert .*missing.pem: No such file or directory"):
        server_context(tmp_path / "missing.pem", key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsError, match=r"not a PEM certificate chain and its key"):
        server_context(garbage, key)
    with pytest.raises(TlsError):
        SignalingServer(Settings(port=0, tls_cert=str(cert), tls_key=str(other_key)))


@pytest.mark.parametrize("settings, problem", [
    ({"tls_cert": "a.pem"}, "tls_cert and tls_key go together"),
    ({"tls_key": "a.pem"}, "tls_cert and tls_key go together"),
    ({"tls_cert": "a.pem", "tls_key": "b.pem", "tls_self_signed": True}, "not both"),
])
def test_settings_refuse_half_a_configuration(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Settings(**settings)


async def test_operator_files_serve_wss(tmp_path: Path) -> None:
    cert, key, _ = make_self_signed(NAMES, tmp_path / "mine")
    server = SignalingServer(Settings(port=0, tls_cert=str(cert), tls_key=str(key)))
    await server.start()
    try:
        async with websockets.connect(f"wss://localhost:{server.port}/", ssl=client_context(cert)) as ws:
            await ping(ws)
    finally:
        await server.close()
