"""The WebSocket adapter: Janus API frames in, replies and notifications out.

One task per connection reads frames, asks ``janus_api`` to parse them, applies the
session-level verbs on ``Sessions`` and hands plugin work to the ``PluginRunner``, whose
deliveries it turns into envelopes for the handle's connection. Each
connection has a bounded outgoing queue drained by its own writer task, so a client that
stops reading is disconnected instead of stalling anyone else. Session expiry is a timer
here (the sessions table itself is pure). Plain HTTP GETs get the operator's endpoints
(``ops_http``: ``/healthz``, ``/readyz``, ``/metrics``) or the demo page and its allow-listed
files (``http_static``); WebSocket upgrades on any path speak the API, as Janus's transport
does.

The front door (``frontdoor``, ``guarded_connection``): Origin and a per-address connection
cap are checked in the handshake (403, 429), ``create`` and ``register`` are rate-limited per
address, and a watch closes silent or trickling connections (1008).

Draining (``drain``, on SIGTERM): new sessions are refused as Janus does with
``accept_new_sessions: false``, ``/readyz`` says so, calls in progress go on until they end
or ``drain_timeout`` passes. Calls still up when the node stops then (or at a second
SIGTERM) end for both users with a plugin and a core ``hangup`` before the sockets close.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from shared import messages as m
from shared.settings import Settings
from signaling import janus_api as api
from signaling import janus_replies as replies
from signaling.auth import RequestAuth
from signaling.effects import CoreHangup, Delivery, Event, Media, Webrtcup
from signaling.frontdoor import CLOSE_POLICY, REFUSAL_LOG_PERIOD, FrontDoor
from signaling.guarded_connection import GuardedConnection
from signaling.http_static import StaticFiles, demo_url
from signaling.janus_errors import SHUTTING_DOWN, ErrorCode, PluginError
from signaling.metrics import NodeMetrics
from signaling.ops_http import OpsEndpoints
from signaling.plugin_runner import PluginRunner
from signaling.registry import MemoryRegistry, Registry
from signaling.relay_client import RelayPool
from signaling.sessions import SessionError, Sessions
from signaling.tokens import TokenStore
from signaling.videocall import VideoCall, error_data

if TYPE_CHECKING:  # Redis (7 MB of modules) is imported only by a node given a redis_url
    from signaling.fleet_calls import FleetCalls
    from signaling.node_bus import NodeBus, NodeMessage

log = logging.getLogger("videocall.server")

#: Frames larger than this are not even read (websockets closes with 1009); frames
#: between ``max_message_size`` and this get a Janus error and the connection goes on.
HARD_FRAME_LIMIT_FACTOR = 4
#: Messages queued for a client that does not read before it is disconnected.
MAX_OUTGOING = 1024
#: The WebSocket subprotocol janus.js asks for.
JANUS_PROTOCOL = Subprotocol("janus-protocol")


class Connection:
    """One WebSocket client: its outgoing queue and the sessions it holds."""

    def __init__(self, ws: ServerConnection, key: int) -> None:
        self.ws = ws
        self.key = key
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(MAX_OUTGOING)

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(replies.dumps(message))
        except asyncio.QueueFull:
            log.warning("connection %s is not reading its messages; closing it", self.key)
            asyncio.get_running_loop().create_task(self.ws.close(1008, "too many unread messages"))

    async def writer(self) -> None:
        while True:
            text = await self.queue.get()
            if text is None:
                return
            await self.ws.send(text)


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """Answer ``janus-protocol`` when asked (janus.js does); accept clients that ask for none."""
    return JANUS_PROTOCOL if JANUS_PROTOCOL in offered else None


def create_registry(settings: Settings) -> Registry:
    """The one choice between a node alone and a fleet: Redis when ``redis_url`` is set."""
    if not settings.redis_url:
        return MemoryRegistry()
    from signaling.redis_registry import RedisRegistry, redacted_url

    log.info("registry: %s, keys %r, lease %g s, node %r", redacted_url(settings.redis_url),
             settings.redis_key_prefix + "name:*", settings.registry_lease, settings.node_id)
    return RedisRegistry(settings.redis_url, prefix=settings.redis_key_prefix, lease=settings.registry_lease)


def create_fleet(settings: Settings) -> FleetCalls | None:
    """Calls with users of other nodes, through Redis, when nodes share a registry there."""
    if not settings.redis_url:
        return None
    from signaling.fleet_calls import FleetCalls
    from signaling.node_bus import NodeBus

    def bus(on_message: Callable[[NodeMessage], None]) -> NodeBus:
        return NodeBus(settings.redis_url, prefix=settings.redis_key_prefix, node_id=settings.node_id,
                       lease=settings.registry_lease, on_message=on_message)

    return FleetCalls(bus, settings.node_id, check_every=settings.registry_lease / 3)


class SignalingServer:
    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.connections: dict[Hashable, Connection] = {}
        self.sessions = Sessions(
            max_sessions_per_connection=settings.max_sessions_per_connection,
            max_handles_per_session=settings.max_handles_per_session,
        )
        self.registry: Registry = registry if registry is not None else create_registry(settings)
        self.relay = RelayPool(
            settings.worker_addresses,
            node_id=settings.node_id,
            timeout=settings.ipc_timeout,
            secret=settings.relay_secret,
            on_notification=self._on_relay_notification,
            on_calls_lost=self._on_calls_lost,
        )
        self.plugin = PluginRunner(
            VideoCall(max_pending_trickles=settings.max_pending_trickles, ring_timeout=settings.ring_timeout),
            registry=self.registry,
            relay=self.relay,
            deliver=self._deliver,
            node_id=settings.node_id,
        )
        self.fleet = create_fleet(settings)
        if self.fleet is not None:
            self.fleet.bind(self.plugin)
            self.plugin.fleet = self.fleet
        self._keys = itertools.count(1)
        self._server: Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.static = StaticFiles()
        # --- operations: health, metrics, drain ---
        self.draining = False
        self.metrics = NodeMetrics(self, self.sessions, self.plugin.plugin, self.relay)
        self.plugin.on_call_setup = self.metrics.call_setup.observe
        self.ops = OpsEndpoints(self, self.registry, self.metrics)
        # --- who may use the API: api_secret, token auth (signaling/auth.py) ---
        self.auth = RequestAuth.from_settings(settings, TokenStore(settings.token_store))
        # --- the front door: origins, per-address caps and rates, silent clients (signaling/frontdoor.py) ---
        self.door = FrontDoor.from_settings(settings)
        self._watch: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def _send(self, owner: Hashable, message: dict[str, Any]) -> None:
        connection = self.connections.get(owner)
        if connection is not None:
            connection.send(message)

    def _deliver(self, effect: Delivery) -> None:
        """A plugin event or notification, in its envelope, to the connection of its handle."""
        session_id = self.sessions.session_of(effect.handle)
        owner = self.sessions.owner_of(session_id) if session_id is not None else None
        if session_id is None or owner is None:
            return
        handle = effect.handle
        match effect:
            case Event(_, data, transaction, jsep):
                message = replies.plugin_event(session_id, handle, data, transaction=transaction, jsep=jsep)
                if "error_code" in data:
                    self.metrics.plugin_error(data["error_code"])
            case CoreHangup(_, reason):
                message = replies.hangup(session_id, handle, reason)
            case Webrtcup():
                message = replies.webrtcup(session_id, handle)
            case Media(_, mid, kind, receiving):
                message = replies.media(session_id, handle, mid, kind, receiving)
        self._send(owner, message)

    def _on_relay_notification(self, body: m.Notification) -> None:
        self.plugin.on_relay_notification(body)

    def _on_calls_lost(self, call_ids: list[str]) -> None:
        self.plugin.on_calls_lost(call_ids)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Server:
        await self.registry.start()
        if self.fleet is not None:
            await self.fleet.start()
        await self.relay.start(wait=5.0)
        self._server = await websockets.serve(
            self._serve_connection,
            self.settings.host,
            self.settings.port,
            subprotocols=[JANUS_PROTOCOL],
            select_subprotocol=_select_subprotocol,
            max_size=self.settings.max_message_size * HARD_FRAME_LIMIT_FACTOR,
            process_request=self._http,
            ping_interval=30,
            create_connection=GuardedConnection,
            open_timeout=self.settings.handshake_timeout,
        )
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_sessions())
        if (period := self.door.watch_period) is not None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_connections(period))
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._watch is not None:
            self._watch.cancel()
        await self._end_calls()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.relay.close()
        await self.plugin.close()
        if self.fleet is not None:
            await self.fleet.close()
        await self.registry.close()

    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if (refused := self._admit(connection, request, upgrade=upgrade)) is not None:
            return refused
        if upgrade:
            return None
        ops = await self.ops.response(request.path)
        if ops is not None:
            return ops
        return self.static.response(request.path, request.headers.get("If-None-Match"))

    # --- the front door (signaling/frontdoor.py) ------------------------------------------

    def _admit(self, connection: ServerConnection, request: Request, *, upgrade: bool) -> Response | None:
        """Origin and the per-address cap, before the upgrade: 403 or 429 with a one-line
        reason (also logged), or None, the connection now counted against its address."""
        peer = connection.remote_address[0] if connection.remote_address else ""
        address = self.door.address(str(peer), request.headers.get("X-Forwarded-For"))
        refusal = self.door.handshake_refusal(address, request.headers.get_all("Origin"), upgrade=upgrade)
        if refusal is not None:
            if self.door.log_refusal(address, asyncio.get_running_loop().time()):
                log.info("refused %s from %s: %s (more from it within %g s are not logged)",
                         "a WebSocket" if upgrade else "an HTTP request", address, refusal.reason, REFUSAL_LOG_PERIOD)
            return connection.respond(refusal.status, refusal.reason + "\n")
        assert isinstance(connection, GuardedConnection)
        connection.hold(address, lambda: self.door.release(address))
        return None

    @staticmethod
    def _address(connection: Connection) -> str:
        ws = connection.ws
        return (ws.client_address if isinstance(ws, GuardedConnection) else None) or ""

    async def _watch_connections(self, period: float) -> None:
        """Close, with 1008, a connection without a session silent for ``idle_timeout``, or
        one whose frame has been arriving for longer than ``frame_timeout``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            self.door.prune(now)
            for key, connection in list(self.connections.items()):
                ws = connection.ws
                if not isinstance(ws, GuardedConnection) or ws.state is not State.OPEN:
                    continue
                has_session = bool(self.sessions.owned_by(key))
                if has_session:  # idle counts from when it last held a session
                    ws.last_active = now
                reason = self.door.quiet_close_reason(now, last_active=ws.last_active, partial_since=ws.partial_since,
                                                      has_session=has_session)
                if reason is not None:
                    log.info("connection %s from %s closed: %s", key, ws.client_address, reason)
                    task = loop.create_task(ws.close(CLOSE_POLICY, reason))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

    # --- operations: readiness, drain ---------------------------------------------------

    def workers_connected(self) -> int:
        return len(self.relay.connected())

    def calls(self) -> int:
        return len(self.plugin.plugin.calls)

    async def drain(self, timeout: float) -> None:
        """Take no new session, and return once no call is left or after ``timeout`` s."""
        self.draining = True
        log.info("draining: new sessions refused; %d call(s) in progress, waiting up to %g s for them",
                 self.calls(), timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.calls() and loop.time() < deadline:
            await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))
        log.info("drain over: %d call(s) left", self.calls())

    async def _end_calls(self, flush_timeout: float = 2.0) -> None:
        """Calls still up when the node stops: both users get the plugin ``hangup`` ("Server
        shutting down") and the core ``hangup``, and what is queued for them is written out
        (for up to ``flush_timeout`` s) before their sockets close."""
        if not self.calls():
            return
        log.info("stopping: hanging up %d call(s)", self.calls())
        await self.plugin.end_all(SHUTTING_DOWN)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flush_timeout
        while any(not c.queue.empty() for c in self.connections.values()) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the writers' last ``send`` reaches the socket

    # --- one connection -----------------------------------------------------------------

    async def _serve_connection(self, ws: ServerConnection) -> None:
        key = next(self._keys)
        connection = Connection(ws, key)
        self.connections[key] = connection
        writer = asyncio.get_running_loop().create_task(connection.writer())
        log.info("connection %s opened from %s", key, ws.remote_address)
        try:
            async for frame in ws:
                await self._on_frame(connection, frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            del self.connections[key]
            writer.cancel()
            for session_id in self.sessions.owned_by(key):
                await self._destroy_session(session_id)
            log.info("connection %s closed", key)

    async def _on_frame(self, connection: Connection, frame: str | bytes) -> None:
        try:
            if len(frame) > self.settings.max_message_size:
                raise api.JanusError(
                    ErrorCode.TRANSPORT_SPECIFIC,
                    f"Message too large ({len(frame)} bytes, the limit is {self.settings.max_message_size})",
                )
            envelope = api.parse_envelope(frame, max_depth=self.settings.max_json_depth)
            refusal = self.auth.refusal(envelope, time.time(), accepting_sessions=not self.draining)
            if refusal is not None:  # 403, before any session lookup (janus_request_check_secret)
                raise refusal
            reply = await self._dispatch(connection, envelope)
        except api.JanusError as exc:
            reply = exc.reply()
            self.metrics.core_error(exc.code)
        except Exception:
            log.exception("internal error handling a frame on connection %s", connection.key)
            reply = api.JanusError(ErrorCode.UNKNOWN, "Internal error").reply()
            self.metrics.core_error(ErrorCode.UNKNOWN)
        if reply is not None:
            connection.send(reply)

    async def _dispatch(self, connection: Connection, env: api.Envelope) -> dict[str, Any] | None:
        tx, now = env.transaction, asyncio.get_running_loop().time()
        sessions = self.sessions

        def error(code: int, reason: str) -> api.JanusError:
            return api.JanusError(code, reason, transaction=tx, session_id=env.session_id)

        try:
            if env.session_id is None:
                request = api.parse_request(env)
                if isinstance(request, api.InfoRequest):
                    return replies.server_info(tx, session_timeout=int(self.settings.session_timeout),
                                               api_secret=bool(self.auth.api_secret), auth_token=self.auth.token_auth)
                if isinstance(request, api.PingRequest):
                    return replies.pong(tx)
                assert isinstance(request, api.CreateRequest)
                if self.draining:  # Janus: accept_new_sessions false (janus_process_incoming_request)
                    raise error(ErrorCode.NOT_ACCEPTING_SESSIONS, ErrorCode.NOT_ACCEPTING_SESSIONS.reason)
                if (limited := self.door.create_refusal(self._address(connection), len(sessions.sessions), now)):
                    raise error(*limited)  # 472 node full, 490 rate limit (signaling/frontdoor.py)
                try:
                    session = sessions.create(connection.key, now, request.id)
                except SessionError as exc:  # Janus echoes the id asked for (468)
                    raise api.JanusError(exc.code, exc.reason, transaction=tx, session_id=request.id) from None
                log.info("session %s created on connection %s", session.session_id, connection.key)
                return replies.success(tx, data={"id": session.session_id})

            if env.verb == "claim":
                sessions.claim(env.session_id, connection.key, now)
                return replies.success(tx, session_id=env.session_id)
            session = sessions.get(env.session_id, connection.key, now)
            handle = sessions.handle(session, env.handle_id) if env.handle_id is not None else None
            request = api.parse_request(env)  # 453/457 and field errors come after 458/459
            sid = session.session_id
            if isinstance(request, api.KeepaliveRequest):
                return replies.ack(tx, sid)
            if isinstance(request, api.AttachRequest):
                if (refusal := self.auth.attach_refusal(env, request.plugin, time.time())) is not None:
                    raise refusal  # 405, once the plugin is known (janus_auth_check_plugin)
                new_handle = sessions.attach(session)
                self.plugin.attach(new_handle)
                return replies.success(tx, session_id=sid, data={"id": new_handle})
            if isinstance(request, api.DestroyRequest):
                connection.send(replies.success(tx, session_id=sid))
                await self._destroy_session(sid)
                return None
            assert handle is not None  # parse_request refused handle verbs without one
            if isinstance(request, api.MessageRequest):
                connection.send(replies.ack(tx, sid))
                if request.body.get("request") == "register" and (
                        throttled := self.door.register_refusal(self._address(connection), now)):
                    self._deliver(Event(handle, error_data(PluginError(*throttled)), tx))  # 499, rate limit
                    return None
                jsep = request.jsep.model_dump(exclude_none=True) if request.jsep is not None else None
                self.plugin.message(handle, request.body, jsep, tx, bound_username=self.auth.bound_username(env, time.time()))
                return None
            if isinstance(request, api.TrickleRequest):
                connection.send(replies.ack(tx, sid))
                self.plugin.trickle(handle, request.candidates, request.completed)
                return None
            if isinstance(request, api.HangupRequest):
                connection.send(replies.success(tx, session_id=sid))
                await self.plugin.pc_closed(handle)
                return None
            if isinstance(request, api.DetachRequest):
                connection.send(replies.success(tx, session_id=sid))
                await self._detach(handle)
                connection.send(replies.detached(sid, handle))
                return None
            raise error(ErrorCode.UNKNOWN, f"Unhandled request '{env.verb}'")
        except SessionError as exc:
            raise error(exc.code, exc.reason) from None

    async def _detach(self, handle: int) -> None:
        """The handle goes: the plugin lets go of it (its peer may still be told), then the
        sessions table forgets it."""
        await self.plugin.detach(handle)
        self.sessions.detach(handle)

    async def _destroy_session(self, session_id: int) -> None:
        session = self.sessions.sessions.get(session_id)
        for handle in sorted(session.handles) if session is not None else []:
            await self._detach(handle)
        self.sessions.destroy(session_id)
        log.info("session %s destroyed", session_id)

    async def _sweep_sessions(self) -> None:
        """Expire sessions idle for ``session_timeout`` s: ``timeout`` to the client, then
        everything they held is released (Janus's ``janus_check_sessions``)."""
        timeout = self.settings.session_timeout
        period = max(0.1, min(1.0, timeout / 4)) if timeout > 0 else 1.0
        while True:
            await asyncio.sleep(period)
            now = asyncio.get_running_loop().time()
            for session_id in self.sessions.expired(now, timeout):
                owner = self.sessions.owner_of(session_id)
                log.info("session %s timed out", session_id)
                if owner is not None:
                    self._send(owner, replies.timeout(session_id))
                await self._destroy_session(session_id)


async def run(settings: Settings, registry: Registry | None = None, ready: asyncio.Event | None = None,
              drain: asyncio.Event | None = None) -> None:
    """Serve until cancelled, or, once ``drain`` is set, until the drain is over (no call is
    left, or ``settings.drain_timeout`` passed)."""
    server = SignalingServer(settings, registry)
    await server.start()
    log.info("videocall signalling on ws://%s:%s/ (%d relay worker(s))",
             settings.host, server.port, len(settings.worker_addresses))
    log.info("demo page: %s", demo_url(settings.host, server.port))
    server.static.warn_if_missing()
    if ready is not None:
        ready.set()
    try:
        if drain is None:
            await asyncio.Future()
        else:
            await drain.wait()
            await server.drain(settings.drain_timeout)
    finally:
        await server.close()
