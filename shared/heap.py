"""Giving freed heap back to the system after a burst of work ends (glibc's ``malloc_trim``).

Both processes free memory in many small blocks interleaved with blocks that live on: a relay
worker when a call ends (aiortc, OpenSSL, libsrtp), signalling when connections close (each
WebSocket's zlib contexts and buffers, ~64 kB). glibc keeps such freed memory inside its
arenas for the next ``malloc`` instead of returning it, so a process stays at its peak for
good (measured: 3,000 connections closed, signalling kept 229 MB of which 160 MB free in its
arenas; ``bench/memory_probe.py``). ``malloc_trim(0)`` gives back every whole free page of
every arena (``madvise(MADV_DONTNEED)``), which is what makes memory come back.

What ends is mostly cyclic garbage first (aiortc's PeerConnections and transports, websockets'
connections and protocols are full of reference cycles), which only a collection of the oldest
generation frees, and that may not come for many calls: until it does, a trim has nothing to
give back, and calls set up meanwhile allocate around it. Measured on a relay worker
(``bench/soak.py --calls 6 --workers 1``, ``bench/memory_probe.py``): the Call, Legs and
PeerConnections of the last round still alive before a full collection, and the worker
growing by ~2 MB per round of 6 calls with a trim alone; flat with a collection before it.
So the trimmer collects (``gc.collect()``), then trims.

Both run once, ``delay`` seconds after the first release since the last time: a burst of ends
costs one collection and one trim, and a steady stream of them at most one per ``delay``. A
relay worker freezes what it loaded at start-up (``gc.freeze``), so its collection walks only
its calls' objects (a few ms). The trim is glibc only; elsewhere the collection alone.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


#: glibc's ``malloc_trim(pad)``, or None where there is none.
MALLOC_TRIM = _malloc_trim()


class HeapTrimmer:
    """``soon()`` after something big ended: one ``gc.collect()`` and ``malloc_trim(0)`` ``delay`` s later."""

    def __init__(self, delay: float = 1.0, trim: Callable[[int], int] | None = MALLOC_TRIM) -> None:
        self.delay = delay
        self.trim = trim
        #: Collections (and trims) carried out (tests read it).
        self.count = 0
        self._handle: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        """Trim ``delay`` s from now, unless a trim is already due by then (called in a loop)."""
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._handle = None
        gc.collect()
        if self.trim is not None:
            self.trim(0)
        self.count += 1

    @property
    def pending(self) -> bool:
        """A collection and trim is due (something ended since the last one)."""
        return self._handle is not None

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
