"""ICE host sockets: aioice gathers and binds as ``mediarelay.ice`` decides.

aioice gathers host candidates from ``aioice.ice.get_host_addresses`` (which never offers
127.0.0.1) and binds each on port 0 inside ``Connection.get_component_candidates``. While a
``HostSockets`` provider is installed both are replaced, so ``ice_enforce_list`` (loopback
included) and ``rtp_port_range`` work. ``mediarelay.ice`` holds the policy (Janus's settings,
no private name); this module only plugs it in, for every Connection of the process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Protocol

import aioice.ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

from mediarelay.aiortc_hooks.versions import check_versions

log = logging.getLogger(__name__)


class HostSockets(Protocol):
    """What ``ice.IcePolicy`` provides: which host addresses to use and how to bind on one."""

    def host_addresses(self, use_ipv4: bool, use_ipv6: bool) -> list[str] | None:
        """The addresses to gather on, or None for aioice's own choice."""

    def bind(self, address: str) -> socket.socket:
        """A bound, non-blocking UDP socket on ``address`` (OSError if none can be had)."""


_ORIGINAL_GET_HOST_ADDRESSES = aioice.ice.get_host_addresses
_ORIGINAL_GET_COMPONENT_CANDIDATES = aioice.ice.Connection.get_component_candidates
_installed: HostSockets | None = None


def install_host_sockets(provider: HostSockets | None) -> HostSockets | None:
    """Make every aioice Connection of this process gather and bind as ``provider`` says.

    ``None`` gives aioice back its own gathering. Returns the provider it replaces, so a
    caller (a test, ``run_worker``) can put it back when done.
    """
    global _installed
    check_versions()
    previous, _installed = _installed, provider
    if provider is None:
        aioice.ice.get_host_addresses = _ORIGINAL_GET_HOST_ADDRESSES
        aioice.ice.Connection.get_component_candidates = _ORIGINAL_GET_COMPONENT_CANDIDATES  # type: ignore[method-assign]
    else:
        aioice.ice.get_host_addresses = _get_host_addresses
        aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]
    return previous


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    provider = _installed
    addresses = provider.host_addresses(use_ipv4, use_ipv6) if provider is not None else None
    return addresses if addresses is not None else _ORIGINAL_GET_HOST_ADDRESSES(use_ipv4, use_ipv6)


async def _get_component_candidates(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
) -> list[Candidate]:
    """aioice's ``get_component_candidates`` with host sockets bound by the provider.

    Host candidates are built exactly as aioice builds them; STUN (server-reflexive) candidates
    come from aioice's own ``server_reflexive_candidate`` on our sockets, and TURN is left to
    aioice's original (called with no host address, it only allocates on the TURN server).
    """
    provider = _installed
    if provider is None:
        return await _ORIGINAL_GET_COMPONENT_CANDIDATES(self, component, addresses, timeout)
    loop = asyncio.get_running_loop()
    candidates: list[Candidate] = []
    host_protocols: list[aioice.ice.StunProtocol] = []
    for address in addresses:
        try:
            sock = provider.bind(address)
        except OSError as exc:
            log.warning("ICE: no UDP socket on %s: %s", address, exc)
            continue
        _, protocol = await loop.create_datagram_endpoint(lambda: aioice.ice.StunProtocol(self), sock=sock)
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        host_protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    self._protocols += host_protocols

    async def reflexive() -> list[Candidate]:
        stun = self.stun_server
        if not stun:
            return []
        tasks = [
            asyncio.ensure_future(aioice.ice.server_reflexive_candidate(protocol, stun))
            for protocol in host_protocols
            if ipaddress.ip_address(protocol.local_candidate.host).version == 4
        ]
        if not tasks:
            return []
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        return [task.result()[0] for task in done if task.exception() is None]

    async def relayed() -> list[Candidate]:
        if not self.turn_server:
            return []
        return await _ORIGINAL_GET_COMPONENT_CANDIDATES(self, component, [], timeout)

    more = await asyncio.gather(reflexive(), relayed())
    return candidates + more[0] + more[1]
