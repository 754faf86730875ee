"""The relay pool against real in-process workers (``shared.ipc.serve`` with a scripted handler).

Where calls are placed (by what the workers report to ``worker.stats``), where their
requests go, what a hangup promises, what the plugin runner is told when a worker goes away,
and that the pool comes back to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from shared import ipc
from shared import messages as m
from signaling.relay_client import RelayPool, RelayUnavailable
from tests.support import waits


class ScriptedWorker:
    """A relay worker that answers every request at once and remembers what it got
    (``worker.stats`` polls apart: they come on their own schedule)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.seen: list[tuple[str, str]] = []  # (method, call_id)
        self.refuse: set[str] = set()  # methods answered with an error
        self.channels: list[ipc.Channel] = []
        self.server: asyncio.AbstractServer | None = None
        #: What ``worker.stats`` reports: CPU seconds so far, extra calls (held for other nodes).
        self.cpu_seconds = 0.0
        self.other_calls = 0
        self.stats_asked = 0
        #: Seconds ``method`` waits before it is answered.
        self.delay: dict[str, float] = {}
        #: Cleared: the worker is hung, nothing is answered until it is set again.
        self.running = asyncio.Event()
        self.running.set()

    async def start(self) -> None:
        self.server = await ipc.serve(self.address, self.handle, on_channel=self.channels.append)

    async def stop(self) -> None:
        """The worker dies: it stops listening and its channels close."""
        assert self.server is not None
        self.server.close()
        for channel in self.channels:
            await channel.close()
        self.channels.clear()
        await self.server.wait_closed()
        self.server = None

    async def handle(self, channel: ipc.Channel, body: m.Request[Any]) -> BaseModel:
        await self.running.wait()
        await asyncio.sleep(self.delay.get(body.METHOD, 0.0))
        if isinstance(body, m.WorkerStats):
            self.stats_asked += 1
            if body.METHOD in self.refuse:
                raise ipc.IpcError("no stats")
            held = len(self.calls()) - len(self.calls("call.hangup")) + self.other_calls
            return m.WorkerStatsResult(calls=held, legs=2 * held, pid=1, cpu_seconds=self.cpu_seconds)
        self.seen.append((body.METHOD, getattr(body, "call_id", "")))
        if body.METHOD in self.refuse:
            raise ipc.IpcError(f"{body.METHOD} refused")
        if isinstance(body, m.CallCreate):
            return m.CallCreateResult(callee_offer=f"offer from {self.address}")
        if isinstance(body, m.CallAccept):
            return m.CallAcceptResult(caller_answer="answer")
        return m.Empty()

    def calls(self, method: str = "call.create") -> list[str]:
        return [call_id for seen, call_id in self.seen if seen == method]


class Pool:
    """A ``RelayPool`` and what it told its listeners."""

    def __init__(self, addresses: list[str], *, timeout: float = 2.0, heartbeat_timeout: float = 1.0) -> None:
        self.notifications: list[m.Notification] = []
        self.lost: list[list[str]] = []
        self.pool = RelayPool(addresses, node_id="n1", timeout=timeout, on_notification=self.notifications.append,
                              on_calls_lost=self.lost.append, reconnect_delay=0.02, stats_interval=0.05,
                              heartbeat_timeout=heartbeat_timeout)


async def until(condition: Callable[[], bool]) -> None:
    await waits.until(condition, timeout=3.0, every=0.01)


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[list[ScriptedWorker]]:
    started = [ScriptedWorker(f"unix:{tmp_path}/w{i}.sock") for i in (1, 2)]
    for worker in started:
        await worker.start()
    yield started
    for worker in started:
        if worker.server is not None:
            await worker.stop()


@pytest.fixture
async def pool(workers: list[ScriptedWorker]) -> AsyncIterator[Pool]:
    p = Pool([w.address for w in workers])
    await p.pool.start(wait=3.0)
    await until(lambda: len(p.pool.connected()) == 2)
    yield p
    await p.pool.close()


def create(call_id: str) -> m.CallCreate:
    return m.CallCreate(call_id=call_id, caller_offer="v=0\r\n")


