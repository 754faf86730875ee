"""A call whose caller's WebSocket is cut: with ``reclaim_session_timeout`` its session, its
name and the call's media stay up, and a new connection's ``claim`` takes the session back
with the events it missed; past the timeout the call ends for the peer as a drop does.

Real aiortc PeerConnections through ``videocall serve``; only against our server (Janus's
own default is 0, and it drops the events of a session without a transport).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.e2e.conftest import clients_of, start_videocall
from tests.e2e.e2e_support import (
    MEDIA_TIMEOUT,
    Clients,
    User,
    connect_call,
    expect_result,
    expected_notification,
    expected_result,
)
from tests.support.janus_ws import Handle, JanusConnection, Session, new_transaction
from tests.support.servers import wait_ready

pytestmark = pytest.mark.timeout(90)

#: Seconds the cut caller's session waits for a claim on this test's server.
RECLAIM = 4.0


@pytest.fixture(scope="module")
def reclaim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_videocall(tmp_path_factory.mktemp("videocall-reclaim"), "videocall-serve-reclaim", None,
                             {"VIDEOCALL_RECLAIM_SESSION_TIMEOUT": str(RECLAIM)})
    url = next(server)
    wait_ready(int(url.rstrip('/').rsplit(':', 1)[1]))
    yield url
    next(server, None)


@pytest.fixture
async def reclaiming(reclaim_url: str) -> AsyncIterator[Clients]:
    async with clients_of(reclaim_url) as clients:
        yield clients


async def claim(clients: Clients, gone: User) -> User:
    """``gone``'s session claimed by a new connection: success, then its handle goes on there."""
    conn = await clients.connect()
    tx = new_transaction()
    assert await conn.request({"janus": "claim", "session_id": gone.session.id, "transaction": tx}) == {
        "janus": "success", "session_id": gone.session.id, "transaction": tx}
    session = Session(conn, gone.session.id)
    back = User(clients, gone.name, conn, session, Handle(session, gone.handle.id))
    back.peer = gone.peer
    return back


async def test_a_cut_caller_claims_its_session_and_the_call_goes_on(reclaiming: Clients) -> None:
    alice, bob = await reclaiming.user("alice"), await reclaiming.user("bob")
    await connect_call(alice, bob)
    assert alice.peer is not None and bob.peer is not None

    await alice.conn.abort()  # the caller's WebSocket is gone, no destroy
    # Media does not go through the WebSocket: both sides keep receiving.
    await alice.peer.wait_frames("video", 15, timeout=MEDIA_TIMEOUT)
    await bob.peer.wait_frames("video", 15, timeout=MEDIA_TIMEOUT)
    assert sorted(await bob.list()) == sorted([alice.name, bob.name])  # her name is held for her
    # bob renegotiates while alice has no connection: his offer reaches her as "update", held.
    await bob.peer.pc.setLocalDescription(await bob.peer.pc.createOffer())
    offer = {"type": "offer", "sdp": bob.peer.pc.localDescription.sdp}
    await expect_result(bob, {"request": "set"}, {"event": "set"}, jsep=offer)
    await bob.conn.expect_none(bob.is_plugin_hangup, within=0.5, what="a hangup while alice is away")

    back = await claim(reclaiming, alice)
    update = await back.handle.plugin_event("update", timeout=MEDIA_TIMEOUT)
    assert update == expected_result(back, {"event": "update"}, jsep="offer")
    await alice.peer.set_remote(update["jsep"])
    await alice.peer.pc.setLocalDescription(await alice.peer.pc.createAnswer())
    answer = {"type": "answer", "sdp": alice.peer.pc.localDescription.sdp}
    await expect_result(back, {"request": "set"}, {"event": "set"}, jsep=answer)
    await bob.peer.set_remote((await bob.handle.plugin_event("update", timeout=MEDIA_TIMEOUT))["jsep"])
    for peer in (alice.peer, bob.peer):
        await peer.wait_frames("video", 10, timeout=MEDIA_TIMEOUT)
    # The claimed session is an ordinary one again: alice hangs up through it.
    await expect_result(back, {"request": "hangup"}, {"event": "hangup", "username": back.name,
                                                      "reason": "Explicit hangup"})
    await bob.handle.plugin_event("hangup", timeout=MEDIA_TIMEOUT)


async def test_past_the_reclaim_timeout_the_peer_gets_its_hangup(reclaiming: Clients) -> None:
    alice, bob = await reclaiming.user("alice"), await reclaiming.user("bob")
    await connect_call(alice, bob)
    assert bob.peer is not None
    await alice.conn.abort()
    await bob.peer.wait_frames("video", 10, timeout=MEDIA_TIMEOUT)  # the call is still up meanwhile
    hangup = await bob.handle.plugin_event("hangup", timeout=RECLAIM + MEDIA_TIMEOUT)
    assert hangup == expected_result(bob, {"event": "hangup", "username": alice.name,
                                           "reason": "Remote WebRTC hangup"})
    assert await bob.handle.notification("hangup", timeout=MEDIA_TIMEOUT) == \
        expected_notification(bob, "hangup", reason="Close PC")
    assert await bob.list() == [bob.name]
    conn: JanusConnection = await reclaiming.connect()
    tx = new_transaction()
    reply = await conn.request({"janus": "claim", "session_id": alice.session.id, "transaction": tx})
    assert reply["janus"] == "error" and reply["error"]["code"] == 458
