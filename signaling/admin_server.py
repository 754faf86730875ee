"""The Admin API's adapters: a WebSocket (subprotocol ``janus-admin-protocol``) and HTTP
(``POST <admin_base_path>[/<session>[/<handle>]]``, ``GET <admin_base_path>/info``), both on
their own port through one ``HttpListener`` (``https``/``wss`` with the API port's certificate
when TLS is on), over the node's own sessions, handles, plugin and relay.

``admin_api`` decides (checks, commands, answers); this module looks things up and acts:
it asks the relay for a call's counters (``call.stats``), and carries out ``destroy_session``,
``detach_handle`` and ``hangup_webrtc`` through the server, so the affected client is told as
if it had asked itself (``hangup``, then ``detached``). The secret is never logged.

HTTP follows Janus's ``janus_http_admin_handler`` (janus_http.c): ids in the path fill the
request's (457 when both are given and differ), ``info`` and ``ping`` are GETs, a request
without a body is 454 "Request payload missing", any other method 450, and every answer (errors
too) is a 200 with a JSON body and Janus's CORS headers; ``OPTIONS`` is the preflight.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

import websockets
from websockets.asyncio.server import ServerConnection
from websockets.typing import Subprotocol

from shared import ipc
from shared import messages as m
from signaling import admin_api as admin
from signaling import janus_replies as replies
from signaling.frontdoor import RateLimiter, normalize_origin
from signaling.http_listener import ClientSlot, HttpLimits, HttpListener, WebSocketOptions
from signaling.http_types import HttpRequest, HttpResponse
from signaling.janus_api import JanusError
from signaling.janus_errors import ADMIN_GUESSES_LIMITED, PAYLOAD_MISSING, TOKEN_NOT_REMOVED, ErrorCode
from signaling.videocall_query import query_session

if TYPE_CHECKING:
    from shared.settings import Settings
    from signaling.auth import RequestAuth
    from signaling.frontdoor import FrontDoor
    from signaling.plugin_runner import PluginRunner
    from signaling.relay_client import RelayPool
    from signaling.sessions import Sessions
    from signaling.tls import TlsSource
    from signaling.tokens import TokenStore

log = logging.getLogger("videocall.admin")

ADMIN_PROTOCOL = Subprotocol(admin.ADMIN_PROTOCOL)
#: Wrong ``admin_secret`` guesses one client address may make at once, then one per
#: ``1/SECRET_GUESS_RATE`` s; past them every request of that address but ``info``/``ping``
#: gets 490 until a guess is allowed again (ours: Janus lets a client guess at line speed).
SECRET_GUESS_BURST = 10
SECRET_GUESS_RATE = 0.2
#: What ``handle_info`` waits for the relay's counters before answering without them.
STATS_TIMEOUT = 2.0


class AdminNode(Protocol):
    """What the Admin API reads and may do on its node (``signaling.server.SignalingServer``):
    named here so that this module does not import the server that starts it."""

    settings: Settings
    tls: TlsSource | None
    door: FrontDoor
    sessions: Sessions
    auth: RequestAuth
    tokens: TokenStore
    plugin: PluginRunner
    relay: RelayPool
    accepting_sessions: bool
    session_timeout: float

    @property
    def accepting(self) -> bool: ...

    def server_info(self, transaction: str) -> dict[str, Any]: ...

    async def admin_destroy_session(self, session_id: int) -> None: ...

    async def admin_detach(self, handle: int) -> None: ...

    async def admin_hangup(self, handle: int) -> None: ...


class AdminServer:
    """The Admin API of one signalling node."""

    def __init__(self, node: AdminNode) -> None:
        self.node = node
        self.settings = node.settings
        self._secret = node.settings.admin_secret.get_secret_value()
        self.base_path = node.settings.admin_base_path
        self._server: HttpListener | None = None
        self._guesses = RateLimiter(SECRET_GUESS_RATE, SECRET_GUESS_BURST)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the admin port: WebSocket upgrades and plain HTTP, one listener."""
        settings = self.settings
        websocket = WebSocketOptions(self._serve_websocket, subprotocols=[ADMIN_PROTOCOL],
                                     max_size=settings.max_message_size, open_timeout=settings.handshake_timeout,
                                     ping_interval=30)
        limits = HttpLimits(max_body=settings.max_message_size, head_timeout=settings.handshake_timeout,
                            body_timeout=settings.handshake_timeout)
        tls = self.node.tls  # the API port's certificate (and its SIGHUP reloads) when TLS is on
        self._server = HttpListener([self.http], websocket=websocket, limits=limits, gate=self._gate,
                                    ssl=tls.context if tls is not None else None)
        await self._server.start(settings.admin_host, settings.admin_port)
        secure = "s" if tls is not None else ""
        log.info("Admin API on http%s://%s:%s%s and ws%s://%s:%s/ (subprotocol %s)", secure, settings.admin_host,
                 self.port, self.base_path, secure, settings.admin_host, self.port, ADMIN_PROTOCOL)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    # --- transports -----------------------------------------------------------------------------

    def _gate(self, slot: ClientSlot, request: HttpRequest, upgrade: bool) -> HttpResponse | None:
        """``allowed_origins`` for the admin WebSocket too: a page of another site is refused
        (403) before the upgrade, as on the API port. Plain requests are left to CORS."""
        if not upgrade:
            return None
        refusal = self.node.door.origin_refusal(request.header("origin") or None)
        if refusal is None:
            return None
        log.info("Admin API: refused a WebSocket from %s: %s", slot.peer, refusal.reason)
        return HttpResponse(refusal.status, (refusal.reason + "\n").encode())

    async def _serve_websocket(self, ws: ServerConnection) -> None:
        """Each text frame is one request; each answer one frame, in order."""
        peer = str(ws.remote_address[0]) if ws.remote_address else ""
        forwarded = ws.request.headers.get("X-Forwarded-For") if ws.request is not None else None
        address = self.node.door.address(peer, forwarded)
        try:
            async for frame in ws:
                await ws.send(replies.dumps(await self.answer(frame, address)))
        except websockets.ConnectionClosed:
            pass

    async def http(self, request: HttpRequest) -> HttpResponse | None:
        """An ``HttpHandler``: the answer for a request under ``admin_base_path``, else None."""
        base = self.base_path.rstrip("/")
        if request.path != self.base_path and not request.path.startswith(base + "/"):
            return None
        cors = _cors_headers(request, self.node.door.allowed_origins)
        if request.method == "OPTIONS":
            return HttpResponse(200, b"", headers=cors)
        try:
            frame = self._http_frame(request, [part for part in request.path[len(base):].split("/") if part])
        except JanusError as exc:
            return _json(exc.reply(), cors)
        address = self.node.door.address(request.peer, request.header("X-Forwarded-For") or None)
        return _json(await self.answer(frame, address), cors)

    def _http_frame(self, request: HttpRequest, parts: list[str]) -> str | bytes:
        """The request's JSON, with the path's ids in it, as janus_http.c builds it."""
        if request.method not in ("GET", "POST"):
            raise JanusError(ErrorCode.TRANSPORT_SPECIFIC, f"Unsupported method {request.method[:16]}")
        if len(parts) > 2 or any(not part.isdigit() for part in parts if part not in ("info", "ping")):
            raise JanusError(ErrorCode.INVALID_REQUEST_PATH, "Invalid path")
        if len(parts) == 1 and parts[0] in ("info", "ping"):
            if request.method != "GET":
                raise JanusError(ErrorCode.TRANSPORT_SPECIFIC, f"Use GET for the {parts[0]} endpoint")
            return json.dumps({"janus": parts[0], "transaction": f"http-{parts[0]}"})
        if request.method != "POST" or not request.body:
            raise JanusError(ErrorCode.INVALID_JSON, PAYLOAD_MISSING)
        if not parts:
            return request.body
        try:
            body = json.loads(request.body)
        except ValueError:
            return request.body  # admin_api gives the strict parser's 454
        if not isinstance(body, dict):
            return request.body
        for name, part in zip(("session_id", "handle_id"), parts, strict=False):
            given = body.get(name)
            if given and given != int(part):
                what = "session" if name == "session_id" else "handle"
                raise JanusError(ErrorCode.INVALID_REQUEST_PATH, f"Conflicting {what} ID (payload and path)")
            body[name] = int(part)
        return json.dumps(body)

    # --- requests -------------------------------------------------------------------------------

    async def answer(self, frame: str | bytes, address: str = "") -> dict[str, Any]:
        """One request's answer: the success, or the error Janus would give. ``address``: the
        client's, whose wrong secrets are counted (``SECRET_GUESS_BURST``)."""
        node = self.node
        now = asyncio.get_running_loop().time()
        try:
            if len(frame) > self.settings.max_message_size:
                raise JanusError(ErrorCode.TRANSPORT_SPECIFIC, f"Message too large ({len(frame)} bytes, the limit "
                                 f"is {self.settings.max_message_size})")
            command = admin.parse_admin(
                frame, secret=self._secret, has_session=lambda sid: sid in node.sessions.sessions,
                has_handle=lambda sid, hid: node.sessions.session_of(hid) == sid,
                stored_tokens=node.auth.token_auth and not node.auth.signed_mode,
                max_depth=self.settings.max_json_depth)
            if self._guesses.exhausted(address, now) and not isinstance(command, admin.Info | admin.Ping):
                raise JanusError(ErrorCode.UNKNOWN, ADMIN_GUESSES_LIMITED, transaction=command.transaction)
            return await self._carry_out(command)
        except JanusError as exc:
            if exc.code == ErrorCode.UNAUTHORIZED:
                self._guesses.prune(now)
                if not self._guesses.allow(address, now):
                    log.warning("Admin API: too many wrong admin_secret from %s; refusing it for a while", address)
                    return JanusError(ErrorCode.UNKNOWN, ADMIN_GUESSES_LIMITED, transaction=exc.transaction,
                                      session_id=exc.session_id).reply()
            return exc.reply()
        except Exception:
            log.exception("internal error answering an Admin API request")
            return JanusError(ErrorCode.UNKNOWN, "Internal error").reply()

    async def _carry_out(self, command: admin.AdminCommand) -> dict[str, Any]:
        node, tx = self.node, command.transaction
        match command:
            case admin.Info():
                return node.server_info(tx)
            case admin.Ping():
                return replies.pong(tx)
            case admin.GetStatus():
                return admin.status(tx, token_auth=node.auth.token_auth, session_timeout=int(node.session_timeout),
                                    log_level=self.settings.log_level, accepting=node.accepting)
            case admin.ListSessions():
                return admin.success(tx, sessions=sorted(node.sessions.sessions))
            case admin.AcceptNewSessions(_, accept):
                node.accepting_sessions = accept
                log.info("Admin API: new sessions %s", "accepted" if accept else "refused")
                return admin.success(tx, accept=accept)
            case admin.SetSessionTimeout(_, timeout, session_id):
                if session_id is None:
                    node.session_timeout = float(timeout)
                    log.info("Admin API: session timeout now %d s", timeout)
                    return admin.success(tx, timeout=timeout)
                node.sessions.sessions[session_id].timeout = timeout
                return admin.success(tx, session_id, timeout=timeout)
            case admin.ListTokens():
                tokens = [{"token": token, "allowed_plugins": sorted(plugins)}
                          for token, plugins in sorted(node.tokens.tokens().items()) if plugins]
                return admin.success(tx, data={"tokens": tokens})
            case admin.AddToken(_, token, plugins):
                granted, _skipped = node.tokens.add(token, plugins or ())
                return admin.success(tx, data={"plugins": sorted(granted)})
            case admin.RemoveToken(_, token):
                if not node.tokens.remove(token):
                    raise JanusError(ErrorCode.UNKNOWN, TOKEN_NOT_REMOVED, transaction=tx)
                return admin.success(tx)
            case admin.ListHandles(_, session_id):
                return admin.success(tx, session_id, handles=sorted(node.sessions.sessions[session_id].handles))
            case admin.DestroySession(_, session_id):
                log.info("Admin API: destroying session %s", session_id)
                await node.admin_destroy_session(session_id)
                return admin.success(tx, session_id)
            case admin.DetachHandle(_, session_id, handle_id):
                log.info("Admin API: detaching handle %s of session %s", handle_id, session_id)
                await node.admin_detach(handle_id)
                return admin.success(tx, session_id)
            case admin.HangupWebrtc(_, session_id, handle_id):
                await node.admin_hangup(handle_id)
                return admin.success(tx, session_id)
            case admin.HandleInfo():
                return await self._handle_info(command)
        raise JanusError(ErrorCode.UNKNOWN, "Unhandled request", transaction=tx)  # pragma: no cover

    async def _handle_info(self, command: admin.HandleInfo) -> dict[str, Any]:
        node = self.node
        session = node.sessions.sessions[command.session_id]
        plugin = node.plugin.plugin
        specific = query_session(plugin, command.handle_id, node.plugin.recordings)
        state = plugin.handles.get(command.handle_id)
        call = state.call if state is not None else None
        stats = await self._call_stats(call.call_id) if call is not None else None
        own = None
        if stats is not None and call is not None:
            own = stats.caller if call.leg_of(command.handle_id) == "caller" else stats.callee
            if specific is not None:
                specific["legs"] = admin.legs_summary(stats)
        kinds = {medium.kind for medium in own.media} if own is not None else set()
        flags = {
            "negotiated": call is not None and call.phase == "active",
            "ready": own is not None and own.state == "connected",
            "has-audio": "audio" in kinds,
            "has-video": "video" in kinds,
        }
        timeout = session.timeout if session.timeout >= 0 else int(node.session_timeout)
        return admin.handle_info(
            command.transaction, command.session_id, command.handle_id,
            session_last_activity=session.last_seen, session_timeout=timeout,
            created=node.sessions.created.get(command.handle_id, 0.0), now=asyncio.get_running_loop().time(),
            plugin=replies.PLUGIN_VIDEOCALL, plugin_specific=specific, flags=flags,
            webrtc=admin.webrtc_summary(own) if own is not None else None, plugin_only=command.plugin_only)

    async def _call_stats(self, call_id: str) -> m.CallStatsResult | None:
        """The relay's counters of a call, or None (being created, its worker gone or slow)."""
        try:
            return await asyncio.wait_for(self.node.relay.request(m.CallStats(call_id=call_id)), STATS_TIMEOUT)
        except (ipc.IpcError, TimeoutError) as exc:
            log.info("Admin API: no counters for call %s: %s", call_id, getattr(exc, "reason", "timeout"))
            return None


