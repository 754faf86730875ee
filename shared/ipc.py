"""The IPC between the signalling process and relay workers: addresses, opening a channel
(``connect``, the node's side) and taking channels (``serve``, the worker's side), with the
``hello`` version check and the ``relay_secret`` proofs (``shared/relay_auth.py``) at the
start of each. A channel itself (requests, responses, notifications, deadlines) is
``shared/ipc_channel.py``; its names are re-exported here, so callers need only this module.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, SecretStr

from shared import relay_auth
from shared.ipc_channel import (
    MAX_FRAME,
    Channel,
    ChannelClosed,
    FrameDecoder,
    FrameError,
    Handler,
    IpcError,
    NotificationHandler,
    RequestTimeout,
    encode_frame,
)
from shared.messages import PROTOCOL_VERSION, Hello, HelloChallenge, HelloChallengeResult, HelloResult, Request

__all__ = [
    "MAX_FRAME", "IpcError", "ChannelClosed", "RequestTimeout", "FrameError", "FrameDecoder",
    "encode_frame", "Handler", "NotificationHandler", "Channel", "parse_address", "unguarded_listen", "connect", "serve",
]

log = logging.getLogger(__name__)

_UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, NUL included

def parse_address(address: str) -> tuple[Literal["unix"], str] | tuple[Literal["tcp"], tuple[str, int]]:
    """``unix:/path/x.sock`` -> ("unix", path); ``tcp:host:port``, ``tcp:[::1]:port`` -> ("tcp", (host, port))."""
    scheme, _, rest = address.partition(":")
    if scheme == "unix" and rest:
        if len(os.fsencode(rest)) > _UNIX_PATH_MAX:
            raise ValueError(f"unix socket path in {address!r} is longer than {_UNIX_PATH_MAX} bytes")
        return "unix", rest
    if scheme == "tcp":
        host, sep, port = rest.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"IPv6 address in {address!r} must be in brackets, as in 'tcp:[::1]:7000'")
        if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"address {address!r} must be 'tcp:host:port' with a port in 0..65535")
        return "tcp", (host, int(port))
    raise ValueError(f"address {address!r} must be 'unix:/path/to.sock' or 'tcp:host:port'")


def unguarded_listen(address: str, secret: SecretStr) -> str | None:
    """Why a worker must not listen on ``address`` without a secret, or None if it may.

    A Unix socket (mode 0600) and loopback TCP reach only this machine; any other address lets
    whoever reaches the port drive the worker, so it needs ``relay_secret``. A host name other
    than ``localhost`` counts as non-loopback: what it resolves to may change.
    """
    _, where = parse_address(address)
    if _given(secret) is not None or isinstance(where, str):
        return None
    host = where[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (f"refusing to listen on {address} without a relay secret: anyone who reaches it could drive "
            "this worker; set VIDEOCALL_RELAY_SECRET or relay_secret_file (the same on its nodes), or "
            "listen on loopback or a unix socket")


async def connect(address: str, *, node_id: str = "", secret: SecretStr | None = None,
                  **channel_kwargs: Any) -> Channel:
    """Open a channel to a worker, start reading, and check its protocol version with ``hello``.

    With a ``secret`` (``relay_secret``), both ends prove they know it before the channel is
    used: the node asks the worker's nonce (``hello.challenge``), signs it in ``hello`` with a
    nonce of its own, and accepts only a worker whose answer signs that one
    (``shared/relay_auth.py``). Raises OSError if nothing listens there, IpcError if the
    worker refuses, speaks another version, or does not prove it has the secret.
    """
    _, where = parse_address(address)
    if isinstance(where, str):  # a unix socket's path (mypy does not narrow `where` by `kind`)
        reader, writer = await asyncio.open_unix_connection(where)
    else:
        reader, writer = await asyncio.open_connection(*where)
    channel_kwargs.setdefault("name", address)
    channel = Channel(reader, writer, **channel_kwargs)
    channel._run_task = asyncio.get_running_loop().create_task(channel.run())
    secret = _given(secret)
    try:
        hello = Hello(version=PROTOCOL_VERSION, node_id=node_id, clock=time.time())
        if secret is not None:
            challenge = await channel.request(HelloChallenge(version=PROTOCOL_VERSION))
            _check_version(challenge.version)
            nonce = relay_auth.new_nonce()
            proof = relay_auth.node_proof(secret, worker_nonce=challenge.nonce, node_nonce=nonce, node_id=node_id)
            hello = hello.model_copy(update={"nonce": nonce, "proof": proof})
        result = await channel.request(hello)
        _check_version(result.version)
        if secret is not None:
            if result.proof is None:
                raise IpcError("the worker did not prove it knows relay_secret (it has none set?)")
            expected = relay_auth.worker_proof(secret, node_nonce=hello.nonce or b"", worker_nonce=challenge.nonce,
                                               node_id=node_id)
            if not relay_auth.matches(expected, result.proof):
                raise IpcError("the worker's relay_secret proof is wrong (another secret, or not our worker)")
    except BaseException:
        await channel.close()
        raise
    channel.peer = result
    return channel


def _check_version(worker_version: int) -> None:
    if worker_version != PROTOCOL_VERSION:
        raise IpcError(f"protocol version mismatch: worker speaks {worker_version}, node speaks {PROTOCOL_VERSION}")


def _given(secret: SecretStr | None) -> SecretStr | None:
    """An empty secret is no secret (the setting's default)."""
    return secret if secret is not None and secret.get_secret_value() else None


def _peer_address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "a local process"


async def serve(address: str, handler: Handler, *, on_channel: Callable[[Channel], None] | None = None,
                on_channel_closed: Callable[[Channel], None] | None = None,
                worker_id: str | None = None, calls: Callable[[], int] | None = None,
                secret: SecretStr | None = None, **channel_kwargs: Any) -> asyncio.AbstractServer:
    """Listen for signalling nodes; answer ``hello`` here, everything after it with ``handler``.

    ``on_channel`` is told of a channel once its node has said ``hello`` (and proved it knows
    ``secret``, when there is one), ``on_channel_closed`` when such a channel has ended: a
    channel that never got that far is nobody's, and sees nothing. With a ``secret``, a
    ``hello`` without a proof or with a wrong one is refused, logged in one line with the
    peer's address, and its channel closed; other channels go on.
    """
    me = worker_id or f"pid-{os.getpid()}"
    numbers = itertools.count(1)
    secret = _given(secret)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeted = attached = False
        challenge: bytes | None = None  # the nonce this channel's node must sign; used once

        def refuse(channel: Channel, body: Hello, reason: str) -> IpcError:
            log.warning("ipc %s: refused hello from node %r at %s: %s; closing", channel.name, body.node_id,
                        _peer_address(writer), reason)
            # A tick later: the error response is written first, and flushed on close.
            asyncio.get_running_loop().call_soon(channel._shutdown, f"hello refused: {reason}")
            return IpcError(f"hello refused: {reason}")

        async def gate(channel: Channel, body: Request[Any]) -> BaseModel:
            nonlocal greeted, attached, challenge
            if isinstance(body, HelloChallenge | Hello) and body.version != PROTOCOL_VERSION:
                raise IpcError(f"protocol version mismatch: worker speaks {PROTOCOL_VERSION}, "
                               f"node speaks {body.version}")
            if isinstance(body, HelloChallenge):
                challenge = relay_auth.new_nonce()
                return HelloChallengeResult(version=PROTOCOL_VERSION, nonce=challenge)
            if isinstance(body, Hello):
                proof = None
                if secret is not None:
                    worker_nonce, challenge = challenge, None
                    if body.proof is None or body.nonce is None or worker_nonce is None:
                        raise refuse(channel, body, "no relay_secret proof (this worker requires one)")
                    expected = relay_auth.node_proof(secret, worker_nonce=worker_nonce, node_nonce=body.nonce,
                                                     node_id=body.node_id)
                    if not relay_auth.matches(expected, body.proof):
                        raise refuse(channel, body, "wrong relay_secret proof")
                    proof = relay_auth.worker_proof(secret, node_nonce=body.nonce, worker_nonce=worker_nonce,
                                                    node_id=body.node_id)
                greeted = True
                if body.clock is not None:  # a node's deadlines, read on our clock
                    channel.clock_offset = body.clock - time.time()
                log.info("ipc %s: hello from node %r", channel.name, body.node_id)
                if on_channel is not None and not attached:
                    try:
                        on_channel(channel)
                    except Exception:
                        log.exception("ipc %s: on_channel failed; closing", channel.name)
                        asyncio.get_running_loop().call_soon(channel._shutdown, "internal error")
                        raise IpcError("internal error") from None
                    attached = True
                load = calls() if calls is not None else 0
                return HelloResult(version=PROTOCOL_VERSION, worker_id=me, pid=os.getpid(), calls=load, proof=proof)
            if not greeted:
                raise IpcError(f"'{body.METHOD}' refused: send 'hello' first")
            return await handler(channel, body)

        kwargs = {"name": f"{address}#{next(numbers)}", **channel_kwargs}
        channel = Channel(reader, writer, handler=gate, **kwargs)
        try:
            await channel.run()
        except asyncio.CancelledError:
            # The worker is stopping. Not re-raised: Python 3.11's asyncio.start_server
            # calls ``task.exception()`` on a cancelled handler task and logs the
            # CancelledError as an "Exception in callback" traceback (fixed in 3.12).
            writer.close()
        finally:
            if attached and on_channel_closed is not None:
                on_channel_closed(channel)

    _, where = parse_address(address)
    if not isinstance(where, str):  # (host, port)
        return await asyncio.start_server(on_client, *where)
    _remove_stale_socket(where)
    server = await asyncio.start_unix_server(on_client, where)
    os.chmod(where, 0o600)
    return server


def _remove_stale_socket(path: str) -> None:
    """Unlink a socket file left by a dead worker; refuse to touch a live one or a non-socket."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket; not removing it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
            return
    raise OSError(f"{path} is in use by a running process")