async def test_calls_go_to_the_least_loaded_worker(pool: Pool, workers: list[ScriptedWorker]) -> None:
    w1, w2 = workers
    for call_id in ("c1", "c2", "c3", "c4"):
        result = await pool.pool.request(create(call_id))
        assert result.callee_offer.startswith("offer from unix:")
    assert (w1.calls(), w2.calls()) == (["c1", "c3"], ["c2", "c4"])
    await pool.pool.request(m.CallHangup(call_id="c2"))
    await pool.pool.request(m.CallHangup(call_id="c4"))
    await pool.pool.request(create("c5"))
    assert w2.calls() == ["c2", "c4", "c5"]  # w2 held none, w1 two


async def test_a_refused_create_does_not_count_as_load(pool: Pool, workers: list[ScriptedWorker]) -> None:
    w1, w2 = workers
    w1.refuse.add("call.create")
    with pytest.raises(ipc.IpcError, match=r"call\.create refused") as caught:
        await pool.pool.request(create("bad"))
    assert not isinstance(caught.value, RelayUnavailable)  # the worker's answer, not an outage
    w1.refuse.clear()
    await pool.pool.request(create("c1"))
    assert w1.calls() == ["bad", "c1"] and w2.calls() == []
    with pytest.raises(RelayUnavailable):  # the refused call was never placed
        await pool.pool.request(m.CallAccept(call_id="bad", callee_answer="v=0\r\n"))


async def test_requests_for_a_call_go_to_its_worker(pool: Pool, workers: list[ScriptedWorker]) -> None:
    w1, w2 = workers
    await pool.pool.request(create("c1"))
    await pool.pool.request(create("c2"))
    assert (await pool.pool.request(m.CallAccept(call_id="c2", callee_answer="v=0\r\n"))).caller_answer == "answer"
    await pool.pool.request(m.LegTrickle(call_id="c1", leg="caller", completed=True))
    await pool.pool.request(m.LegConfigure(call_id="c2", leg="callee", video=False))
    await pool.pool.request(m.LegTrickle(call_id="c2", leg="callee"))
    assert w1.seen == [("call.create", "c1"), ("leg.trickle", "c1")]
    assert w2.seen == [("call.create", "c2"), ("call.accept", "c2"), ("leg.configure", "c2"), ("leg.trickle", "c2")]


async def test_worker_errors_reach_the_caller(pool: Pool, workers: list[ScriptedWorker]) -> None:
    await pool.pool.request(create("c1"))
    workers[0].refuse.add("leg.configure")
    with pytest.raises(ipc.IpcError, match=r"^leg\.configure refused$"):
        await pool.pool.request(m.LegConfigure(call_id="c1", leg="caller", audio=False))


async def test_hangup_forgets_the_call_and_never_raises(pool: Pool, workers: list[ScriptedWorker]) -> None:
    w1, w2 = workers
    await pool.pool.request(create("c1"))
    await pool.pool.request(create("c2"))
    assert await pool.pool.request(m.CallHangup(call_id="c1", reason="bye")) == m.Empty()
    assert w1.seen[-1] == ("call.hangup", "c1")
    with pytest.raises(RelayUnavailable, match="call c1 is not on any connected worker"):
        await pool.pool.request(m.LegTrickle(call_id="c1", leg="caller"))
    # an unknown call, a second hangup: nothing is sent, nothing raised
    assert await pool.pool.request(m.CallHangup(call_id="c1")) == m.Empty()
    assert await pool.pool.request(m.CallHangup(call_id="never")) == m.Empty()
    assert w1.calls("call.hangup") == ["c1"] and w2.calls("call.hangup") == []
    # the worker refuses the hangup: still done here
    w2.refuse.add("call.hangup")
    assert await pool.pool.request(m.CallHangup(call_id="c2")) == m.Empty()
    assert w2.calls("call.hangup") == ["c2"]
    with pytest.raises(RelayUnavailable):
        await pool.pool.request(m.LegTrickle(call_id="c2", leg="caller"))


