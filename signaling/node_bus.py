"""Messages between the signalling nodes of a fleet, over Redis pub/sub.

Each node listens on its own channel, ``<prefix>node:<node id>``, and keeps a liveness key,
``<prefix>alive:<node id>``, under the registry's lease. A call between users of two nodes
is hosted by one of them (``signaling/fleet_calls.py``); what crosses is the other user's
plugin traffic one way and what that user receives the other way.

Why pub/sub and not streams: these messages are as live as a WebSocket frame (a client is
waiting for them), ordered per sending connection, and worthless once their node is gone;
pub/sub gives that with one round trip and nothing to trim. What it does not give is
delivery across a Redis outage: during one, new registrations and calls are refused
anyway, and a call whose messages were lost ends when its liveness checks fail.

Every message read from Redis is untrusted: bounded in size, parsed as strict JSON and
validated against its model before anything acts on it; a bad one is logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.messages import MAX_SDP, IceCandidate
from signaling.redis_registry import redacted_url
from signaling.strict_json import JsonError, loads

log = logging.getLogger("videocall.node_bus")

#: The largest message accepted from the bus: an SDP and a request around it.
MAX_MESSAGE = MAX_SDP + 16 * 1024
NodeId = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(max_length=1024)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Forward(_Message):
    """A user of ``origin`` (its ``handle`` there) does something in a call hosted here."""

    t: Literal["forward"] = "forward"
    origin: NodeId
    handle: int
    username: Annotated[str, Field(min_length=1, max_length=128)]
    kind: Literal["message", "trickle", "hangup", "detach"]
    body: Any = None
    jsep: dict[str, Any] | None = None
    transaction: Text | None = None
    candidates: Annotated[list[IceCandidate], Field(max_length=128)] = []
    completed: bool = False


class Deliver(_Message):
    """Something the hosting node's machine sends to ``handle`` of the node it goes to."""

    t: Literal["deliver"] = "deliver"
    handle: int
    kind: Literal["event", "hangup", "webrtcup", "media"]
    data: dict[str, Any] | None = None
    transaction: Text | None = None
    jsep: dict[str, Any] | None = None
    reason: Text = ""
    mid: Text = ""
    media: Text = ""
    receiving: bool = False


class Released(_Message):
    """The call ``handle`` had on the sending node is over: it is answered at home again."""

    t: Literal["released"] = "released"
    handle: int


NodeMessage = Forward | Deliver | Released
_PARSE: TypeAdapter[NodeMessage] = TypeAdapter(
    Annotated[Forward | Deliver | Released, Field(discriminator="t")]
)

#: Connection faults after which the bus reconnects and subscribes again.
_FAULTS = (RedisConnectionError, RedisTimeoutError, OSError)


def parse(raw: bytes) -> NodeMessage:
    """A message read from the bus; ValueError for anything that is not one of ours."""
    if len(raw) > MAX_MESSAGE:
        raise ValueError(f"message of {len(raw)} bytes is larger than {MAX_MESSAGE}")
    try:
        return _PARSE.validate_python(loads(raw, max_depth=32))
    except (JsonError, ValidationError) as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


class NodeBus:
    """This node's channel and liveness key on Redis."""

    def __init__(self, url: str, *, prefix: str, node_id: str, lease: float,
                 on_message: Callable[[NodeMessage], None]) -> None:
        self.url = url
        self.prefix = prefix
        self.node_id = node_id
        self.lease = lease
        self.on_message = on_message
        self.redis = aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        self._tasks: list[asyncio.Task[None]] = []
        self.subscribed = asyncio.Event()
        #: Publishes leave in the order they were asked for (a pool could reorder them).
        self._sending = asyncio.Lock()

    def channel(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def alive_key(self, node_id: str) -> str:
        return f"{self.prefix}alive:{node_id}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._keep_alive())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.redis.delete(self.alive_key(self.node_id))
        except (RedisError, OSError):
            pass
        await self.redis.aclose()

    async def send(self, node_id: str, message: NodeMessage) -> bool:
        """Publish to ``node_id``; False when Redis does not take it (logged)."""
        try:
            async with self._sending:
                await self.redis.publish(self.channel(node_id), message.model_dump_json())
        except (RedisError, OSError) as exc:
            log.warning("node bus: could not send %s to %s: %s", message.t, node_id, exc)
            return False
        return True

    async def alive(self, node_id: str) -> bool | None:
        """Whether ``node_id`` renewed its liveness key within the lease (None: Redis did not answer)."""
        try:
            return bool(await self.redis.exists(self.alive_key(node_id)))
        except (RedisError, OSError):
            return None

    async def _keep_alive(self) -> None:
        while True:
            try:
                await self.redis.set(self.alive_key(self.node_id), b"1", px=max(1, round(self.lease * 1000)))
            except (RedisError, OSError) as exc:
                log.debug("node bus: liveness not renewed: %s", exc)
            await asyncio.sleep(self.lease / 3)

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel(self.node_id))
                self.subscribed.set()
                log.info("node bus: %s listening on %s", self.node_id, redacted_url(self.url))
                async for item in pubsub.listen():
                    if item.get("type") == "message":
                        self._dispatch(item["data"])
            except _FAULTS as exc:
                self.subscribed.clear()
                log.warning("node bus: lost %s (%s); subscribing again", redacted_url(self.url), exc)
                await asyncio.sleep(0.5)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    def _dispatch(self, data: Any) -> None:
        raw = data if isinstance(data, bytes) else str(data).encode()
        try:
            message = parse(raw)
        except ValueError as exc:
            log.warning("node bus: dropped a message: %s", exc)
            return
        try:
            self.on_message(message)
        except Exception:
            log.exception("node bus: handling a %s failed", message.t)
