"""The relay's ICE settings with Janus's names, made to work with aioice.

- ``ice_enforce_list``: addresses or interface names (a prefix matches, as in Janus) whose
  addresses become the relay's host candidates. Loopback is allowed, which aioice alone
  never offers: tests and single-machine setups run with ``["127.0.0.1"]``.
- ``rtp_port_range`` ``"low-high"``: every ICE socket is bound within it, so a container
  can publish exactly those UDP ports.
- ``nat_1_1_mapping``: the public address advertised instead of the host address in the
  relay's SDP (Janus's default, without ``keep_private_host``).
- ``ice_servers``: always an explicit list for aiortc, empty by default. aiortc's own
  default is a public Google STUN server, which a relay must not contact unasked.

``IcePolicy`` holds the resolved settings; ``LOOPBACK`` is the one for a single machine (tests,
benchmarks, load clients of a server on 127.0.0.1). ``install(policy)`` plugs a policy into
aioice for the whole process (through ``aiortc_hooks.ice_sockets``, where the private names
are): a worker has one configuration, and aiortc clients in the same process gather the same way.
This module itself touches no private name.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ifaddr
from aiortc import RTCConfiguration, RTCIceServer

from mediarelay import aiortc_hooks
from shared.settings import Settings, port_range

#: Receive buffer of each ICE socket, as aioice sets it (bursts of video keyframes).
_RCVBUF = 1024 * 1024

_SERVER = re.compile(
    r"(?P<scheme>stuns?|turns?):(?:(?P<user>[^:@/?]+):(?P<password>[^@/?]+)@)?"
    r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?"
)


@dataclass(frozen=True)
class IcePolicy:
    """Where and how the relay's ICE sockets live, and what its SDP advertises."""

    #: Host candidate addresses; empty: aioice's choice (every non-loopback address).
    addresses: tuple[str, ...] = ()
    #: Inclusive UDP port range for ICE sockets; None: any port.
    port_range: tuple[int, int] | None = None
    #: Advertised instead of the host address in the relay's SDP (nat_1_1_mapping); "" = off.
    public_address: str = ""
    #: STUN/TURN servers for aiortc; empty by default so nothing outside is contacted.
    ice_servers: tuple[RTCIceServer, ...] = ()

    def host_addresses(self, use_ipv4: bool, use_ipv6: bool) -> list[str] | None:
        if not self.addresses:
            return None
        wanted = {4: use_ipv4, 6: use_ipv6}
        return [a for a in self.addresses if wanted[ipaddress.ip_address(a).version]]

    def bind(self, address: str) -> socket.socket:
        return bind_udp(address, self.port_range)

    def rtc_configuration(self, **options: Any) -> RTCConfiguration:
        """An RTCConfiguration with this policy's (explicit, maybe empty) ICE servers."""
        return RTCConfiguration(iceServers=list(self.ice_servers), **options)

    def advertise(self, sdp: str) -> str:
        """The relay's SDP as the client must see it: host addresses replaced by the public one."""
        return apply_nat_1_1(sdp, self.public_address) if self.public_address else sdp


#: Host candidates on 127.0.0.1 only, any port: a relay and its clients on one machine.
LOOPBACK = IcePolicy(addresses=("127.0.0.1",))


def policy_from_settings(settings: Settings) -> IcePolicy:
    """Resolve the settings once, at worker start; a bad value raises ValueError naming it."""
    public = settings.nat_1_1_mapping.strip()
    if public:
        try:
            public = str(ipaddress.ip_address(public))
        except ValueError:
            raise ValueError(f"nat_1_1_mapping must be an IP address, not {public!r}") from None
    return IcePolicy(
        addresses=tuple(resolve_enforce_list(settings.ice_enforce_list)),
        port_range=port_range(settings.rtp_port_range) if settings.rtp_port_range else None,
        public_address=public,
        ice_servers=tuple(ice_servers(settings.ice_servers)),
    )


def rtc_configuration(settings: Settings, **options: Any) -> RTCConfiguration:
    """``RTCConfiguration(iceServers=[...])`` from the settings: never aiortc's implicit default."""
    return RTCConfiguration(iceServers=ice_servers(settings.ice_servers), **options)


