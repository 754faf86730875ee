"""The registry a fleet shares, on the real Redis at 127.0.0.1:6379 (``.ci/run`` starts it).

The ``Registry`` contract runs over ``MemoryRegistry`` and ``RedisRegistry`` alike; then
what only Redis has: the lease (a node that stops renewing loses its names), two signalling
nodes in this process sharing one prefix (a name is unique across them, ``list`` spans
them, every way a handle ends frees its name on either node), a node killed with SIGKILL,
and an outage of a private ``redis-server`` (the shared one is never stopped). Every test
has its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from shared.settings import Settings
from signaling.node_bus import NodeMessage
from signaling.redis_registry import RedisRegistry, glob_escape, redacted_url
from signaling.registry import MemoryRegistry, Registry, RegistryUnavailable
from signaling.server import SignalingServer, create_registry
from tests.support import waits
from tests.support.janus_ws import Handle, JanusConnection, Session, plugin_data, plugin_result
from tests.support.servers import free_port, videocall_command
from tests.support.toy_relay import ToyRelay

REDIS_URL = "redis://127.0.0.1:6379/0"
HOSTILE_NAMES = ["*", "a*", "x:y", "name:alice", "?", "[abc]", "[", "\\", "{tag}", "new\nline", " ", "😀🎉",
                 "ユーザー", "\u202eevil", "a" * 128]
SDP = "v=0\r\no=- {0} {0} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
OFFER = {"type": "offer", "sdp": SDP.format(1)}
ANSWER = {"type": "answer", "sdp": SDP.format(2)}


def delete_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=glob_escape(prefix) + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test alone (with glob characters, which must be taken literally)."""
    value = f"vctest-{uuid.uuid4().hex[:10]}-[*?]:"
    yield value
    delete_keys(REDIS_URL, value)


