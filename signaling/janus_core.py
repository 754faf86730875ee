"""The Janus core, whatever the transport: requests in, replies and events out.

A transport (the WebSocket adapter in ``server``, the HTTP long-poll adapter in
``http_transport``) is only an adapter: it hands the core a request with the *owner* it
acts for (an opaque key: a WebSocket connection, an HTTP session) and a function that
takes the synchronous reply. The core applies the session-level verbs on ``Sessions``,
hands plugin work to the ``PluginRunner``, and delivers what happens later (plugin events,
``webrtcup``, ``media``, ``hangup``, ``detached``, ``timeout``) to the session's *sink*.

A session has at most one sink: the transport that takes its events right now (an open
WebSocket). With none (its WebSocket closed and nobody claimed it yet, or an HTTP session
between two long polls), events wait in the session's mailbox, bounded, the oldest dropped
past ``max_held_events`` with a log line and a count (``videocall_session_events_dropped_total``). A ``claim`` from
a transport with a sink answers ``success`` and then hands it the held events, in order; an
HTTP long poll takes them from the mailbox.

Sessions of a transport that broke (a WebSocket closed without its closing handshake: a
network drop, a dead proxy, a crashed tab) are kept for ``reclaim_session_timeout`` seconds
(Janus's ``transport_gone``; 0 destroys them at once, as Janus's default does), handles,
names and the call's media included. Stricter than Janus on purpose: a client that closes
its WebSocket properly is leaving (janus.js does exactly that, with no ``destroy``, when its
page unloads), so its sessions go at once and its peer is not left waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from shared.settings import Settings
from signaling import janus_api as api
from signaling import janus_replies as replies
from signaling.auth import RequestAuth
from signaling.effects import CoreHangup, Delivery, Event, Media, Webrtcup
from signaling.frontdoor import FrontDoor
from signaling.janus_errors import ErrorCode, PluginError
from signaling.metrics import NodeMetrics
from signaling.plugin_runner import PluginRunner
from signaling.sessions import SessionError, Sessions
from signaling.videocall import error_data

log = logging.getLogger("videocall.core")

Message = dict[str, Any]
#: Takes the synchronous reply (or error) to one request.
Reply = Callable[[Message], None]


class Sink(Protocol):
    """Where a session's events go while its transport is there (a WebSocket connection)."""

    def send(self, message: Message) -> None: ...


