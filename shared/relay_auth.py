"""Proofs that both ends of an IPC channel know ``relay_secret``: pure functions, no sockets.

The node and the worker each pick a random nonce; each proves itself with an HMAC-SHA256,
keyed with the secret, over both nonces and the node's id, under a label naming its role, so
a proof one side sent can never be replayed as the other side's, nor on another channel (the
other side's nonce is fresh). ``shared/ipc.py`` carries them in ``hello.challenge`` and
``hello``. Proofs are compared in constant time. The secret enters only as ``SecretStr`` and
is read in ``_mac`` alone, so it never reaches a repr, a log line or an error text.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pydantic import SecretStr

#: Bytes in a nonce (a fixed length, so nonce || nonce || node id reads one way only).
NONCE_SIZE = 32
#: Bytes in a proof (an HMAC-SHA256 digest).
PROOF_SIZE = hashlib.sha256().digest_size

_NODE = b"videocall relay_secret: node\0"
_WORKER = b"videocall relay_secret: worker\0"


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def new_secret() -> SecretStr:
    """A fresh secret, for ``serve``'s own workers when the operator set none."""
    return SecretStr(secrets.token_urlsafe(32))


def _mac(secret: SecretStr, label: bytes, first: bytes, second: bytes, node_id: str) -> bytes:
    message = label + first + second + node_id.encode()
    return hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).digest()


def node_proof(secret: SecretStr, *, worker_nonce: bytes, node_nonce: bytes, node_id: str) -> bytes:
    """What the node sends in ``hello``: it answers the worker's challenge."""
    return _mac(secret, _NODE, worker_nonce, node_nonce, node_id)


def worker_proof(secret: SecretStr, *, node_nonce: bytes, worker_nonce: bytes, node_id: str) -> bytes:
    """What the worker answers ``hello`` with: it answers the node's challenge."""
    return _mac(secret, _WORKER, node_nonce, worker_nonce, node_id)


def matches(expected: bytes, given: bytes | None) -> bool:
    """Constant-time comparison; a missing proof never matches."""
    return given is not None and hmac.compare_digest(expected, given)
