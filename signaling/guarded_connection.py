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
not yet parsed into a frame): one of the two places we use websockets beyond its documented
API; ``tests/signaling/test_frontdoor_server.py`` fails loudly if it changes.

The other is :meth:`GuardedConnection.send_now`: a text frame written at once, from the
caller's own step, when nothing stands in its way (the connection open, its write buffer
below the high-water mark, no fragmented message being sent). ``send`` would do the same
work and then ``await`` nothing, but as a coroutine in a writer task, each reply cost a
task wake-up, a queue and an async context manager: 12-16% of the signalling process's CPU
per round trip under ``bench/compare_janus.py``'s signalling load. It uses what ``send`` uses
(``protocol.send_text``, ``send_data``, ``paused``, ``send_in_progress``);
``tests/signaling/test_guarded_connection.py`` fails loudly if one of them changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import DATA_OPCODES, Frame
from websockets.protocol import Event, State

__all__ = ["GuardedConnection"]


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

    def data_received(self, data: bytes) -> None:
        handshake_done = self.request is not None  # before: the HTTP request, open_timeout's business
        before = self._frames_seen
        super().data_received(data)
        if not handshake_done:
            return
        # Bytes that did not complete a frame, a frame's unparsed rest, or a message still
        # missing fragments: a message is on its way, since the first such byte.
        pending = self._frames_seen == before or bool(self.protocol.reader.buffer) or self._in_message
        if pending and self.partial_since is None:
            self.partial_since = self.loop.time()

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
        must go through ``send`` (it then waits, or raises ``ConnectionClosed``)."""
        if self.protocol.state is not State.OPEN or self.paused or self.send_in_progress is not None:
            return False
        self.protocol.send_text(data)
        try:
            self.send_data()
        except Exception as exc:  # noqa: BLE001 - as send_context does: the connection ends, the error kept
            self.set_connection_exc(exc)
            self.transport.abort()
        return True

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
