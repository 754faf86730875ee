"""The front door: which clients may open a connection, how often they may create sessions
and register, and how long a connection may stay silent or take to send one frame.

Pure: addresses, headers, counts and the time (``now``, any monotonic clock) go in; a yes,
or the reason for a no, comes out. No sockets, no tasks, no clock. The WebSocket adapter
(``signaling.server``, with ``signaling.guarded_connection``) asks these questions:

- :meth:`FrontDoor.handshake_refusal`, on each request head, before the upgrade or the body: a
  browser page from an Origin not in ``allowed_origins`` gets 403 (upgrades), a new connection
  from an address already holding ``max_connections_per_address`` connections gets 429; both
  with a one-line reason.
- :meth:`FrontDoor.create_refusal`, on a ``create``: 490 when the address creates sessions
  faster than ``create_rate`` (a token bucket of ``create_burst``), 472 when the node already
  holds ``max_sessions``.
- :meth:`FrontDoor.register_refusal`, on a VideoCall ``register``: the plugin's 499 when the
  address registers faster than ``register_rate``.
- :func:`quiet_close_reason`, on a timer: a connection without a session silent for
  ``idle_timeout`` is closed ("idle"), one whose frame has been arriving for longer than
  ``frame_timeout`` too ("frame too slow"), both with WebSocket close code 1008.

Refusals never slow anyone down: a refused request is answered at once, and the buckets and
counts are per address, so one client's flood costs the others nothing. Janus has none of
these limits; each code is the nearest Janus already uses, chosen in :data:`RATE_LIMITED`
and friends below.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.settings import Settings
from signaling.janus_errors import ErrorCode, PluginCode

__all__ = [
    "TokenBucket", "RateLimiter", "ConnectionCounts", "Refusal", "FrontDoor", "client_address",
    "normalize_origin", "quiet_close_reason", "CLOSE_POLICY", "IDLE", "FRAME_TOO_SLOW", "ORIGIN", "CONNECTIONS",
    "CREATE_RATE_LIMITED", "SESSIONS_FULL", "REGISTER_RATE_LIMITED", "REFUSAL_LOG_PERIOD",
]

#: Seconds between two log lines about refusals of one address.
REFUSAL_LOG_PERIOD = 10.0
#: WebSocket close code of every front-door close (RFC 6455 7.4.1: policy violation).
CLOSE_POLICY = 1008
#: Close reason of a connection without a session that sent nothing for ``idle_timeout``.
IDLE = "idle"
#: Close reason of a connection whose frame took longer than ``frame_timeout`` to arrive.
FRAME_TOO_SLOW = "frame too slow"
#: Kinds of handshake refusal (:class:`Refusal`): a foreign or missing Origin, and an address
#: past ``max_connections_per_address``.
ORIGIN = "origin"
CONNECTIONS = "connections"

#: ``create`` beyond ``create_rate``: 490, the generic core error we already answer a
#: connection's ``max_sessions_per_connection`` with. Not 472: that says the node takes no
#: session at all, and a client may go elsewhere for good, while this one may retry in a second.
CREATE_RATE_LIMITED = ErrorCode.UNKNOWN
#: ``create`` beyond ``max_sessions``: 472, exactly Janus's answer when it accepts no new
#: sessions (``accept_new_sessions: false``), with its text and the reason after it.
SESSIONS_FULL = ErrorCode.NOT_ACCEPTING_SESSIONS
#: ``register`` beyond ``register_rate``: the plugin's 499 in a plugin event, where a client
#: already looks for register's refusals (476 taken, 477 already registered); the core ``ack``
#: came first, as for every ``message``.
REGISTER_RATE_LIMITED = PluginCode.UNKNOWN_ERROR


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each request takes one."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> bool:
        """One token if there is one (True), else False and nothing changes."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class RateLimiter:
    """A token bucket per key (client address); ``rate`` 0 lets everything through."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, key: str, now: float) -> bool:
        if not self.enabled:
            return True
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def exhausted(self, key: str, now: float) -> bool:
        """Whether ``key`` has no token left now (without taking one)."""
        bucket = self.buckets.get(key) if self.enabled else None
        if bucket is None:
            return False
        bucket._refill(now)
        return bucket.tokens < 1.0

    def prune(self, now: float) -> None:
        """Forget the buckets that are full again: they would allow exactly what a new one
        does, so memory stays bounded by the addresses active in the last ``burst/rate`` s."""
        for key in [key for key, bucket in self.buckets.items() if bucket.full(now)]:
            del self.buckets[key]


class ConnectionCounts:
    """Open connections per key, against a cap (0: no cap)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.counts: dict[str, int] = {}

    def admit(self, key: str) -> bool:
        """Count one more connection for ``key``, unless it holds ``cap`` already."""
        held = self.counts.get(key, 0)
        if self.cap and held >= self.cap:
            return False
        self.counts[key] = held + 1
        return True

    def release(self, key: str) -> None:
        held = self.counts.get(key, 0) - 1
        if held > 0:
            self.counts[key] = held
        else:
            self.counts.pop(key, None)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: str | None, trusted: Iterable[Network]) -> str:
    """The client a connection counts against: the peer address, or, when the peer is a
    trusted proxy, the right-most X-Forwarded-For hop that is not one (the left ones are
    whatever the client wrote). A malformed hop stops the walk at the last good one."""
    networks = list(trusted)

    def is_trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in networks)

    current = _ip(peer)
    if current is None or not networks or not forwarded_for or not is_trusted(current):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        address = _ip(hop)
        if address is None:
            break
        current = address
        if not is_trusted(address):
            break
    return str(current)


