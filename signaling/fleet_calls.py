"""Calls between users of two signalling nodes: the callee's node hosts the call.

When alice (node 1) calls bob (node 2), node 1's registry lookup names node 2 as bob's.
Node 1 then sends alice's ``call`` there (``Forward``), marks alice *away* (busy for its
own callers) and from then on forwards everything alice does in the plugin (messages,
trickles, hangup, detach) to node 2. Node 2 answers it under a *proxy* handle: a stand-in
with alice's name (held in the registry by node 1, never claimed here), driven by the same
state machine and relay workers as any local call, its deliveries sent back (``Deliver``)
and given to alice's WebSocket by node 1. When the proxy has no call left, node 2 lets it go
and tells node 1 (``Released``): alice is answered at home again.

So every VideoCall flow across nodes is the one-node flow, decided by one machine: the
callee's node, which knows whether its user is busy. Each node keeps a liveness key; a
node that stops renewing it (it died, or lost Redis) ends the calls it shared: its users'
proxies are detached here (their peers get the usual hangup), and users away to it are
told their call ended.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from shared import messages as m
from signaling.effects import CoreHangup, Delivery, Event, Media, Webrtcup
from signaling.janus_errors import REMOTE_HANGUP
from signaling.node_bus import Deliver, Forward, NodeBus, NodeMessage, Released
from signaling.videocall import VideoCall

log = logging.getLogger("videocall.fleet")


class Runner(Protocol):
    """What this module drives: the plugin runner's entry points."""

    plugin: VideoCall

    async def message_now(self, handle: int, body: Any, jsep: dict[str, Any] | None, transaction: str) -> None: ...
    def trickle(self, handle: int, candidates: list[m.IceCandidate], completed: bool) -> None: ...
    async def pc_closed(self, handle: int) -> None: ...
    async def detach(self, handle: int) -> None: ...
    def local_deliver(self, effect: Delivery) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...


