"""One channel between the signalling process and a relay worker: mediasoup's Channel.ts in Python.

Owns one socket's traffic: request ids and the map of pending requests, timeouts, error
responses, notification delivery. Framing (length prefix, size cap, wire shapes) lives in
``shared/framing.py`` and message bodies in ``shared/messages.py``; this module never looks
inside a body beyond validating it against the model its method names. It knows nothing
about calls or legs, nor about addresses, ``hello`` and ``relay_secret`` (``shared/ipc.py``
opens channels and greets over them).

Guarantees the callers build on:
- Requests from the peer are validated, then each runs in its own task, so a slow
  ``call.create`` never holds up a ``leg.trickle``. A failure becomes an error response;
  an unexpected exception is logged here and answered only "internal error".
- Frames leave in the order they are sent, and a notification is delivered a loop tick
  after the frames before it, so it never overtakes the response to an earlier request
  (mediasoup issue 510); ``on_close`` comes after the last notification.
- A bad frame from the peer is logged in one line and closes this channel, never the
  process. Closing fails every pending request with ``ChannelClosed``.
- Every request carries its deadline (the frame's ``dl``: when its timeout runs out, on the
  sender's wall clock). The receiver learns how far the sender's clock is from its own at
  ``hello`` and drops a request read after its deadline, unanswered: a worker that was
  stopped (SIGSTOP, swapped out) does not create calls nobody waits for when it resumes.
  A response that comes after its request timed out goes to ``on_late_response``, so the
  sender can undo what was done for nobody (``call.create``: hang the call up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.framing import MAX_FRAME, MAX_ID, FrameDecoder, FrameError, encode_frame
from shared.messages import (
    NOTIFICATIONS,
    REQUESTS,
    HelloResult,
    Notification,
    Request,
)

__all__ = [
    "MAX_FRAME", "IpcError", "ChannelClosed", "RequestTimeout", "FrameError", "FrameDecoder",
    "encode_frame", "Handler", "NotificationHandler", "LateResponseHandler", "Channel",
]

log = logging.getLogger(__name__)

#: Answers one request from the peer; it is told which channel the request came on.
Handler = Callable[["Channel", Request[Any]], Awaitable[BaseModel]]
NotificationHandler = Callable[[Notification], None]
#: Told of a response to a request that had timed out: the request, and whether it succeeded.
LateResponseHandler = Callable[[Request[Any], bool], None]
ResultT = TypeVar("ResultT", bound=BaseModel)

_READ_SIZE = 64 * 1024
#: Timed-out requests remembered for ``on_late_response`` (the oldest are forgotten).
_LATE_MEMORY = 256


class IpcError(Exception):
    """A request failed: the peer answered with an error, or it could not be done locally."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChannelClosed(IpcError):
    """The channel is gone; every request pending on it fails with this."""


class RequestTimeout(IpcError):
    """No response arrived within the request's timeout."""


@dataclass
class _Pending:
    request: type[Request[Any]]
    body: Request[Any]
    future: asyncio.Future[BaseModel]
    timer: asyncio.TimerHandle


def _summary(exc: ValidationError) -> str:
    """Field paths and messages only: never echo the input (it may be a whole SDP)."""
    parts = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3]]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _quoted(method: str) -> str:
    return f"'{method}'" if len(method) <= 64 else f"'{method[:64]}...'"


