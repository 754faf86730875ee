"""A lean Janus JSON API client for load: one WebSocket, replies by transaction, events by handle.

Owns the wire protocol a load client needs (``create``, ``attach``, plugin ``message`` with
its ``ack`` + ``event`` pair in either order, ``trickle``, ``keepalive``, ``detach``,
``destroy``) and turns every way a server can fail into one exception class with a sentence
that goes into the report as the reason: :class:`JanusError` (the server said no, with its
code), :class:`ServerGone` (the socket closed or never opened), :class:`NoReply` (timeout).

It imports neither aiortc nor av, so the signalling benchmark stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

VIDEOCALL = "janus.plugin.videocall"
SUBPROTOCOL = "janus-protocol"
#: Seconds a request may wait for its reply.
REPLY_TIMEOUT = 10.0

Message = dict[str, Any]


class LoadClientError(Exception):
    """Anything that makes a load-test step fail; ``str()`` is the reason shown in the report."""


class JanusError(LoadClientError):
    """The server refused a request (core error or plugin ``error_code``)."""

    def __init__(self, what: str, code: Any, reason: Any) -> None:
        super().__init__(f"{what}: error {code} {reason}")
        self.code = code


class ServerGone(LoadClientError):
    """The WebSocket could not be opened, or closed while we needed it."""


class NoReply(LoadClientError):
    """A reply or notification did not arrive in time."""


def plugin_data(message: Message) -> dict[str, Any]:
    data = (message.get("plugindata") or {}).get("data")
    return data if isinstance(data, dict) else {}


def plugin_result(message: Message) -> dict[str, Any]:
    result = plugin_data(message).get("result")
    return result if isinstance(result, dict) else {}


def _transaction() -> str:
    return secrets.token_hex(6)


class Connection:
    """One WebSocket to a Janus API server.

    Replies are matched to requests by transaction; everything else (events, webrtcup,
    hangup, trickle...) is queued per ``sender`` (handle id) for :class:`Handle` to take.
    """

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._replies: dict[str, list[asyncio.Future[Message]]] = {}
        self._handles: dict[int, Handle] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, *, timeout: float = REPLY_TIMEOUT) -> Connection:
        try:
            ws = await websockets.connect(
                url, subprotocols=[websockets.Subprotocol(SUBPROTOCOL)], open_timeout=timeout,
                ping_interval=None, max_size=None, compression=None, proxy=None)
        except (TimeoutError, OSError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            raise ServerGone(f"cannot connect to {url}: {_describe(exc)}") from None
        return cls(ws, url)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                try:
                    message = json.loads(frame)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    self._dispatch(message)
        except websockets.ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - the reason goes into the report
            self.close_reason = _describe(exc)
        finally:
            code = self.ws.close_code
            self.close_reason = self.close_reason or (
                "server closed the WebSocket" + (f" (code {code})" if code not in (None, 1000) else ""))
            self.closed.set()
            for futures in self._replies.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(ServerGone(self.close_reason))
            for handle in self._handles.values():
                handle._wake()

    def _dispatch(self, message: Message) -> None:
        kind = message.get("janus")
        transaction = message.get("transaction")
        # A plugin event answering a message carries its transaction: it goes to the request
        # (ack and event race, see shared/janus/README.md), everything else to its handle.
        waiting = self._replies.get(transaction) if isinstance(transaction, str) else None
        if waiting:
            for future in waiting:
                if not future.done() and (future_accepts(future, kind)):
                    future.set_result(message)
                    return
        sender = message.get("sender")
        handle = self._handles.get(sender) if isinstance(sender, int) else None
        if handle is not None:
            handle._push(message)

    async def send(self, message: Message) -> None:
        if self.closed.is_set():
            raise ServerGone(self.close_reason)
        try:
            await self.ws.send(json.dumps(message))
        except websockets.ConnectionClosed:
            raise ServerGone(self.close_reason or "server closed the WebSocket") from None

    async def request(self, message: Message, *, expect: tuple[str, ...] = ("success",),
                      what: str | None = None, timeout: float = REPLY_TIMEOUT) -> Message:
        """Send a request and return its reply; an ``error`` reply raises :class:`JanusError`."""
        transaction = _transaction()
        future = self._expect(transaction, ("success", "error", "ack", "server_info", "pong"))
        what = what or str(message.get("janus"))
        try:
            await self.send({**message, "transaction": transaction})
            reply = await self._wait(future, what, timeout)
        finally:
            self._replies.pop(transaction, None)
        if reply.get("janus") == "error":
            error = reply.get("error") or {}
            raise JanusError(what, error.get("code"), error.get("reason"))
        if reply.get("janus") not in expect:
            raise LoadClientError(f"{what}: unexpected reply {reply.get('janus')!r}")
        return reply

    def _expect(self, transaction: str, kinds: tuple[str, ...]) -> asyncio.Future[Message]:
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        future.kinds = kinds  # type: ignore[attr-defined]
        self._replies.setdefault(transaction, []).append(future)
        return future

    async def _wait(self, future: asyncio.Future[Message], what: str, timeout: float) -> Message:
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise NoReply(f"{what}: no reply within {timeout:g} s") from None

    async def message(self, session_id: int, handle_id: int, body: Message, jsep: Message | None = None,
                      *, what: str, timeout: float = REPLY_TIMEOUT) -> Message:
        """A plugin ``message``: returns its ``event`` once both ack and event arrived."""
        transaction = _transaction()
        ack = self._expect(transaction, ("ack", "error"))
        event = self._expect(transaction, ("event", "error"))
        request: Message = {"janus": "message", "session_id": session_id, "handle_id": handle_id,
                            "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = jsep
        try:
            await self.send(request)
            first = await self._wait(ack, what, timeout)
            if first.get("janus") == "error":
                error = first.get("error") or {}
                raise JanusError(what, error.get("code"), error.get("reason"))
            reply = await self._wait(event, what, timeout)
        finally:
            self._replies.pop(transaction, None)
        data = plugin_data(reply)
        if reply.get("janus") == "error":
            error = reply.get("error") or {}
            raise JanusError(what, error.get("code"), error.get("reason"))
        if "error_code" in data:
            raise JanusError(what, data.get("error_code"), data.get("error"))
        return reply

    async def create_session(self) -> Session:
        reply = await self.request({"janus": "create"}, what="create")
        return Session(self, reply["data"]["id"])

    async def info(self) -> Message:
        return await self.request({"janus": "info"}, expect=("server_info",), what="info")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 3)
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


def future_accepts(future: asyncio.Future[Message], kind: Any) -> bool:
    return kind in getattr(future, "kinds", ())


class Session:
    def __init__(self, conn: Connection, session_id: int) -> None:
        self.conn = conn
        self.id = session_id
        self._keepalive: asyncio.Task[None] | None = None

    async def attach(self, plugin: str = VIDEOCALL) -> Handle:
        reply = await self.conn.request({"janus": "attach", "session_id": self.id, "plugin": plugin},
                                        what=f"attach {plugin}")
        handle = Handle(self, reply["data"]["id"])
        self.conn._handles[handle.id] = handle
        return handle

    def start_keepalive(self, interval: float = 25.0) -> None:
        """A keepalive every ``interval`` s, as janus.js does (sessions expire after 60 s idle)."""

        async def loop() -> None:
            while not self.conn.closed.is_set():
                await asyncio.sleep(interval)
                with contextlib.suppress(LoadClientError):
                    await self.conn.request({"janus": "keepalive", "session_id": self.id},
                                            expect=("ack",), what="keepalive")

        self._keepalive = asyncio.create_task(loop())

    async def destroy(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self.conn.request({"janus": "destroy", "session_id": self.id}, what="destroy")


class Handle:
    """A VideoCall plugin handle: requests, and the notifications the server pushes to it."""

    def __init__(self, session: Session, handle_id: int) -> None:
        self.session = session
        self.conn = session.conn
        self.id = handle_id
        self._inbox: list[Message] = []
        self._changed = asyncio.Event()
        #: Called for each server candidate (``{"janus":"trickle"}``), if set.
        self.on_trickle: Callable[[Message], None] | None = None

    def _push(self, message: Message) -> None:
        if message.get("janus") == "trickle":
            if self.on_trickle is not None:
                self.on_trickle(message)
            return
        self._inbox.append(message)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()

    async def message(self, body: Message, jsep: Message | None = None, *, what: str | None = None,
                      timeout: float = REPLY_TIMEOUT) -> Message:
        return await self.conn.message(self.session.id, self.id, body, jsep,
                                       what=what or str(body.get("request")), timeout=timeout)

    async def trickle_completed(self) -> None:
        await self.conn.request({"janus": "trickle", "session_id": self.session.id, "handle_id": self.id,
                                 "candidate": {"completed": True}}, expect=("ack",), what="trickle")

    async def detach(self) -> None:
        await self.conn.request({"janus": "detach", "session_id": self.session.id, "handle_id": self.id},
                                what="detach")

    def take(self, predicate: Callable[[Message], bool]) -> Message | None:
        for index, message in enumerate(self._inbox):
            if predicate(message):
                return self._inbox.pop(index)
        return None

    async def wait_for(self, predicate: Callable[[Message], bool], *, what: str,
                       timeout: float = REPLY_TIMEOUT, fail_on_hangup: bool = True) -> Message:
        """The first pushed message matching ``predicate``.

        A plugin ``hangup`` event or the socket closing first ends the wait with the reason.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = self.take(predicate)
            if found is not None:
                return found
            if fail_on_hangup:
                hangup = self.take(is_plugin_hangup)
                if hangup is not None:
                    reason = plugin_result(hangup).get("reason", "no reason")
                    raise LoadClientError(f"{what}: hung up by the server ({reason})")
            if self.conn.closed.is_set():
                raise ServerGone(f"{what}: {self.conn.close_reason}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NoReply(f"no {what} within {timeout:g} s")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


def is_plugin_hangup(message: Message) -> bool:
    return message.get("janus") == "event" and plugin_result(message).get("event") == "hangup"


def is_event(name: str) -> Callable[[Message], bool]:
    return lambda m: m.get("janus") == "event" and plugin_result(m).get("event") == name


def is_core(name: str) -> Callable[[Message], bool]:
    return lambda m: m.get("janus") == name


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, websockets.InvalidStatus):
        return f"HTTP {exc.response.status_code} instead of a WebSocket"
    text = str(exc).strip()
    return text or type(exc).__name__