async def test_hangup_of_a_call_on_a_dead_worker_does_not_raise(pool: Pool, workers: list[ScriptedWorker]) -> None:
    await pool.pool.request(create("c1"))
    await pool.pool.request(create("c2"))
    await workers[0].stop()
    # at once (the pool may not have noticed yet) and once the loss is known
    assert await pool.pool.request(m.CallHangup(call_id="c1")) == m.Empty()
    await until(lambda: len(pool.pool.connected()) == 1)
    assert await pool.pool.request(m.CallHangup(call_id="c1")) == m.Empty()
    assert workers[0].calls("call.hangup") == []
    assert pool.lost in ([], [["c1"]])  # at most once, whether the loss or the hangup came first


async def test_no_connected_worker_is_relay_unavailable(tmp_path: Path) -> None:
    p = Pool([f"unix:{tmp_path}/nobody.sock"])
    await p.pool.start(wait=0.05)
    try:
        with pytest.raises(RelayUnavailable, match=r"^relay unavailable: no relay worker is connected$"):
            await p.pool.request(create("c1"))
        with pytest.raises(RelayUnavailable, match="call c1 is not on any connected worker"):
            await p.pool.request(m.CallAccept(call_id="c1", callee_answer="v=0\r\n"))
        assert await p.pool.request(m.CallHangup(call_id="c1")) == m.Empty()
    finally:
        await p.pool.close()


async def test_calls_of_a_lost_worker_are_reported_once_and_the_pool_reconnects(
        pool: Pool, workers: list[ScriptedWorker]) -> None:
    w1, w2 = workers
    for call_id in ("c1", "c2", "c3", "c4"):
        await pool.pool.request(create(call_id))
    await w1.stop()
    await until(lambda: len(pool.pool.connected()) == 1)
    await until(lambda: pool.lost != [])
    await asyncio.sleep(0.1)  # a few reconnect attempts fail meanwhile
    assert pool.lost == [["c1", "c3"]]
    with pytest.raises(RelayUnavailable):
        await pool.pool.request(m.LegTrickle(call_id="c1", leg="caller"))
    # w2 carries on, and takes the new calls while w1 is away
    await pool.pool.request(m.LegTrickle(call_id="c2", leg="caller"))
    await pool.pool.request(create("c5"))
    assert w2.calls() == ["c2", "c4", "c5"]
    # w1 comes back: the pool reconnects and places calls there again
    await w1.start()
    await until(lambda: len(pool.pool.connected()) == 2)
    await pool.pool.request(create("c6"))
    assert w1.calls() == ["c1", "c3", "c6"]
    assert pool.lost == [["c1", "c3"]]


async def test_worker_notifications_reach_the_listener(pool: Pool, workers: list[ScriptedWorker]) -> None:
    await pool.pool.request(create("c1"))
    state = m.LegState(call_id="c1", leg="caller", state="connected")
    media = m.LegMedia(call_id="c1", leg="callee", kind="audio", mid="0", receiving=True)
    for channel in workers[0].channels + workers[1].channels:
        channel.notify(state)
    workers[1].channels[0].notify(media)
    await until(lambda: len(pool.notifications) == 3)
    assert sorted(pool.notifications, key=lambda n: n.METHOD) == [media, state, state]


async def test_a_busy_worker_gets_no_new_calls(pool: Pool, workers: list[ScriptedWorker]) -> None:
    """The CPU a worker reports outweighs the node's own count: a worker busy with calls
    placed by other nodes (or heavy ones) is passed over until the others catch up."""
    w1, w2 = workers
    w1.other_calls = 3
    asked = w1.stats_asked
    await until(lambda: w1.stats_asked >= asked + 2)  # two reports: a CPU rate is known
    for call_id in ("c1", "c2", "c3"):
        await pool.pool.request(create(call_id))
    assert (w1.calls(), w2.calls()) == ([], ["c1", "c2", "c3"])  # 3 calls reported on w1

    # w2 now burns half a core on its calls; w1 stays idle: w1 gets the next calls although
    # this node placed more on w2 and w1 holds as many calls as w2.
    loop = asyncio.get_running_loop()
    start = loop.time()
    w2.cpu_seconds = 0.0

    async def burn() -> None:
        while True:
            await asyncio.sleep(0.01)
            w2.cpu_seconds = 0.5 * (loop.time() - start)

    burner = asyncio.create_task(burn())
    try:
        await until(lambda: pool.pool.workers[1].load.cpu > 0.3)
        for call_id in ("c4", "c5", "c6"):
            await pool.pool.request(create(call_id))
        assert w1.calls() == ["c4", "c5", "c6"] and w2.calls() == ["c1", "c2", "c3"]
    finally:
        burner.cancel()


