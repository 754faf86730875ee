"""A worker frees what its ended calls leave, by itself, soon after they end.

Issue 17: workers grew by ~0.35 MB per call they had held. A call's objects (our Call and Legs,
aiortc's PeerConnections and transports, aioice's connections) are full of reference cycles:
after a hangup they were garbage that only a full collection frees, which in a worker came
rarely, so a ``malloc_trim`` a second later had nothing to give back and new calls allocated
around the garbage (``bench/memory_probe.py`` showed the last round's calls alive before a
collection; ``bench/soak.py`` the growth). The worker now collects, then trims, after calls end.

Real calls through a real ``Worker`` (aiortc clients on loopback, media connected), hung up;
the interpreter's own automatic collection is off during the test, so only the worker's can
free the cycles: none of the call-scoped objects is alive once it ran.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from aioice import Connection as IceConnection
from aiortc import RTCDtlsTransport, RTCIceTransport, RTCPeerConnection

from mediarelay.call import Call
from mediarelay.ice import LOOPBACK
from mediarelay.leg import Leg
from mediarelay.worker import Worker
from shared.messages import CallAccept, CallCreate
from tests.support.relay_clients import apply_answer, client, make_answer, make_offer

#: What one call through the worker makes, ours and aiortc's/aioice's.
CALL_SCOPED = (Call, Leg, RTCPeerConnection, RTCDtlsTransport, RTCIceTransport, IceConnection)
CALLS = 3


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """Cycles are freed only by an explicit ``gc.collect()`` (the worker's) while the test runs."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _until(predicate: object, what: str, timeout: float = 10.0) -> None:
    async def loop() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"not seen within {timeout} s: {what}") from None


def _connected(worker: Worker, call_id: str) -> bool:
    call = worker.calls[call_id].call
    return call.caller.state == call.callee.state == "connected"


async def _call_through(worker: Worker, call_id: str) -> list[weakref.ref[object]]:
    """One connected call (audio, video, a data channel), hung up; weak references to the
    worker's objects of it, taken while it was up."""
    caller, callee = client(), client()
    try:
        caller.addTransceiver("audio")
        caller.addTransceiver("video")
        caller.createDataChannel("chat")
        created = await worker.create(None, CallCreate(call_id=call_id, caller_offer=await make_offer(caller)))
        call = worker.calls[call_id].call
        answer = await make_answer(callee, created.callee_offer)
        accepted = await worker._accept(None, CallAccept(call_id=call_id, callee_answer=answer))  # type: ignore[arg-type]
        await apply_answer(caller, accepted.caller_answer)
        await _until(lambda: _connected(worker, call_id), "both legs connected")
        legs = (call.caller, call.callee)
        mine = [call, *legs, *(leg.pc for leg in legs)]
        mine += [t.receiver.transport for leg in legs for t in leg.pc.getTransceivers()]
        mine += [t.receiver.transport.transport for leg in legs for t in leg.pc.getTransceivers()]
        mine += [t.receiver.transport.transport._connection for leg in legs for t in leg.pc.getTransceivers()]
        assert {type(o) for o in mine} >= set(CALL_SCOPED)
        refs = [weakref.ref(o) for o in mine]
        del call, legs, mine
        await worker.hangup(call_id, "Explicit hangup")
        return refs
    finally:
        await caller.close()
        await callee.close()


@pytest.mark.usefixtures("no_automatic_collection")
async def test_ended_calls_leave_no_object_alive_once_the_worker_collected() -> None:
    worker = Worker(LOOPBACK)
    trims: list[int] = []
    worker.heap.delay, worker.heap.trim = 0.05, lambda pad: trims.append(pad) or 1
    try:
        refs: list[weakref.ref[object]] = []
        for number in range(CALLS):
            collected = worker.heap.count
            refs += await _call_through(worker, f"c{number}")
            await _until(lambda before=collected: worker.heap.count > before,  # type: ignore[misc]
                         "the worker's collection after the hangup")
        assert not worker.calls
        alive = [ref() for ref in refs if ref() is not None]
        assert alive == [], f"{len(alive)} object(s) of ended calls alive: {alive[:4]}"
        assert trims and set(trims) == {0}  # and what they held went back to the system
    finally:
        await worker.close()
