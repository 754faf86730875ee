"""The username registry shared by every signalling node of a fleet, on Redis.

Implements ``signaling.registry.Registry`` with redis-py's asyncio client. It owns the
registry's keys and the lease that keeps them alive; it knows nothing of handles, calls or
sockets (the owner is an opaque ``"<node>/<handle>"`` string from ``registry.owner_id``).

Keys (``P`` is ``redis_key_prefix``, e.g. ``videocall:``)::

    P + "name:" + <username, UTF-8>   ->  "<node>/<handle>"   (a string, PX = the lease)

The username is the key's tail, taken verbatim: everything before it is our fixed prefix,
so a name with ``:``, ``*``, ``[``, ``{`` or a newline cannot reach another key (Redis keys
are binary-safe) and reads back by stripping the prefix. SCAN MATCH escapes the prefix's
glob characters; the name part is matched by a bare ``*``.

Operations, each on one key, so the layout suits Redis Cluster: no command or script
touches two keys, and a name with ``{...}`` merely picks its own slot. This module connects
with a plain client from the URL; on a Cluster one would pass a ``RedisCluster`` client
(``client=``), whose pipelines split per node and whose ``scan_iter`` walks every primary
(not tried here). Counted with ``INFO commandstats``::

    claim     SET key owner NX PX lease GET      1 command (Redis >= 7.0)
    release   compare-and-delete (Lua)           1 EVALSHA (GET + DEL inside)
    lookup    GET key                            1 command
    names     SCAN MATCH P"name:*" COUNT 1000    about 1 + (keys in the database / 1000)
    renew     compare-and-pexpire (Lua)          1 EVALSHA (GET + PEXPIRE inside) per held
                                                 name every lease / 3, pipelined: one round
                                                 trip per node per tick

Owners name their node, so every node needs its own ``node_id`` (the settings default to
the host name and port when ``redis_url`` is set).

``names()`` scans instead of keeping a set of names: the keys themselves are the truth, a
name whose lease ran out leaves ``list`` by the same expiry, and no second structure can
drift from them or needs its own lease per node. The price is a walk over the database on
every ``list``, which Janus's ``list`` (every name, in one reply) makes large anyway.

The lease: a node renews every name it holds every ``lease / 3`` s, so a node that dies
or loses Redis loses its names within the lease and nothing else cleans up. The renewer
survives every error; when a key is found missing (Redis restarted without persistence,
or the node was cut off longer than the lease) it claims the name again. If someone else
took the name meanwhile, the node stops renewing it and logs a warning; the handle keeps
its registration locally (its calls go on) but the fleet now routes the name to the new
holder, and this node's release of it later deletes nothing.

Redis unavailable: ``claim``, ``lookup`` and ``names`` raise ``RegistryUnavailable``
(the plugin runner answers 499 "Registry unavailable, try again"). ``release`` never
raises: the name stops being renewed at once and its compare-and-delete is retried by the
renewer until Redis answers or the lease has run out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from signaling.registry import RegistryUnavailable

log = logging.getLogger("videocall.registry")

T = TypeVar("T")

#: Seconds to connect, and to wait for any one reply, before Redis counts as unavailable.
CONNECT_TIMEOUT = 1.0
REPLY_TIMEOUT = 2.0
#: Keys SCAN looks at per round trip.
SCAN_COUNT = 1000
#: Redis errors that mean "not reachable now" rather than "a bug": a broken or slow
#: connection, or a replica that cannot take writes (a failover in progress).
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)

#: KEYS[1] = the name's key, ARGV[1] = the owner: delete only our own claim.
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS[1] = the name's key, ARGV[1] = the owner, ARGV[2] = the lease in ms.
#: 1: renewed; 0: the key is gone; -1: someone else holds it.
COMPARE_AND_PEXPIRE = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if current then
    return -1
end
return 0
"""

#: Usernames are any Unicode the client sends, lone surrogates included: keep them intact.
_ENCODING_ERRORS = "surrogatepass"


def redacted_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def glob_escape(text: str) -> str:
    """``text`` matched literally inside a Redis glob pattern (SCAN MATCH)."""
    return "".join(f"\\{c}" if c in "*?[]\\^-" else c for c in text)


