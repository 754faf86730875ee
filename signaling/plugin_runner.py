"""The plugin runner: carries out what the VideoCall state machine decides.

The one loop that turns effects into I/O, for the server and the tests alike: deliveries
(events and notifications for a handle's client) go to a ``deliver`` function it is given,
registry claims and relay requests are awaited and their outcomes fed back into the
machine, in order. It knows nothing of WebSockets, sessions or envelopes.

Plugin messages of one handle run one at a time, in order (like Janus's single handler
thread, but per handle, so a slow relay for one call holds up nobody else). A message whose
handle has no step running or waiting starts at once, in the adapter's own step, when the
registry answers without waiting (``MemoryRegistry.immediate``): ``register`` and ``list``
then end there, with no task of their own (about 6 us of CPU each, an eighth of what a
round trip costs the signalling process); a step that does wait (a relay request) goes on in
a task, its handle's turn held until it ends.

The machine promises every plugin message an answer. A surprise (an exception from the
machine or from a registry, which is a bug or an outage, never the client's doing) ends
that step: it is logged with its traceback and the handle whose message it was gets a
generic plugin error (499 "Unknown error", as Janus answers what it cannot classify);
other handles' steps run in their own tasks and are not touched. A shared registry that
does not answer (``RegistryUnavailable``) is no surprise: the same 499 says so, "Registry
unavailable, try again", and the log gets one line, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

from shared import ipc
from shared import messages as m
from shared.logs import call_log
from signaling.effects import (
    Claim,
    CoreHangup,
    Delivery,
    Effect,
    Event,
    ListNames,
    Lookup,
    Media,
    Relay,
    RelayFailure,
    Release,
    RingTimeout,
    Webrtcup,
)
from signaling.janus_errors import JANUS_API, PluginCode, PluginError
from signaling.metrics import CallSetupTimer
from signaling.registry import Registry, RegistryUnavailable, owner_id, parse_owner
from signaling.relay_client import RelayUnavailable
from signaling.resumed import resumed
from signaling.videocall import VideoCall, error_data

if TYPE_CHECKING:
    from signaling.fleet_calls import FleetCalls

log = logging.getLogger("videocall.plugin")

ResultT = TypeVar("ResultT", bound=BaseModel)

#: What a client gets when a step of the plugin failed in a way nobody foresaw.
UNKNOWN_ERROR = PluginError(PluginCode.UNKNOWN_ERROR, "Unknown error")
#: What a client gets when the shared registry cannot decide its register, call or list now.
REGISTRY_UNAVAILABLE = PluginError(PluginCode.UNKNOWN_ERROR, "Registry unavailable, try again")


class RelayClient(Protocol):
    """What the runner needs from the relay side (``signaling.relay_client.RelayPool``)."""

    async def request(self, body: m.Request[ResultT]) -> ResultT:
        """Send ``body`` to the worker holding its call; ``IpcError`` when it fails."""
        ...


Deliver = Callable[[Delivery], None]


class PluginRunner:
    """Runs the VideoCall state machine's steps and carries out their effects."""

    def __init__(self, plugin: VideoCall, *, registry: Registry, relay: RelayClient, deliver: Deliver,
                 node_id: str, on_call_setup: Callable[[float], None] | None = None) -> None:
        self.plugin = plugin
        self.registry = registry
        self.relay = relay
        self.deliver = deliver
        self.node_id = node_id
        self._handle_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        #: Steps of each handle queued or running in a task of their own (none: its turn is free).
        self._turns: dict[int, int] = {}
        #: Tasks queued by ``_queue_turn`` that have not started yet: a step starting at once
        #: would pass them (their handles' steps started in the order they came, as before).
        self._unstarted = 0
        #: The registry answers in the caller's step (never waits): steps may start at once.
        self._immediate = bool(getattr(registry, "immediate", False))
        self._background: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: Call setup times (``call`` request to both ``webrtcup``) go to ``on_call_setup``.
        self.setup = CallSetupTimer()
        self.on_call_setup = on_call_setup
        #: Calls shared with other nodes of a fleet (``signaling/fleet_calls.py``); None alone.
        self.fleet: FleetCalls | None = None
        #: The files each (call id, leg) records now, as the relay reported them (Admin API).
        self.recordings: dict[tuple[str, str], list[str]] = {}

    async def close(self) -> None:
        """Cancel what is still running (server shutdown)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def end_all(self, reason: str) -> None:
        """End every call for both sides with ``reason`` (the node is stopping)."""
        await self._step(None, None, lambda: self.plugin.end_all(reason))

    async def drain(self) -> None:
        """Wait until no step or relay request is running (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # --- entry points (the server's adapter calls these) ---------------------------------

    def attach(self, handle: int) -> None:
        self.plugin.attach(handle)

    def message(
        self, handle: int, body: Any, jsep: dict[str, Any] | None, transaction: str, bound_username: str | None = None,
    ) -> None:
        """Carry out a plugin message, at once when its handle's turn is free, else queued;
        its ``ack`` has been sent already. ``bound_username``: the one name the request's
        token lets it register (``signaling.auth``), None for any."""
        if self._turn_free(handle):
            self._now(handle, transaction, lambda: self.plugin.message(handle, body, jsep, transaction, bound_username))
        else:
            self._queue_turn(handle, self.message_now(handle, body, jsep, transaction, bound_username))

    async def message_now(self, handle: int, body: Any, jsep: dict[str, Any] | None, transaction: str,
                          bound_username: str | None = None) -> None:
        """A plugin message, answered before this returns (in its handle's turn)."""
        if self._away(handle):
            async with self._handle_locks[handle]:
                await self._fleet.forward(handle, "message", body=body, jsep=jsep, transaction=transaction)
            return
        await self._in_turn(
            handle, transaction, lambda: self.plugin.message(handle, body, jsep, transaction, bound_username))

    def trickle(self, handle: int, candidates: list[m.IceCandidate], completed: bool) -> None:
        if self._away(handle):
            self._spawn(self._fleet.forward(handle, "trickle", candidates=candidates, completed=completed))
            return
        self._queue_turn(handle, self._in_turn(handle, None, lambda: self.plugin.trickle(handle, candidates, completed)))

    async def detach(self, handle: int) -> None:
        """The handle is gone: free its name, end its call (it may still be told of it)."""
        state = self.plugin.handles.get(handle)
        away = (state.away, state.username) if state is not None and state.away is not None else None
        await self._step(handle, None, lambda: self.plugin.detach(handle))  # its name is free first
        if away is not None:
            await self._fleet.forward(handle, "detach", to=away)
        self._handle_locks.pop(handle, None)
        self.setup.forget_handle(handle)

    async def pc_closed(self, handle: int, reason: str = JANUS_API) -> None:
        """The client asked to close the handle's PeerConnection (``hangup``), or the Admin
        API did (``reason`` "Admin API"): the core ``hangup`` the client gets says which."""
        if self._away(handle):
            await self._fleet.forward(handle, "hangup")
            return
        await self._step(handle, None, lambda: self.plugin.pc_closed(handle, reason))

    def local_deliver(self, effect: Delivery) -> None:
        """To a handle of this node's own clients (``FleetCalls`` hands its users theirs)."""
        self.deliver(effect)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, failures logged (``FleetCalls`` uses it)."""
        self._spawn(coro)

    def _away(self, handle: int) -> bool:
        """Whether ``handle``'s call is hosted by another node, which answers it meanwhile."""
        state = self.plugin.handles.get(handle)
        return self.fleet is not None and state is not None and state.away is not None

    @property
    def _fleet(self) -> FleetCalls:
        assert self.fleet is not None
        return self.fleet

    def _deliver(self, effect: Delivery) -> None:
        if self.fleet is not None and self.fleet.is_proxy(effect.handle):
            self.fleet.deliver(effect)
        else:
            self.deliver(effect)

    def on_relay_notification(self, body: m.Notification) -> None:
        """A worker's ``leg.state`` / ``leg.media`` / ``leg.recording`` / ``leg.simulcast``."""
        if isinstance(body, m.LegState):
            log.info("call %s %s leg %s %s", body.call_id, body.leg, body.state, body.reason, extra=call_log(body.call_id))
            if body.state == "connected":
                self._leg_up(body.call_id, body.leg)
            step = lambda: self.plugin.leg_state(body.call_id, body.leg, body.state == "connected", body.reason)  # noqa: E731
        elif isinstance(body, m.LegRecording):
            log.info("call %s %s leg recording %s %s %s", body.call_id, body.leg, body.state, body.files, body.reason,
                     extra=call_log(body.call_id))
            if body.state == "started":
                # Forget those of calls gone without a "stopped" (their worker died): bounded.
                self.recordings = {key: files for key, files in self.recordings.items() if key[0] in self.plugin.calls}
                self.recordings[(body.call_id, body.leg)] = list(body.files)
            else:
                self.recordings.pop((body.call_id, body.leg), None)
            step = lambda: self.plugin.leg_recording(body.call_id, body.leg, body.state == "failed", body.reason)  # noqa: E731
        elif isinstance(body, m.LegMedia):
            step = lambda: self.plugin.leg_media(body.call_id, body.leg, body.kind, body.mid, body.receiving)  # noqa: E731
        elif isinstance(body, m.LegSimulcast):
            step = lambda: self.plugin.leg_simulcast(body.call_id, body.leg, body.videocodec,  # noqa: E731
                                                     body.substream, body.temporal)
        else:
            return
        self._spawn(self._step(None, None, step))

    def on_calls_lost(self, call_ids: list[str]) -> None:
        """A worker died or became unreachable with these calls."""
        self._spawn(self._step(None, None, lambda: self.plugin.relay_lost(call_ids)))

    # --- the loop -----------------------------------------------------------------------

    async def carry_out(self, effects: list[Effect]) -> list[Effect]:
        """Do what the machine asked, in order, feeding outcomes back in; returns every
        effect carried out, outcomes' effects included (what a test or a trace reads)."""
        done: list[Effect] = []
        queue = list(effects)
        while queue:
            effect = queue.pop(0)
            done.append(effect)
            queue[:0] = await self._do(effect)
        return done

    async def _in_turn(self, handle: int, transaction: str | None, step: Callable[[], list[Effect]]) -> None:
        async with self._handle_locks[handle]:
            await self._step(handle, transaction, step)

    # --- a handle's turn, now or queued ----------------------------------------------------

    def _turn_free(self, handle: int) -> bool:
        """Whether a step of ``handle`` may start in the caller's step: the registry never
        waits, no fleet, no step of the handle queued or running (so nothing holds or waits
        for its lock), and no queued step of any handle still to start."""
        return self._immediate and self.fleet is None and not self._unstarted and handle not in self._turns

    def _queue_turn(self, handle: int, coro: Coroutine[Any, Any, None]) -> None:
        self._turns[handle] = self._turns.get(handle, 0) + 1
        self._unstarted += 1
        self._spawn(self._counted(handle, coro, queued=True))

    async def _counted(self, handle: int, awaitable: Any, *, queued: bool = False) -> None:
        if queued:
            self._unstarted -= 1
        try:
            await awaitable
        finally:
            left = self._turns.get(handle, 1) - 1
            if left:
                self._turns[handle] = left
            else:
                self._turns.pop(handle, None)

    def _now(self, handle: int, transaction: str | None, step: Callable[[], list[Effect]]) -> None:
        """Run a step of ``handle`` (whose turn is free) from the caller's step; if it waits
        for something, the rest goes on in a task, holding the handle's turn."""
        lock = self._handle_locks[handle]
        acquiring = lock.acquire()  # free, nobody waiting: taken without yielding
        try:
            acquiring.send(None)
        except StopIteration:
            pass
        else:  # pragma: no cover - _turn_free said nobody holds it
            acquiring.close()
            raise RuntimeError(f"handle {handle}'s turn was not free")
        running = self._step_holding(lock, handle, transaction, step)
        try:
            awaited = running.send(None)
        except StopIteration:
            return
        self._turns[handle] = self._turns.get(handle, 0) + 1
        self._spawn(self._counted(handle, resumed(running, awaited)))

    async def _step_holding(self, lock: asyncio.Lock, handle: int, transaction: str | None,
                            step: Callable[[], list[Effect]]) -> None:
        try:
            await self._step(handle, transaction, step)
        finally:
            lock.release()

    async def _step(self, handle: int | None, transaction: str | None, step: Callable[[], list[Effect]]) -> None:
        """One step of the machine and its effects; a surprise is answered, never spread."""
        try:
            await self.carry_out(step())
        except RegistryUnavailable as exc:
            log.warning("registry unavailable (handle %s, transaction %r): %s", handle, transaction, exc.reason)
            if handle is not None and handle in self.plugin.handles:
                self._deliver(Event(handle, error_data(REGISTRY_UNAVAILABLE), transaction))
        except Exception:
            log.exception("plugin step failed (handle %s, transaction %r)", handle, transaction)
            if handle is not None and handle in self.plugin.handles:
                self._deliver(Event(handle, error_data(UNKNOWN_ERROR), transaction))
        if self.fleet is not None:
            self.fleet.settle()

    async def _do(self, effect: Effect) -> list[Effect]:
        match effect:
            case Event() | CoreHangup() | Webrtcup() | Media():
                self._deliver(effect)
            case Claim(handle, name, transaction):
                ok = await self.registry.claim(name, owner_id(self.node_id, handle))
                return self.plugin.claimed(handle, name, ok, transaction)
            case Release(name, handle):
                await self.registry.release(name, owner_id(self.node_id, handle))
            case ListNames(handle, transaction):
                return self.plugin.listed(handle, await self.registry.names(), transaction)
            case Lookup(handle, name, transaction, jsep):
                self.setup.asked(handle, asyncio.get_running_loop().time())
                owner = await self.registry.lookup(name)
                parsed = parse_owner(owner) if owner else None
                if parsed and parsed[0] != self.node_id and self.fleet is not None:
                    await self.fleet.go(handle, parsed[0], name, transaction, jsep)  # its node hosts the call
                    return []
                callee = parsed[1] if parsed and parsed[0] == self.node_id else None
                return self.plugin.looked_up(handle, name, callee, transaction, jsep)
            case Relay(m.CallCreate() as request):
                call = self.plugin.calls.get(request.call_id)
                self.setup.created(request.call_id, call.caller if call is not None else None,
                                   asyncio.get_running_loop().time(), live=set(self.plugin.calls))
                return self.plugin.call_created(request.call_id, await self._ask(request))
            case Relay(m.CallAccept() as request):
                return self.plugin.call_accepted(request.call_id, await self._ask(request))
            case Relay(m.LegRenegotiate() as request, transaction):
                return self.plugin.renegotiated(request, await self._ask(request), transaction)
            case Relay(m.LegRecord() as request, transaction):
                return self.plugin.recorded(request, await self._ask(request), transaction)
            case Relay(request):
                self._spawn(self._tell(request))
            case RingTimeout(call_id, seconds):
                self._timers[call_id] = asyncio.get_running_loop().call_later(seconds, self._ring_expired, call_id)
        return []

    async def _ask(self, request: m.Request[ResultT]) -> ResultT | RelayFailure:
        """A relay request whose answer the machine waits for."""
        try:
            return await self.relay.request(request)
        except RelayUnavailable as exc:
            log.info("%s for %s: %s", request.METHOD, _call_of(request), exc.reason, extra=call_log(_call_of(request)))
            return RelayFailure(exc.reason, unavailable=True)
        except ipc.IpcError as exc:
            log.info("%s for %s refused by the relay: %s", request.METHOD, _call_of(request), exc.reason,
                     extra=call_log(_call_of(request)))
            return RelayFailure(exc.reason)

    async def _tell(self, request: m.Request[Any]) -> None:
        """A relay request whose answer changes nothing here: sent in order, failures logged."""
        try:
            await self.relay.request(request)
        except ipc.IpcError as exc:
            log.info("%s for %s failed: %s", request.METHOD, _call_of(request), exc.reason, extra=call_log(_call_of(request)))

    def _leg_up(self, call_id: str, leg: str) -> None:
        seconds = self.setup.leg_up(call_id, leg, asyncio.get_running_loop().time())
        if seconds is not None and self.on_call_setup is not None:
            self.on_call_setup(seconds)

    def _ring_expired(self, call_id: str) -> None:
        self._timers.pop(call_id, None)
        self._spawn(self._step(None, None, lambda: self.plugin.ring_expired(call_id)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("plugin task failed", exc_info=task.exception())


def _call_of(request: m.Request[Any]) -> str:
    return str(getattr(request, "call_id", "-"))