async def test_placement_falls_back_to_the_node_count_when_reports_stop(
        pool: Pool, workers: list[ScriptedWorker]) -> None:
    """A worker that stops answering ``worker.stats`` (or has not yet) is weighed by the calls
    this node placed on it, not by a report that no longer holds."""
    w1, w2 = workers
    w1.other_calls = 10  # w1 reports many calls...
    asked = w1.stats_asked
    await until(lambda: w1.stats_asked >= asked + 1)
    await pool.pool.request(create("c1"))
    await pool.pool.request(create("c2"))
    assert w2.calls() == ["c1", "c2"]
    w1.refuse.add("worker.stats")  # ...then stops reporting: its report goes stale
    now = asyncio.get_running_loop().time()
    await until(lambda: not pool.pool.workers[0].load.fresh(asyncio.get_running_loop().time(),
                                                           3 * pool.pool.stats_interval))
    assert asyncio.get_running_loop().time() - now < 1.0
    for call_id in ("c3", "c4"):
        await pool.pool.request(create(call_id))
    assert w1.calls() == ["c3", "c4"]  # by this node's count: 0 and 1 against w2's 2


async def test_stats_give_rates_and_round_trip(pool: Pool, workers: list[ScriptedWorker]) -> None:
    load = pool.pool.workers[0].load
    asked = workers[0].stats_asked
    await until(lambda: workers[0].stats_asked >= asked + 2)
    assert load.stats is not None and load.rtt is not None and 0 < load.rtt < 1.0
    await workers[0].stop()
    await until(lambda: load.stats is None)  # a lost worker's report is forgotten


# --- faults: hung workers, answers that come too late ---------------------------------------


async def test_a_hung_worker_is_dropped_and_its_calls_reported_lost(workers: list[ScriptedWorker]) -> None:
    w1, w2 = workers
    p = Pool([w1.address, w2.address], heartbeat_timeout=0.3)
    await p.pool.start(wait=3.0)
    try:
        await until(lambda: len(p.pool.connected()) == 2)
        for call_id in ("c1", "c2", "c3"):
            await p.pool.request(create(call_id))
        w1.running.clear()  # SIGSTOP: the socket stays open, nothing is answered
        started = asyncio.get_running_loop().time()
        await until(lambda: p.lost != [])
        assert p.lost == [["c1", "c3"]]
        assert asyncio.get_running_loop().time() - started < 0.3 + 0.05 + 0.5  # heartbeat + poll interval
        assert [w.address for w in p.pool.connected()] == [w2.address]
        await p.pool.request(create("c4"))  # placed on the live worker meanwhile
        assert w2.calls() == ["c2", "c4"]
        assert all(channel.closed for channel in w1.channels)  # it drops those calls if it resumes
    finally:
        w1.running.set()
        await p.pool.close()


async def test_a_request_that_times_out_is_relay_unavailable(workers: list[ScriptedWorker]) -> None:
    w1 = workers[0]
    p = Pool([w1.address], timeout=0.2)
    await p.pool.start(wait=3.0)
    try:
        await p.pool.request(create("c1"))
        w1.delay["call.accept"] = 0.5
        with pytest.raises(RelayUnavailable, match=r"did not answer in time"):
            await p.pool.request(m.CallAccept(call_id="c1", callee_answer="v=0\r\n"))
    finally:
        await p.pool.close()


async def test_a_call_created_after_its_timeout_is_hung_up(workers: list[ScriptedWorker]) -> None:
    w1 = workers[0]
    p = Pool([w1.address], timeout=0.2)
    await p.pool.start(wait=3.0)
    try:
        w1.delay["call.create"] = 0.4
        with pytest.raises(RelayUnavailable):
            await p.pool.request(create("late"))
        await until(lambda: w1.calls("call.hangup") == ["late"])
        w1.delay.clear()
        await p.pool.request(create("c2"))  # the pool goes on with the worker
        await asyncio.sleep(0.1)
        assert w1.calls("call.hangup") == ["late"]
    finally:
        await p.pool.close()
