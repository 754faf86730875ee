"""The WebSocket adapter and the node's lifecycle: Janus API frames in, replies and events out.

One task per connection reads frames and hands each to the transport-neutral Janus core
(``janus_core``) as the connection's own requests; the connection is the sink of the
sessions it holds, so their events come back on it. Each connection has a bounded outgoing
queue drained by its own writer task, so a client that stops reading is disconnected
instead of stalling anyone else. A connection that closes tells the core, which destroys
its sessions, or, if the connection broke, keeps them for a ``claim``
(``reclaim_session_timeout``). One listener (``http_listener``) serves the port: WebSocket
upgrades on any path speak the API, as Janus's transport does; plain HTTP requests go to the
``HttpHandler`` adapters in order: the Janus HTTP transport (``http_transport``, under
``base_path``), the operator's endpoints (``ops_http``: ``/healthz``, ``/readyz``,
``/metrics``), then the demo page and its allow-listed files (``http_static``).

The front door (``frontdoor``, ``guarded_connection``): Origin (upgrades) and a per-address
connection cap (every connection) are checked on each request head (403, 429), ``create`` and
``register`` are rate-limited per address, and a watch closes silent or trickling connections
(1008).

Draining (``drain``, on SIGTERM): new sessions are refused as Janus does with
``accept_new_sessions: false``, ``/readyz`` says so, calls in progress go on until they end
or ``drain_timeout`` passes. Calls still up when the node stops then (or at a second
SIGTERM) end for both users with a plugin and a core ``hangup`` before the sockets close.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.server import ServerConnection
from websockets.protocol import State
from websockets.typing import Subprotocol

from shared import messages as m
from shared.heap import HeapTrimmer
from shared.settings import Settings
from signaling import janus_replies as replies
from signaling.admin_server import AdminServer
from signaling.auth import RequestAuth
from signaling.effects import Delivery
from signaling.frontdoor import CLOSE_POLICY, REFUSAL_LOG_PERIOD, FrontDoor
from signaling.guarded_connection import GuardedConnection
from signaling.http_listener import ClientSlot, HttpLimits, HttpListener, WebSocketOptions
from signaling.http_static import StaticFiles, demo_url
from signaling.http_transport import JanusHttpTransport
from signaling.http_types import HttpHandler, HttpRequest, HttpResponse
from signaling.janus_core import JanusCore
from signaling.janus_errors import ADMIN_API, SHUTTING_DOWN
from signaling.metrics import NodeMetrics
from signaling.ops_http import OpsEndpoints
from signaling.plugin_runner import PluginRunner
from signaling.registry import MemoryRegistry, Registry
from signaling.relay_client import RelayPool
from signaling.sessions import Sessions
from signaling.tls import TlsSource
from signaling.tokens import TokenStore
from signaling.videocall import VideoCall

if TYPE_CHECKING:  # Redis (7 MB of modules) is imported only by a node given a redis_url
    from signaling.fleet_calls import FleetCalls
    from signaling.node_bus import NodeBus, NodeMessage

log = logging.getLogger("videocall.server")

#: Frames larger than this are not even read (websockets closes with 1009); frames
#: between ``max_message_size`` and this get a Janus error and the connection goes on.
HARD_FRAME_LIMIT_FACTOR = 4
#: Messages queued for a client that does not read before it is disconnected.
MAX_OUTGOING = 1024
#: Seconds after a connection closes before freed heap is given back (a burst of closes, one trim).
TRIM_DELAY = 1.0
#: The WebSocket subprotocol janus.js asks for.
JANUS_PROTOCOL = Subprotocol("janus-protocol")


class Connection:
    """One WebSocket client: its outgoing queue and the sessions it holds.

    A reply is written at once when nothing waits before it (the common case: the queue
    empty, the writer idle, the socket taking writes); otherwise it joins the queue, which the
    writer task drains in order, waiting for the socket as it must. The queue's bound is
    what a client that stops reading may leave unread beyond the socket's own buffer."""

    def __init__(self, ws: ServerConnection, key: int) -> None:
        self.ws = ws
        self.key = key
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_OUTGOING)
        self._sending = False  # the writer is in ``ws.send`` (waiting for the socket)
        self._send_now = ws.send_now if isinstance(ws, GuardedConnection) else None

    def send(self, message: dict[str, Any]) -> None:
        data = replies.dumps_bytes(message)
        if self._send_now is not None and not self._sending and self.queue.empty() and self._send_now(data):
            return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            log.warning("connection %s is not reading its messages; closing it", self.key)
            asyncio.get_running_loop().create_task(self.ws.close(1008, "too many unread messages"))

    async def writer(self) -> None:
        while True:
            data = await self.queue.get()
            if data is None:
                return
            self._sending = True
            try:
                await self.ws.send(data, text=True)
            finally:
                self._sending = False


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
    def __init__(self, settings: Settings, registry: Registry | None = None, *, tls: TlsSource | None = None) -> None:
        self.settings = settings
        #: https:// and wss:// on the API port (signaling/tls.py); SIGHUP reloads it (videocall/cli.py).
        self.tls = tls if tls is not None else TlsSource.from_settings(settings)
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
        self._server: HttpListener | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.static = StaticFiles()
        #: Adapters asked, in order, before the operator's endpoints and the demo page (the Janus
        #: HTTP transport); read once, by ``start``.
        self.http_handlers: list[HttpHandler] = []
        # --- operations: health, metrics, drain ---
        self.draining = False
        #: The Admin API's ``accept_new_sessions`` (refused like a drain, without one).
        self.accepting_sessions = True
        self.metrics = NodeMetrics(self, self.sessions, self.plugin.plugin, self.relay)
        self.plugin.on_call_setup = self.metrics.call_setup.observe
        self.ops = OpsEndpoints(self, self.registry, self.metrics)
        # --- who may use the API: api_secret, token auth (signaling/auth.py) ---
        self.tokens = TokenStore(settings.token_store)
        self.auth = RequestAuth.from_settings(settings, self.tokens)
        # --- the Admin API, on its own port when admin_secret is set (signaling/admin_server.py) ---
        self.admin = AdminServer(self) if settings.admin_secret.get_secret_value() else None
        # --- the front door: origins, per-address caps and rates, silent clients (signaling/frontdoor.py) ---
        self.door = FrontDoor.from_settings(settings)
        # --- the transport-neutral Janus core (signaling/janus_core.py) ---
        self.core = JanusCore(settings, self.sessions, auth=self.auth, door=self.door,
                              accepting=lambda: self.accepting)
        self.core.bind(self.plugin, self.metrics)
        # --- the Janus HTTP transport (signaling/http_transport.py), under base_path ---
        self.http_transport = JanusHttpTransport(self.core, settings, self.door)
        self.http_handlers.append(self.http_transport.handle)
        self._watch: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        #: Each connection's buffers and zlib contexts (~64 kB) go back to the system after
        #: connections close (``shared/heap.py``): a burst's memory comes back.
        self.heap = HeapTrimmer(TRIM_DELAY)

    def _deliver(self, effect: Delivery) -> None:
        self.core.deliver(effect)

    def _on_relay_notification(self, body: m.Notification) -> None:
        self.plugin.on_relay_notification(body)

    def _on_calls_lost(self, call_ids: list[str]) -> None:
        self.plugin.on_calls_lost(call_ids)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> HttpListener:
        await self.registry.start()
        if self.fleet is not None:
            await self.fleet.start()
        await self.relay.start(wait=5.0)
        self._server = self.listener()
        await self._server.start(self.settings.host, self.settings.port)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_sessions())
        if self.admin is not None:
            await self.admin.start()
        if (period := self.door.watch_period) is not None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_connections(period))
        return self._server

    def listener(self) -> HttpListener:
        """The API port: the WebSocket API, then the HTTP adapters in order, behind the front door."""
        limit = self.settings.max_message_size * HARD_FRAME_LIMIT_FACTOR
        websocket = WebSocketOptions(
            self._serve_connection, subprotocols=[JANUS_PROTOCOL], select_subprotocol=_select_subprotocol,
            max_size=limit, open_timeout=self.settings.handshake_timeout, ping_interval=30,
            compression=self.settings.websocket_compression,
        )
        limits = HttpLimits(max_body=limit, head_timeout=self.settings.handshake_timeout,
                            body_timeout=self.settings.handshake_timeout)
        return HttpListener([*self.http_handlers, self.ops.handle, self.static.handle], websocket=websocket,
                            gate=self._admit, limits=limits, ssl=self.tls.context if self.tls else None)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._watch is not None:
            self._watch.cancel()
        self.heap.cancel()
        await self._end_calls()
        if self.admin is not None:
            await self.admin.close()
        if self._server is not None:
            await self._server.close()
        await self.relay.close()
        await self.plugin.close()
        if self.fleet is not None:
            await self.fleet.close()
        await self.registry.close()

    # --- the front door (signaling/frontdoor.py) ------------------------------------------

    def _admit(self, client: ClientSlot, request: HttpRequest, upgrade: bool) -> HttpResponse | None:
        """Origin (upgrades) and the per-address cap (a connection's first request), before
        the upgrade or the body: 403 or 429 with a one-line reason (also logged), or None,
        the connection now counted against its address until it ends."""
        counted = client.address is not None
        address = client.address or self.door.address(client.peer, request.headers.get("x-forwarded-for"))
        origin = request.headers.get("origin")
        origins = [] if origin is None else [part.strip() for part in origin.split(",")]
        refusal = self.door.handshake_refusal(address, origins, upgrade=upgrade, counted=counted)
        if refusal is not None:
            self.metrics.door_refused(refusal.kind)
            if self.door.log_refusal(address, asyncio.get_running_loop().time()):
                log.info("refused %s from %s: %s (more from it within %g s are not logged)",
                         "a WebSocket" if upgrade else "an HTTP request", address, refusal.reason, REFUSAL_LOG_PERIOD)
            return HttpResponse(refusal.status, (refusal.reason + "\n").encode())
        if not counted:
            client.hold(address, lambda: self._released(address))
        return None

    def _released(self, address: str) -> None:
        """An admitted connection ended (however: refused later, timed out, closed): its slot
        goes back to its address, and its memory to the system soon after."""
        self.door.release(address)
        self.heap.soon()

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
            self._close_quiet(loop.time())

    def _close_quiet(self, now: float) -> None:
        """One look of ``_watch_connections``. A function of its own so that its loop variables
        end with it: left in the watch's frame, the last connection looked at (its buffers, its
        zlib contexts) stayed alive after it closed, until the next look found another."""
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
                self.metrics.door_refused(reason)
                log.info("connection %s from %s closed: %s", key, ws.client_address, reason)
                task = asyncio.get_running_loop().create_task(ws.close(CLOSE_POLICY, reason))
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
        self.core.connect(key, connection)
        writer = asyncio.get_running_loop().create_task(connection.writer())
        log.info("connection %s opened from %s", key, ws.remote_address)
        # Fixed for the connection's life (its address was set when the upgrade was admitted):
        # looked up once, not per frame.
        handle_frame, address, reply = self.core.handle_frame, self._address(connection), connection.send
        guarded = ws if isinstance(ws, GuardedConnection) else None
        if guarded is not None:  # whole text messages are handled as they arrive, when nothing is before them
            guarded.on_message = lambda text: handle_frame(text, key, address, reply)
        try:
            async for frame in ws:
                if guarded is None:
                    await handle_frame(frame, key, address, reply)
                    continue
                guarded.reader_busy = True  # what arrives now queues behind this message
                try:
                    await guarded.settled()  # one handled as it arrived, before this one
                    await handle_frame(frame, key, address, reply)
                finally:
                    guarded.reader_busy = False
        except websockets.ConnectionClosed:
            pass
        finally:
            try:
                if guarded is not None:  # the last message handled as it arrived has ended
                    guarded.on_message = None
                    await guarded.settled()
            finally:
                del self.connections[key]
                writer.cancel()
                # Broken: no closing handshake from the client (a network drop); its sessions
                # may then wait for a claim. A client that said goodbye is gone for good.
                await self.core.disconnect(key, broken=ws.protocol.close_rcvd is None)
                log.info("connection %s closed", key)

    # --- what the Admin API may do (signaling/admin_server.py) ----------------------------

    @property
    def accepting(self) -> bool:
        """Whether ``create`` is answered: not while draining, nor after ``accept_new_sessions`` false."""
        return self.accepting_sessions and not self.draining

    @property
    def session_timeout(self) -> float:
        """The session timeout now: ``session_timeout``, until the Admin API sets another."""
        return self.core.session_timeout

    @session_timeout.setter
    def session_timeout(self, value: float) -> None:
        self.core.session_timeout = value

    def server_info(self, transaction: str) -> dict[str, Any]:
        return self.core.server_info(transaction)

    async def admin_destroy_session(self, session_id: int) -> None:
        await self.core.destroy_session(session_id, tell=True)

    async def admin_detach(self, handle: int) -> None:
        await self.core.detach(handle, tell=True)

    async def admin_hangup(self, handle: int) -> None:
        """``hangup_webrtc``: the handle's PeerConnection closes as if its client hung up."""
        await self.plugin.pc_closed(handle, ADMIN_API)

    async def _sweep_sessions(self) -> None:
        await self.core.run_sweeper()


async def run(settings: Settings, registry: Registry | None = None, ready: asyncio.Event | None = None,
              drain: asyncio.Event | None = None, tls: TlsSource | None = None) -> None:
    """Serve until cancelled, or, once ``drain`` is set, until the drain is over (no call is
    left, or ``settings.drain_timeout`` passed). ``tls``: made from the settings when not given."""
    server = SignalingServer(settings, registry, tls=tls)
    await server.start()
    secure = server.tls is not None
    log.info("videocall signalling on %s://%s:%s/ (%d relay worker(s))", "wss" if secure else "ws",
             settings.host, server.port, len(settings.worker_addresses))
    log.info("demo page: %s", demo_url(settings.host, server.port, tls=secure))
    if server.tls is not None and server.tls.self_signed and settings.host in ("", "0.0.0.0", "::"):
        lan = [name for name in server.tls.names if _is_lan_address(name)]
        if lan:  # what a phone on the same network opens (and accepts the certificate of, once)
            log.info("from another device: %s", ", ".join(demo_url(name, server.port, tls=True) for name in lan))
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


def _is_lan_address(name: str) -> bool:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_link_local)
