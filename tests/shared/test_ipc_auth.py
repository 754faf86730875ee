"""relay_secret on the IPC channel: both ends prove they know it, over real sockets.

A node with the right secret is served; one with a wrong secret, none, a stale proof, or one
that skips ``hello`` and sends requests anyway is refused, nothing it asked is carried out,
and the worker goes on serving its other channels. A node refuses a worker that cannot prove
the secret back. The secret appears in no log line and no error text.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from shared import relay_auth
from shared.ipc import Channel, ChannelClosed, IpcError, connect, serve, unguarded_listen
from shared.messages import (
    PROTOCOL_VERSION,
    CallCreate,
    CallCreateResult,
    CallHangup,
    Empty,
    Hello,
    HelloChallenge,
    HelloChallengeResult,
    HelloResult,
    Request,
)

SECRET = SecretStr("the-right-relay-secret-0123")
WRONG = SecretStr("a-wrong-relay-secret-987654")
#: Pieces of both secrets no log line or error may contain.
LEAKS = ("right-relay-secret", "wrong-relay-secret")


class Worker:
    """``serve()`` with a handler that records what it carried out, and the channels it was given."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.channels: list[Channel] = []
        self.closed: list[Channel] = []

    async def handle(self, channel: Channel, body: Request[Any]) -> BaseModel:
        self.done.append(body.METHOD)
        if isinstance(body, CallCreate):
            return CallCreateResult(callee_offer=body.caller_offer.upper())
        return Empty()


@pytest.fixture
async def worker() -> AsyncIterator[tuple[Worker, str]]:
    w = Worker()
    server = await serve("tcp:127.0.0.1:0", w.handle, on_channel=w.channels.append,
                         on_channel_closed=w.closed.append, worker_id="w1", secret=SECRET)
    yield w, f"tcp:127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    for channel in w.channels:
        await channel.close()


async def raw_channel(address: str) -> Channel:
    """A channel that says only what the test makes it say (no ``connect()`` handshake)."""
    host, port = address.removeprefix("tcp:").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    channel = Channel(reader, writer, timeout=2, name="raw")
    channel._run_task = asyncio.get_running_loop().create_task(channel.run())
    return channel


async def wait_closed(channel: Channel) -> None:
    for _ in range(200):
        if channel.closed:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the worker did not close the channel")


def no_secret_in(*texts: str) -> None:
    for text in texts:
        for piece in LEAKS:
            assert piece not in text


# --- the proofs, no sockets ----------------------------------------------------------------------


def test_proofs_depend_on_secret_nonces_node_and_role() -> None:
    a, b = relay_auth.new_nonce(), relay_auth.new_nonce()
    proof = relay_auth.node_proof(SECRET, worker_nonce=a, node_nonce=b, node_id="n1")
    assert len(a) == relay_auth.NONCE_SIZE and len(proof) == relay_auth.PROOF_SIZE and a != b
    assert relay_auth.matches(proof, relay_auth.node_proof(SECRET, worker_nonce=a, node_nonce=b, node_id="n1"))
    for other in (relay_auth.node_proof(WRONG, worker_nonce=a, node_nonce=b, node_id="n1"),
                  relay_auth.node_proof(SECRET, worker_nonce=b, node_nonce=a, node_id="n1"),
                  relay_auth.node_proof(SECRET, worker_nonce=a, node_nonce=b, node_id="n2"),
                  relay_auth.worker_proof(SECRET, node_nonce=a, worker_nonce=b, node_id="n1")):  # the other role
        assert not relay_auth.matches(proof, other)
    assert not relay_auth.matches(proof, None)


@pytest.mark.parametrize(("address", "secret", "refused"), [
    ("tcp:0.0.0.0:7001", "", True),
    ("tcp:10.0.0.5:7001", "", True),
    ("tcp:[::]:7001", "", True),
    ("tcp:relay-1:7001", "", True),  # a name may resolve to anything
    ("tcp:0.0.0.0:7001", SECRET.get_secret_value(), False),
    ("tcp:127.0.0.1:7001", "", False),
    ("tcp:127.0.0.2:7001", "", False),
    ("tcp:[::1]:7001", "", False),
    ("tcp:localhost:7001", "", False),
    ("unix:/tmp/w.sock", "", False),
])
def test_only_loopback_and_unix_workers_may_go_without_a_secret(address: str, secret: str, refused: bool) -> None:
    refusal = unguarded_listen(address, SecretStr(secret))
    assert (refusal is not None) == refused
    if refusal:
        assert refusal.startswith(f"refusing to listen on {address} without a relay secret")
        assert "VIDEOCALL_RELAY_SECRET" in refusal and "relay_secret_file" in refusal