class Mailbox:
    """Events held for a session with no sink: at most ``limit``, the oldest dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[Message] = deque()

    def put(self, message: Message) -> Message | None:
        """Hold ``message``; returns the one dropped to make room, if any."""
        dropped = self.items.popleft() if len(self.items) >= self.limit else None
        self.items.append(message)
        return dropped

    def take(self, count: int) -> list[Message]:
        return [self.items.popleft() for _ in range(min(count, len(self.items)))]

    def __len__(self) -> int:
        return len(self.items)


class JanusCore:
    """Sessions, handles and the plugin behind every transport of one node."""

    def __init__(self, settings: Settings, sessions: Sessions, *, auth: RequestAuth, door: FrontDoor,
                 accepting: Callable[[], bool]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.auth = auth
        self.door = door
        #: Whether ``create`` is answered now (not while draining, nor after the Admin API's
        #: ``accept_new_sessions`` false).
        self._accepting = accepting
        #: The session timeout now: ``session_timeout``, until the Admin API sets another.
        self.session_timeout = settings.session_timeout
        self.sinks: dict[Hashable, Sink] = {}
        self.mailboxes: dict[int, Mailbox] = {}
        self._arrived: dict[int, asyncio.Event] = {}
        #: Set by the server once both exist (the runner delivers through ``deliver``).
        self.plugin: PluginRunner
        self.metrics: NodeMetrics | None = None

    def bind(self, plugin: PluginRunner, metrics: NodeMetrics) -> None:
        self.plugin = plugin
        self.metrics = metrics
        metrics.held_events.set_function(lambda: sum(len(box) for box in self.mailboxes.values()))

    @property
    def reclaim_timeout(self) -> float:
        return self.settings.reclaim_session_timeout

    def _core_error(self, code: int) -> None:
        if self.metrics is not None:
            self.metrics.core_error(code)

    # --- transports come and go -------------------------------------------------------------

    def connect(self, owner: Hashable, sink: Sink) -> None:
        """``owner``'s events go to ``sink`` from now on (a WebSocket opened)."""
        self.sinks[owner] = sink

    async def disconnect(self, owner: Hashable, *, broken: bool = True) -> None:
        """``owner``'s transport is gone: its sessions are destroyed, or, when it ``broke``
        (no goodbye from the client) and there is a ``reclaim_session_timeout``, kept for a
        ``claim`` (their events held meanwhile)."""
        self.sinks.pop(owner, None)
        if self.reclaim_timeout <= 0 or not broken:
            for session_id in self.sessions.owned_by(owner):
                await self.destroy_session(session_id)
            return
        orphans = self.sessions.orphan(owner, asyncio.get_running_loop().time())
        for session_id in orphans:
            log.info("session %s kept for %g s for a claim (its transport went away)", session_id,
                     self.reclaim_timeout)

    # --- requests ---------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> api.Envelope:
        """Size, then strict JSON and the envelope (``JanusError`` for the client)."""
        if len(frame) > self.settings.max_message_size:
            raise api.JanusError(
                ErrorCode.TRANSPORT_SPECIFIC,
                f"Message too large ({len(frame)} bytes, the limit is {self.settings.max_message_size})",
            )
        return api.parse_envelope(frame, max_depth=self.settings.max_json_depth)

    async def handle_frame(self, frame: str | bytes, owner: Hashable, address: str, reply: Reply) -> None:
        """One request as text: every answer, error or not, goes to ``reply``."""
        try:
            envelope = self.parse(frame)
        except api.JanusError as exc:
            self._core_error(exc.code)
            reply(exc.reply())
            return
        await self.handle(envelope, owner, address, reply)

    async def handle(self, envelope: api.Envelope, owner: Hashable, address: str, reply: Reply) -> None:
        """One parsed request from ``owner`` (whose client is at ``address``)."""
        try:
            if self.auth.enabled:  # 403, before any session lookup (janus_request_check_secret)
                refusal = self.auth.refusal(envelope, time.time(), accepting_sessions=self._accepting())
                if refusal is not None:
                    raise refusal
            answer = await self._dispatch(envelope, owner, address, reply)
        except api.JanusError as exc:
            answer = exc.reply()
            self._core_error(exc.code)
        except Exception:
            log.exception("internal error handling a request of %s", owner)
            answer = api.JanusError(ErrorCode.UNKNOWN, "Internal error").reply()
            self._core_error(ErrorCode.UNKNOWN)
        if answer is not None:
            reply(answer)

    async def _dispatch(self, env: api.Envelope, owner: Hashable, address: str, reply: Reply) -> Message | None:
        tx, now = env.transaction, asyncio.get_running_loop().time()
        sessions = self.sessions
        try:
            if env.session_id is None:
                request = api.parse_request(env)
                if isinstance(request, api.InfoRequest):
                    return self.server_info(tx)
                if isinstance(request, api.PingRequest):
                    return replies.pong(tx)
                assert isinstance(request, api.CreateRequest)
                if not self._accepting():  # Janus: accept_new_sessions false (janus_process_incoming_request)
                    raise api.JanusError.answering(env, ErrorCode.NOT_ACCEPTING_SESSIONS, ErrorCode.NOT_ACCEPTING_SESSIONS.reason)
                if (limited := self.door.create_refusal(address, len(sessions.sessions), now)):
                    raise api.JanusError.answering(env, *limited)  # 472 node full, 490 rate limit (signaling/frontdoor.py)
                try:
                    session = sessions.create(owner, now, request.id)
                except SessionError as exc:  # Janus echoes the id asked for (468)
                    raise api.JanusError(exc.code, exc.reason, transaction=tx, session_id=request.id) from None
                log.info("session %s created by %s", session.session_id, owner)
                return replies.success(tx, data={"id": session.session_id})

            if env.verb == "claim":
                sessions.claim(env.session_id, owner, now)
                log.info("session %s claimed by %s", env.session_id, owner)
                reply(replies.success(tx, session_id=env.session_id))
                self._flush(env.session_id)
                return None
            session = sessions.get(env.session_id, owner, now)
            handle = sessions.handle(session, env.handle_id) if env.handle_id is not None else None
            request = api.parse_request(env)  # 453/457 and field errors come after 458/459
            sid = session.session_id
            if isinstance(request, api.KeepaliveRequest):
                return replies.ack(tx, sid)
            if isinstance(request, api.AttachRequest):
                if (refusal := self.auth.attach_refusal(env, request.plugin, time.time())) is not None:
                    raise refusal  # 405, once the plugin is known (janus_auth_check_plugin)
                new_handle = sessions.attach(session, now)
                self.plugin.attach(new_handle)
                return replies.success(tx, session_id=sid, data={"id": new_handle})
            if isinstance(request, api.DestroyRequest):
                reply(replies.success(tx, session_id=sid))
                await self.destroy_session(sid)
                return None
            assert handle is not None  # parse_request refused handle verbs without one
            if isinstance(request, api.MessageRequest):
                reply(replies.ack(tx, sid))
                if request.body.get("request") == "register" and (
                        throttled := self.door.register_refusal(address, now)):
                    self.deliver(Event(handle, error_data(PluginError(*throttled)), tx))  # 499, rate limit
                    return None
                jsep = request.jsep.model_dump(exclude_none=True) if request.jsep is not None else None
                self.plugin.message(handle, request.body, jsep, tx, bound_username=self.auth.bound_username(env, time.time()))
                return None
            if isinstance(request, api.TrickleRequest):
                reply(replies.ack(tx, sid))
                self.plugin.trickle(handle, request.candidates, request.completed)
                return None
            if isinstance(request, api.HangupRequest):
                reply(replies.success(tx, session_id=sid))
                await self.plugin.pc_closed(handle)
                return None
            if isinstance(request, api.DetachRequest):
                reply(replies.success(tx, session_id=sid))
                await self.detach(handle, tell=True)
                return None
            raise api.JanusError.answering(env, ErrorCode.UNKNOWN, f"Unhandled request '{env.verb}'")
        except SessionError as exc:
            raise api.JanusError.answering(env, exc.code, exc.reason) from None

    def server_info(self, transaction: str) -> Message:
        return replies.server_info(transaction, session_timeout=int(self.session_timeout),
                                   reclaim_session_timeout=int(self.reclaim_timeout),
                                   accepting_new_sessions=self._accepting(),
                                   api_secret=bool(self.auth.api_secret), auth_token=self.auth.token_auth)

    # --- events -------------------------------------------------------------------------------

    def deliver(self, effect: Delivery) -> None:
        """A plugin event or notification, in its envelope, to its handle's session."""
        session_id = self.sessions.session_of(effect.handle)
        if session_id is None:
            return
        handle = effect.handle
        match effect:
            case Event(_, data, transaction, jsep):
                message = replies.plugin_event(session_id, handle, data, transaction=transaction, jsep=jsep)
                if "error_code" in data and self.metrics is not None:
                    self.metrics.plugin_error(data["error_code"])
            case CoreHangup(_, reason):
                message = replies.hangup(session_id, handle, reason)
            case Webrtcup():
                message = replies.webrtcup(session_id, handle)
            case Media(_, mid, kind, receiving):
                message = replies.media(session_id, handle, mid, kind, receiving)
        self.notify(session_id, message)

    def notify(self, session_id: int, message: Message) -> None:
        """To the session's sink, or into its mailbox while it has none."""
        owner = self.sessions.owner_of(session_id)
        if owner is None:
            return
        sink = self.sinks.get(owner)
        if sink is not None:
            sink.send(message)
            return
        box = self.mailboxes.setdefault(session_id, Mailbox(self.settings.max_held_events))
        dropped = box.put(message)
        if dropped is not None:
            log.warning("session %s holds %d events for a transport that is not there: dropped its oldest (%s)",
                        session_id, box.limit, dropped.get("janus"))
            if self.metrics is not None:
                self.metrics.events_dropped.inc()
        if (arrived := self._arrived.get(session_id)) is not None:
            arrived.set()

    def _flush(self, session_id: int) -> None:
        """The events held while the session had no sink, in order, to its new one."""
        owner = self.sessions.owner_of(session_id)
        sink = self.sinks.get(owner) if owner is not None else None
        box = self.mailboxes.get(session_id)
        if sink is None or box is None:
            return
        del self.mailboxes[session_id]
        if box.items:
            log.info("session %s: %d held event(s) handed to its new transport", session_id, len(box))
        for message in box.items:
            sink.send(message)

    async def poll(self, session_id: int, maxev: int, wait: float) -> list[Message]:
        """Up to ``maxev`` held events of a session (an HTTP long poll), waiting up to ``wait``
        seconds for the first; empty when none came or the session ended meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (session := self.sessions.sessions.get(session_id)) is not None:
            session.last_seen = loop.time()  # a client waiting on its session is not idle
            box = self.mailboxes.get(session_id)
            if box is not None and box.items:
                return box.take(maxev)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            arrived = self._arrived.setdefault(session_id, asyncio.Event())
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), min(remaining, 1.0))
        return []

    # --- ends ---------------------------------------------------------------------------------

    async def detach(self, handle: int, *, tell: bool = False) -> None:
        """The handle goes: the plugin lets go of it (its peer may still be told), then the
        sessions table forgets it; ``tell``: its client gets ``detached``."""
        session_id = self.sessions.session_of(handle)
        await self.plugin.detach(handle)
        if tell and session_id is not None:
            self.notify(session_id, replies.detached(session_id, handle))
        self.sessions.detach(handle)

    async def destroy_session(self, session_id: int, *, tell: bool = False) -> None:
        """The session and its handles go; ``tell``: its client gets ``detached`` for each
        handle (Janus's ``janus_ice_handle_destroy``), when it is not the one who asked."""
        session = self.sessions.sessions.get(session_id)
        for handle in sorted(session.handles) if session is not None else []:
            await self.detach(handle, tell=tell)
        self.sessions.destroy(session_id)
        self.mailboxes.pop(session_id, None)
        if (arrived := self._arrived.pop(session_id, None)) is not None:
            arrived.set()  # a long poll waiting on it returns
        log.info("session %s destroyed", session_id)

    async def sweep(self, now: float) -> None:
        """Expire sessions idle for ``session_timeout`` s (``timeout`` to their transport),
        and orphans not claimed within ``reclaim_session_timeout`` s; what they held goes
        (Janus's ``janus_check_sessions``)."""
        for session_id in self.sessions.expired(now, self.session_timeout, self.reclaim_timeout):
            session = self.sessions.sessions.get(session_id)
            if session is None:
                continue
            if session.orphaned_at is not None and now - session.orphaned_at >= self.reclaim_timeout:
                log.info("session %s not claimed within %g s", session_id, self.reclaim_timeout)
            else:
                log.info("session %s timed out", session_id)
                self.notify(session_id, replies.timeout(session_id))
            await self.destroy_session(session_id)

    async def run_sweeper(self) -> None:
        while True:
            timeouts = [t for t in (self.session_timeout, self.reclaim_timeout) if t > 0]  # the Admin API may change one
            await asyncio.sleep(max(0.1, min(1.0, min(timeouts) / 4)) if timeouts else 0.25)
            await self.sweep(asyncio.get_running_loop().time())