def normalize_origin(origin: str) -> str:
    """Origins compare case-insensitively and without a trailing slash (RFC 6454 serialises
    them lower-case; an operator may write ``https://Example.com/``)."""
    return origin.strip().rstrip("/").lower()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A handshake refused before the upgrade: the HTTP status, the one-line reason (sent as
    the body and logged) and its kind (``ORIGIN`` or ``CONNECTIONS``: the ``/metrics`` label,
    a short fixed word where the reason names an address or an origin)."""

    status: int
    reason: str
    kind: str


def quiet_close_reason(
    now: float, *, last_active: float, partial_since: float | None, has_session: bool,
    idle_timeout: float, frame_timeout: float,
) -> str | None:
    """Why a connection is closed now, or None. ``last_active``: its last data frame (or when
    it opened, or last held a session); ``partial_since``: when the first byte of a frame still
    incomplete arrived. Sessions that exist are governed by ``session_timeout`` instead."""
    if frame_timeout > 0 and partial_since is not None and now - partial_since >= frame_timeout:
        return FRAME_TOO_SLOW
    if idle_timeout > 0 and not has_session and now - last_active >= idle_timeout:
        return IDLE
    return None


class FrontDoor:
    """The limits of one node and the questions the server asks."""

    def __init__(
        self, *, allowed_origins: Iterable[str] = (), allow_missing_origin: bool = True,
        trusted_proxies: Iterable[str] = (), max_connections_per_address: int = 0,
        create_rate: float = 0.0, create_burst: int = 1, register_rate: float = 0.0, register_burst: int = 1,
        max_sessions: int = 0, idle_timeout: float = 0.0, frame_timeout: float = 0.0,
    ) -> None:
        self.allowed_origins = frozenset(normalize_origin(origin) for origin in allowed_origins)
        self.allow_missing_origin = allow_missing_origin
        self.trusted = [ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies]
        self.connections = ConnectionCounts(max_connections_per_address)
        self.creates = RateLimiter(create_rate, create_burst)
        self.registers = RateLimiter(register_rate, register_burst)
        self.max_sessions = max_sessions
        #: One log line per address per REFUSAL_LOG_PERIOD s: a flood of refusals is not a flood of logs.
        self.refusal_logs = RateLimiter(1 / REFUSAL_LOG_PERIOD, 1)
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> FrontDoor:
        return cls(
            allowed_origins=settings.allowed_origins, allow_missing_origin=settings.allow_missing_origin,
            trusted_proxies=settings.trusted_proxies,
            max_connections_per_address=settings.max_connections_per_address,
            create_rate=settings.create_rate, create_burst=settings.create_burst,
            register_rate=settings.register_rate, register_burst=settings.register_burst,
            max_sessions=settings.max_sessions, idle_timeout=settings.idle_timeout,
            frame_timeout=settings.frame_timeout,
        )

    def address(self, peer: str, forwarded_for: str | None) -> str:
        return client_address(peer, forwarded_for, self.trusted)

    def origin_refusal(self, origin: str | None) -> Refusal | None:
        """403 for a browser page of another site (cross-site WebSocket hijacking). No Origin
        at all is not a browser (browsers always send it on a WebSocket handshake), so it
        cannot be a foreign page riding a user's network position: allowed unless
        ``allow_missing_origin`` is off."""
        if origin is None:
            if self.allow_missing_origin:
                return None
            return Refusal(403, "no Origin header, and allow_missing_origin is off", ORIGIN)
        if not self.allowed_origins or normalize_origin(origin) in self.allowed_origins:
            return None
        return Refusal(403, f"Origin {origin[:200]!r} is not in allowed_origins", ORIGIN)

    def handshake_refusal(self, address: str, origins: Sequence[str], *, upgrade: bool,
                          counted: bool = False) -> Refusal | None:
        """A request head's verdict; when None and not ``counted`` already (a connection's
        later requests are), the connection is counted against ``address`` and the caller
        must :meth:`release` it when it closes. Origin is checked on WebSocket
        upgrades only: the plain GETs (demo page, health, metrics) change nothing, a foreign
        page cannot read their answers (no CORS headers), and a browser navigating to the demo
        page sends no Origin at all."""
        if upgrade:
            if len(origins) > 1:  # RFC 6454 7.3: a user agent sends at most one
                return Refusal(403, "more than one Origin header", ORIGIN)
            if (refusal := self.origin_refusal(origins[0] if origins else None)) is not None:
                return refusal
        if not counted and not self.connections.admit(address):
            return Refusal(429, f"too many connections from {address} (at most {self.connections.cap})", CONNECTIONS)
        return None

    def release(self, address: str) -> None:
        self.connections.release(address)

    def log_refusal(self, address: str, now: float) -> bool:
        """Whether to log this refusal of ``address`` (the first in REFUSAL_LOG_PERIOD s)."""
        return self.refusal_logs.allow(address, now)

    def create_refusal(self, address: str, sessions: int, now: float) -> tuple[ErrorCode, str] | None:
        """A ``create`` from ``address`` while the node holds ``sessions``: the core error to
        answer, or None. The node-wide cap comes first, so a refused create costs no token."""
        if self.max_sessions and sessions >= self.max_sessions:
            return SESSIONS_FULL, f"{SESSIONS_FULL.reason} (this node holds its maximum of {self.max_sessions})"
        if not self.creates.allow(address, now):
            return CREATE_RATE_LIMITED, (f"Rate limit: too many sessions created from your address "
                                         f"(at most {self.creates.rate:g}/s), try again later")
        return None

    def register_refusal(self, address: str, now: float) -> tuple[PluginCode, str] | None:
        if not self.registers.allow(address, now):
            return REGISTER_RATE_LIMITED, (f"Rate limit: too many register requests from your address "
                                           f"(at most {self.registers.rate:g}/s), try again later")
        return None

    def quiet_close_reason(self, now: float, *, last_active: float, partial_since: float | None,
                           has_session: bool) -> str | None:
        return quiet_close_reason(now, last_active=last_active, partial_since=partial_since, has_session=has_session,
                                  idle_timeout=self.idle_timeout, frame_timeout=self.frame_timeout)

    @property
    def watch_period(self) -> float | None:
        """How often the adapter should look at its connections (None: nothing to watch)."""
        timeouts = [t for t in (self.idle_timeout, self.frame_timeout) if t > 0]
        return max(0.05, min(1.0, min(timeouts) / 4)) if timeouts else None

    def prune(self, now: float) -> None:
        self.creates.prune(now)
        self.registers.prune(now)
        self.refusal_logs.prune(now)
