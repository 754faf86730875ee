"""Giving freed heap back to the system after a burst of work ends (glibc's ``malloc_trim``).

Both processes free memory in many small blocks interleaved with blocks that live on: a relay
worker when a call ends (aiortc, OpenSSL, libsrtp), signalling when connections close (each
WebSocket's zlib contexts and buffers, ~64 kB). glibc keeps such freed memory inside its
arenas for the next ``malloc`` instead of returning it, so a process stays at its peak for
good (measured: 3,000 connections closed, signalling kept 229 MB of which 160 MB free in its
arenas; ``bench/memory_probe.py``). ``malloc_trim(0)`` gives back every whole free page of
every arena (``madvise(MADV_DONTNEED)``), which is what makes memory come back.

A trim walks the arenas (a few ms for hundreds of MB), so it runs once, ``delay`` seconds after
the first release since the last trim: a burst of ends costs one trim, and a steady stream of
them at most one per ``delay``. glibc only; elsewhere a no-op.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


#: glibc's ``malloc_trim(pad)``, or None where there is none.
MALLOC_TRIM = _malloc_trim()


class HeapTrimmer:
    """``soon()`` after something big was freed: one ``malloc_trim(0)`` ``delay`` s later."""

    def __init__(self, delay: float = 1.0, trim: Callable[[int], int] | None = MALLOC_TRIM) -> None:
        self.delay = delay
        self.trim = trim
        #: Trims carried out (tests and the probe read it).
        self.count = 0
        self._handle: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        """Trim ``delay`` s from now, unless a trim is already due by then (called in a loop)."""
        if self._handle is None and self.trim is not None:
            self._handle = asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._handle = None
        if self.trim is not None:
            self.trim(0)
            self.count += 1

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