@pytest.fixture
async def redis_client() -> AsyncIterator[Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def registries(prefix: str) -> AsyncIterator[Callable[..., RedisRegistry]]:
    """Makes RedisRegistry instances (as many nodes) on the shared Redis and closes them."""
    made: list[RedisRegistry] = []

    def make(lease: float = 12.0, url: str = REDIS_URL) -> RedisRegistry:
        made.append(RedisRegistry(url, prefix=prefix, lease=lease))
        return made[-1]

    yield make
    for registry in made:
        await registry.close()


@pytest.fixture(params=["memory", "redis"])
async def registry(request: pytest.FixtureRequest, registries: Callable[..., RedisRegistry]) -> AsyncIterator[Registry]:
    if request.param == "memory":
        yield MemoryRegistry()
    else:
        yield registries()


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; the seconds it took."""
    return await waits.until(condition, what, timeout, every=0.05)


# --- the Registry contract, on both implementations --------------------------------------------


async def test_claim_lookup_names_release(registry: Registry) -> None:
    assert await registry.names() == [] and await registry.lookup("alice") is None
    assert await registry.claim("alice", "n1/1")
    assert await registry.claim("alice", "n1/1"), "a claim of one's own name is no conflict"
    assert not await registry.claim("alice", "n2/7")
    assert await registry.claim("bob", "n2/7")
    assert await registry.lookup("alice") == "n1/1" and await registry.lookup("bob") == "n2/7"
    assert await registry.names() == ["alice", "bob"]
    await registry.release("alice", "n1/1")
    assert await registry.lookup("alice") is None and await registry.names() == ["bob"]
    assert await registry.claim("alice", "n2/8")


async def test_release_by_someone_else_does_nothing(registry: Registry) -> None:
    assert await registry.claim("alice", "n1/1")
    await registry.release("alice", "n2/1")
    await registry.release("alice", "n1/2")
    await registry.release("nobody", "n1/1")
    assert await registry.lookup("alice") == "n1/1" and await registry.names() == ["alice"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_hostile_names_stay_in_their_own_key(registry: Registry, name: str) -> None:
    for other in ("alice", "alice2", "name"):
        assert await registry.claim(other, "n1/1")
    assert await registry.claim(name, "n1/2")
    assert not await registry.claim(name, "n1/3")
    assert await registry.lookup(name) == "n1/2"
    assert await registry.names() == sorted({"alice", "alice2", "name", name})
    await registry.release(name, "n1/2")
    assert await registry.names() == ["alice", "alice2", "name"]
    assert [await registry.lookup(other) for other in ("alice", "alice2", "name")] == ["n1/1"] * 3


async def test_concurrent_claims_of_one_name_have_one_winner(
        registry: Registry, registries: Callable[..., RedisRegistry]) -> None:
    # On Redis, every claimant is a node of its own (its own connections).
    nodes: list[Registry] = [registry] if isinstance(registry, MemoryRegistry) else [registry, *(registries() for _ in range(4))]
    claims = [nodes[i % len(nodes)].claim("alice", f"n{i % len(nodes)}/{i}") for i in range(40)]
    won = [i for i, ok in enumerate(await asyncio.gather(*claims)) if ok]
    assert len(won) == 1
    assert await registry.lookup("alice") == f"n{won[0] % len(nodes)}/{won[0]}"


# --- Redis only: keys, the lease, errors -----------------------------------------------------


async def test_keys_live_under_the_prefix_and_other_prefixes_are_not_listed(
        registries: Callable[..., RedisRegistry], redis_client: Any, prefix: str) -> None:
    ours = registries()
    other_prefix = prefix.replace("[*?]", "XYZ")
    theirs = RedisRegistry(REDIS_URL, prefix=other_prefix, lease=12)
    try:
        assert await ours.claim("al:ice", "n1/1") and await theirs.claim("bob", "n9/9")
        assert await redis_client.get(f"{prefix}name:al:ice".encode()) == b"n1/1"
        assert 0 < await redis_client.pttl(f"{prefix}name:al:ice".encode()) <= 12_000
        assert await ours.names() == ["al:ice"] and await theirs.names() == ["bob"]
    finally:
        await theirs.close()
        delete_keys(REDIS_URL, other_prefix)


async def test_a_name_lives_as_long_as_its_lease_is_renewed(registries: Callable[..., RedisRegistry]) -> None:
    renewing, stopped = registries(lease=1.0), registries(lease=1.0)
    await renewing.start()  # `stopped` never starts its renewer: a node that died or was cut off
    assert await renewing.claim("kept", "n1/1") and await stopped.claim("lost", "n2/1")
    expired_after = await wait_until(lambda: _missing(renewing, "lost"), 2.0, "the unrenewed name expires")
    assert 0.7 < expired_after < 1.5
    await asyncio.sleep(3.2 - expired_after)
    assert await renewing.lookup("kept") == "n1/1" and await renewing.names() == ["kept"]


async def _missing(registry: Registry, name: str) -> bool:
    return await registry.lookup(name) is None


async def test_renewal_claims_a_lost_key_again_and_gives_up_a_taken_one(
        registries: Callable[..., RedisRegistry], redis_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    node, other = registries(), registries()
    assert await node.claim("alice", "n1/1") and await node.claim("bob", "n1/2")
    await redis_client.delete(node.key("alice"), node.key("bob"))  # as a Redis restarted empty
    assert await other.claim("bob", "n2/5")
    await node.renew()
    assert await node.lookup("alice") == "n1/1" and await node.lookup("bob") == "n2/5"
    assert node.held == {"alice": "n1/1"}
    assert any("'bob' was taken by another owner" in r.getMessage() for r in caplog.records)
    await node.release("bob", "n1/2")  # the handle ends later: the new holder keeps the name
    assert await node.lookup("bob") == "n2/5"


async def test_unreachable_redis_raises_registry_unavailable_and_release_waits(
        registries: Callable[..., RedisRegistry], caplog: pytest.LogCaptureFixture) -> None:
    registry = registries(url=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    for attempt in (lambda: registry.claim("alice", "n1/1"), lambda: registry.lookup("alice"), registry.names):
        with pytest.raises(RegistryUnavailable):
            await attempt()
    await registry.release("alice", "n1/1")  # never raises: retried by the renewer
    assert registry.unreleased == {"alice": "n1/1"}
    assert "hunter2" not in repr(registry) and "hunter2" not in caplog.text
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1, "one line per outage"


async def test_close_gives_the_node_names_back(registries: Callable[..., RedisRegistry]) -> None:
    leaving, staying = registries(), registries()
    await leaving.start()
    assert await leaving.claim("alice", "n1/1") and await leaving.claim("bob", "n1/2")
    assert await staying.claim("carol", "n2/1")
    await leaving.close()
    assert await staying.names() == ["carol"]


def test_redacted_url_hides_only_the_password() -> None:
    assert redacted_url("redis://user:s3cret@redis.example:6380/2") == "redis://user:***@redis.example:6380/2"
    assert redacted_url("rediss://:s3cret@10.0.0.1/0") == "rediss://:***@10.0.0.1/0"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_the_server_picks_redis_only_when_a_url_is_set(caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(create_registry(Settings()), MemoryRegistry)
    caplog.set_level(logging.INFO)
    chosen = create_registry(Settings(redis_url="redis://:s3cret@127.0.0.1:6379/0", registry_lease=5))
    assert isinstance(chosen, RedisRegistry) and chosen.lease == 5 and chosen.prefix == "videocall:"
    assert "s3cret" not in caplog.text and ":***@127.0.0.1:6379" in caplog.text


# --- two signalling nodes on one Redis ----------------------------------------------------------


class User:
    """A client with one session and one VideoCall handle on a node."""

    def __init__(self, conn: JanusConnection, session: Session, handle: Handle) -> None:
        self.conn, self.session, self.handle = conn, session, handle

    @classmethod
    async def on(cls, node: SignalingServer) -> User:
        conn = await JanusConnection.connect(f"ws://127.0.0.1:{node.port}/")
        session = await Session.create(conn)
        return cls(conn, session, await session.attach())

    async def ask(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        _, event = await self.handle.message(body, jsep)
        return plugin_data(event)

    async def register(self, name: str) -> dict[str, Any]:
        return await self.ask({"request": "register", "username": name})

    async def names(self) -> list[str]:
        result = plugin_result((await self.handle.message({"request": "list"}))[1])
        assert result is not None, "list refused"
        return list(result["list"])


def registered(name: str) -> dict[str, Any]:
    return {"videocall": "event", "result": {"event": "registered", "username": name}}


@pytest.fixture
async def fleet(prefix: str) -> AsyncIterator[Callable[..., Awaitable[SignalingServer]]]:
    """Starts signalling nodes (no relay worker) sharing the test's Redis prefix."""
    nodes: list[SignalingServer] = []

    async def node(node_id: str, **settings: Any) -> SignalingServer:
        # reclaim_session_timeout 0: a closed socket frees its names at once (tests of "socket close")
        fields = {"port": 0, "node_id": node_id, "redis_url": REDIS_URL, "redis_key_prefix": prefix,
                  "reclaim_session_timeout": 0, **settings}
        server = SignalingServer(Settings(**fields))
        await server.start()
        nodes.append(server)
        return server

    yield node
    for server in nodes:
        await server.close()


async def test_a_name_is_unique_across_nodes_and_listed_on_both(fleet: Callable[..., Awaitable[SignalingServer]]) -> None:
    node1, node2 = await fleet("n1"), await fleet("n2")
    alice, mallory, bob = await User.on(node1), await User.on(node2), await User.on(node2)
    try:
        assert await alice.register("alice") == registered("alice")
        assert await mallory.register("alice") == \
            {"videocall": "event", "error_code": 476, "error": "Username 'alice' already taken"}
        assert await bob.register("bob") == registered("bob")
        assert await bob.names() == ["alice", "bob"] and await alice.names() == ["alice", "bob"]
        # A callee held by another node is called there: node 1 hosts the call, whose relay
        # (none in this test) answers (tests/e2e/test_fleet_calls.py has the calls with media).
        assert await bob.ask({"request": "call", "username": "alice"}, OFFER) == {
            "videocall": "event", "error_code": 499,
            "error": "Media relay unavailable, try again (relay unavailable: no relay worker is connected)"}
    finally:
        for user in (alice, mallory, bob):
            await user.conn.close()


async def test_a_request_right_after_a_hangup_across_nodes_is_answered(
        fleet: Callable[..., Awaitable[SignalingServer]]) -> None:
    """alice (node 2) hangs up her call hosted on bob's node 1, and asks ``list`` at once:
    node 2 still forwards it (node 1's ``Released`` is on its way), node 1 answers it under a
    new proxy, and the answer reaches node 2 after ``Released``. It is alice's answer all
    the same: an event with her transaction is delivered, not dropped as a stray. The new
    proxy hosts no call, and its going sends no second ``Released``."""
    node1, node2 = await fleet("n1"), await fleet("n2")
    node1.plugin.relay = node2.plugin.relay = ToyRelay()
    assert node2.fleet is not None
    heard: list[NodeMessage] = []  # what node 2 hears from node 1, in order
    hear = node2.fleet.bus.on_message
    node2.fleet.bus.on_message = lambda message: (heard.append(message), hear(message))[1]
    bob, alice = await User.on(node1), await User.on(node2)
    try:
        assert await bob.register("bob") == registered("bob")
        assert await alice.register("alice") == registered("alice")
        assert (await alice.ask({"request": "call", "username": "bob"}, OFFER))["result"]["event"] == "calling"
        await bob.handle.plugin_event("incomingcall", username="alice")
        assert (await bob.ask({"request": "accept"}, ANSWER))["result"]["event"] == "accepted"
        hangup = await alice.handle.send_message({"request": "hangup"})
        listed = await alice.handle.send_message({"request": "list"})
        assert plugin_result((await alice.handle.ack_and_event(hangup))[1])["event"] == "hangup"
        assert plugin_result((await alice.handle.ack_and_event(listed))[1]) == {"list": ["alice", "bob"]}
        # One Released, for the call: the stand-in that answered ``list`` hosted no call, and
        # a Released of its own could reach node 2 after alice had called again.
        await asyncio.sleep(0.2)
        assert [type(message).__name__ for message in heard].count("Released") == 1, heard
    finally:
        for user in (alice, bob):
            await user.conn.close()


ENDINGS = ["detach", "destroy", "socket close", "socket abort", "session timeout"]


@pytest.mark.parametrize("holder", [0, 1])
@pytest.mark.parametrize("ending", ENDINGS)
async def test_a_name_is_freed_however_its_handle_ends_on_either_node(
        fleet: Callable[..., Awaitable[SignalingServer]], ending: str, holder: int) -> None:
    timeout = 0.6 if ending == "session timeout" else 60.0
    nodes = [await fleet("n1", session_timeout=timeout), await fleet("n2", session_timeout=timeout)]
    alice = await User.on(nodes[holder])
    other = await User.on(nodes[1 - holder])
    other.session.start_keepalive(0.2)
    try:
        assert await alice.register("alice") == registered("alice")
        assert (await other.register("alice"))["error_code"] == 476
        match ending:
            case "detach":
                await alice.handle.detach()
            case "destroy":
                await alice.session.destroy()
            case "socket close":
                await alice.conn.close()
            case "socket abort":
                await alice.conn.abort()
            case "session timeout":
                await alice.session.notification("timeout", timeout=3.0)

        async def freed() -> bool:
            return "alice" not in await other.names()

        await wait_until(freed, 3.0, f"alice freed after {ending}")
        assert await other.register("alice") == registered("alice")
    finally:
        other.session.stop_keepalive()
        await alice.conn.close()
        await other.conn.close()


# --- processes: a node killed, Redis itself going away ---------------------------------------------


#: ``registry_lease`` of the node that is killed (s): short, as the test waits for it twice.
KILLED_NODE_LEASE = 1.5


@pytest.mark.slow
async def test_a_killed_node_loses_its_names_within_the_lease(
        fleet: Callable[..., Awaitable[SignalingServer]], prefix: str) -> None:
    port = free_port()
    env = {**os.environ, "VIDEOCALL_REDIS_URL": REDIS_URL, "VIDEOCALL_REDIS_KEY_PREFIX": prefix,
           "VIDEOCALL_REGISTRY_LEASE": str(KILLED_NODE_LEASE), "VIDEOCALL_NODE_ID": "killed"}
    process = subprocess.Popen([*videocall_command(), "signaling", "--port", str(port)], env=env,  # noqa: ASYNC220 - killed by signal, never waited on long
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = await _connect_when_up(port)
        session = await Session.create(conn)
        handle = await session.attach()
        _, event = await handle.message({"request": "register", "username": "alice"})
        assert plugin_data(event) == registered("alice")
        node2 = await fleet("n2")
        bob = await User.on(node2)
        assert await bob.names() == ["alice"]
        await asyncio.sleep(KILLED_NODE_LEASE + 0.5)  # longer than the lease: the live node keeps its name
        assert await bob.names() == ["alice"]
        process.send_signal(signal.SIGKILL)
        process.wait(5)
        await conn.abort()

        async def freed() -> bool:
            return await bob.names() == []

        assert await wait_until(freed, KILLED_NODE_LEASE + 1, "the dead node's name expires") <= KILLED_NODE_LEASE + 0.3
        assert await bob.register("alice") == registered("alice")
        await bob.conn.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


async def _connect_when_up(port: int) -> JanusConnection:
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        try:
            return await JanusConnection.connect(f"ws://127.0.0.1:{port}/")
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


class PrivateRedis:
    """A ``redis-server`` of this test alone, on its own port, without persistence: stopping
    it is an outage, starting it again a Redis that lost every key."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None, "redis-server is not installed"
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.kill()


@pytest.mark.slow
async def test_redis_that_stops_answering_times_out_and_releases_later(private_redis: PrivateRedis) -> None:
    registry = RedisRegistry(private_redis.url, prefix="vc:", lease=6.0)
    other = RedisRegistry(private_redis.url, prefix="vc:", lease=6.0)
    await registry.start()
    loop = asyncio.get_running_loop()
    try:
        assert await registry.claim("alice", "n1/1") and await registry.claim("bob", "n1/2")
        assert private_redis.process is not None
        private_redis.process.send_signal(signal.SIGSTOP)
        try:
            started = loop.time()
            with pytest.raises(RegistryUnavailable):
                await registry.claim("carol", "n1/3")
            assert loop.time() - started < 6.0
            started = loop.time()
            await registry.release("bob", "n1/2")  # during a known outage: at once, for later
            assert loop.time() - started < 0.1 and registry.unreleased == {"bob": "n1/2"}
        finally:
            private_redis.process.send_signal(signal.SIGCONT)

        async def bob_released() -> bool:
            return await other.lookup("bob") is None

        await wait_until(bob_released, 5.0, "the release made during the outage")
        assert await other.lookup("alice") == "n1/1" and registry.unreleased == {}
        assert await registry.claim("carol", "n1/3")
    finally:
        await registry.close()
        await other.close()


@pytest.mark.slow
async def test_redis_outage_refuses_registration_keeps_calls_and_recovers(
        private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(port=0, node_id="n1", redis_url=private_redis.url, redis_key_prefix="vc:", registry_lease=1.5)
    node = SignalingServer(settings)
    node.plugin.relay = ToyRelay()
    await node.start()
    alice, bob, carol, dave = [await User.on(node) for _ in range(4)]
    try:
        for user, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            assert await user.register(name) == registered(name)
        assert plugin_result((await alice.handle.message({"request": "call", "username": "bob"}, OFFER))[1]) == \
            {"event": "calling"}
        await bob.handle.plugin_event("incomingcall", username="alice")
        assert (await bob.ask({"request": "accept"}, ANSWER))["result"]["event"] == "accepted"

        private_redis.kill()
        unavailable = {"videocall": "event", "error_code": 499, "error": "Registry unavailable, try again"}
        assert await dave.register("dave") == unavailable
        assert await dave.ask({"request": "list"}) == unavailable
        assert await carol.ask({"request": "call", "username": "dave"}, OFFER) == unavailable
        # The call goes on: its requests never touch the registry.
        assert (await alice.ask({"request": "set", "bitrate": 128000}))["result"]["event"] == "set"
        await asyncio.sleep(2.0)  # longer than the lease, with the renewer failing each tick
        assert (await bob.ask({"request": "set", "audio": False}))["result"]["event"] == "set"
        assert "Internal error" not in caplog.text and "Unknown error" not in caplog.text

        private_redis.start()  # empty: every key of this node is gone

        async def dave_registers() -> bool:
            return await dave.register("dave") == registered("dave")

        await wait_until(dave_registers, 5.0, "registration works again")
        client = redis.Redis(port=private_redis.port)
        try:
            async def reclaimed() -> bool:
                return all(client.get(f"vc:name:{name}".encode()) == b"n1/%d" % user.handle.id
                           for user, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")))

            await wait_until(reclaimed, 3.0, "the renewer claims this node's names again")
        finally:
            client.close()
        assert await dave.names() == ["alice", "bob", "carol", "dave"]
        assert (await alice.ask({"request": "hangup"}))["result"]["event"] == "hangup"
    finally:
        for user in (alice, bob, carol, dave):
            await user.conn.close()
        await node.close()