def ice_servers(urls: Sequence[str]) -> list[RTCIceServer]:
    """``stun:host[:port]`` and ``turn[s]:[user:password@]host[:port][?transport=udp|tcp]``."""
    servers = []
    for url in urls:
        match = _SERVER.fullmatch(url.strip())
        if match is None:
            raise ValueError(f"ice_servers entry {url!r} must look like stun:host:3478 or turn:user:pass@host:3478")
        scheme, host, port, transport = match["scheme"], match["host"], match["port"], match["transport"]
        if scheme.startswith("stun") and (match["user"] or transport):
            raise ValueError(f"ice_servers entry {url!r}: a STUN server takes no credentials or transport")
        if scheme.startswith("turn") and not match["user"]:
            raise ValueError(f"ice_servers entry {url!r}: a TURN server needs user:password@")
        clean = f"{scheme}:{host}" + (f":{port}" if port else "") + (f"?transport={transport}" if transport else "")
        servers.append(RTCIceServer(urls=clean, username=match["user"], credential=match["password"]))
    return servers


def resolve_enforce_list(entries: Sequence[str], adapters: Sequence[Any] | None = None) -> list[str]:
    """Addresses for ``ice_enforce_list``: IP literals as given, interface names (or prefixes,
    as Janus matches them) as their IPv4 and global IPv6 addresses."""
    known = list(ifaddr.get_adapters()) if adapters is None else adapters
    found: list[str] = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            found.append(str(ipaddress.ip_address(entry)))
            continue
        except ValueError:
            pass
        matched = [a for a in known if a.name.startswith(entry) or a.nice_name.startswith(entry)]
        addresses = [_adapter_address(ip.ip) for adapter in matched for ip in adapter.ips]
        usable = [a for a in addresses if a]
        if not usable:
            raise ValueError(f"ice_enforce_list entry {entry!r} is neither an IP address nor an interface with one")
        found.extend(usable)
    return list(dict.fromkeys(found))


def _adapter_address(ip: str | tuple[str, int, int]) -> str:
    if isinstance(ip, str):
        return ip
    address, _flow, scope = ip
    return address if scope == 0 else ""  # link-local IPv6 needs a scope: aioice skips it too


def bind_udp(address: str, ports: tuple[int, int] | None) -> socket.socket:
    """A non-blocking UDP socket bound on ``address``, within ``ports`` when given.

    The search starts at a random port of the range and wraps, so concurrent calls spread
    out; OSError(EADDRINUSE) when the whole range is taken.
    """
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    candidates: Iterator[int]
    if ports is None:
        candidates = iter([0])
    else:
        low, high = ports
        start = random.randint(low, high)
        candidates = iter([*range(start, high + 1), *range(low, start)])
    for port in candidates:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES) and ports is not None:
                continue
            raise
        sock.setblocking(False)
        return sock
    raise OSError(errno.EADDRINUSE, f"no free UDP port in rtp_port_range {ports[0]}-{ports[1]} on {address}")  # type: ignore[index]


def apply_nat_1_1(sdp: str, public: str) -> str:
    """Replace the address of host candidates (and the ``c=`` lines that carry it) by ``public``.

    Only addresses of the public address's family are replaced; ports stay (a 1:1 NAT keeps them).
    """
    version = ipaddress.ip_address(public).version
    replaced: set[str] = set()
    lines = sdp.split("\r\n")
    for i, line in enumerate(lines):
        if line.startswith("a=candidate:"):
            bits = line.split(" ")
            if len(bits) >= 8 and bits[7] == "host" and _version(bits[4]) == version:
                replaced.add(bits[4])
                bits[4] = public
                lines[i] = " ".join(bits)
    ip = f"IP{version}"
    for i, line in enumerate(lines):
        if line.startswith(f"c=IN {ip} ") and line.split(" ")[2] in replaced:
            lines[i] = f"c=IN {ip} {public}"
    return "\r\n".join(lines)


def _version(address: str) -> int:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 0


def install(policy: IcePolicy | None) -> IcePolicy | None:
    """Make every aioice connection of this process gather as ``policy`` says (None: aioice's
    own way); returns the policy it replaces."""
    previous = aiortc_hooks.install_host_sockets(policy)
    assert previous is None or isinstance(previous, IcePolicy)
    return previous


@contextmanager
def installed(policy: IcePolicy) -> Iterator[IcePolicy]:
    """``with installed(policy):`` for a worker's lifetime or one test; restores what was there."""
    previous = install(policy)
    try:
        yield policy
    finally:
        install(previous)