class RedisRegistry:
    """The ``Registry`` of a fleet: names as keys under a lease this node renews."""

    def __init__(self, url: str, *, prefix: str = "videocall:", lease: float = 12.0,
                 client: aioredis.Redis | None = None) -> None:
        if lease <= 0:
            raise ValueError("the registry lease must be positive")
        self.url = url
        self.prefix = prefix
        self.lease = lease
        self.redis: aioredis.Redis = client or aioredis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=REPLY_TIMEOUT,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
            encoding_errors=_ENCODING_ERRORS,
        )
        self._key_prefix = f"{prefix}name:".encode(errors=_ENCODING_ERRORS)
        #: name -> owner of every name this node holds, as far as it knows: what it renews.
        self.held: dict[str, str] = {}
        #: name -> owner released while Redis did not answer: deleted when it does.
        self.unreleased: dict[str, str] = {}
        self._delete = self.redis.register_script(COMPARE_AND_DELETE)
        self._renew = self.redis.register_script(COMPARE_AND_PEXPIRE)
        self._renewer: asyncio.Task[None] | None = None
        self.available = True

    def __repr__(self) -> str:
        return f"RedisRegistry({redacted_url(self.url)!r}, prefix={self.prefix!r}, lease={self.lease})"

    def key(self, name: str) -> bytes:
        return self._key_prefix + name.encode(errors=_ENCODING_ERRORS)

    @property
    def _lease_ms(self) -> int:
        return max(1, round(self.lease * 1000))

    # --- the Registry protocol ------------------------------------------------------------

    async def start(self) -> None:
        """Start renewing this node's names (the server is starting)."""
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        try:
            await self._call("ping", self.redis.ping)
        except RegistryUnavailable:
            log.warning("registry: %s does not answer yet; registrations are refused until it does",
                        redacted_url(self.url))

    async def ready(self) -> bool:
        """``/readyz``: Redis answers a PING now (never raises; bounded by the reply timeout)."""
        try:
            await self._call("ping", self.redis.ping)
        except RegistryUnavailable:
            return False
        return True

    async def claim(self, name: str, owner: str) -> bool:
        previous = await self._call(
            "claim", lambda: self.redis.set(self.key(name), owner, nx=True, px=self._lease_ms, get=True))
        ok = previous is None or _text(previous) == owner
        if ok:
            self.held[name] = owner
        return ok

    async def release(self, name: str, owner: str) -> None:
        # Forgotten first, so that no renewal or reclaim started from now on keeps it alive.
        if self.held.get(name) == owner:
            del self.held[name]
        if not self.available:
            # A known outage: a detach must not wait for Redis's timeouts; the renewer,
            # which finds out when Redis is back, deletes it then.
            self.unreleased[name] = owner
            return
        try:
            await self._delete_own(name, owner)
        except RegistryUnavailable:
            log.warning("registry: could not release %r now; retried until the lease ends", name)
            self.unreleased[name] = owner

    async def lookup(self, name: str) -> str | None:
        owner = await self._call("lookup", lambda: self.redis.get(self.key(name)))
        return None if owner is None else _text(owner)

    async def names(self) -> list[str]:
        pattern = glob_escape(self.prefix + "name:") + "*"

        async def scan() -> list[str]:
            found = set()
            async for key in self.redis.scan_iter(match=pattern, count=SCAN_COUNT):
                found.add(bytes(key)[len(self._key_prefix):].decode(errors=_ENCODING_ERRORS))
            return sorted(found)

        return await self._call("list", scan)

    async def close(self) -> None:
        """Stop renewing, give back every name still held, close the connections."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        mine = [*self.held.items(), *self.unreleased.items()]
        self.held.clear()
        self.unreleased.clear()
        if mine:
            try:  # one round trip; if Redis does not answer, the lease ends them
                await self._call("release", lambda: self._pipelined(COMPARE_AND_DELETE, self._delete.sha, mine))
            except RegistryUnavailable:
                pass
        await self.redis.aclose()

    # --- lease renewal --------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        period = self.lease / 3
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.renew()
            except RegistryUnavailable:
                pass  # said once by _call; the next tick tries again
            except Exception:  # the renewer must outlive any surprise, or every name expires
                log.exception("registry: lease renewal failed")
            await asyncio.sleep(max(0.0, period - (loop.time() - started)))

    async def renew(self) -> None:
        """One renewal tick: retry pending releases, extend every held name's lease in one
        pipeline, claim again the names whose keys are gone, give up those taken by others."""
        for name, owner in list(self.unreleased.items()):
            await self._delete_own(name, owner)
            if self.unreleased.get(name) == owner:
                del self.unreleased[name]
        held = list(self.held.items())
        if not held:
            return
        outcomes = await self._call("renew", lambda: self._pipelined(COMPARE_AND_PEXPIRE, self._renew.sha, held, self._lease_ms))
        for (name, owner), outcome in zip(held, outcomes, strict=True):
            if outcome == 0:
                await self._reclaim(name, owner)
            elif outcome == -1:
                self._lost(name, owner)

    async def _pipelined(self, script: str, sha: str, names: list[tuple[str, str]], *args: int) -> list[int]:
        """``script`` on each (name, owner) with ``args`` after the owner, in one pipeline of
        EVALSHA (the script is loaded when Redis does not know it, e.g. after a restart)."""
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for name, owner in names:
                pipe.evalsha(sha, 1, self.key(name), owner, *args)
            results = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in results):
                await self.redis.script_load(script)
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return [int(r) for r in results]
        raise AssertionError("unreachable")

    async def _reclaim(self, name: str, owner: str) -> None:
        if self.held.get(name) != owner:
            return  # released meanwhile
        previous = await self._call(
            "reclaim", lambda: self.redis.set(self.key(name), owner, nx=True, px=self._lease_ms, get=True))
        if self.held.get(name) != owner:
            # Released while the claim was on its way: its delete may have landed first.
            await self._delete_own(name, owner)
        elif previous is None:
            log.warning("registry: the lease of %r had lapsed; claimed it again", name)
        elif _text(previous) != owner:
            self._lost(name, owner)

    async def _delete_own(self, name: str, owner: str) -> None:
        await self._call("release", lambda: self._delete(keys=[self.key(name)], args=[owner]))

    def _lost(self, name: str, owner: str) -> None:
        if self.held.get(name) == owner:
            del self.held[name]
        log.warning("registry: %r was taken by another owner while this node could not renew it; "
                    "handle %s keeps it locally but the fleet sees the new holder", name, owner)

    # --- errors -----------------------------------------------------------------------------

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """One Redis operation; unreachable Redis becomes ``RegistryUnavailable`` (logged
        once per outage, and once when it answers again)."""
        try:
            result = await operation()
        except UNAVAILABLE as exc:
            if self.available:
                self.available = False
                log.warning("registry: %s at %s failed: %s", what, redacted_url(self.url), exc)
            raise RegistryUnavailable(f"{what}: {exc}") from exc
        if not self.available:
            self.available = True
            log.info("registry: %s answers again", redacted_url(self.url))
        return result


def _text(value: Any) -> str:
    return value.decode(errors=_ENCODING_ERRORS) if isinstance(value, bytes) else str(value)
