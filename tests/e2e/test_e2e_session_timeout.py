"""Session expiry (§4 `timeout`): a session without requests for `session_timeout` seconds is
destroyed, its names are freed and its call is hung up. Runs on a server started with a
2-second session timeout; sessions that must survive send keepalives.
"""

from __future__ import annotations

import pytest

from tests.e2e.e2e_support import (
    Clients,
    connect_call,
    expected_core_error,
    expected_notification,
    expected_result,
)
from tests.support.janus_ws import new_transaction

pytestmark = pytest.mark.timeout(60)

KEEPALIVE = 0.5


def expiry_wait(clients: Clients) -> float:
    # Janus checks its sessions every 2 s: expiry comes between timeout and timeout + 2 s.
    return clients.server.session_timeout + 4


async def test_session_timeout_sends_timeout_and_frees_the_username(expiring: Clients) -> None:
    watcher = await expiring.user("watcher")
    watcher.session.start_keepalive(KEEPALIVE)
    sleeper = await expiring.user("sleeper")
    assert await watcher.list() == sorted([sleeper.name, watcher.name])

    notification = await sleeper.session.notification("timeout", timeout=expiry_wait(expiring))
    assert notification == {"janus": "timeout", "session_id": sleeper.session.id}
    assert await watcher.list() == [watcher.name]
    tx = new_transaction()
    assert await sleeper.session.request("keepalive", transaction=tx) == expected_core_error(
        tx, 458, f"No such session {sleeper.session.id}", session_id=sleeper.session.id)
    # The keepalives kept the other session alive.
    await watcher.session.keepalive()


async def test_session_timeout_mid_call_hangs_up_the_peer(expiring: Clients) -> None:
    alice = await expiring.user("alice")
    bob = await expiring.user("bob")
    alice.session.start_keepalive(KEEPALIVE)
    bob.session.start_keepalive(KEEPALIVE)
    await connect_call(alice, bob, media=False)
    alice.session.stop_keepalive()

    notification = await alice.session.notification("timeout", timeout=expiry_wait(expiring))
    assert notification == {"janus": "timeout", "session_id": alice.session.id}
    hangup = await bob.handle.plugin_event("hangup")
    assert hangup == expected_result(bob, {"event": "hangup", "username": alice.name,
                                           "reason": "Remote WebRTC hangup"})
    assert await bob.handle.notification("hangup") == expected_notification(bob, "hangup", reason="Close PC")
    assert await bob.list() == [bob.name]