class FleetCalls:
    """Both sides of calls shared with other nodes: users away from here, and proxies here."""

    def __init__(self, bus_factory: Callable[[Callable[[NodeMessage], None]], NodeBus], node_id: str,
                 check_every: float) -> None:
        self.bus = bus_factory(self.on_message)
        self.node_id = node_id
        self.check_every = check_every
        self.runner: Runner | None = None
        #: (origin node, its handle) -> the proxy handle here, and back.
        self.proxies: dict[tuple[str, int], int] = {}
        self.origin_of: dict[int, tuple[str, int]] = {}
        #: Proxies with a forwarded message still being answered (not to be let go yet).
        self.busy: dict[int, int] = {}
        #: Proxies made for a message that is not a ``call`` (one sent right after a hangup,
        #: forwarded before ``Released`` arrived): they never host a call, and letting them go
        #: tells their origin nothing (its user came back already, maybe to call again).
        self.strays: set[int] = set()
        # Proxy ids are negative: they never meet the sessions table's positive ids.
        self._ids = itertools.count(-1, -1)
        self._watcher: asyncio.Task[None] | None = None

    def bind(self, runner: Runner) -> None:
        self.runner = runner

    async def start(self) -> None:
        await self.bus.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self.bus.close()

    @property
    def _runner(self) -> Runner:
        assert self.runner is not None, "FleetCalls.bind(runner) first"
        return self.runner

    # --- this node's users, away ------------------------------------------------------------

    def away(self, handle: int) -> str | None:
        state = self._runner.plugin.handles.get(handle)
        return state.away if state is not None else None

    async def go(self, handle: int, node: str, name: str, transaction: str | None, jsep: dict[str, Any] | None) -> None:
        """``handle`` calls ``name`` of ``node``: the call goes there, with what was trickled."""
        plugin = self._runner.plugin
        state = plugin.handles.get(handle)
        if state is None or state.username is None:
            return
        candidates, completed = plugin.went_away(handle, node)
        log.info("handle %s (%s) calls %s on node %s", handle, state.username, name, node)
        await self.forward(handle, "message", body={"request": "call", "username": name}, jsep=jsep,
                           transaction=transaction)
        if candidates or completed:
            await self.forward(handle, "trickle", candidates=candidates, completed=completed)

    async def forward(self, handle: int, kind: str, *, body: Any = None, jsep: dict[str, Any] | None = None,
                      transaction: str | None = None, candidates: list[m.IceCandidate] | None = None,
                      completed: bool = False, to: tuple[str, str | None] | None = None) -> None:
        """What ``handle`` does, to the node that hosts its call (``to``: that node and the
        user's name, for a handle this node has already let go of)."""
        state = self._runner.plugin.handles.get(handle)
        node, username = to if to is not None else (state.away, state.username) if state is not None else (None, None)
        if node is None or username is None:
            return
        message = Forward(origin=self.node_id, handle=handle, username=username, kind=kind,  # type: ignore[arg-type]
                          body=body, jsep=jsep, transaction=transaction, candidates=candidates or [],
                          completed=completed)
        if not await self.bus.send(node, message):
            self._ended_there(handle, "Node unreachable")

    def _ended_there(self, handle: int, reason: str) -> None:
        """The node hosting ``handle``'s call is gone: the call is over for this user."""
        runner = self._runner
        state = runner.plugin.handles.get(handle)
        if state is None or state.away is None:
            return
        log.warning("handle %s: the node hosting its call (%s) is gone", handle, state.away)
        runner.plugin.came_back(handle)
        runner.local_deliver(Event(handle, {"videocall": "event", "result": {"event": "hangup", "reason": reason}}))
        runner.local_deliver(CoreHangup(handle))

    # --- other nodes' users, here ------------------------------------------------------------

    def is_proxy(self, handle: int) -> bool:
        return handle in self.origin_of

    def deliver(self, effect: Delivery) -> None:
        """A delivery for a proxy goes to its user's node."""
        origin = self.origin_of.get(effect.handle)
        if origin is None:
            return
        node, handle = origin
        match effect:
            case Event(_, data, transaction, jsep):
                message = Deliver(handle=handle, kind="event", data=data, transaction=transaction, jsep=jsep)
            case CoreHangup(_, reason):
                message = Deliver(handle=handle, kind="hangup", reason=reason)
            case Webrtcup():
                message = Deliver(handle=handle, kind="webrtcup")
            case Media(_, mid, kind, receiving):
                message = Deliver(handle=handle, kind="media", mid=mid, media=kind, receiving=receiving)
        self._runner.spawn(self._send(node, message))

    async def _send(self, node: str, message: NodeMessage) -> None:
        await self.bus.send(node, message)

    def settle(self) -> None:
        """After a step: proxies left without a call (and nothing in flight) are let go."""
        plugin = self._runner.plugin
        for proxy, origin in list(self.origin_of.items()):
            state = plugin.handles.get(proxy)
            if self.busy.get(proxy) or (state is not None and state.call is not None):
                continue
            stray = proxy in self.strays
            self._forget(proxy)
            if state is not None:
                self._runner.spawn(self._runner.detach(proxy))
            if not stray:
                self._runner.spawn(self._send(origin[0], Released(handle=origin[1])))

    def _forget(self, proxy: int) -> None:
        origin = self.origin_of.pop(proxy, None)
        if origin is not None:
            self.proxies.pop(origin, None)
        self.busy.pop(proxy, None)
        self.strays.discard(proxy)

    # --- the bus ---------------------------------------------------------------------------

    def on_message(self, message: NodeMessage) -> None:
        runner = self._runner
        match message:
            case Deliver():
                self._delivered(message)
            case Released():
                runner.plugin.came_back(message.handle)
            case Forward():
                runner.spawn(self._forwarded(message))

    def _delivered(self, message: Deliver) -> None:
        handle, runner = message.handle, self._runner
        state = runner.plugin.handles.get(handle)
        if state is None:
            return  # not (or no longer) a user of ours
        # The answer to a request of the user's own (it carries their transaction) is theirs
        # even when the call it was forwarded for has ended meanwhile: a request made right
        # after a hangup is forwarded before the host's ``Released`` arrives, and answered
        # after it. Anything else from a host this user has come back from is stale.
        if state.away is None and not (message.kind == "event" and message.transaction):
            return
        match message.kind:
            case "event":
                runner.local_deliver(Event(handle, message.data or {}, message.transaction, message.jsep))
            case "hangup":
                runner.local_deliver(CoreHangup(handle, message.reason))
            case "webrtcup":
                runner.local_deliver(Webrtcup(handle))
            case "media":
                runner.local_deliver(Media(handle, message.mid, message.media, message.receiving))

    async def _forwarded(self, message: Forward) -> None:
        runner, key = self._runner, (message.origin, message.handle)
        proxy = self.proxies.get(key)
        if proxy is None:
            if message.kind in ("detach", "hangup"):
                return  # nothing of it here
            proxy = next(self._ids)
            self.proxies[key], self.origin_of[proxy] = proxy, key
            runner.plugin.attach_proxy(proxy, message.username)
            if not (message.kind == "message" and isinstance(message.body, dict) and message.body.get("request") == "call"):
                self.strays.add(proxy)
            log.info("proxy %s stands for handle %s of node %s (%s)", proxy, message.handle, message.origin,
                     message.username)
        self.busy[proxy] = self.busy.get(proxy, 0) + 1
        try:
            match message.kind:
                case "message":
                    await runner.message_now(proxy, message.body, message.jsep, message.transaction or "")
                case "trickle":
                    runner.trickle(proxy, list(message.candidates), message.completed)
                case "hangup":
                    await runner.pc_closed(proxy)
                case "detach":
                    self._forget(proxy)
                    await runner.detach(proxy)
                    return
        finally:
            if proxy in self.busy:
                self.busy[proxy] -= 1
        self.settle()

    # --- liveness ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Every ``check_every`` s: the nodes this one shares calls with still renew their key."""
        while True:
            await asyncio.sleep(self.check_every)
            plugin = self._runner.plugin
            hosts = {state.away for state in plugin.handles.values() if state.away is not None}
            origins = {node for node, _ in self.proxies}
            for node in hosts | origins:
                if await self.bus.alive(node) is not False:
                    continue  # alive, or Redis did not answer: decide when it does
                for handle, state in list(plugin.handles.items()):
                    if state.away == node:
                        self._ended_there(handle, REMOTE_HANGUP)
                for (origin, _), proxy in list(self.proxies.items()):
                    if origin == node:
                        self._forget(proxy)
                        self._runner.spawn(self._runner.detach(proxy))
