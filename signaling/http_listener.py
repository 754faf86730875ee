"""One listening socket for the Janus API: plain HTTP/1.1 requests and WebSocket upgrades.

Why our own listener: ``websockets.serve`` answers a GET before the upgrade and nothing else.
It refuses a request with a body and closes every plain HTTP connection after one answer, and
the Janus HTTP transport needs both (``POST /janus...``, long-poll GETs held open 30 s on
connections a browser reuses). So each TCP (or TLS) connection starts here:

- the request head is read with **h11** (a small, sans-I/O HTTP/1.1 parser, the same shape as
  websockets' own core: bytes in, events out; it does the framing rules that are easy to get
  wrong by hand: Content-Length against Transfer-Encoding, chunked bodies, keep-alive, HTTP/1.0,
  ``Expect: 100-continue``);
- a **WebSocket upgrade** is handed over, transport and the bytes already read, to a websockets
  ``ServerConnection`` (by default our ``GuardedConnection``), which parses the same request
  again and goes on exactly as under ``websockets.serve``: subprotocol selection, ``max_size``,
  ``open_timeout``, keepalive pings, permessage-deflate. From then on the socket's protocol *is*
  that connection: no byte of a WebSocket message passes through this module;
- **anything else** becomes an :class:`~signaling.http_types.HttpRequest` (body read, bounded)
  and goes to the :data:`~signaling.http_types.HttpHandler` adapters in order; the first answer
  that is not None is written (Content-Length, no chunking), and the connection stays open for
  the next request unless either side said ``Connection: close``.

Limits, all per request: the head (request line and headers) at most ``max_head`` bytes and
``max_headers`` fields (431), the body ``max_body`` bytes (413, said before any of it is read
when Content-Length announces it), the head within ``head_timeout`` s of its first byte (or of
the connection's opening) and the body within ``body_timeout`` s of the head (408). A
connection idle between requests is closed silently after ``keepalive_timeout`` s. While an
adapter works on a request no timer of ours runs, so a long poll may take as long as the
adapter wants; if the client goes away meanwhile (the connection is lost, or it closes its
side), the adapter's task is cancelled. Bytes a client pipelines meanwhile wait, bounded
(reading pauses past ``max_head + max_body``), and a client that does not read its answers
stops being read from until it does.

The ``gate`` (the front door: ``SignalingServer._admit``) sees every request head, upgrade or
not, before its body is read: it answers a refusal (written, then the connection closes) or
admits the request, counting the connection against its client address once, on its first
request (:meth:`ClientSlot.hold`); an upgraded connection carries its slot over to the
WebSocket connection, which gives it back when the TCP connection ends.

The same class serves a second port (the Admin API, with its own subprotocol) and TLS (pass an
``ssl.SSLContext``: ``https://`` and ``wss://`` on the one port).
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import cast

import h11
from websockets.asyncio.server import Server, ServerConnection
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.http11 import SERVER
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from signaling.guarded_connection import GuardedConnection
from signaling.http_types import HttpHandler, HttpRequest, HttpResponse

__all__ = ["ClientSlot", "Gate", "HttpLimits", "HttpListener", "WebSocketOptions", "is_websocket_upgrade"]

log = logging.getLogger("videocall.http")


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of one plain HTTP request (see the module docstring)."""

    max_head: int = 16 * 1024
    max_headers: int = 100
    max_body: int = 1024 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 10.0
    keepalive_timeout: float = 30.0


@dataclass(frozen=True)
class WebSocketOptions:
    """What ``websockets.serve`` would be given: the handler of an open WebSocket and the
    protocol's settings. ``create_connection`` must be a ``GuardedConnection`` (it carries
    the connection's slot in the per-address count)."""

    handler: Callable[[ServerConnection], Awaitable[None]]
    subprotocols: Sequence[Subprotocol] | None = None
    select_subprotocol: Callable[[ServerConnection, Sequence[Subprotocol]], Subprotocol | None] | None = None
    max_size: int | None = 1024 * 1024
    open_timeout: float | None = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float | None = 10.0
    #: permessage-deflate for clients that offer it; off by default, as Janus (never negotiated there)
    compression: bool = False
    create_connection: type[GuardedConnection] = GuardedConnection


