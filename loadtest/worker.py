"""A load-client process: runs its share of the calls and reports to the coordinator.

Started by :mod:`loadtest.runner` (multiprocessing, spawn) with a :class:`WorkerPlan`. It
loads the cached clips, makes every PeerConnection of the process offer the configured ICE
address, says ``ready``, waits for the common start time, then starts call ``i`` at
``start + i / rate``. Messages to the coordinator, through one queue, are tuples:

- ``("ready", worker)``
- ``("progress", worker, {...counters...})`` twice a second
- ``("call", worker, CallResult.as_dict())`` as each call ends
- ``("done", worker, {"cpu_seconds": ..., "wall_seconds": ..., "loop_lag_ms": [...]})``
- ``("error", worker, text)``: the process cannot run calls at all (then it exits)

The coordinator's ``stop`` event (Ctrl-C, or the run overran) ends every call early; calls not
started then are reported as not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from typing import Any

from loadtest.clip import load_or_make


@dataclass(frozen=True)
class WorkerPlan:
    url: str
    calls: tuple[int, ...]  # global call indexes this process runs
    rate: float
    duration: float
    codec: str  # "vp8" | "h264" | "opus"
    width: int
    height: int
    bitrate: int
    ice_address: str
    verify_calls: frozenset[int]
    run_id: str


def main(plan: WorkerPlan, worker: int, queue: Any, go: Any, start_at: Any, stop: Any) -> None:
    """Process entry point (all arguments picklable for the spawn start method)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    try:
        from uvloop import run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        from asyncio import run  # type: ignore[assignment]
    try:
        run(_main(plan, worker, queue, go, start_at, stop))
    except Exception as exc:  # noqa: BLE001 - reported, never a traceback on the console
        queue.put(("error", worker, f"{type(exc).__name__}: {exc}"))


async def _main(plan: WorkerPlan, worker: int, queue: Any, go: Any, start_at: Any, stop: Any) -> None:
    from loadtest.call import Call, CallOptions
    from mediarelay import ice

    # aioice never offers loopback; a load client must offer exactly the address the server
    # can reach (127.0.0.1 for ours on loopback, 10.77.0.1 for Janus in its namespace). For the
    # process's life; installing checks the pinned aiortc/aioice versions first.
    ice.install(ice.IcePolicy(addresses=(plan.ice_address,)))
    clips = {"audio": load_or_make("opus")}
    if plan.codec != "opus":
        clips["video"] = load_or_make(plan.codec, plan.width, plan.height, plan.bitrate)
    options = CallOptions(url=plan.url, duration=plan.duration, clips=clips, codec=plan.codec,
                          verify=bool(plan.verify_calls), run_id=plan.run_id)
    queue.put(("ready", worker))
    while not go.is_set():
        if stop.is_set():
            return
        await asyncio.sleep(0.02)
    cpu0, wall0 = time.process_time(), time.monotonic()
    start = wall0 + max(0.0, start_at.value - time.time())

    calls: list[Call] = []
    reported: set[int] = set()

    async def one(index: int) -> None:
        await asyncio.sleep(max(0.0, start + index / plan.rate - time.monotonic()))
        call = Call(index, options, verify=index in plan.verify_calls)
        calls.append(call)
        result = await call.run()
        reported.add(index)
        queue.put(("call", worker, result.as_dict()))

    tasks = [asyncio.create_task(one(index)) for index in plan.calls]
    progress = asyncio.create_task(_report_progress(worker, queue, calls))
    lags: list[float] = []
    lag_monitor = asyncio.create_task(_measure_loop_lag(lags, calls))
    everything = asyncio.gather(*tasks, return_exceptions=True)
    while not everything.done():
        if stop.is_set():
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(everything), 10)
            break
        await asyncio.wait([everything], timeout=0.1)
    progress.cancel()
    lag_monitor.cancel()
    started = {call.index for call in calls}
    for index in plan.calls:
        if index not in reported:
            reason = "interrupted mid-call" if index in started else "not started (run interrupted)"
            queue.put(("call", worker, {"index": index, "ok": False, "stage": "interrupted", "reason": reason}))
    queue.put(("progress", worker, _counters(calls)))
    queue.put(("done", worker, {"cpu_seconds": round(time.process_time() - cpu0, 3),
                                "wall_seconds": round(time.monotonic() - wall0, 3), "loop_lag_ms": lags}))


def _counters(calls: list[Any]) -> dict[str, int]:
    counters = {"started": len(calls), "up": 0, "tx": 0, "rx": 0}
    for call in calls:
        if call.state == "up":
            counters["up"] += 1
        for peer in (call.caller, call.callee):
            counters["tx"] += sum(peer.sent().values())
            counters["rx"] += sum(peer.received().values())
    return counters


#: How often the event loop's lateness is sampled: a late loop means a saturated client.
LAG_INTERVAL = 0.05


async def _measure_loop_lag(lags: list[float], calls: list[Any]) -> None:
    """How late a timer fires, in ms, while media flows: the load client's own headroom.

    Samples taken while a call is being set up are left out: making a PeerConnection's
    certificate and the DTLS handshake block the loop for tens of ms by design.
    """
    while True:
        before = time.monotonic()
        await asyncio.sleep(LAG_INTERVAL)
        if calls and all(call.state != "connecting" for call in calls):
            lags.append(round((time.monotonic() - before - LAG_INTERVAL) * 1000, 2))


async def _report_progress(worker: int, queue: Any, calls: list[Any]) -> None:
    while True:
        await asyncio.sleep(0.5)
        queue.put(("progress", worker, _counters(calls)))
