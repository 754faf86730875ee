"""ICE restart under aiortc, which has none, and how an ICE agent's own end is recognised.

aiortc 1.16 runs ``RTCIceTransport.start`` once, and ``createOffer``/``createAnswer`` always
reuse the first ufrag/pwd. ``IceRestart`` gathers a fresh aioice Connection and puts it behind
the PC's ICE transports; once its checks succeed it carries the same DTLS association (keys,
SRTP, SCTP untouched), as RFC 8445 restarts do in browsers. ``ice_agent_closed`` tells an agent
that gave up (consent expired, RFC 7675) from a client's DTLS close; ``consent_interval`` lets a
test make consent expire in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import aioice.ice
from aiortc import RTCDtlsTransport, RTCIceParameters, RTCPeerConnection

log = logging.getLogger(__name__)


def ice_agent_closed(dtls: RTCDtlsTransport) -> bool:
    """Whether the aioice agent under ``dtls`` is closed: when DTLS ends and this is already
    true, the agent closed itself (consent freshness expired, RFC 7675), not the client's DTLS."""
    return bool(dtls.transport._connection._closed)


#: How long the checks of a restarted ICE agent may take before the leg counts as ICE failed.
ICE_RESTART_TIMEOUT = 30.0


class IceRestart:
    """An ICE restart of one PeerConnection, done under aiortc (which has none).

        restart = await IceRestart.prepare(pc)  # fresh agent gathered; SDP now carries its ufrag/pwd
        ...                                     # offer or answer as usual, candidates trickle to it
        restart.start(remote_ice_parameters)    # checks start; on success the agent takes over
        await restart.close()                   # before closing the PC: stops a restart under way

    Every ICE transport of the PC (one with BUNDLE) gets a fresh aioice ``Connection`` with new
    credentials and sockets. Until its checks succeed the old one still carries the traffic;
    both put what they receive into the queue the DTLS transport is reading, so nothing is
    lost in the switch, and the DTLS association, its SRTP keys and the SCTP association over it
    go on unchanged. If the checks fail (or take longer than ``ICE_RESTART_TIMEOUT``), the old
    agent is put back and the ICE transport is set to failed, which aiortc reports as the PC
    failing: the leg's "ICE failed".
    """

    def __init__(self, swaps: list[tuple[Any, Any, Any]]) -> None:
        self._swaps = swaps  # (RTCIceTransport, old Connection, new Connection)
        self._task: asyncio.Task[None] | None = None
        self._undone = False
        #: Called once the new agent carries the traffic (the forwarder re-reads its pair then).
        self.on_switched: Callable[[], None] | None = None
        self.done = False

    @classmethod
    async def prepare(cls, pc: RTCPeerConnection) -> IceRestart:
        transports = [t.receiver.transport.transport for t in pc.getTransceivers()]
        if pc.sctp is not None:
            transports.append(pc.sctp.transport.transport)
        unique = [t for i, t in enumerate(transports) if t not in transports[:i] and t.state != "closed"]
        swaps = []
        for transport in unique:
            old = transport._connection
            new = aioice.ice.Connection(
                ice_controlling=old.ice_controlling, components=len(old._components),
                stun_server=old.stun_server, turn_server=old.turn_server, turn_username=old.turn_username,
                turn_password=old.turn_password, turn_ssl=old.turn_ssl, turn_transport=old.turn_transport,
                transport_policy=old._transport_policy)
            new._queue = old._queue  # what DTLS reads: fed by both agents during the switch
            swaps.append((transport, old, new))
        await asyncio.gather(*(new.gather_candidates() for _, _, new in swaps))
        for transport, _, new in swaps:
            transport._connection = new  # trickled candidates go to the new agent
            transport.iceGatherer._connection = new  # SDP carries its credentials and candidates
            transport.iceGatherer._remote_candidates_end = False
        return cls(swaps)

    def start(self, remote: RTCIceParameters) -> None:
        """Start the checks against the peer's new credentials (from its offer or answer)."""
        if self._task is None and not self._undone:
            self._task = asyncio.ensure_future(self._connect(remote))

    async def _connect(self, remote: RTCIceParameters) -> None:
        async def connect(new: aioice.ice.Connection) -> None:
            new.remote_is_lite = bool(remote.iceLite)
            new.remote_username = remote.usernameFragment
            new.remote_password = remote.password
            await new.connect()

        try:
            await asyncio.wait_for(asyncio.gather(*(connect(new) for _, _, new in self._swaps)), ICE_RESTART_TIMEOUT)
        except (TimeoutError, ConnectionError) as exc:
            log.info("ICE restart failed: %r", exc)
            await self.abort()
            for transport, _, _ in self._swaps:
                if transport.state != "closed":
                    transport._RTCIceTransport__setState("failed")
            return
        for transport, old, new in self._swaps:
            if transport.state == "closed":
                continue
            transport._recv = new.recv
            transport._send = new.send
            monitor = transport._RTCIceTransport__monitor_task
            if monitor is not None:
                monitor.cancel()
            transport._RTCIceTransport__monitor_task = asyncio.ensure_future(transport._monitor())
            old._queue = asyncio.Queue()  # closing it must not wake the DTLS reader
            await old.close()
        self.done = True
        if self.on_switched is not None:
            self.on_switched()

    async def abort(self) -> None:
        """Undo ``prepare``: the old agent is back behind the transport, the new one closed."""
        if self._undone or self.done:
            return
        self._undone = True
        for transport, old, new in self._swaps:
            transport._connection = old
            transport.iceGatherer._connection = old
            transport.iceGatherer._remote_candidates_end = old._remote_candidates_end
            new._queue = asyncio.Queue()
            await new.close()

    async def close(self) -> None:
        """Stop a restart under way (before the PC closes, which then closes the old agent)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.abort()
        for transport, old, _ in self._swaps:
            if transport.state == "closed" and not self.done:
                await old.close()  # the PC is closing and waits for the old agent's end


@contextlib.contextmanager
def consent_interval(seconds: float) -> Iterator[None]:
    """Every aioice agent of this process checks consent every ``seconds`` (x0.8-1.2) while in
    the block, instead of 5 s: after 6 failed checks in a row an agent gives up, about 30 s by
    default. For tests of a client that vanishes; restored on exit."""
    previous = aioice.ice.CONSENT_INTERVAL
    aioice.ice.CONSENT_INTERVAL = seconds  # type: ignore[assignment]
    try:
        yield
    finally:
        aioice.ice.CONSENT_INTERVAL = previous
