"""The front door's pure parts: buckets, counts, addresses, origins and quiet connections,
with time passed in (no socket, no sleep)."""

from __future__ import annotations

import ipaddress

import pytest

from shared.settings import Settings
from signaling.frontdoor import (
    CONNECTIONS,
    FRAME_TOO_SLOW,
    IDLE,
    ORIGIN,
    ConnectionCounts,
    FrontDoor,
    RateLimiter,
    Refusal,
    TokenBucket,
    client_address,
    quiet_close_reason,
)
from signaling.janus_errors import ErrorCode, PluginCode


def test_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(100.4)  # 0.8 of a token
    assert bucket.take(100.5)  # one whole token after half a second at 2/s
    assert not bucket.take(100.5)
    assert [bucket.take(200.0) for _ in range(4)] == [True, True, True, False]  # refilled to the burst, no more


def test_bucket_ignores_a_clock_that_goes_back() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


def test_rate_limiter_is_per_key_and_zero_rate_is_no_limit() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("b", 0.0)  # another address has its own bucket
    assert limiter.allow("a", 1.0)
    unlimited = RateLimiter(rate=0.0, burst=1)
    assert all(unlimited.allow("a", 0.0) for _ in range(1000))
    assert unlimited.buckets == {}


def test_rate_limiter_prunes_only_full_buckets() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    limiter.allow("old", 0.0)
    limiter.allow("new", 5.0)
    limiter.prune(5.5)
    assert set(limiter.buckets) == {"new"}
    limiter.prune(6.0)
    assert limiter.buckets == {}


def test_connection_counts_cap_and_recover() -> None:
    counts = ConnectionCounts(cap=2)
    assert [counts.admit("a"), counts.admit("a"), counts.admit("a")] == [True, True, False]
    assert counts.admit("b")
    counts.release("a")
    assert counts.admit("a")
    counts.release("a")
    counts.release("a")
    counts.release("b")
    assert counts.counts == {}
    assert all(ConnectionCounts(cap=0).admit("a") for _ in range(1000))  # 0: no cap


PROXIES = [ipaddress.ip_network(net) for net in ("10.0.0.0/8", "::1/128")]


@pytest.mark.parametrize(("peer", "xff", "expected"), [
    ("203.0.113.5", None, "203.0.113.5"),
    ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # not a proxy: its header is the client's word
    ("10.1.2.3", None, "10.1.2.3"),
    ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
    ("10.1.2.3", "1.1.1.1, 198.51.100.1", "198.51.100.1"),  # the left hop is whatever the client wrote
    ("10.1.2.3", "198.51.100.1, 10.9.9.9", "198.51.100.1"),  # through two proxies
    ("10.1.2.3", "10.8.8.8, 10.9.9.9", "10.8.8.8"),  # all proxies: the farthest
    ("10.1.2.3", "198.51.100.1, garbage", "10.1.2.3"),  # malformed: stop at the last good hop
    ("::1", "2001:db8::7", "2001:db8::7"),
])
def test_client_address(peer: str, xff: str | None, expected: str) -> None:
    assert client_address(peer, xff, PROXIES) == expected


def test_client_address_without_trusted_proxies_is_the_peer() -> None:
    assert client_address("10.1.2.3", "198.51.100.1", []) == "10.1.2.3"


def test_origin_any_by_default() -> None:
    door = FrontDoor()
    assert door.handshake_refusal("a", ["https://evil.example"], upgrade=True) is None
    assert door.handshake_refusal("a", [], upgrade=True) is None


def test_origin_allowed_list() -> None:
    door = FrontDoor(allowed_origins=["https://Example.com/"])
    assert door.handshake_refusal("a", ["https://example.com"], upgrade=True) is None
    assert door.handshake_refusal("a", [], upgrade=True) is None  # not a browser
    assert door.handshake_refusal("a", ["https://evil.example"], upgrade=True) == \
        Refusal(403, "Origin 'https://evil.example' is not in allowed_origins", ORIGIN)
    assert door.handshake_refusal("a", ["https://example.com.evil.example"], upgrade=True) is not None
    assert door.handshake_refusal("a", ["https://example.com", "https://example.com"], upgrade=True) == \
        Refusal(403, "more than one Origin header", ORIGIN)
    assert door.handshake_refusal("a", ["https://evil.example"], upgrade=False) is None  # a plain GET


