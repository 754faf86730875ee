"""A call nobody answers ends after ``ring_timeout`` for both, with a reason that says so.

Only against our server: Janus lets a call ring for ever (its ``ring_timeout`` is ours).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from tests.e2e.conftest import SHORT_RING_TIMEOUT, clients_of
from tests.e2e.e2e_support import MEDIA_TIMEOUT, Clients, expected_notification, expected_result, place_call

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def ringing(videocall_ring_url: str) -> AsyncIterator[Clients]:
    async with clients_of(videocall_ring_url) as clients:
        yield clients


async def test_an_unanswered_call_ends_for_both_after_ring_timeout(ringing: Clients) -> None:
    alice, bob = await ringing.user("alice"), await ringing.user("bob")
    await place_call(alice, bob)
    rang = time.monotonic()
    hangup = await alice.handle.plugin_event("hangup", timeout=MEDIA_TIMEOUT)
    waited = time.monotonic() - rang
    assert hangup == expected_result(alice, {"event": "hangup", "username": bob.name, "reason": "No answer"})
    assert await bob.handle.plugin_event("hangup", timeout=MEDIA_TIMEOUT) == \
        expected_result(bob, {"event": "hangup", "username": alice.name, "reason": "No answer"})
    assert await alice.handle.notification("hangup", timeout=MEDIA_TIMEOUT) == \
        expected_notification(alice, "hangup", reason="Close PC")
    assert waited > SHORT_RING_TIMEOUT / 2  # not at once: after the timeout (bounds are a benchmark's job)
    # both are free again: bob can call alice
    await place_call(bob, alice)