# --- over sockets --------------------------------------------------------------------------------


async def test_right_secret_is_accepted_both_ways(worker: tuple[Worker, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    node = await connect(worker[1], node_id="n1", timeout=2, secret=SECRET)
    assert node.peer is not None and node.peer.worker_id == "w1" and node.peer.proof is not None
    assert await node.request(CallCreate(call_id="c1", caller_offer="v=0")) == CallCreateResult(callee_offer="V=0")
    assert worker[0].done == ["call.create"] and len(worker[0].channels) == 1
    await node.close()
    no_secret_in(caplog.text)


@pytest.mark.parametrize(("secret", "reason"), [
    (WRONG, "wrong relay_secret proof"),
    (None, "no relay_secret proof (this worker requires one)"),
    (SecretStr(""), "no relay_secret proof (this worker requires one)"),
])
async def test_a_node_without_the_secret_is_refused_logged_and_closed(
        worker: tuple[Worker, str], caplog: pytest.LogCaptureFixture, secret: SecretStr | None, reason: str) -> None:
    good = await connect(worker[1], node_id="good", timeout=2, secret=SECRET)
    with pytest.raises(IpcError) as refused:
        await connect(worker[1], node_id="intruder", timeout=2, secret=secret)
    assert refused.value.reason == f"hello refused: {reason}"
    lines = [r.getMessage() for r in caplog.records if "refused hello" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("ipc tcp:127.0.0.1:0#2: refused hello from node 'intruder' at 127.0.0.1:")
    assert lines[0].endswith(f"{reason}; closing")
    # Nothing was carried out for it, nobody was told of its channel, and the good node goes on.
    assert worker[0].done == [] and len(worker[0].channels) == 1
    assert await good.request(CallCreate(call_id="c1", caller_offer="ok")) == CallCreateResult(callee_offer="OK")
    await good.close()
    no_secret_in(caplog.text, str(refused.value))


async def test_a_node_that_skips_the_proof_gets_nothing_done(
        worker: tuple[Worker, str], caplog: pytest.LogCaptureFixture) -> None:
    good = await connect(worker[1], node_id="good", timeout=2, secret=SECRET)
    raw = await raw_channel(worker[1])
    for attempt in range(2):  # before and after asking for a challenge it never answers
        with pytest.raises(IpcError, match=r"^'call\.create' refused: send 'hello' first$"):
            await raw.request(CallCreate(call_id=f"x{attempt}", caller_offer="v=0"))
        with pytest.raises(IpcError, match=r"^'call\.hangup' refused: send 'hello' first$"):
            await raw.request(CallHangup(call_id="c1"))
        challenge = await raw.request(HelloChallenge(version=PROTOCOL_VERSION))
        assert isinstance(challenge, HelloChallengeResult) and len(challenge.nonce) == relay_auth.NONCE_SIZE
    # A hello with no proof at all, as a node of before relay_secret would send: refused, closed.
    with pytest.raises(IpcError, match=r"^hello refused: no relay_secret proof"):
        await raw.request(Hello(version=PROTOCOL_VERSION, node_id="old"))
    await wait_closed(raw)
    with pytest.raises(ChannelClosed):
        await raw.request(CallCreate(call_id="x9", caller_offer="v=0"))
    assert worker[0].done == [] and worker[0].closed == []
    assert await good.request(CallHangup(call_id="c1")) == Empty()
    await good.close()
    no_secret_in(caplog.text)


async def test_a_proof_of_an_older_challenge_or_another_node_is_refused(worker: tuple[Worker, str]) -> None:
    """Only the latest challenge of this channel counts, signed for the node id it claims."""
    for older, claimed in ((True, "n1"), (False, "someone-else")):
        raw = await raw_channel(worker[1])
        first = await raw.request(HelloChallenge(version=PROTOCOL_VERSION))
        second = await raw.request(HelloChallenge(version=PROTOCOL_VERSION))
        nonce = relay_auth.new_nonce()
        signed = first.nonce if older else second.nonce
        proof = relay_auth.node_proof(SECRET, worker_nonce=signed, node_nonce=nonce, node_id="n1")
        with pytest.raises(IpcError, match=r"^hello refused: wrong relay_secret proof$"):
            await raw.request(Hello(version=PROTOCOL_VERSION, node_id=claimed, nonce=nonce, proof=proof))
        await wait_closed(raw)
    # The same exchange done right is accepted, on a raw channel too: the test signs correctly.
    raw = await raw_channel(worker[1])
    challenge = await raw.request(HelloChallenge(version=PROTOCOL_VERSION))
    nonce = relay_auth.new_nonce()
    proof = relay_auth.node_proof(SECRET, worker_nonce=challenge.nonce, node_nonce=nonce, node_id="n1")
    result = await raw.request(Hello(version=PROTOCOL_VERSION, node_id="n1", nonce=nonce, proof=proof))
    assert result.proof == relay_auth.worker_proof(SECRET, node_nonce=nonce, worker_nonce=challenge.nonce, node_id="n1")
    # ... and a second hello must prove itself again: the challenge was used up.
    with pytest.raises(IpcError, match=r"^hello refused: no relay_secret proof"):
        await raw.request(Hello(version=PROTOCOL_VERSION, node_id="n1", nonce=nonce, proof=proof))
    await wait_closed(raw)
    assert worker[0].done == []


async def test_the_version_is_checked_before_any_challenge(worker: tuple[Worker, str]) -> None:
    raw = await raw_channel(worker[1])
    with pytest.raises(IpcError, match=f"^protocol version mismatch: worker speaks {PROTOCOL_VERSION}, node speaks 2$"):
        await raw.request(HelloChallenge(version=2))
    await raw.close()


class FakeWorker:
    """Answers the handshake as a worker would, with the proof it is given: ``None`` or wrong."""

    def __init__(self, sign_with: SecretStr | None, challenge: bool = True) -> None:
        self.sign_with = sign_with
        self.challenge = challenge
        self.nonce = relay_auth.new_nonce()
        self.done: list[str] = []

    async def handle(self, channel: Channel, body: Request[Any]) -> BaseModel:
        self.done.append(body.METHOD)
        if isinstance(body, HelloChallenge):
            return HelloChallengeResult(version=PROTOCOL_VERSION, nonce=self.nonce)
        if isinstance(body, Hello):
            proof = None
            if self.sign_with is not None and body.nonce is not None:
                proof = relay_auth.worker_proof(self.sign_with, node_nonce=body.nonce, worker_nonce=self.nonce,
                                                node_id=body.node_id)
            return HelloResult(version=PROTOCOL_VERSION, worker_id="fake", pid=1, calls=0, proof=proof)
        return Empty()


@pytest.mark.parametrize(("sign_with", "reason"), [
    (WRONG, "the worker's relay_secret proof is wrong (another secret, or not our worker)"),
    (None, "the worker did not prove it knows relay_secret (it has none set?)"),
])
async def test_a_node_refuses_a_worker_that_cannot_prove_the_secret(
        sign_with: SecretStr | None, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeWorker(sign_with)
    channels: list[Channel] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channels.append(Channel(reader, writer, handler=fake.handle))
        await channels[-1].run()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    address = f"tcp:127.0.0.1:{server.sockets[0].getsockname()[1]}"
    with pytest.raises(IpcError) as refused:
        await connect(address, node_id="n1", timeout=2, secret=SECRET)
    assert refused.value.reason == reason
    assert fake.done == ["hello.challenge", "hello"]  # the node asked nothing else of it
    for channel in channels:
        await wait_closed(channel)  # the node hung up
    server.close()
    no_secret_in(caplog.text, str(refused.value))


async def test_a_node_with_a_secret_refuses_a_real_worker_without_one() -> None:
    w = Worker()
    server = await serve("tcp:127.0.0.1:0", w.handle, on_channel=w.channels.append)
    address = f"tcp:127.0.0.1:{server.sockets[0].getsockname()[1]}"
    with pytest.raises(IpcError, match=r"^the worker did not prove it knows relay_secret"):
        await connect(address, node_id="n1", timeout=2, secret=SECRET)
    assert w.done == []
    # Without secrets on either side, as before (loopback and unix sockets may go without).
    node = await connect(address, node_id="n1", timeout=2)
    assert node.peer is not None and node.peer.proof is None
    assert await node.request(CallHangup(call_id="c1")) == Empty()
    await node.close()
    server.close()
    for channel in w.channels:
        await channel.close()


async def test_a_unix_socket_worker_with_a_secret_requires_it_too(tmp_path: Path) -> None:
    w = Worker()
    address = f"unix:{tmp_path}/w.sock"
    server = await serve(address, w.handle, on_channel=w.channels.append, on_channel_closed=w.closed.append,
                         secret=SECRET)
    with pytest.raises(IpcError, match=r"^hello refused: no relay_secret proof"):
        await connect(address, node_id="local")
    node = await connect(address, node_id="local", secret=SECRET)
    assert node.peer is not None and node.peer.pid == os.getpid()
    await node.close()
    for _ in range(100):
        if w.closed:
            break
        await asyncio.sleep(0.01)
    assert w.closed == w.channels and len(w.closed) == 1  # told of the good channel's end only
    server.close()
