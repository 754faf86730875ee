"""The Admin API of ``videocall serve`` with live calls: ``handle_info`` shows both legs'
counters moving, and ``destroy_session`` / ``detach_handle`` / ``hangup_webrtc`` end a call as
its users' own requests would (each told ``hangup``, the affected client ``detached``).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import clients_of, start_videocall
from tests.e2e.e2e_support import MEDIA_TIMEOUT, Clients, User, connect_call, expected_notification, expected_result
from tests.support.janus_admin import AdminClient
from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(90)

SECRET = "e2e-admin-secret"


@pytest.fixture(scope="module")
def admin_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A node with the Admin API on: (its API URL, its admin URL)."""
    port = free_port()
    env = {"VIDEOCALL_ADMIN_SECRET": SECRET, "VIDEOCALL_ADMIN_PORT": str(port)}
    for url in start_videocall(tmp_path_factory.mktemp("videocall-admin"), "videocall-serve-admin", None, env):
        wait_ready(url)
        yield url, f"ws://127.0.0.1:{port}/"


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Until ``/readyz`` says the node can take a call (its relay worker is connected)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url.replace("ws://", "http://") + "readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready within {timeout:g} s"
        time.sleep(0.2)


@pytest.fixture
async def calls(admin_node: tuple[str, str]) -> AsyncIterator[Clients]:
    async with clients_of(admin_node[0]) as clients:
        yield clients


@pytest.fixture
async def admin(admin_node: tuple[str, str]) -> AsyncIterator[AdminClient]:
    async with AdminClient.connect(admin_node[1], SECRET) as client:
        yield client


async def info_of(admin: AdminClient, user: User) -> dict[str, Any]:
    reply = await admin.request("handle_info", session_id=user.session.id, handle_id=user.handle.id)
    assert reply["janus"] == "success", reply
    return dict(reply["info"])


def totals(webrtc: dict[str, Any]) -> dict[str, int]:
    media = webrtc["media"].values()
    return {f"{direction}_{what}": sum(m["stats"][direction][what] for m in media)
            for direction in ("in", "out") for what in ("packets", "bytes")}


#: The counters of a leg that grow while media flows.
LEG_COUNTERS = ("packets_in", "bytes_in", "packets_out", "bytes_out")


def counters_moved(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether every counter of ``handle_info``'s ``webrtc`` and of both legs grew from ``first``."""
    before, after = totals(first["webrtc"]), totals(second["webrtc"])
    legs = [(first["plugin_specific"]["legs"][leg], second["plugin_specific"]["legs"][leg]) for leg in ("caller", "callee")]
    return all(after[key] > before[key] for key in after) and all(
        now[key] > was[key] for was, now in legs for key in LEG_COUNTERS)


async def test_handle_info_of_a_live_call_shows_both_legs_counters_moving(calls: Clients, admin: AdminClient) -> None:
    alice, bob = await calls.user("alice"), await calls.user("bob")
    await connect_call(alice, bob)
    first = await info_of(admin, alice)
    second = await info_of(admin, alice)
    deadline = time.monotonic() + MEDIA_TIMEOUT
    while not counters_moved(first, second):  # asked again until every counter moved (or fails below)
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
        second = await info_of(admin, alice)

    specific = second["plugin_specific"]
    assert (specific["state"], specific["username"], specific["peer"]) == ("incall", alice.name, bob.name)
    assert (specific["audio_active"], specific["video_active"], specific["bitrate"], specific["leg"]) == (
        True, True, 0, "caller")
    assert second["flags"] == {"negotiated": True, "ready": True, "has-audio": True, "has-video": True}
    assert second["webrtc"]["ice"]["state"] == "connected"
    assert {m["type"] for m in second["webrtc"]["media"].values()} == {"audio", "video"}
    before, after = totals(first["webrtc"]), totals(second["webrtc"])
    assert all(after[key] > before[key] for key in after), (before, after)
    for leg in ("caller", "callee"):
        was, now = first["plugin_specific"]["legs"][leg], specific["legs"][leg]
        assert now["state"] == "connected"
        for key in LEG_COUNTERS:
            assert now[key] > was[key], (leg, key, was, now)
        assert now["lost"] >= 0 and now["nacks_sent"] >= 0 and now["retransmitted"] <= now["nacks_received"]
    # The callee's own handle_info shows its leg in ``webrtc``, the same call in ``legs``.
    callee = await info_of(admin, bob)
    assert callee["plugin_specific"]["leg"] == "callee" and callee["plugin_specific"]["peer"] == alice.name
    assert totals(callee["webrtc"])["in_packets"] > 0


async def expect_call_ended(dropped: User, peer: User, *, core_reason: str) -> None:
    """``dropped``'s PeerConnection was closed by the server: it gets the core ``hangup``, its
    peer the plugin ``hangup`` ("Remote WebRTC hangup") and the core one."""
    hangup = await dropped.handle.notification("hangup", timeout=MEDIA_TIMEOUT)
    assert hangup == expected_notification(dropped, "hangup", reason=core_reason)
    event = await peer.handle.plugin_event("hangup", timeout=MEDIA_TIMEOUT)
    assert event == expected_result(peer, {"event": "hangup", "username": dropped.name,
                                           "reason": "Remote WebRTC hangup"})


async def test_destroy_session_ends_the_call_and_tells_its_client(calls: Clients, admin: AdminClient) -> None:
    alice, bob = await calls.user("alice"), await calls.user("bob")
    await connect_call(alice, bob, media=False)
    reply = await admin.request("destroy_session", session_id=bob.session.id)
    assert (reply["janus"], reply["session_id"]) == ("success", bob.session.id)
    await expect_call_ended(bob, alice, core_reason="Detach")
    detached = await bob.handle.notification("detached")
    assert detached == expected_notification(bob, "detached")
    assert (await bob.session.request("keepalive"))["error"]["code"] == 458
    assert bob.session.id not in (await admin.request("list_sessions"))["sessions"]
    assert bob.name not in await alice.list()


async def test_detach_handle_ends_the_call_and_tells_its_client(calls: Clients, admin: AdminClient) -> None:
    alice, bob = await calls.user("alice"), await calls.user("bob")
    await connect_call(alice, bob, media=False)
    reply = await admin.request("detach_handle", session_id=alice.session.id, handle_id=alice.handle.id)
    assert reply["janus"] == "success"
    await expect_call_ended(alice, bob, core_reason="Detach")
    assert await alice.handle.notification("detached") == expected_notification(alice, "detached")
    assert (await admin.request("list_handles", session_id=alice.session.id))["handles"] == []


async def test_hangup_webrtc_ends_the_call_and_keeps_the_handle(calls: Clients, admin: AdminClient) -> None:
    alice, bob = await calls.user("alice"), await calls.user("bob")
    await connect_call(alice, bob, media=False)
    reply = await admin.request("hangup_webrtc", session_id=bob.session.id, handle_id=bob.handle.id)
    assert reply["janus"] == "success"
    await expect_call_ended(bob, alice, core_reason="Admin API")
    info = await info_of(admin, bob)
    assert info["plugin_specific"]["state"] == "idle" and "webrtc" not in info
