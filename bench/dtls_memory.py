#!/usr/bin/env python
"""What one DTLS connection costs in C memory: the relay's OpenSSL against Janus's.

    python bench/dtls_memory.py              # 100 handshakes each way
    python bench/dtls_memory.py --count 300

A script, not a test. A relay leg holds one ``SSL`` object for the whole call (aiortc's
``RTCDtlsTransport``, with the worker's shared context: ``aiortc_hooks.SharedCertificate``),
so a call holds two. Python cannot see that memory (tracemalloc does not trace OpenSSL), so it
is measured here as glibc's heap in use (``mallinfo2``) before and after ``--count``
in-memory handshakes, the client side freed:

- ``pyOpenSSL`` (the OpenSSL that ``cryptography`` bundles, which aiortc uses): the worker's
  context (``MODE_RELEASE_BUFFERS``, no session cache) and aiortc's own, after the handshake
  alone and after a few records each way (as SCTP sends once a data channel opens);
- the system's ``libssl.so.3`` (the one Janus links, e.g. OpenSSL 3.0 on Debian 12) through
  ctypes, with aiortc's settings (ECDSA P-256 certificate, its cipher list and SRTP profiles),
  when it is there;
- a bare ``SSL_new`` on a DTLS context in both, the part no setting changes.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _Mallinfo2


def heap_in_use() -> int:
    info = _LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def per_object(make: Callable[[], Any], count: int) -> float:
    """kB of heap each of ``count`` objects made by ``make`` holds (one made first, to warm up)."""
    make()
    gc.collect()
    before = heap_in_use()
    kept = [make() for _ in range(count)]
    gc.collect()
    size = (heap_in_use() - before) / count / 1024
    del kept
    return size


def row(label: str, kb: float) -> None:
    print(f"  {label:<48} {kb:6.1f}")


# --- the OpenSSL aiortc uses (pyOpenSSL) ----------------------------------------------------------


def bundled(count: int) -> None:
    from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate
    from OpenSSL import SSL
    from OpenSSL._util import lib as ssl_lib

    from mediarelay.aiortc_hooks.process import SharedCertificate

    shared = SharedCertificate.current()
    worker_context = shared._create_ssl_context(SRTP_PROFILES)
    aiortc_context = RTCCertificate._create_ssl_context(shared, SRTP_PROFILES)
    peer_context = RTCCertificate._create_ssl_context(RTCCertificate.generateCertificate(), SRTP_PROFILES)

    def pump(source: Any, sink: Any) -> None:
        while True:
            try:
                sink.bio_write(source.bio_read(1500))
            except SSL.WantReadError:
                return

    def handshake(context: Any, records: int) -> Any:
        relay, peer = SSL.Connection(context), SSL.Connection(peer_context)
        relay.set_accept_state()
        peer.set_connect_state()
        for _ in range(10):
            for end in (peer, relay):
                try:
                    end.do_handshake()
                except SSL.WantReadError:
                    pass
            pump(peer, relay)
            pump(relay, peer)
        for _ in range(records):
            peer.send(b"x" * 1000)
            pump(peer, relay)
            relay.recv(1500)
            relay.send(b"y" * 200)
            pump(relay, peer)
            peer.recv(1500)
        return relay  # the peer is freed

    version = SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode()
    print(f"{version} (cryptography's, through pyOpenSSL), kB per relay-side SSL:")
    row("SSL_new alone (with pyOpenSSL's memory BIOs)", per_object(lambda: SSL.Connection(worker_context), count))
    row("raw SSL_new", per_object(lambda: ssl_lib.SSL_new(worker_context._context), count))  # never freed: a bench
    for label, context in (("the worker's context", worker_context), ("aiortc's own context", aiortc_context)):
        row(f"{label}, after the handshake", per_object(partial(handshake, context, 0), count))
        row(f"{label}, and 5 records each way", per_object(partial(handshake, context, 5), count))


# --- the system's libssl (Janus's), through ctypes -------------------------------------------------


def system(count: int) -> None:
    name = ctypes.util.find_library("ssl")
    crypto_name = ctypes.util.find_library("crypto")
    if name is None or crypto_name is None:
        print("no system libssl: skipped")
        return
    ssl, crypto = ctypes.CDLL(name), ctypes.CDLL(crypto_name)
    vp, ci, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p

    def fn(lib: Any, symbol: str, result: Any, *args: Any) -> Any:
        function = getattr(lib, symbol)
        function.restype, function.argtypes = result, list(args)
        return function

    dtls_method, ctx_new = fn(ssl, "DTLS_method", vp), fn(ssl, "SSL_CTX_new", vp, vp)
    use_cert, use_key = fn(ssl, "SSL_CTX_use_certificate_file", ci, vp, cp, ci), fn(
        ssl, "SSL_CTX_use_PrivateKey_file", ci, vp, cp, ci)
    ctx_ctrl = fn(ssl, "SSL_CTX_ctrl", ctypes.c_long, vp, ci, ctypes.c_long, vp)
    cipher_list, use_srtp = fn(ssl, "SSL_CTX_set_cipher_list", ci, vp, cp), fn(ssl, "SSL_CTX_set_tlsext_use_srtp", ci, vp, cp)
    set_verify = fn(ssl, "SSL_CTX_set_verify", None, vp, ci, vp)
    ssl_new, set_bio = fn(ssl, "SSL_new", vp, vp), fn(ssl, "SSL_set_bio", None, vp, vp, vp)
    accept, connect = fn(ssl, "SSL_set_accept_state", None, vp), fn(ssl, "SSL_set_connect_state", None, vp)
    do_handshake, ssl_free = fn(ssl, "SSL_do_handshake", ci, vp), fn(ssl, "SSL_free", None, vp)
    ssl_read, ssl_write = fn(ssl, "SSL_read", ci, vp, cp, ci), fn(ssl, "SSL_write", ci, vp, cp, ci)
    bio_new, bio_s_mem = fn(crypto, "BIO_new", vp, vp), fn(crypto, "BIO_s_mem", vp)
    bio_read, bio_write = fn(crypto, "BIO_read", ci, vp, cp, ci), fn(crypto, "BIO_write", ci, vp, cp, ci)
    version = fn(ssl, "OpenSSL_version", cp, ci)(0).decode()
    accept_any = ctypes.CFUNCTYPE(ci, ci, vp)(lambda ok, store: 1)

    from cryptography.hazmat.primitives import serialization

    from mediarelay.aiortc_hooks.process import SharedCertificate

    shared = SharedCertificate.current()
    folder = Path(tempfile.mkdtemp(prefix="dtls-memory-"))
    (folder / "cert.pem").write_bytes(shared._cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(shared._key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def context(release: bool) -> int:
        ctx = ctx_new(dtls_method())
        if use_cert(ctx, str(folder / "cert.pem").encode(), 1) != 1 or use_key(ctx, str(folder / "key.pem").encode(), 1) != 1:
            raise SystemExit("the system libssl refused the certificate")
        ctx_ctrl(ctx, 32, 0x00004000, None)  # SSL_CTRL_OPTIONS: SSL_OP_NO_TICKET, as aiortc
        ctx_ctrl(ctx, 44, 0, None)  # SSL_CTRL_SET_SESS_CACHE_MODE: off, as the worker
        if release:
            ctx_ctrl(ctx, 33, 0x00000010, None)  # SSL_CTRL_MODE: SSL_MODE_RELEASE_BUFFERS
        cipher_list(ctx, b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
                         b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
        use_srtp(ctx, b"SRTP_AEAD_AES_256_GCM:SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80")
        set_verify(ctx, 3, accept_any)  # SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        return int(ctx)

    buffer = ctypes.create_string_buffer(2048)

    def end(ctx: int, server: bool) -> tuple[int, int, int]:
        connection, inbound, outbound = ssl_new(ctx), bio_new(bio_s_mem()), bio_new(bio_s_mem())
        set_bio(connection, inbound, outbound)
        (accept if server else connect)(connection)
        return connection, inbound, outbound

    def pump(source: tuple[int, int, int], sink: tuple[int, int, int]) -> None:
        while (size := bio_read(source[2], buffer, len(buffer))) > 0:
            bio_write(sink[1], buffer, size)

    peer_context = context(False)

    def handshake(ctx: int, records: int) -> int:
        relay, peer = end(ctx, True), end(peer_context, False)
        for _ in range(10):
            do_handshake(peer[0])
            do_handshake(relay[0])
            pump(peer, relay)
            pump(relay, peer)
        if do_handshake(relay[0]) != 1:
            raise SystemExit("the system libssl handshake did not complete")
        for _ in range(records):
            ssl_write(peer[0], b"x" * 1000, 1000)
            pump(peer, relay)
            ssl_read(relay[0], buffer, len(buffer))
            ssl_write(relay[0], b"y" * 200, 200)
            pump(relay, peer)
            ssl_read(peer[0], buffer, len(buffer))
        ssl_free(peer[0])
        return relay[0]

    print(f"{version} (the system's libssl, as Janus links it), kB per relay-side SSL:")
    row("raw SSL_new", per_object(lambda: ssl_new(peer_context), count))
    for label, release in (("release buffers", True), ("as Janus (no release)", False)):
        ctx = context(release)
        row(f"{label}, after the handshake", per_object(partial(handshake, ctx, 0), count))
        row(f"{label}, and 5 records each way", per_object(partial(handshake, ctx, 5), count))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="handshakes per figure")
    args = parser.parse_args()
    from mediarelay.aiortc_hooks.process import prepare_relay_process

    prepare_relay_process()
    bundled(args.count)
    system(args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
