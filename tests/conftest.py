"""Fixtures and markers for the whole suite.

``tests`` is a package (``tests/__init__.py``), so pytest puts the repository root on
``sys.path``, never ``tests/`` itself: test helpers live in ``tests/support/`` and are
imported as ``tests.support.*``, and nothing in ``tests/`` can hide an installed package
(the PyPI ``janus_client`` is what ``tests/e2e/test_e2e_janus_client_lib.py`` drives).

``slow`` marks what needs more than the pure code: a subprocess (``tests/e2e``,
``tests/loadtest``), Chromium (``tests/browser``) or aiortc media (a test using the relay
fixtures below). ``pytest -m "not slow"`` is the inner loop; CI runs everything.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Iterator

import pytest

#: The whole suite is one machine acting as many clients, all from 127.0.0.1: it runs its
#: servers, in process and as subprocesses (which inherit the environment), without the
#: front door's per-address caps and rates, as README says a load test from one machine must.
#: The front-door tests (tests/signaling/test_frontdoor_server.py, tests/e2e/test_e2e_frontdoor.py)
#: set their own limits, which win over these.
UNLIMITED_ADDRESSES = {
    "VIDEOCALL_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "VIDEOCALL_CREATE_RATE": "0",
    "VIDEOCALL_REGISTER_RATE": "0",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, value in UNLIMITED_ADDRESSES.items():
        os.environ.setdefault(name, value)


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
    from tests.support.worker_calls import running_worker

    async with running_worker() as worker:
        yield worker


#: Folders whose every test starts a process or a browser.
_SLOW_FOLDERS = ("e2e", "browser", "loadtest")
#: Fixtures that bring aiortc media into a test.
_MEDIA_FIXTURES = {"relay_on_loopback", "address"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` by where a test lives and what it uses (see the module docstring)."""
    for item in items:
        folder = item.path.parent.name
        if folder in _SLOW_FOLDERS or _MEDIA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """Cycles are freed only by an explicit ``gc.collect()`` (the code's own) while the test runs."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
