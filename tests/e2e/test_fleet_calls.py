"""Calls between users of two signalling nodes of ``docker-compose.yml``'s fleet.

alice is a client of node 1, bob of node 2: every flow works as on one node (the callee's
node hosts the call, ``signaling/fleet_calls.py``), with media both ways through a worker,
and what the one-node e2e tests check holds across nodes: busy users on either side, a
hangup from either side, ``set``, and a node that dies mid-call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import FLEET_LEASE
from tests.e2e.e2e_support import (
    MEDIA_TIMEOUT,
    Clients,
    Server,
    User,
    connect_call,
    expect_result,
    expected_notification,
    expected_result,
    place_call,
)
from tests.support.compose import Fleet
from tests.support.janus_ws import offer_host_address

pytestmark = pytest.mark.timeout(120)


@dataclass
class Nodes:
    one: Clients
    two: Clients


@asynccontextmanager
async def clients_on(fleet: Fleet) -> AsyncIterator[Nodes]:
    with offer_host_address("127.0.0.1"):
        async with Clients(Server("videocall", fleet.url("signal1"), "127.0.0.1", 60)) as one, \
                Clients(Server("videocall", fleet.url("signal2"), "127.0.0.1", 60)) as two:
            two.suffix = one.suffix  # one test's users, whichever node they are on
            yield Nodes(one, two)


@pytest.fixture
async def nodes(fleet_session: Fleet) -> AsyncIterator[Nodes]:
    """Clients of the session's fleet (shared with the e2e call tests: each test's users have
    their own names, and a test leaves no session or call behind)."""
    async with clients_on(fleet_session) as nodes:
        yield nodes


@pytest.fixture
async def own_nodes(fleet: Fleet) -> AsyncIterator[Nodes]:
    """Clients of a fleet of this test alone (it kills a node)."""
    async with clients_on(fleet) as nodes:
        yield nodes


async def expect_hangup(user: User, by: User, reason: str, *, core: bool = True) -> None:
    assert await user.handle.plugin_event("hangup", timeout=MEDIA_TIMEOUT) == \
        expected_result(user, {"event": "hangup", "username": by.name, "reason": reason})
    if core:
        assert await user.handle.notification("hangup", timeout=MEDIA_TIMEOUT) == \
            expected_notification(user, "hangup", reason="Close PC")


async def test_a_call_across_nodes_carries_media_both_ways_and_ends_from_the_caller(nodes: Nodes) -> None:
    alice, bob = await nodes.one.user("alice"), await nodes.two.user("bob")
    await connect_call(alice, bob)  # incomingcall, accepted, both webrtcup, video decoded both ways
    # set from the user whose call is hosted by the other node: answered as on one node
    await expect_result(alice, {"request": "set", "video": False, "bitrate": 256000}, {"event": "set"})
    await expect_result(alice, {"request": "hangup"}, {"event": "hangup", "username": alice.name,
                                                      "reason": "Explicit hangup"})
    await expect_hangup(bob, alice, "We did the hangup")
    # alice is answered at home again: bob can call her, and she can accept
    await connect_call(bob, alice, media=False)


async def test_a_call_across_nodes_ends_from_the_callee(nodes: Nodes) -> None:
    alice, bob = await nodes.one.user("alice"), await nodes.two.user("bob")
    await connect_call(alice, bob, media=False)
    await expect_result(bob, {"request": "hangup", "reason": "bye"}, {"event": "hangup", "username": bob.name,
                                                                     "reason": "Explicit hangup"})
    await expect_hangup(alice, bob, "bye")
    await connect_call(alice, bob, media=False)  # and again


async def test_busy_users_on_either_node_answer_user_busy(nodes: Nodes) -> None:
    alice, bob = await nodes.one.user("alice"), await nodes.two.user("bob")
    carol, dave = await nodes.one.user("carol"), await nodes.two.user("dave")
    await connect_call(alice, bob, media=False)
    # carol (node 1) calls bob (node 2), in a call: busy, decided by bob's node
    offer = await carol.new_peer().offer()
    await expect_result(carol, {"request": "call", "username": bob.name},
                        {"event": "hangup", "username": carol.name, "reason": "User busy"}, jsep=offer)
    # dave (node 2) calls alice (node 1), whose call node 2 hosts: busy too
    offer = await dave.new_peer().offer()
    await expect_result(dave, {"request": "call", "username": alice.name},
                        {"event": "hangup", "username": dave.name, "reason": "User busy"}, jsep=offer)
    # and alice cannot start a second call while in this one
    _, event = await alice.message({"request": "call", "username": carol.name})
    assert event["plugindata"]["data"] == {"videocall": "event", "error_code": 480, "error": "Already in a call"}


async def test_a_caller_that_detaches_ends_the_call_on_the_other_node(nodes: Nodes) -> None:
    alice, bob = await nodes.one.user("alice"), await nodes.two.user("bob")
    await connect_call(alice, bob, media=False)
    await alice.handle.request("detach")
    await expect_hangup(bob, alice, "Remote WebRTC hangup")
    assert bob.name in await bob.list() and alice.name not in await bob.list()


async def test_a_node_that_dies_mid_call_ends_it_for_the_peer_within_the_lease(own_nodes: Nodes, fleet: Fleet) -> None:
    alice, bob = await own_nodes.one.user("alice"), await own_nodes.two.user("bob")
    await connect_call(alice, bob, media=False)
    os.killpg(fleet.processes["signal1"].pid, signal.SIGKILL)
    killed = time.monotonic()
    await expect_hangup(bob, alice, "Remote WebRTC hangup")
    assert time.monotonic() - killed < 4 * FLEET_LEASE
    # alice's name was node 1's: it is gone within the lease, and bob is free again
    for _ in range(int(4 * FLEET_LEASE / 0.25)):
        if alice.name not in await bob.list():
            break
        await asyncio.sleep(0.25)
    assert alice.name not in await bob.list()
    erin = await own_nodes.two.user("erin")
    incoming = await place_call(erin, bob)
    assert incoming["plugindata"]["data"]["result"]["username"] == erin.name


async def test_a_renegotiation_crosses_nodes_both_ways_and_media_goes_on(nodes: Nodes) -> None:
    alice, bob = await nodes.one.user("alice"), await nodes.two.user("bob")
    await connect_call(alice, bob)
    assert alice.peer is not None and bob.peer is not None
    # alice (whose call node 2 hosts) offers again: bob gets it as update, answers with set
    await alice.peer.pc.setLocalDescription(await alice.peer.pc.createOffer())
    offer = {"type": "offer", "sdp": alice.peer.pc.localDescription.sdp}
    await expect_result(alice, {"request": "set"}, {"event": "set"}, jsep=offer)
    update = await bob.handle.plugin_event("update", timeout=MEDIA_TIMEOUT)
    assert update["jsep"]["type"] == "offer"
    await bob.peer.set_remote(update["jsep"])  # the same media: no tracks added
    await bob.peer.pc.setLocalDescription(await bob.peer.pc.createAnswer())
    answer = {"type": "answer", "sdp": bob.peer.pc.localDescription.sdp}
    await expect_result(bob, {"request": "set"}, {"event": "set"}, jsep=answer)
    update = await alice.handle.plugin_event("update", timeout=MEDIA_TIMEOUT)
    assert update["jsep"]["type"] == "answer"
    await alice.peer.set_remote(update["jsep"])
    for user in (alice, bob):
        assert user.peer is not None
        await user.peer.wait_frames("video", 10, timeout=MEDIA_TIMEOUT)  # media goes on
