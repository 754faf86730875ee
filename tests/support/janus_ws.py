"""A small Janus JSON API client for end-to-end tests.

It speaks the Janus API over WebSocket (subprotocol ``janus-protocol``) exactly as a client
written for Janus does, and keeps everything it receives so a test can wait for a reply or a
notification and, when the wait fails, say what did arrive instead.

- ``JanusConnection``: one WebSocket. ``send`` raw text or JSON, ``request`` (send and wait for
  the first reply with the same transaction), ``wait_for`` (a message matching a predicate),
  ``expect_none`` (nothing matching arrives within a delay), ``close`` / ``abort`` (drop the
  TCP connection without a closing handshake).
- ``Session``: ``create``, ``attach``, ``keepalive`` (and a background keepalive task),
  ``destroy``.
- ``Handle``: ``message(body, jsep) -> (ack, event)`` whatever order the two arrive in,
  ``trickle``, ``detach``, ``hangup`` (the core request), ``plugin_event`` and ``notification``
  to wait for what the server pushes to this handle.
- ``Peer``: an aiortc RTCPeerConnection built with ``RTCConfiguration(iceServers=[])`` (never a
  public STUN server) with aiortc's synthetic audio/video tracks and an optional data channel;
  counts the frames it receives.
- ``offer_host_address(addr)``: aioice never offers loopback (it skips 127.0.0.1), and Janus in
  its network namespace must be reached from 10.77.0.1; this installs the relay's ICE policy
  for ``addr`` (``mediarelay.ice``) so every PeerConnection of this process offers ``addr`` as
  its only host candidate.

Nothing here knows the VideoCall plugin beyond its name and where its data sits in an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from websockets.asyncio.client import ClientConnection

from mediarelay import ice

VIDEOCALL = "janus.plugin.videocall"
SUBPROTOCOL = "janus-protocol"
#: Seconds a reply or notification may take before a wait fails.
TIMEOUT = 5.0

Message = dict[str, Any]
Predicate = Callable[[Message], bool]


class JanusWaitError(AssertionError):
    """A wait ended without the expected message (timeout or closed socket)."""


class JanusReplyError(AssertionError):
    """The server answered a request with something other than what the helper expects."""

    def __init__(self, what: str, reply: Message) -> None:
        super().__init__(f"{what}: got {summarize(reply)}")
        self.reply = reply


def new_transaction() -> str:
    """A transaction id shaped like janus.js's (12 random alphanumerics)."""
    return secrets.token_hex(6)


