"""Datagrams the fast path sends, held until the end of the loop iteration, then sent together.

A client's frame arrives as a burst (a video frame is several packets, read one after the other
in one pass of the event loop, with other calls' packets). Sent one by one as each was
forwarded, every packet on loopback found its receiving process asleep again and woke it:
3.8k wake-ups/s for 2.8k packets/s in ``bench/relay.py``, a tenth of the worker's CPU in the
kernel's ``try_to_wake_up``. Held per socket and flushed once per iteration (``Outbox``, by
``loop.call_soon``: after every socket the poll found ready has been read), the packets of a
burst leave back to back, ~0.2k wake-ups/s. The delay is the rest of the iteration,
microseconds; the order per socket is kept.

What holds them: a leg's ``aiortc_hooks.SrtpSendBatch`` (protected into a ``sendmmsg`` array,
one system call per flush), or where that cannot be had a ``HeldSender`` (protected ``bytes``,
the transport's ``sendto`` for each at the flush). Either has ``flush()``; ``Outbox.hold`` is
told when one gets its first packet.

This module owns the holding only; which packets go where is ``forwarder.py``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol


class Flushable(Protocol):
    def flush(self) -> None: ...


class Outbox:
    """Flushes every sender that holds packets, once per loop iteration (one per loop,
    ``outbox(loop)``, so the calls of a worker share one ``call_soon`` per burst)."""

    __slots__ = ("_loop", "_dirty")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Flushable] = []

    def hold(self, sender: Flushable) -> None:
        """``sender`` has its first packet: flush it at the end of this iteration."""
        if not self._dirty:
            self._loop.call_soon(self.flush)
        self._dirty.append(sender)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for sender in dirty:
            sender.flush()


class HeldSender:
    """One socket's ``sendto``, held: ``sendto(data, address)`` keeps the datagram until the
    ``Outbox`` flushes. ``on_failed(n)`` hears of the ones not sent then (the transport refused
    them, or closed meanwhile: its socket may be gone)."""

    __slots__ = ("_transport", "_outbox", "_pending", "_on_failed")

    def __init__(self, transport: asyncio.DatagramTransport, outbox: Outbox,
                 on_failed: Callable[[int], None]) -> None:
        self._transport = transport
        self._outbox = outbox
        self._on_failed = on_failed
        self._pending: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, address: Any) -> None:
        pending = self._pending
        if not pending:
            self._outbox.hold(self)
        pending.append((data, address))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        transport = self._transport
        if transport.is_closing():
            self._on_failed(len(pending))
            return
        sendto = transport.sendto
        for data, address in pending:
            try:
                sendto(data, address)
            except (ValueError, TypeError, OSError, RuntimeError):
                self._on_failed(1)


_OUTBOXES: dict[asyncio.AbstractEventLoop, Outbox] = {}


def outbox(loop: asyncio.AbstractEventLoop) -> Outbox:
    """The ``Outbox`` of ``loop``."""
    box = _OUTBOXES.get(loop)
    if box is None:
        for old in [old for old in _OUTBOXES if old.is_closed()]:  # a finished test's loop
            del _OUTBOXES[old]
        box = _OUTBOXES[loop] = Outbox(loop)
    return box