class ClientSlot:
    """One TCP connection as the gate sees it: the peer's address, and the client address it
    is counted against once admitted (None before)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.address: str | None = None
        self._release: Callable[[], None] | None = None

    def hold(self, address: str, release: Callable[[], None]) -> None:
        """Count this connection against ``address``; ``release`` runs once, when it ends."""
        self.address = address
        self._release = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def hand_over(self) -> Callable[[], None] | None:
        """The release, for the connection that takes this one over (a WebSocket)."""
        release, self._release = self._release, None
        return release


#: The front door: a refusal to write (the connection then closes), or None: admitted.
#: ``upgrade`` tells a WebSocket handshake from a plain request.
Gate = Callable[[ClientSlot, HttpRequest, bool], HttpResponse | None]


def is_websocket_upgrade(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """``Upgrade: websocket`` (any case, maybe in a list of protocols), as browsers send it."""
    for name, value in headers:
        if name == b"upgrade" and any(token.strip().lower() == b"websocket" for token in value.split(b",")):
            return True
    return False


def _headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header fields by lower-case name; repeated fields joined by ", " (RFC 9110 5.3), so
    two X-Forwarded-For lines read as one list and two Origin lines stay visible as two."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("ascii").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _closing_answer(status: int, text: str) -> bytes:
    """A whole plain-text answer after which the connection closes (errors, refusals):
    written as bytes, as the parser may be in no state to frame one."""
    body = text.encode()
    return (f"HTTP/1.1 {status} {_phrase(status).decode()}\r\nDate: {email.utils.formatdate(usegmt=True)}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body


class HttpListener:
    """Serve ``handlers`` (plain HTTP) and ``websocket`` (upgrades) on one socket."""

    def __init__(self, handlers: Sequence[HttpHandler], *, websocket: WebSocketOptions | None = None,
                 gate: Gate | None = None, limits: HttpLimits | None = None,
                 ssl: ssl_module.SSLContext | None = None) -> None:
        self.handlers = list(handlers)
        self.websocket = websocket
        self.gate = gate
        self.limits = limits or HttpLimits()
        self.ssl = ssl
        self.connections: set[_HttpConnection] = set()
        self._tcp: asyncio.Server | None = None
        self._ws_server: Server | None = None
        self._extensions = enable_server_permessage_deflate(None) if websocket and websocket.compression else None

    async def start(self, host: str | None, port: int) -> None:
        loop = asyncio.get_running_loop()

        async def create_server() -> asyncio.Server:
            return await loop.create_server(self._accept, host, port, ssl=self.ssl,
                                            ssl_handshake_timeout=self.limits.head_timeout if self.ssl else None)

        # websockets' Server keeps what its connections expect of one: the handler tasks, whether
        # we still serve (a handshake during shutdown gets 503), and the close of open WebSockets.
        self._ws_server = Server(create_server, self._run_websocket, logging.getLogger("websockets.server"))
        await self._ws_server
        self._tcp = self._ws_server.server

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        assert self._tcp is not None, "not started"
        return tuple(self._tcp.sockets)

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    @property
    def websockets(self) -> set[ServerConnection]:
        """The open WebSocket connections."""
        return self._ws_server.connections if self._ws_server is not None else set()

    async def close(self) -> None:
        """Stop accepting; end the plain HTTP connections (an adapter still working is
        cancelled); close the WebSockets with 1001 and wait for their handlers."""
        if self._ws_server is None:
            return
        assert self._tcp is not None
        self._tcp.close()
        for connection in list(self.connections):
            connection.shutdown()
        self._ws_server.close()
        await self._ws_server.wait_closed()

    # --- plumbing ------------------------------------------------------------------------

    def _accept(self) -> _HttpConnection:
        return _HttpConnection(self)

    def new_websocket(self) -> GuardedConnection:
        """A websockets connection for an upgrade, as ``websockets.serve``'s factory makes it."""
        options, server = self.websocket, self._ws_server
        assert options is not None and server is not None
        connection: GuardedConnection | None = None

        def select(protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
            assert options.select_subprotocol is not None and connection is not None
            return options.select_subprotocol(connection, offered)

        protocol = ServerProtocol(
            extensions=self._extensions, subprotocols=options.subprotocols,
            select_subprotocol=select if options.select_subprotocol is not None else None,
            max_size=options.max_size, logger=server.logger,
        )
        connection = options.create_connection(
            protocol, server, ping_interval=options.ping_interval, ping_timeout=options.ping_timeout,
            close_timeout=options.close_timeout,
        )
        return connection

    async def _run_websocket(self, connection: ServerConnection) -> None:
        """One WebSocket's life, as ``websockets.serve`` runs it (its ``protocol_handler``)."""
        options, server = self.websocket, self._ws_server
        assert options is not None and server is not None
        try:
            async with asyncio.timeout(options.open_timeout):
                await connection.handshake(None, None, SERVER)
            if connection.protocol.state is not State.OPEN:
                connection.transport.abort()
                return
            server.all_connections.add(connection)
            connection.start_keepalive()
            try:
                async with connection:
                    await options.handler(connection)
            except Exception:
                log.exception("WebSocket connection handler failed")
            finally:
                server.all_connections.discard(connection)
        except Exception:  # noqa: BLE001 - handshake timed out or failed: never leak the socket
            connection.transport.abort()
        finally:
            task = asyncio.current_task()
            if task is not None:
                server.handler_tasks.discard(task)

    async def answer(self, request: HttpRequest) -> HttpResponse:
        """The first adapter's answer; 404 when none takes the path, 500 (logged) on a bug."""
        for handler in self.handlers:
            try:
                response = await handler(request)
            except Exception:
                log.exception("HTTP handler failed on %s %s", request.method, request.path[:200])
                return HttpResponse(500, b"Internal server error (see the server log)\n")
            if response is not None:
                return response
        return HttpResponse(404, b"Not found\n")


class _HttpConnection(asyncio.Protocol):
    """One client connection until it upgrades or ends. States: reading a request (timers
    run), answering it (an adapter's task runs, no timer), idle between two."""

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.limits = listener.limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=listener.limits.max_head)
        self.transport: asyncio.Transport | None = None
        self.slot = ClientSlot("")
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.request: HttpRequest | None = None
        self.body = bytearray()
        self.started = False  # a byte of the current request has arrived
        self.buffered = 0  # bytes waiting while an adapter works
        self.reading_paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.done = False

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = self.transport.get_extra_info("peername")
        self.slot = ClientSlot(str(peer[0]) if isinstance(peer, tuple) and peer else "")
        self.listener.connections.add(self)
        self._set_timer(self.limits.head_timeout, idle=True)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        try:
            self.h11.receive_data(data)
        except RuntimeError:  # data after the client's close: nothing to parse
            return
        if self.task is not None:  # an adapter is at work: the next request waits, bounded
            self.buffered += len(data)
            if self.buffered > self.limits.max_head + self.limits.max_body:
                self._pause_reading()
            return
        if not self.started:
            self.started = True
            self._set_timer(self.limits.head_timeout)
        self._process()

    def eof_received(self) -> bool | None:
        # The client closed its side: mid-wait that means it is gone (an adapter's task is
        # cancelled when the transport closes next); an idle connection just ends.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        self.listener.connections.discard(self)
        self._cancel_timer()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # a long poll whose client went away
        self.writable.set()
        self.slot.release()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def shutdown(self) -> None:
        """The listener is closing: cancel what runs and close."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._close()

    # --- reading requests ------------------------------------------------------------------

    def _process(self) -> None:
        """Turn what h11 has parsed into actions, until it needs more bytes or an answer runs."""
        while not self.done and self.task is None:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                reason = "request head too large" if status == 431 else f"malformed request: {exc}"
                self._fail(status, reason)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._on_head(event)
            elif isinstance(event, h11.Data):
                self.body += event.data
                if len(self.body) > self.limits.max_body:
                    self._fail(413, f"request body larger than {self.limits.max_body} bytes")
            elif isinstance(event, h11.EndOfMessage):
                self._cancel_timer()
                assert self.request is not None
                request, self.request = replace(self.request, body=bytes(self.body)), None
                self.body = bytearray()
                self.task = self.loop.create_task(self._answer(request))
            elif isinstance(event, h11.ConnectionClosed):
                self._close()

    def _on_head(self, event: h11.Request) -> None:
        raw = list(event.headers)
        if len(raw) > self.limits.max_headers:
            self._fail(431, f"more than {self.limits.max_headers} header fields")
            return
        # h11 bounds a head still arriving; one that arrived whole in a read is measured here.
        size = len(event.method) + len(event.target) + 12 + sum(len(name) + len(value) + 4 for name, value in raw)
        if size > self.limits.max_head:
            self._fail(431, "request head too large")
            return
        try:
            request = HttpRequest.from_target(event.method.decode("ascii"), event.target.decode("ascii"),
                                              _headers(raw), peer=self.slot.address or self.slot.peer)
        except UnicodeDecodeError:
            self._fail(400, "request target is not ASCII")
            return
        upgrade = is_websocket_upgrade(raw) and self.listener.websocket is not None
        if self.listener.gate is not None:
            refusal = self.listener.gate(self.slot, request, upgrade)
            if refusal is not None:
                self._write_and_close(_closing_answer(refusal.status, refusal.body.decode("utf-8", "replace")))
                return
            request = replace(request, peer=self.slot.address or self.slot.peer)
        if upgrade:
            self._upgrade(event)
            return
        length = request.header("content-length")
        if length.isdigit() and int(length) > self.limits.max_body:
            self._fail(413, f"request body larger than {self.limits.max_body} bytes")
            return
        if self.h11.they_are_waiting_for_100_continue:
            self._write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        self.request = request
        self._set_timer(self.limits.body_timeout)

    def _upgrade(self, event: h11.Request) -> None:
        """Hand the socket and the request's bytes to a websockets connection."""
        assert self.transport is not None
        head = b"%s %s HTTP/%s\r\n" % (event.method, event.target, event.http_version)
        head += b"".join(b"%s: %s\r\n" % (name, value) for name, value in event.headers.raw_items()) + b"\r\n"
        rest, _ = self.h11.trailing_data
        self._cancel_timer()
        self.done = True
        self.listener.connections.discard(self)
        connection = self.listener.new_websocket()
        release = self.slot.hand_over()
        if release is not None and self.slot.address is not None:
            connection.hold(self.slot.address, release)
        if self.reading_paused:
            self.transport.resume_reading()
        self.transport.set_protocol(connection)
        connection.connection_made(self.transport)
        connection.data_received(head + rest)

    # --- answering ---------------------------------------------------------------------------

    async def _answer(self, request: HttpRequest) -> None:
        """Answer one request, then get ready for the next (the task stays ``self.task``
        until then: bytes arriving meanwhile wait in the parser)."""
        response = await self.listener.answer(request)
        if self.done:
            return
        self._respond(request, response)
        await self.writable.wait()  # a client that does not read gets nothing more
        if self.done:
            return
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
            self._close()
            return
        try:
            self.h11.start_next_cycle()
        except h11.LocalProtocolError:  # cannot happen: the request was read whole
            self._close()
            return
        self.task, self.buffered = None, 0
        if self.reading_paused:
            self.reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        self.started = bool(self.h11.trailing_data[0])  # a pipelined request is already here
        if self.started:
            self._set_timer(self.limits.head_timeout)
        else:
            self._set_timer(self.limits.keepalive_timeout, idle=True)
        self._process()

    def _respond(self, request: HttpRequest, response: HttpResponse) -> None:
        body = b"" if request.method == "HEAD" else response.body
        headers = [("Date", email.utils.formatdate(usegmt=True)), ("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))), *response.headers]
        try:
            data = self.h11.send(h11.Response(status_code=response.status, headers=headers,
                                              reason=_phrase(response.status)))
            if body:
                data += self.h11.send(h11.Data(data=body)) or b""
            data += self.h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            log.exception("cannot frame the answer to %s %s", request.method, request.path[:200])
            self._fail(500, "internal error")
            return
        assert data is not None
        self._write(data)

    # --- helpers -------------------------------------------------------------------------------

    def _fail(self, status: int, reason: str) -> None:
        self._write_and_close(_closing_answer(status, reason + "\n"))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _write_and_close(self, data: bytes) -> None:
        self._write(data)
        self._close()

    def _close(self) -> None:
        self.done = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _set_timer(self, delay: float, *, idle: bool = False) -> None:
        """Expiry closes the connection: silently when idle (nothing of a request arrived),
        with 408 when a request was on its way."""
        self._cancel_timer()
        self.timer = self.loop.call_later(delay, self._expired, idle)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self, idle: bool) -> None:
        self.timer = None
        if self.done or self.task is not None:
            return
        if idle and not self.started:
            self._close()
        else:
            self._fail(408, "request not received in time")
