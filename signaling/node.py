"""The signalling node: carries out what the pure pieces decide.

``Node`` owns the live objects (sessions table, VideoCall state machine, registry, relay
pool) and the one loop that turns the state machine's effects into I/O: events to the
right WebSocket, registry claims, relay requests, and their outcomes fed back in. It
knows nothing of WebSockets itself: it is given a ``send(owner, message)`` function.

Plugin messages of one handle run one at a time, in order (like Janus's single handler
thread, but per handle, so a slow relay for one call holds up nobody else).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any

from pydantic import BaseModel

from shared import ipc
from shared import messages as m
from shared.settings import Settings
from signaling import janus_replies as replies
from signaling import videocall as vc
from signaling.registry import MemoryRegistry, Registry, owner_id, parse_owner
from signaling.relay_client import RelayPool
from signaling.sessions import Sessions

log = logging.getLogger("videocall.node")

Send = Callable[[Hashable, dict[str, Any]], None]


class Node:
    def __init__(self, settings: Settings, send: Send, registry: Registry | None = None) -> None:
        self.settings = settings
        self.send_to_owner = send
        self.sessions = Sessions(
            max_sessions_per_connection=settings.max_sessions_per_connection,
            max_handles_per_session=settings.max_handles_per_session,
        )
        self.plugin = vc.VideoCall(max_pending_trickles=settings.max_pending_trickles)
        self.registry: Registry = registry or MemoryRegistry()
        self.relay = RelayPool(
            settings.worker_addresses,
            node_id=settings.node_id,
            timeout=settings.ipc_timeout,
            on_notification=self._on_relay_notification,
            on_calls_lost=self._on_calls_lost,
        )
        self._handle_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.relay.start(wait=5.0)

    async def close(self) -> None:
        await self.relay.close()
        for task in list(self._background):
            task.cancel()
        await self.registry.close()

    # --- delivery -----------------------------------------------------------------------

    def send_to_handle(self, handle: int, message: dict[str, Any]) -> None:
        session_id = self.sessions.session_of(handle)
        owner = self.sessions.owner_of(session_id) if session_id is not None else None
        if owner is not None:
            self.send_to_owner(owner, message)

    def _session_of(self, handle: int) -> int:
        return self.sessions.session_of(handle) or 0

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # --- plugin entry points (called by the server adapter) ------------------------------

    def attach(self, handle: int) -> None:
        self.plugin.attach(handle)

    def plugin_message(self, handle: int, body: Any, jsep: dict[str, Any] | None, transaction: str) -> None:
        """Queue a plugin message; its ``ack`` has been sent already."""

        async def run() -> None:
            async with self._handle_locks[handle]:
                await self.carry_out(self.plugin.message(handle, body, jsep, transaction))

        self.spawn(run())

    def trickle(self, handle: int, candidates: list[dict[str, Any]], completed: bool) -> None:
        async def run() -> None:
            async with self._handle_locks[handle]:
                await self.carry_out(self.plugin.trickle(handle, candidates, completed))

        self.spawn(run())

    async def detach(self, handle: int) -> None:
        """The handle is gone: free its name, end its call. (No ``detached`` here.)"""
        await self.carry_out(self.plugin.detach(handle))  # may still notify the handle
        self.sessions.detach(handle)
        self._handle_locks.pop(handle, None)

    async def pc_closed(self, handle: int) -> None:
        await self.carry_out(self.plugin.pc_closed(handle))

    # --- effects ------------------------------------------------------------------------

    async def carry_out(self, effects: list[vc.Effect]) -> None:
        """Do what the state machine asked, in order, feeding outcomes back in."""
        queue = list(effects)
        while queue:
            effect = queue.pop(0)
            try:
                more = await self._do(effect)
            except Exception:  # a bug must not take the connection down: log it
                log.exception("failed to carry out %r", effect)
                more = []
            queue[:0] = more

    async def _do(self, effect: vc.Effect) -> list[vc.Effect]:
        match effect:
            case vc.Event(handle, data, transaction, jsep):
                self.send_to_handle(
                    handle,
                    replies.plugin_event(self._session_of(handle), handle, data, transaction=transaction, jsep=jsep),
                )
            case vc.CoreHangup(handle, reason):
                self.send_to_handle(handle, replies.hangup(self._session_of(handle), handle, reason))
            case vc.Webrtcup(handle):
                self.send_to_handle(handle, replies.webrtcup(self._session_of(handle), handle))
            case vc.Media(handle, mid, kind, receiving):
                self.send_to_handle(handle, replies.media(self._session_of(handle), handle, mid, kind, receiving))
            case vc.Claim(handle, name, transaction):
                ok = await self.registry.claim(name, owner_id(self.settings.node_id, handle))
                return self.plugin.claimed(handle, name, ok, transaction)
            case vc.Release(name, handle):
                await self.registry.release(name, owner_id(self.settings.node_id, handle))
            case vc.Lookup(handle, name, transaction, jsep):
                owner = await self.registry.lookup(name)
                parsed = parse_owner(owner) if owner else None
                # A name held on another signalling node cannot be called from here yet.
                callee = parsed[1] if parsed and parsed[0] == self.settings.node_id else None
                return self.plugin.looked_up(handle, name, callee, transaction, jsep)
            case vc.RelayCreate(call_id, caller_offer):
                try:
                    offer = await self.relay.create_call(call_id, caller_offer)
                except ipc.IpcError as exc:
                    log.info("call %s refused by the relay: %s", call_id, exc.reason)
                    return self.plugin.call_created(call_id, None, exc.reason)
                return self.plugin.call_created(call_id, offer, None)
            case vc.RelayAccept(call_id, callee_answer):
                try:
                    result = await self.relay.request(call_id, "call.accept",
                                                      m.CallAccept(call_id=call_id, callee_answer=callee_answer))
                except ipc.IpcError as exc:
                    log.info("answer for %s refused by the relay: %s", call_id, exc.reason)
                    return self.plugin.call_accepted(call_id, None, exc.reason)
                assert isinstance(result, m.CallAcceptResult)
                return self.plugin.call_accepted(call_id, result.caller_answer, None)
            case vc.RelayRenegotiate(call_id, leg, sdp_type, sdp, restart, transaction):
                try:
                    body = m.LegRenegotiate(call_id=call_id, leg=leg, sdp_type=sdp_type, sdp=sdp, restart=restart)  # type: ignore[arg-type]
                    result = await self.relay.request(call_id, "leg.renegotiate", body)
                except (ipc.IpcError, ValueError) as exc:
                    reason = exc.reason if isinstance(exc, ipc.IpcError) else "invalid SDP"
                    return self.plugin.renegotiated(call_id, leg, sdp_type, None, reason, transaction)
                assert isinstance(result, m.LegRenegotiateResult)
                return self.plugin.renegotiated(call_id, leg, result.sdp_type, result.sdp, None, transaction)
            case vc.RelayTrickle(call_id, leg, candidates, completed):
                self._fire(call_id, "leg.trickle", lambda: m.LegTrickle(
                    call_id=call_id, leg=leg, candidates=[m.IceCandidate.model_validate(c) for c in candidates],
                    completed=completed))
            case vc.RelayConfigure(call_id, leg, audio, video, bitrate):
                self._fire(call_id, "leg.configure",
                           lambda: m.LegConfigure(call_id=call_id, leg=leg, audio=audio, video=video, bitrate=bitrate))
            case vc.RelayHangup(call_id, reason):
                self.spawn(self.relay.hangup(call_id, reason))
        return []

    def _fire(self, call_id: str, method: str, build: Callable[[], BaseModel]) -> None:
        """A request whose answer changes nothing here: sent in order, failures logged."""
        try:
            body = build()
        except ValueError as exc:
            log.info("dropping %s for %s: %s", method, call_id, exc)
            return

        async def send() -> None:
            try:
                await self.relay.request(call_id, method, body)
            except ipc.IpcError as exc:
                log.info("%s for %s failed: %s", method, call_id, exc.reason)

        self.spawn(send())

    # --- relay notifications --------------------------------------------------------------

    def _on_relay_notification(self, method: str, body: BaseModel) -> None:
        if isinstance(body, m.LegState):
            log.info("call %s %s leg %s %s", body.call_id, body.leg, body.state, body.reason)
            effects = self.plugin.leg_state(body.call_id, body.leg, body.state == "connected", body.reason)
        elif isinstance(body, m.LegMedia):
            effects = self.plugin.leg_media(body.call_id, body.leg, body.kind, body.mid, body.receiving)
        else:
            return
        self.spawn(self.carry_out(effects))

    def _on_calls_lost(self, call_ids: list[str]) -> None:
        self.spawn(self.carry_out(self.plugin.relay_lost(call_ids)))
