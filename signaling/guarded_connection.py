"""The websockets connection class the server uses, with what the front door needs to know.

websockets reads a frame as its bytes arrive and has no per-frame timeout: ``open_timeout``
covers the handshake only, and its keepalive catches a frame trickled byte by byte only
indirectly (the client's pong cannot pass the frame it is in the middle of: closed with 1011
after ``ping_interval`` + ``ping_timeout``, 50 s here), and a message trickled as many small
fragments, with pongs between them, never. :class:`GuardedConnection` notes when the first
byte of a still incomplete frame arrived (``partial_since``; for a fragmented message, of its
first fragment) and when the client last completed a message (``last_active``); the server's
watch (``SignalingServer._watch_connections``) asks ``frontdoor.quiet_close_reason`` and closes.
It also gives the connection's slot in the per-address count back when the TCP connection
ends, however it ends (handshake refused or timed out, client gone, server closing).

"Incomplete" is read from the protocol's receive buffer (``protocol.reader.buffer``, bytes
not yet parsed into a frame): one of three places we use websockets beyond its documented
API; ``tests/signaling/test_frontdoor_server.py`` fails loudly if it changes.

The second is :meth:`GuardedConnection.send_now`: a text frame written at once, from the
caller's own step, when nothing stands in its way (the connection open, its write buffer
below the high-water mark, no fragmented message being sent). ``send`` would do the same
work and then ``await`` nothing, but as a coroutine in a writer task, each reply cost a
task wake-up, a queue and an async context manager: 12-16% of the signalling process's CPU
per round trip under ``bench/compare_janus.py``'s signalling load. It uses what ``send`` uses
(``protocol.send_text``, ``send_data``, ``paused``, ``send_in_progress``), and without an
extension makes the frame itself when websockets has nothing of its own to write first
(``protocol.writes``, ``expect_continuation_frame``). While the requests of one read are
handled from ``data_received`` (below), the frames it makes are held and written together
when the read is done (a ``message``'s ``ack`` and ``event`` in one system call, not two):
at most ``_BATCH_LIMIT`` bytes are held, and anything websockets writes itself goes after
what was held, so the order and the transport's pause (back-pressure) are as before.

The third is the reading side of the same hot path. A read that is nothing but whole final
text frames (``text_frames``), arriving while websockets' parser waits between two frames
(the generators it waits in, ``Protocol.parse`` and ``StreamReader.at_eof``; no fragmented
message begun, no extension), skips that parser; and a message with nothing before it
(nothing handled still running, nothing in websockets' queue, ``recv_messages.frames``) is
handled from ``data_received`` itself (``on_message``, set by the server), not by waking the
reader task through websockets' queue: a request that ends without waiting (most do) costs
no task step at all. One that waits goes on in a task (``signaling/resumed.py``); what
arrives meanwhile goes through websockets' queue to the reader, which handles it once that
task has ended (``settled``), so every request is still answered in the order it came. Any
other read (a ping, a fragment, a frame cut across reads, compressed frames) goes to
websockets whole, as before. ``tests/signaling/test_guarded_connection.py`` fails loudly if
one of these changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import DATA_OPCODES, CloseCode, Frame, Opcode
from websockets.protocol import Event, Protocol, State
from websockets.streams import StreamReader

from signaling.resumed import resumed
from signaling.text_frames import whole_text_frames

__all__ = ["GuardedConnection"]

log = logging.getLogger("videocall.server")

#: The first byte of a final text frame; with it, the length markers of 16 and 64 bits.
_FINAL_TEXT = 0x81
_HEAD_16, _HEAD_64 = bytes((_FINAL_TEXT, 126)), bytes((_FINAL_TEXT, 127))

#: websockets' frame parser, and the generator it waits in between two frames.
_PARSE, _AT_EOF = Protocol.parse.__code__, StreamReader.at_eof.__code__
#: Bytes of replies ``send_now`` holds for one write at most (websockets' default high-water
#: mark is 32 KiB: a batch never holds back what the transport would have paused on).
_BATCH_LIMIT = 16384


class GuardedConnection(ServerConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The client address this connection counts against, once the handshake admitted it.
        self.client_address: str | None = None
        self.on_lost: Callable[[], None] | None = None
        self.last_active = self.loop.time()
        self.partial_since: float | None = None
        self._frames_seen = 0
        self._in_message = False  # a fragmented message has begun and not ended
        self._lost = False
        #: No extension, no debug log, no limit per fragment (known once open; None before).
        self._plain: bool | None = None
        #: Set by the server: the coroutine that handles one text message. Messages may then
        #: be handled from ``data_received`` itself (``_run_now``), not only by the reader.
        self.on_message: Callable[[str], Coroutine[Any, Any, None]] | None = None
        #: The server's reader holds a message it took from ``recv`` and has not handled yet.
        self.reader_busy = False
        #: A message handled from ``data_received`` that waits for something: the task it
        #: goes on in. Nothing else is handled until it ends.
        self._running: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        #: While requests of one read are handled from ``data_received``: the frames
        #: ``send_now`` made for them, written together when the read is done (``_flush_batch``).
        self._batch: list[bytes] | None = None
        self._batched = 0  # their bytes

    def data_received(self, data: bytes) -> None:
        handshake_done = self.request is not None  # before: the HTTP request, open_timeout's business
        if handshake_done and self._between_frames():
            payloads = whole_text_frames(data, self.protocol.max_message_size)
            if payloads is not None:
                self._batch = []  # what ``send_now`` writes meanwhile: one write, at the end
                try:
                    for payload in payloads:
                        if self._may_run_now():
                            try:
                                text = payload.decode()
                            except UnicodeDecodeError:  # websockets' recv closes with 1007, as before
                                pass
                            else:
                                self._run_now(text)
                                continue
                        self.process_event(Frame(Opcode.TEXT, payload))
                finally:
                    self._flush_batch()
                return
        before = self._frames_seen
        super().data_received(data)
        if not handshake_done:
            return
        # Bytes that did not complete a frame, a frame's unparsed rest, or a message still
        # missing fragments: a message is on its way, since the first such byte.
        pending = self._frames_seen == before or bool(self.protocol.reader.buffer) or self._in_message
        if pending and self.partial_since is None:
            self.partial_since = self.loop.time()

    def _between_frames(self) -> bool:
        """Whether websockets would read the next bytes as the start of a new frame with
        nothing of its own to decide: open, its frame parser (``Protocol.parse``, under the
        handshake's) waiting in ``at_eof`` with an empty buffer, no fragmented message begun,
        and (fixed once open) no extension, no debug log, no limit per fragment. Whole text
        frames may then skip its parser (``text_frames``)."""
        protocol = self.protocol
        if protocol.state is not State.OPEN or protocol.reader.buffer or self._in_message:
            return False
        if not self._is_plain() or protocol.current_size is not None:
            return False
        outer: Any = None
        inner: Any = protocol.parser  # a generator: where it waits is ``gi_yieldfrom``
        while (awaited := inner.gi_yieldfrom) is not None:
            outer, inner = inner, awaited
        return inner.gi_code is _AT_EOF and outer is not None and outer.gi_code is _PARSE

    def _is_plain(self) -> bool:
        """No extension, no debug log, no limit per fragment: fixed once the connection is
        open (asked only then), so looked at once."""
        if self._plain is None:
            protocol = self.protocol
            self._plain = not protocol.extensions and not protocol.debug and protocol.max_fragment_size is None
        return self._plain

    # --- messages handled as they arrive ---------------------------------------------------

    def _may_run_now(self) -> bool:
        """Whether a whole text message that just arrived may be handled at once: nothing
        handled before it is still running (here or by the reader) or waits in websockets'
        queue. Else it joins that queue, and the reader takes it in its turn."""
        return (self.on_message is not None and self._running is None and not self.reader_busy
                and not self.recv_messages.frames.queue and self.protocol.state is State.OPEN)

    def _run_now(self, text: str) -> None:
        """Handle ``text`` from this callback, as the reader would have after ``recv``: its
        handler usually ends without waiting (no task, no wake-up of the reader); if it waits
        for something, it goes on in a task of its own, and what arrives meanwhile queues.

        Until its first wait the handler runs with no current task (``asyncio.current_task()``
        is None): nothing on that path may use ``asyncio.timeout`` (or, from Python 3.12,
        ``wait_for``) before it has awaited once."""
        assert self.on_message is not None
        self._frames_seen += 1
        self.last_active = self.loop.time()
        self.partial_since = None
        coro = self.on_message(text)
        try:
            awaited = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a bug in the handler: logged, 1011
            self._handler_failed(exc)
            return
        self._running = self.loop.create_task(self._go_on(coro, awaited))

    async def _go_on(self, coro: Coroutine[Any, Any, None], awaited: Any) -> None:
        try:
            await resumed(coro, awaited)
        except Exception as exc:  # noqa: BLE001 - as above
            self._handler_failed(exc)
        finally:
            self._running = None

    def _handler_failed(self, exc: Exception) -> None:
        """As when the server's handler raises (``http_listener``): logged, nothing more
        handled, the connection closed with 1011."""
        log.error("WebSocket message handler failed", exc_info=exc)
        self.on_message = None
        self._closing = self.loop.create_task(self.close(CloseCode.INTERNAL_ERROR))

    async def settled(self) -> None:
        """The reader's turn: returns once a message handled from ``data_received`` has
        ended; called with ``reader_busy`` set, so that none starts meanwhile. Cancelled, it
        cancels that handling too."""
        running = self._running
        if running is None:
            return
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            running.cancel()
            raise

    def process_event(self, event: Event) -> None:
        if self.request is not None and isinstance(event, Frame):
            self._frames_seen += 1
            if event.opcode in DATA_OPCODES:
                self._in_message = not event.fin
                if event.fin:
                    self.last_active = self.loop.time()
            if not self._in_message:
                self.partial_since = None
        super().process_event(event)

    def send_now(self, data: bytes) -> bool:
        """Write ``data`` (UTF-8 JSON) as one text frame now, if the connection is open and
        its transport takes writes without waiting; False, nothing written, when the caller
        must go through ``send`` (it then waits, or raises ``ConnectionClosed``). With no
        extension and nothing of websockets' own waiting to go out, the frame (a server's:
        unmasked) is made here, as ``Frame.serialize`` would make it."""
        protocol = self.protocol
        if protocol.state is not State.OPEN or self.paused or self.send_in_progress is not None:
            return False
        if self._is_plain() and not protocol.writes and not protocol.expect_continuation_frame:
            size = len(data)
            if size < 126:
                head = bytes((_FINAL_TEXT, size))
            elif size < 65536:
                head = _HEAD_16 + size.to_bytes(2, "big")
            else:
                head = _HEAD_64 + size.to_bytes(8, "big")
            batch = self._batch
            if batch is None:
                self._write(head + data)
            else:
                batch.append(head)
                batch.append(data)
                self._batched += size
                if self._batched >= _BATCH_LIMIT:  # a large answer: no more held than that
                    self._flush_batch(go_on=True)
            return True
        self._flush_batch(go_on=self._batch is not None)  # what was made before goes first
        protocol.send_text(data)
        try:
            self.send_data()
        except Exception as exc:  # noqa: BLE001 - as send_context does: the connection ends, the error kept
            self.set_connection_exc(exc)
            self.transport.abort()
        return True

    def _flush_batch(self, *, go_on: bool = False) -> None:
        """Write the frames batched so far as one (one system call for, say, a ``message``'s
        ``ack`` and ``event``); ``go_on``: what is made after them is batched again, else it
        is written as it comes."""
        batch = self._batch
        self._batch = [] if go_on else None
        self._batched = 0
        if batch:
            self._write(b"".join(batch))

    def _write(self, frames: bytes) -> None:
        try:
            self.transport.write(frames)
        except Exception as exc:  # noqa: BLE001 - as send_context does: the connection ends, the error kept
            self.set_connection_exc(exc)
            self.transport.abort()

    def hold(self, address: str, release: Callable[[], None]) -> None:
        """Count this connection against ``address``: ``release`` runs once, when it ends
        (at once if it has ended already, so a slot is never lost)."""
        self.client_address = address
        if self._lost:
            release()
        else:
            self.on_lost = release

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()
        super().connection_lost(exc)