class Channel:
    """One end of a connected socket: send requests and notifications, answer the peer's requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 handler: Handler | None = None,
                 on_notification: NotificationHandler | None = None,
                 on_close: Callable[[], None] | None = None,
                 on_late_response: LateResponseHandler | None = None,
                 timeout: float = 10.0, max_frame: int = MAX_FRAME, name: str = "") -> None:
        self._reader = reader
        self._writer = writer
        self._handler = handler
        self._on_notification = on_notification
        self._on_close = on_close
        self._on_late_response = on_late_response
        self._timeout = timeout
        self._max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self.name = name or str(writer.get_extra_info("peername") or "ipc")
        self._pending: dict[int, _Pending] = {}
        self._timed_out: OrderedDict[int, Request[Any]] = OrderedDict()
        #: The peer's wall clock minus ours (seconds), learnt at ``hello``; None: unknown, so
        #: the peer's deadlines are not checked.
        self.clock_offset: float | None = None
        #: Requests from the peer dropped because they were read after their deadline.
        self.dropped_late = 0
        self._last_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._run_task: asyncio.Task[None] | None = None
        self._closed = False
        #: What the worker answered to ``hello``; set by ``connect()``.
        self.peer: HelloResult | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    async def request(self, body: Request[ResultT], *, timeout: float | None = None) -> ResultT:
        """Send a request and wait for its result, validated with the request's ``RESULT`` model."""
        if self._closed:
            raise ChannelClosed(f"channel {self.name} is closed")
        method = body.METHOD
        request_id = self._next_id()
        wait = self._timeout if timeout is None else timeout
        try:
            frame = encode_frame({"t": "req", "id": request_id, "method": method, "body": body.model_dump(),
                                  "dl": time.time() + wait}, max_frame=self._max_frame)
        except FrameError as exc:
            raise IpcError(f"'{method}' not sent: {exc}") from exc
        loop = asyncio.get_running_loop()
        entry = _Pending(type(body), body, loop.create_future(), loop.call_later(wait, self._expire, request_id, wait))
        self._pending[request_id] = entry
        self._writer.write(frame)
        try:
            # Awaited directly (no wait_for): the caller resumes one tick after the response
            # is read, before any notification that followed it is delivered.
            return await entry.future  # type: ignore[return-value]  # validated as body.RESULT
        finally:
            entry.timer.cancel()
            if self._pending.get(request_id) is entry:
                del self._pending[request_id]

    def notify(self, body: Notification) -> None:
        """Send a notification; dropped (logged at debug) if the channel is closed."""
        self._send({"t": "ntf", "method": body.METHOD, "body": body.model_dump()})

    async def run(self) -> None:
        """Read and dispatch frames until EOF or a bad frame; then close the channel."""
        self._run_task = self._run_task or asyncio.current_task()
        reason = "read loop stopped"
        try:
            while not self._closed:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    reason = "peer closed the connection"
                    break
                for message in self._decoder.feed(data):
                    self._dispatch(message)
        except FrameError as exc:
            reason = f"bad frame from peer: {exc}"
            log.warning("ipc %s: closing, %s", self.name, reason)
        except OSError as exc:
            reason = f"connection lost: {exc}"
            log.info("ipc %s: %s", self.name, reason)
        except Exception:
            reason = "internal error"
            log.exception("ipc %s: closing after an unexpected error", self.name)
        finally:
            self._shutdown(reason)

    async def close(self) -> None:
        """Close the socket and fail pending requests; handlers still running may finish."""
        self._shutdown("channel closed locally")
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        if self._run_task is not None and self._run_task is not asyncio.current_task():
            await asyncio.wait([self._run_task])

    # --- inside -----------------------------------------------------------------------------

    def _next_id(self) -> int:
        while True:
            self._last_id = self._last_id % MAX_ID + 1
            if self._last_id not in self._pending:
                return self._last_id

    def _send(self, message: dict[str, Any]) -> None:
        if self._closed or self._writer.is_closing():
            what = message.get("method", message.get("id"))
            log.debug("ipc %s: closed, dropped %s %s", self.name, message["t"], what)
        else:
            self._writer.write(encode_frame(message, max_frame=self._max_frame))

    def _expire(self, request_id: int, wait: float) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is not None and not entry.future.done():
            self._timed_out[request_id] = entry.body
            while len(self._timed_out) > _LATE_MEMORY:
                self._timed_out.popitem(last=False)
            entry.future.set_exception(RequestTimeout(f"'{entry.request.METHOD}' got no response within {wait:g} s"))

    def _shutdown(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            entry.timer.cancel()
            if not entry.future.done():
                entry.future.set_exception(ChannelClosed(f"channel {self.name} closed: {reason}"))
        self._writer.close()
        if self._on_close is not None:  # a tick later: after notifications already read
            asyncio.get_running_loop().call_soon(self._call_back, self._on_close)

    def _call_back(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("ipc %s: %s failed", self.name, getattr(callback, "__qualname__", callback))

    def _dispatch(self, message: dict[str, Any]) -> None:
        {"res": self._on_response, "req": self._on_request, "ntf": self._on_notification_frame}[message["t"]](message)

    def _on_response(self, message: dict[str, Any]) -> None:
        entry = self._pending.pop(message["id"], None)
        if entry is None:
            late = self._timed_out.pop(message["id"], None)
            if late is None:
                log.warning("ipc %s: response to unknown request id %d ignored", self.name, message["id"])
                return
            log.warning("ipc %s: %r answered after it timed out (request id %d)", self.name, late.METHOD, message["id"])
            if self._on_late_response is not None:
                self._call_back(self._on_late_response, late, message["ok"])
            return
        entry.timer.cancel()
        if entry.future.done():
            return
        if not message["ok"]:
            entry.future.set_exception(IpcError(message["error"] or "error response without a reason"))
            return
        try:
            entry.future.set_result(entry.request.RESULT.model_validate(message["body"] or {}))
        except ValidationError as exc:
            entry.future.set_exception(IpcError(f"invalid result for '{entry.request.METHOD}': {_summary(exc)}"))

    def _on_request(self, message: dict[str, Any]) -> None:
        request_id, method = message["id"], message["method"]
        if "dl" in message and self.clock_offset is not None:
            late = time.time() + self.clock_offset - message["dl"]
            if late > 0:
                self.dropped_late += 1
                log.warning("ipc %s: dropped %s request %d read %.1f s after its deadline (nobody waits for it)",
                            self.name, _quoted(method), request_id, late)
                return
        model = REQUESTS.get(method)
        if model is None:
            self._reply_error(request_id, f"unknown method {_quoted(method)}")
            return
        try:
            body = model.model_validate(message["body"])
        except ValidationError as exc:
            self._reply_error(request_id, f"invalid body for '{method}': {_summary(exc)}")
            return
        if self._handler is None:
            self._reply_error(request_id, f"this side takes no requests ({_quoted(method)} refused)")
            return
        task = asyncio.get_running_loop().create_task(self._answer(request_id, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request_id: int, body: Request[Any]) -> None:
        assert self._handler is not None
        method = body.METHOD
        try:
            result = await self._handler(self, body)
            if not isinstance(result, body.RESULT):
                raise TypeError(f"handler returned {type(result).__name__}, not {body.RESULT.__name__}")
            self._send({"t": "res", "id": request_id, "ok": True, "body": result.model_dump(), "error": None})
        except Exception as exc:
            if isinstance(exc, IpcError):
                reason = exc.reason
            elif isinstance(exc, ValueError) and not isinstance(exc, ValidationError):  # FrameError: result too big
                reason = str(exc) or type(exc).__name__
            else:  # includes a model the handler built wrong: our bug, not the peer's
                log.exception("ipc %s: %r request %d failed", self.name, method, request_id)
                reason = "internal error"
            self._reply_error(request_id, reason)

    def _reply_error(self, request_id: int, reason: str) -> None:
        self._send({"t": "res", "id": request_id, "ok": False, "body": None, "error": reason[:1000]})

    def _on_notification_frame(self, message: dict[str, Any]) -> None:
        method = message["method"]
        model = NOTIFICATIONS.get(method)
        if model is None:
            log.warning("ipc %s: dropped unknown notification %s", self.name, _quoted(method))
            return
        try:
            body = model.model_validate(message["body"])
        except ValidationError as exc:
            log.warning("ipc %s: dropped invalid %r notification: %s", self.name, method, _summary(exc))
            return
        if self._on_notification is None:
            log.debug("ipc %s: no listener, dropped notification %r", self.name, method)
            return
        # A tick later, so a caller awaiting the response read just before has resumed first.
        asyncio.get_running_loop().call_soon(self._call_back, self._on_notification, body)
