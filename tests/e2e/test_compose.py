"""``docker-compose.yml`` as plain processes: the file cannot drift from the CLI.

What is checked is what the file promises (``tests/support/compose.py`` runs it): both
workers start, both nodes become ready (the compose health check command itself passes), a
name is unique across nodes and listed on both, and a node places its calls on both workers.
"""

from __future__ import annotations

import pytest

from tests.e2e.e2e_support import Clients, Server, connect_call, expect_plugin_error
from tests.support.compose import Fleet, metric
from tests.support.janus_ws import offer_host_address
from tests.support.waits import until

pytestmark = pytest.mark.timeout(120)

def node(fleet: Fleet, service: str) -> Server:
    return Server("videocall", fleet.url(service), "127.0.0.1", 60)


#: Cores a worker may report busy and still count as idle (its own stats and heartbeats).
IDLE_CORES = 0.005


async def workers_idle(port: str, timeout: float = 30.0) -> None:
    """Until node ``port`` sees both workers report (nearly) no CPU."""

    def idle() -> bool:
        cores = metric(port, "videocall_worker_cpu_cores")
        return len(cores) == 2 and max(cores.values()) < IDLE_CORES

    await until(idle, "both workers idle", timeout, every=0.2)


async def test_the_compose_fleet_shares_names_and_places_calls_on_both_workers(fleet: Fleet) -> None:
    with offer_host_address("127.0.0.1"):
        async with Clients(node(fleet, "signal1")) as one, Clients(node(fleet, "signal2")) as two:
            two.suffix = one.suffix  # one test's users, whichever node they are on
            alice = await one.user("alice")
            # a name is unique across the nodes, and both list everyone
            bob = await two.user("bob")
            intruder = await two.user("intruder", register=False)
            await expect_plugin_error(intruder, {"request": "register", "username": alice.name}, 476,
                                      f"Username '{alice.name}' already taken")
            assert {alice.name, bob.name} <= set(await bob.list())
            assert {alice.name, bob.name} <= set(await alice.list())
            # node 1 places its calls on both workers (the least loaded first), once both are
            # seen idle: placement goes by the CPU each worker reports, and a worker just
            # started can report seconds of start-up work
            await workers_idle(fleet.variables["SIGNAL1_PORT"])
            carol, dave = await one.user("carol"), await one.user("dave")
            erin = await one.user("erin")
            await connect_call(carol, dave)
            await connect_call(erin, alice)
            per_worker = metric(fleet.variables["SIGNAL1_PORT"], "videocall_worker_placed_calls")
            busy = {labels for labels, value in per_worker.items() if value >= 1}
            assert len(busy) == 2, per_worker
