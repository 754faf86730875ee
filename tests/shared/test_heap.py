"""``shared.heap.HeapTrimmer``: after something ends, its cyclic garbage is freed and the heap
trimmed, once per burst of ends.

Issue 17: a relay call's objects and a WebSocket connection's are full of reference cycles;
after they end they are garbage that only a full collection frees, and a ``malloc_trim`` alone
had nothing to give back. The interpreter's automatic collection is off in these tests, so only
the trimmer's own collection can free the cycle.
"""

from __future__ import annotations

import asyncio
import weakref

import pytest

from shared.heap import HeapTrimmer


class _Node:
    """Half of a reference cycle, as a call's Leg and its PeerConnection's listeners are."""

    other: _Node | None = None


async def _until(predicate: object, what: str, timeout: float = 5.0) -> None:
    async def loop() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"not seen within {timeout} s: {what}") from None


def _ended_cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.mark.usefixtures("no_automatic_collection")
async def test_a_burst_of_ends_is_collected_then_trimmed_once() -> None:
    trims: list[int] = []
    heap = HeapTrimmer(0.05, trim=lambda pad: trims.append(pad) or 1)
    garbage = [_ended_cycle() for _ in range(3)]
    for _ in range(3):  # three ends in a row: one collection and trim for them
        heap.soon()
    assert heap.pending and trims == []
    await _until(lambda: heap.count == 1, "the trimmer's run")
    assert trims == [0] and not heap.pending
    assert all(ref() is None for ref in garbage)  # freed by the trimmer's collection, before its trim


@pytest.mark.usefixtures("no_automatic_collection")
async def test_without_malloc_trim_the_garbage_is_still_collected() -> None:
    heap = HeapTrimmer(0.01, trim=None)  # not glibc
    garbage = _ended_cycle()
    heap.soon()
    await _until(lambda: heap.count == 1, "the trimmer's run")
    assert garbage() is None


async def test_cancel_drops_a_pending_run() -> None:
    trims: list[int] = []
    heap = HeapTrimmer(0.01, trim=lambda pad: trims.append(pad) or 1)
    heap.soon()
    heap.cancel()
    await asyncio.sleep(0.05)  # past its delay: nothing ran (a stopped worker trims no more)
    assert trims == [] and heap.count == 0 and not heap.pending