def _cors_headers(request: HttpRequest, allowed: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """``janus_http_add_cors_headers``: any origin (``*``) while ``allowed_origins`` is empty,
    else the request's Origin when it is one of them (with credentials, ``Vary: Origin``, as
    Janus's ``allow_origin`` answers) and none for a page elsewhere, whose script then cannot
    read the answer; the preflight's method and headers echoed back."""
    headers = [("Access-Control-Max-Age", "86400")]
    origin = request.header("origin")
    if not allowed:
        headers.insert(0, ("Access-Control-Allow-Origin", "*"))
    elif origin and normalize_origin(origin) in allowed:
        headers[:0] = [("Access-Control-Allow-Origin", origin[:256]), ("Access-Control-Allow-Credentials", "true"),
                       ("Vary", "Origin")]
    else:
        headers.insert(0, ("Vary", "Origin"))
    if method := request.header("Access-Control-Request-Method"):
        headers.append(("Access-Control-Allow-Methods", method[:256]))
    if asked := request.header("Access-Control-Request-Headers"):
        headers.append(("Access-Control-Allow-Headers", asked[:1024]))
    return tuple(headers)


def _json(message: dict[str, Any], cors: tuple[tuple[str, str], ...]) -> HttpResponse:
    return HttpResponse(200, replies.dumps(message).encode("utf-8"), "application/json", cors)