def summarize(message: Any, limit: int = 600) -> str:
    """One line for a message, SDP bodies cut short."""

    def cut(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (f"<sdp {len(v)} chars>" if k == "sdp" and isinstance(v, str) else cut(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [cut(v) for v in value]
        return value

    text = json.dumps(cut(message), ensure_ascii=False) if not isinstance(message, str) else message
    return text if len(text) <= limit else text[:limit] + "..."


def matching(**fields: Any) -> Predicate:
    """A predicate: every given top-level field has exactly that value."""
    return lambda message: all(message.get(k, _MISSING) == v for k, v in fields.items())


_MISSING = object()


def plugin_data(message: Message) -> dict[str, Any]:
    """``plugindata.data`` of a plugin event ({} when absent)."""
    data = (message.get("plugindata") or {}).get("data")
    return data if isinstance(data, dict) else {}


def plugin_result(message: Message) -> dict[str, Any] | None:
    """``plugindata.data.result`` of a plugin event, if any."""
    result = plugin_data(message).get("result")
    return result if isinstance(result, dict) else None


class JanusConnection:
    """One WebSocket to a Janus API server and everything received on it."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        #: Every message received, in order (non-JSON frames as {"_raw": text}).
        self.received: list[Message] = []
        self.received_at: list[float] = []  # loop time of each arrival, for diagnostics
        self._inbox: list[Message] = []  # received, not yet taken by a wait
        self._changed = asyncio.Condition()
        self.closed = False
        self._reader = asyncio.create_task(self._read(), name=f"janus-reader {url}")

    @classmethod
    async def connect(cls, url: str, *, timeout: float = TIMEOUT) -> JanusConnection:
        ws = await websockets.connect(
            url,
            subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
            open_timeout=timeout,
            ping_interval=None,  # Janus clients do not ping; keep the wire to API messages
            max_size=None,
            compression=None,
            proxy=None,
        )
        return cls(ws, url)

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                try:
                    message = json.loads(frame)
                except ValueError:
                    message = {"_raw": frame}
                if not isinstance(message, dict):
                    message = {"_raw": frame}
                self.received.append(message)
                self.received_at.append(asyncio.get_running_loop().time())
                async with self._changed:
                    self._inbox.append(message)
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True
            async with self._changed:
                self._changed.notify_all()

    # --- sending ------------------------------------------------------------------------

    async def send(self, message: Message | str) -> None:
        """Send one frame: a dict as JSON, a str as it is (for malformed frames)."""
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def request(self, message: Message, *, timeout: float = TIMEOUT) -> Message:
        """Send a request (a transaction is added if missing); return the first reply to it."""
        message = dict(message)
        transaction = message.setdefault("transaction", new_transaction())
        await self.send(message)
        return await self.reply(transaction, timeout=timeout)

    async def reply(self, transaction: str, *, janus: str | None = None,
                    timeout: float = TIMEOUT) -> Message:
        """The next message carrying ``transaction`` (and, if given, this ``janus`` verb)."""

        def wanted(m: Message) -> bool:
            return m.get("transaction") == transaction and (janus is None or m.get("janus") == janus)

        what = f"reply {janus or '*'} to transaction {transaction}"
        return await self.wait_for(wanted, timeout=timeout, what=what)

    # --- waiting ------------------------------------------------------------------------

    async def wait_for(self, predicate: Predicate, *, timeout: float = TIMEOUT,
                       what: str = "a matching message") -> Message:
        """Take (and return) the oldest received message matching ``predicate``.

        Fails with a list of the messages that did arrive (not yet taken) on timeout or when
        the socket closes first.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while True:
                for index, message in enumerate(self._inbox):
                    if predicate(message):
                        del self._inbox[index]
                        return message
                if self.closed:
                    raise JanusWaitError(self._failure(f"socket closed while waiting for {what}"))
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise JanusWaitError(self._failure(f"no {what} within {timeout:g} s"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    async def expect_none(self, predicate: Predicate, *, within: float, what: str) -> None:
        """Wait ``within`` seconds and fail if a message matching ``predicate`` is pending."""
        await asyncio.sleep(within)
        found = [m for m in self._inbox if predicate(m)]
        if found:
            lines = "\n".join(f"  {summarize(m)}" for m in found)
            raise AssertionError(f"unexpected {what} on {self.url}:\n{lines}")

    def pending(self, predicate: Predicate | None = None) -> list[Message]:
        """Messages received and not taken by a wait (optionally only matching ones)."""
        return [m for m in self._inbox if predicate is None or predicate(m)]

    def drain(self, predicate: Predicate | None = None) -> list[Message]:
        """Take every pending message (matching ``predicate``) without waiting."""
        taken = self.pending(predicate)
        self._inbox = [m for m in self._inbox if not any(m is t for t in taken)]
        return taken

    def _failure(self, headline: str) -> str:
        shown = self._inbox[-40:]
        lines = [f"{headline} ({self.url}, {len(self.received)} received in all)."]
        lines.append(f"Received and not yet taken ({len(self._inbox)}):" if shown
                     else "Nothing received that was not already taken.")
        lines += [f"  {summarize(m)}" for m in shown]
        return "\n".join(lines)

    # --- closing ------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the WebSocket cleanly (the server then destroys the sessions it holds)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 3)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._reader, 3)

    async def abort(self) -> None:
        """Drop the TCP connection without a WebSocket closing handshake (a crashed client)."""
        self.ws.transport.abort()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._reader, 3)


def expect_janus(reply: Message, janus: str, what: str) -> Message:
    if reply.get("janus") != janus:
        raise JanusReplyError(f"{what}: expected '{janus}'", reply)
    return reply


class Session:
    """A Janus session on one connection."""

    def __init__(self, conn: JanusConnection, session_id: int) -> None:
        self.conn = conn
        self.id = session_id
        self._keepalive: asyncio.Task[None] | None = None

    @classmethod
    async def create(cls, conn: JanusConnection, **fields: Any) -> Session:
        reply = await conn.request({"janus": "create", **fields})
        expect_janus(reply, "success", "create")
        return cls(conn, reply["data"]["id"])

    async def request(self, janus: str, *, timeout: float = TIMEOUT, **fields: Any) -> Message:
        """A session-level request; returns the first reply (success, ack or error)."""
        return await self.conn.request({"janus": janus, "session_id": self.id, **fields},
                                       timeout=timeout)

    async def attach(self, plugin: str = VIDEOCALL, **fields: Any) -> Handle:
        reply = await self.request("attach", plugin=plugin, **fields)
        expect_janus(reply, "success", f"attach {plugin}")
        return Handle(self, reply["data"]["id"])

    async def keepalive(self) -> Message:
        return expect_janus(await self.request("keepalive"), "ack", "keepalive")

    def start_keepalive(self, interval: float) -> None:
        """Send a keepalive every ``interval`` seconds until ``stop_keepalive``/``destroy``."""

        async def loop() -> None:
            while not self.conn.closed:
                await asyncio.sleep(interval)
                transaction = new_transaction()
                with contextlib.suppress(Exception):
                    await self.conn.send({"janus": "keepalive", "session_id": self.id,
                                          "transaction": transaction})
                    # Take the ack so it does not crowd failure listings.
                    await self.conn.reply(transaction, timeout=interval * 4)

        self.stop_keepalive()
        self._keepalive = asyncio.create_task(loop(), name=f"keepalive {self.id}")

    def stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    async def destroy(self) -> Message:
        self.stop_keepalive()
        return expect_janus(await self.request("destroy"), "success", "destroy")

    async def notification(self, janus: str, *, timeout: float = TIMEOUT, **fields: Any) -> Message:
        """Wait for a notification of this session (e.g. ``timeout``)."""
        return await self.conn.wait_for(matching(janus=janus, session_id=self.id, **fields),
                                        timeout=timeout, what=f"'{janus}' for session {self.id}")


class Handle:
    """A plugin handle."""

    def __init__(self, session: Session, handle_id: int) -> None:
        self.session = session
        self.conn = session.conn
        self.id = handle_id

    async def request(self, janus: str, *, timeout: float = TIMEOUT, **fields: Any) -> Message:
        """A handle-level request; returns the first reply (ack, success or error)."""
        return await self.conn.request(
            {"janus": janus, "session_id": self.session.id, "handle_id": self.id, **fields},
            timeout=timeout)

    async def send_message(self, body: Any, jsep: Any = None, **fields: Any) -> str:
        """Send a plugin ``message`` without waiting; returns its transaction."""
        transaction = new_transaction()
        message: Message = {"janus": "message", "transaction": transaction,
                            "session_id": self.session.id, "handle_id": self.id, "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        message.update(fields)
        await self.conn.send(message)
        return transaction

    async def message(self, body: Any, jsep: Any = None, *,
                      timeout: float = TIMEOUT) -> tuple[Message, Message]:
        """Send a plugin message; return ``(ack, event)``, whichever arrived first.

        A core error instead of the ack raises ``JanusReplyError`` (its ``.reply``).
        """
        transaction = await self.send_message(body, jsep)
        return await self.ack_and_event(transaction, timeout=timeout)

    async def ack_and_event(self, transaction: str, *,
                            timeout: float = TIMEOUT) -> tuple[Message, Message]:
        first = await self.conn.reply(transaction, timeout=timeout)
        if first.get("janus") not in ("ack", "event"):
            raise JanusReplyError(f"message {transaction}: expected ack and event", first)
        other = "event" if first["janus"] == "ack" else "ack"
        second = await self.conn.reply(transaction, janus=other, timeout=timeout)
        return (first, second) if other == "event" else (second, first)

    async def trickle(self, candidate: Message | None = None, *,
                      candidates: list[Message] | None = None, completed: bool = False) -> Message:
        fields: Message = {}
        if completed:
            fields["candidate"] = {"completed": True}
        elif candidates is not None:
            fields["candidates"] = candidates
        else:
            fields["candidate"] = candidate
        return expect_janus(await self.request("trickle", **fields), "ack", "trickle")

    async def detach(self) -> Message:
        return expect_janus(await self.request("detach"), "success", "detach")

    async def hangup(self) -> Message:
        """The core ``hangup`` request (closes this handle's PeerConnection)."""
        return expect_janus(await self.request("hangup"), "success", "hangup")

    async def plugin_event(self, event: str | None = None, *, timeout: float = TIMEOUT,
                           **result_fields: Any) -> Message:
        """Wait for a plugin event pushed to this handle (no transaction), e.g. incomingcall.

        ``event`` and ``result_fields`` must all match ``plugindata.data.result``.
        """

        def wanted(m: Message) -> bool:
            if m.get("janus") != "event" or m.get("sender") != self.id or "transaction" in m:
                return False
            result = plugin_result(m)
            if result is None:
                return False
            if event is not None and result.get("event") != event:
                return False
            return all(result.get(k, _MISSING) == v for k, v in result_fields.items())

        detail = ", ".join(f"{k}={v!r}" for k, v in result_fields.items())
        return await self.conn.wait_for(
            wanted, timeout=timeout,
            what=f"plugin event '{event or '*'}'{' (' + detail + ')' if detail else ''} "
                 f"for handle {self.id}")

    async def notification(self, janus: str, *, timeout: float = TIMEOUT, **fields: Any) -> Message:
        """Wait for a core notification about this handle (webrtcup, media, hangup, detached...)."""
        detail = "".join(f", {k}={v!r}" for k, v in fields.items())
        return await self.conn.wait_for(
            matching(janus=janus, sender=self.id, **fields), timeout=timeout,
            what=f"'{janus}'{detail} for handle {self.id}")

    def is_plugin_hangup(self, m: Message) -> bool:
        result = plugin_result(m)
        return (m.get("janus") == "event" and m.get("sender") == self.id
                and result is not None and result.get("event") == "hangup")


@contextlib.contextmanager
def offer_host_address(address: str) -> Iterator[None]:
    """Make every aiortc PeerConnection of this process offer ``address`` as host candidate.

    aioice never offers 127.0.0.1; our server is tested on loopback
    (``VIDEOCALL_ICE_ENFORCE_LIST=127.0.0.1``) and Janus in its namespace is reached from
    10.77.0.1. The relay's own ICE policy does it (``mediarelay.ice.installed``): process-wide
    (also for janus-client's PeerConnections) and undone on exit.
    """
    with ice.installed(ice.IcePolicy(addresses=(address,))):
        yield


def jsep_of(description: RTCSessionDescription) -> Message:
    return {"type": description.type, "sdp": description.sdp}


class Peer:
    """A WebRTC endpoint for tests: aiortc with no ICE servers, synthetic media, frame counts."""

    def __init__(self, name: str = "peer") -> None:
        self.name = name
        # Never aiortc's default configuration: it contacts a public STUN server.
        self.pc = RTCPeerConnection(configuration=RTCConfiguration(iceServers=[]))
        self.frames: Counter[str] = Counter()  # frames received, by kind
        self.data: list[str | bytes] = []  # data channel messages received
        self.channels: list[Any] = []
        self._progress = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._progress.set)

    def _on_track(self, track: Any) -> None:
        self._tasks.append(asyncio.create_task(self._consume(track), name=f"{self.name} {track.kind}"))

    async def _consume(self, track: Any) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.frames[track.kind] += 1
            self._progress.set()

    def _on_datachannel(self, channel: Any) -> None:
        self._watch_channel(channel)

    def _watch_channel(self, channel: Any) -> None:
        self.channels.append(channel)

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            self.data.append(message)
            self._progress.set()

        channel.on("open", self._progress.set)

    def add_media(self, *, audio: bool = True, video: bool = True,
                  datachannel: str | None = None) -> None:
        """Send aiortc's synthetic tracks (silence, green frames) and open a data channel."""
        if audio:
            self.pc.addTrack(AudioStreamTrack())
        if video:
            self.pc.addTrack(VideoStreamTrack())
        if datachannel:
            self._watch_channel(self.pc.createDataChannel(datachannel))

    def open_channel(self, label: str) -> Any:
        """Open a data channel (after negotiation too, once SCTP is part of the session)."""
        channel = self.pc.createDataChannel(label)
        self._watch_channel(channel)
        return channel

    def send_data(self, message: str | bytes) -> None:
        """Send on the first open data channel (ours or one the remote side opened)."""
        for channel in self.channels:
            if channel.readyState == "open":
                channel.send(message)
                return
        raise AssertionError(f"{self.name}: no open data channel ({len(self.channels)} known)")

    async def offer(self, *, audio: bool = True, video: bool = True,
                    datachannel: str | None = None) -> Message:
        """Add media and return a complete offer (all candidates in the SDP, as aiortc does)."""
        self.add_media(audio=audio, video=video, datachannel=datachannel)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return jsep_of(self.pc.localDescription)

    async def answer(self, offer: Message, *, audio: bool = True, video: bool = True) -> Message:
        """Take a remote offer (a jsep), add media and return the answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        self.add_media(audio=audio, video=video)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return jsep_of(self.pc.localDescription)

    async def set_remote(self, jsep: Message) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))

    async def _until(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise JanusWaitError(
                    f"{self.name}: no {what} within {timeout:g} s (connection "
                    f"{self.pc.connectionState}, ICE {self.pc.iceConnectionState}, "
                    f"frames {dict(self.frames)}, data {len(self.data)})")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.2))

    async def wait_connected(self, timeout: float = 10) -> None:
        await self._until(lambda: self.pc.connectionState == "connected", "connection", timeout)

    async def wait_frames(self, kind: str, count: int = 3, timeout: float = 10) -> None:
        """Wait until ``count`` more frames of ``kind`` than now have been received."""
        target = self.frames[kind] + count
        await self._until(lambda: self.frames[kind] >= target, f"{count} {kind} frames", timeout)

    async def wait_channel_open(self, timeout: float = 5) -> None:
        await self._until(lambda: any(c.readyState == "open" for c in self.channels),
                          "open data channel", timeout)

    async def wait_data(self, count: int = 1, timeout: float = 5) -> None:
        """Wait until ``count`` data channel messages in all have been received."""
        await self._until(lambda: len(self.data) >= count, f"{count} data messages", timeout)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)