def test_missing_origin_refused_when_asked() -> None:
    door = FrontDoor(allowed_origins=["https://example.com"], allow_missing_origin=False)
    assert door.handshake_refusal("a", [], upgrade=True) == \
        Refusal(403, "no Origin header, and allow_missing_origin is off", ORIGIN)


def test_refused_origin_takes_no_connection_slot() -> None:
    door = FrontDoor(allowed_origins=["https://example.com"], max_connections_per_address=1)
    assert door.handshake_refusal("a", ["https://evil.example"], upgrade=True) is not None
    assert door.handshake_refusal("a", ["https://example.com"], upgrade=True) is None
    assert door.handshake_refusal("a", ["https://example.com"], upgrade=True) == \
        Refusal(429, "too many connections from a (at most 1)", CONNECTIONS)
    door.release("a")
    assert door.handshake_refusal("a", ["https://example.com"], upgrade=True) is None


def test_create_refusals() -> None:
    door = FrontDoor(create_rate=1.0, create_burst=2, max_sessions=10)
    assert door.create_refusal("a", 0, 0.0) is None
    assert door.create_refusal("a", 1, 0.0) is None
    code, text = door.create_refusal("a", 2, 0.0) or (None, "")
    assert code == ErrorCode.UNKNOWN == 490
    assert text == "Rate limit: too many sessions created from your address (at most 1/s), try again later"
    assert door.create_refusal("b", 2, 0.0) is None
    assert door.create_refusal("a", 3, 1.0) is None  # recovered
    assert door.create_refusal("c", 10, 1.0) == (
        ErrorCode.NOT_ACCEPTING_SESSIONS, "Currently not accepting new sessions (this node holds its maximum of 10)")
    assert door.create_refusal("c", 9, 1.0) is None  # the full node cost "c" no token
    assert door.create_refusal("c", 9, 1.0) is None


def test_register_refusal() -> None:
    door = FrontDoor(register_rate=0.5, register_burst=1)
    assert door.register_refusal("a", 0.0) is None
    assert door.register_refusal("a", 1.0) == (
        PluginCode.UNKNOWN_ERROR, "Rate limit: too many register requests from your address (at most 0.5/s), try again later")
    assert door.register_refusal("a", 2.0) is None


@pytest.mark.parametrize(("now", "last", "partial", "session", "expected"), [
    (10.0, 0.0, None, False, None),
    (30.0, 0.0, None, False, IDLE),
    (30.0, 0.0, None, True, None),  # sessions have session_timeout
    (30.0, 5.0, None, False, None),
    (15.0, 14.0, 5.0, True, FRAME_TOO_SLOW),  # a trickled frame, even with a session
    (14.9, 14.0, 5.0, True, None),
])
def test_quiet_close_reason(now: float, last: float, partial: float | None, session: bool, expected: str | None) -> None:
    assert quiet_close_reason(now, last_active=last, partial_since=partial, has_session=session,
                              idle_timeout=30.0, frame_timeout=10.0) == expected


def test_zero_timeouts_never_close() -> None:
    assert quiet_close_reason(1e9, last_active=0.0, partial_since=0.0, has_session=False,
                              idle_timeout=0.0, frame_timeout=0.0) is None
    assert FrontDoor().watch_period is None


def test_settings_defaults_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VIDEOCALL_MAX_CONNECTIONS_PER_ADDRESS", "VIDEOCALL_CREATE_RATE", "VIDEOCALL_REGISTER_RATE"):
        monkeypatch.delenv(name, raising=False)  # tests/conftest.py lifts them for the suite
    settings = Settings(allowed_origins="https://a.example, https://b.example", trusted_proxies='["10.0.0.0/8"]')
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.trusted_proxies == ["10.0.0.0/8"]
    door = FrontDoor.from_settings(Settings())
    assert (door.connections.cap, door.creates.rate, door.creates.burst, door.registers.rate, door.max_sessions,
            door.idle_timeout, door.frame_timeout) == (64, 10.0, 20, 10.0, 100_000, 30.0, 10.0)
    assert door.allowed_origins == frozenset() and door.allow_missing_origin
    with pytest.raises(ValueError, match="trusted_proxies: 'nope' is not an IP address or CIDR block"):
        Settings(trusted_proxies="nope")


def test_refusals_of_one_address_are_logged_once_per_period() -> None:
    door = FrontDoor()
    assert door.log_refusal("a", 0.0)
    assert not door.log_refusal("a", 5.0)
    assert door.log_refusal("b", 5.0)
    assert door.log_refusal("a", 10.0)
