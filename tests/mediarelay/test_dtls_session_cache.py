"""The relay process's shared DTLS context keeps no session of a finished handshake.

``prepare_relay_process`` gives every PeerConnection of a worker one certificate and one OpenSSL
context (``aiortc_hooks.process.SharedCertificate``), which lives as long as the process. OpenSSL's
server-side session cache, on by default, then kept every handshake's session for two hours (up to
20,480 of them): memory that grew with every call a worker had held (issue 17). WebRTC never
resumes a DTLS session, so the cache is off.

Proved with real DTLS handshakes in memory (pyOpenSSL over memory BIOs, as aiortc runs DTLS):
a context made as the relay's is, as the server; an aiortc client context, without session
tickets as aiortc's are (so only the server's cache could resume), offers the session of its
first handshake again in a second one. With OpenSSL's default cache the second one resumes.
"""

from __future__ import annotations

from aiortc import rtcdtlstransport
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from OpenSSL._util import lib as openssl

from mediarelay.aiortc_hooks.process import SharedCertificate


def _client_context() -> SSL.Context:
    """A context as aiortc makes for a client PeerConnection (its own key and certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return RTCCertificate(key, rtcdtlstransport.generate_certificate(key))._create_ssl_context(SRTP_PROFILES)


def _resumed(connection: SSL.Connection) -> bool:
    """``SSL_session_reused``: pyOpenSSL has no method for it."""
    return bool(openssl.SSL_session_reused(connection._ssl))


def _handshake(server_context: SSL.Context, client_context: SSL.Context,
               session: SSL.Session | None = None) -> tuple[SSL.Connection, SSL.Connection]:
    server, client = SSL.Connection(server_context), SSL.Connection(client_context)
    server.set_accept_state()
    client.set_connect_state()
    if session is not None:
        client.set_session(session)
    done = {"server": False, "client": False}
    for _ in range(50):
        for name, side, other in (("client", client, server), ("server", server, client)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except SSL.WantReadError:
                    pass
            while True:
                try:
                    data = side.bio_read(65536)
                except SSL.WantReadError:
                    break
                other.bio_write(data)
        if all(done.values()):
            return server, client
    raise AssertionError("the DTLS handshake did not complete")


def test_a_finished_handshake_leaves_no_session_in_the_relay_context() -> None:
    shared = SharedCertificate.current()
    assert shared._create_ssl_context(SRTP_PROFILES) is shared._create_ssl_context(SRTP_PROFILES)  # one context
    # A context made as the shared one is (not the process's own, which is left as it is), given
    # a session id context: without one OpenSSL stores sessions but never looks them up, and
    # the test could not see what its cache holds.
    relay = SharedCertificate(shared._key, shared._cert)._create_ssl_context(SRTP_PROFILES)
    relay.set_session_id(b"probe")
    client_context = _client_context()

    server, client = _handshake(relay, client_context)
    assert server.get_peer_certificate() is not None  # a real, mutually authenticated handshake
    session = client.get_session()
    assert session is not None
    client.shutdown()
    server.shutdown()

    # Offered again, the session can only be resumed from the server's cache (no tickets).
    server, client = _handshake(relay, client_context, session)
    assert not _resumed(server), "the relay's DTLS context cached the session of a finished call"
