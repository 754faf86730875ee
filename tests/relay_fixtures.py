"""Fixtures shared by the relay's test modules (imported by them: a tests/conftest.py would put
tests/ first on sys.path, where tests/janus_client.py would hide the PyPI janus_client)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest


@pytest.fixture
def relay_on_loopback() -> Iterator[None]:
    """This process is ready for relay legs, and they and the test clients offer 127.0.0.1
    (aioice never would)."""
    from mediarelay import aiortc_hooks, ice

    aiortc_hooks.prepare_relay_legs()
    with ice.installed(ice.LOOPBACK):
        yield


@pytest.fixture(name="address")
async def worker_address() -> AsyncIterator[str]:
    """A relay worker serving in the test's own process and loop; its IPC address."""
    from worker_calls import running_worker

    async with running_worker() as worker:
        yield worker
