"""One load-test call: two users register, the caller calls, the callee accepts, media flows.

A :class:`Call` runs the VideoCall dialogue exactly as a janus.js client does (its own
WebSocket and session per user, ``register``, ``call`` with an offer, ``accept`` with an
answer, ``trickle`` completed, server candidates applied), then exchanges clip media for the
configured duration, measures it, hangs up and leaves. Everything it learns ends in a
:class:`CallResult`; every failure becomes its ``reason`` (never an exception out of
:meth:`Call.run`).

Timings are ``time.monotonic()`` seconds; setup times are from the moment the ``call``
request is sent: to both ``webrtcup`` notifications, and to the first media packet at the
callee.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from loadtest import janus
from loadtest.clip import Clip
from loadtest.media import (
    ClipTrack,
    DecodeCheck,
    ReceiverTap,
    answer_keyframe_requests,
    packets_sent,
    receive_codecs,
    tap_receiver,
)

#: Seconds for ICE + DTLS after the answer, and for the first media packet after that.
CONNECT_TIMEOUT = 15.0
#: Media measured before this many seconds after both webrtcup is not counted (the relay may
#: drop the first packets while the far leg is still connecting, as Janus does).
WARMUP = 1.0
#: Seconds between pausing the senders and reading the receivers' counters.
DRAIN = 0.3
DIRECTIONS = ("caller->callee", "callee->caller")

Counts = tuple[dict[str, int], ...]  # per direction: kind -> counter


@dataclass
class CallOptions:
    url: str
    duration: float
    clips: dict[str, Clip]  # by kind: "audio" and, unless audio-only, "video"
    codec: str  # "vp8" | "h264" | "opus"
    verify: bool = False
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))


@dataclass
class CallResult:
    index: int
    ok: bool = False
    stage: str = "start"
    reason: str | None = None
    setup_webrtcup_ms: float | None = None
    setup_first_media_ms: float | None = None
    media_seconds: float = 0.0
    #: direction -> kind -> counters (sent/received in the measured window, stream stats)
    media: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    verify: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Peer:
    """One user's side: Janus session and handle, PeerConnection, tracks and receive taps."""

    def __init__(self, name: str, options: CallOptions, verify: bool) -> None:
        self.name = name
        self.options = options
        self.conn: janus.Connection | None = None
        self.session: janus.Session | None = None
        self.handle: janus.Handle | None = None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # never a public STUN server
        self.tracks: dict[str, ClipTrack] = {}
        self.senders: dict[str, RTCRtpSender] = {}
        self.taps: dict[str, ReceiverTap] = {}
        self.decoded = DecodeCheck() if verify else None
        self.webrtcup: float | None = None
        self._candidates: list[janus.Message] = []
        self._remote_set = False
        self._applying: set[asyncio.Future[None]] = set()  # held, or the loop may collect them mid-run
        if self.decoded is not None:
            self.pc.on("track", self.decoded.consume)

    async def join(self) -> None:
        self.conn = await janus.Connection.open(self.options.url)
        self.session = await self.conn.create_session()
        self.session.start_keepalive()
        self.handle = await self.session.attach()
        self.handle.on_trickle = self._on_trickle
        await self.handle.message({"request": "register", "username": self.name}, what=f"register {self.name}")

    def add_media(self) -> None:
        for kind, clip in self.options.clips.items():
            track = ClipTrack(clip)
            self.tracks[kind] = track
            sender = self.pc.addTrack(track)
            self.senders[kind] = sender
            answer_keyframe_requests(sender, track)
            transceiver = next(t for t in self.pc.getTransceivers() if t.sender is sender)
            wanted = {"vp8": "video/vp8", "h264": "video/h264", "opus": "audio/opus"}[clip.codec]
            codecs = [c for c in RTCRtpSender.getCapabilities(kind).codecs
                      if c.mimeType.lower() in (wanted, f"{kind}/rtx")]
            transceiver.setCodecPreferences(codecs)

    def tap_receivers(self) -> None:
        """Count what arrives on each m-line (after the local description fixed the PTs)."""
        by_mid = receive_codecs(self.pc.localDescription.sdp)
        for transceiver in self.pc.getTransceivers():
            codecs = by_mid.get(transceiver.mid or "", {})
            tap = ReceiverTap(transceiver.kind, codecs, verify=self.decoded is not None)
            self.taps[transceiver.kind] = tap
            tap_receiver(transceiver.receiver, tap)

    def _on_trickle(self, message: janus.Message) -> None:
        self._candidates.append(message)
        if self._remote_set:
            applying = asyncio.ensure_future(self._apply_candidates())
            self._applying.add(applying)
            applying.add_done_callback(self._applying.discard)

    async def set_remote(self, jsep: janus.Message) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
        self._remote_set = True
        await self._apply_candidates()

    async def _apply_candidates(self) -> None:
        pending, self._candidates = self._candidates, []
        for message in pending:
            raw = message.get("candidate")
            for item in raw if isinstance(raw, list) else [raw]:
                if not isinstance(item, dict) or item.get("completed") or not item.get("candidate"):
                    continue
                candidate = candidate_from_sdp(str(item["candidate"]).split(":", 1)[1])
                candidate.sdpMid = item.get("sdpMid")
                candidate.sdpMLineIndex = item.get("sdpMLineIndex")
                with contextlib.suppress(Exception):  # a candidate we cannot use is not fatal
                    await self.pc.addIceCandidate(candidate)

    def sent(self) -> dict[str, int]:
        return {kind: packets_sent(sender) for kind, sender in self.senders.items()}

    def received(self) -> dict[str, int]:
        return {kind: tap.stats.packets for kind, tap in self.taps.items()}

    def received_bytes(self) -> dict[str, int]:
        return {kind: tap.stats.payload_bytes for kind, tap in self.taps.items()}

    def failure(self) -> str | None:
        """Why this side's call is over, if it is: socket gone, hangup pushed, ICE/DTLS failed."""
        assert self.handle is not None and self.conn is not None
        if self.conn.closed.is_set():
            return f"server closed {self.name}'s WebSocket mid-call"
        hangup = self.handle.take(janus.is_plugin_hangup)
        if hangup is not None:
            return f"hung up by the server mid-call ({janus.plugin_result(hangup).get('reason', 'no reason')})"
        core = self.handle.take(janus.is_core("hangup"))
        if core is not None:
            return f"server closed {self.name}'s PeerConnection ({core.get('reason', 'no reason')})"
        if self.pc.connectionState == "failed":
            return f"{self.name}'s connection failed (ICE/DTLS)"
        return None

    async def leave(self) -> None:
        for track in self.tracks.values():
            track.stop()
        if self.decoded is not None:
            self.decoded.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)
        if self.session is not None and self.conn is not None and not self.conn.closed.is_set():
            with contextlib.suppress(Exception):
                await self.session.destroy()
        if self.conn is not None:
            await self.conn.close()


class Call:
    def __init__(self, index: int, options: CallOptions, *, verify: bool = False) -> None:
        self.index = index
        self.options = options
        base = f"lt-{options.run_id}-{index}"
        self.caller = Peer(f"{base}-a", options, verify)
        self.callee = Peer(f"{base}-b", options, verify)
        self.result = CallResult(index=index)
        #: "connecting" -> "up" (media flowing) -> "done"; read by the progress reporter
        self.state = "connecting"

    async def run(self) -> CallResult:
        try:
            await self._run()
        except janus.LoadClientError as exc:
            self.result.reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - a client bug still gives a report line
            self.result.reason = f"load client error in {self.result.stage}: {type(exc).__name__}: {exc}"
        finally:
            self.state = "done"
            await asyncio.gather(self.caller.leave(), self.callee.leave(), return_exceptions=True)
        return self.result

    def _stage(self, stage: str) -> None:
        self.result.stage = stage

    async def _run(self) -> None:
        caller, callee, result = self.caller, self.callee, self.result
        self._stage("register")
        await asyncio.gather(caller.join(), callee.join())
        assert caller.handle is not None and callee.handle is not None

        self._stage("call")
        caller.add_media()
        await caller.pc.setLocalDescription(await caller.pc.createOffer())  # gathers (no trickle)
        caller.tap_receivers()
        started = time.monotonic()
        reply = await caller.handle.message(
            {"request": "call", "username": callee.name},
            {"type": "offer", "sdp": caller.pc.localDescription.sdp}, what="call")
        answer = janus.plugin_result(reply)
        if answer.get("event") == "hangup":  # the refusal Janus gives a busy callee
            raise janus.LoadClientError(f"call refused: {answer.get('reason', 'hangup')}")
        await caller.handle.trickle_completed()

        self._stage("accept")
        incoming = await callee.handle.wait_for(
            lambda m: janus.plugin_result(m).get("event") == "incomingcall" and "jsep" in m,
            what="incomingcall at the callee")
        await callee.set_remote(incoming["jsep"])
        callee.add_media()
        await callee.pc.setLocalDescription(await callee.pc.createAnswer())
        callee.tap_receivers()
        first_media = asyncio.get_running_loop().create_future()
        for tap in callee.taps.values():
            tap.on_first = lambda: None if first_media.done() else first_media.set_result(time.monotonic())
        await callee.handle.message({"request": "accept"},
                                    {"type": "answer", "sdp": callee.pc.localDescription.sdp}, what="accept")
        await callee.handle.trickle_completed()
        accepted = await caller.handle.wait_for(
            lambda m: janus.plugin_result(m).get("event") == "accepted" and "jsep" in m,
            what="accepted at the caller")
        await caller.set_remote(accepted["jsep"])

        self._stage("connect")
        await asyncio.gather(
            caller.handle.wait_for(janus.is_core("webrtcup"), what="webrtcup for the caller", timeout=CONNECT_TIMEOUT),
            callee.handle.wait_for(janus.is_core("webrtcup"), what="webrtcup for the callee", timeout=CONNECT_TIMEOUT))
        up_at = time.monotonic()
        result.setup_webrtcup_ms = round((up_at - started) * 1000, 1)

        self._stage("media")
        try:
            first = await asyncio.wait_for(asyncio.shield(first_media), CONNECT_TIMEOUT)
            result.setup_first_media_ms = round((first - started) * 1000, 1)
        except TimeoutError:
            pass  # no media at all: the window below reports which direction is empty
        self.state = "up"
        media_start = max(up_at + WARMUP, time.monotonic())
        end = up_at + max(self.options.duration, WARMUP + 0.5)
        await self._watch(until=media_start)
        # Counters are read with the senders paused and the path drained, so that no packet is
        # in flight (counted sent, not yet received) at either edge of the measured window.
        await self._pause_and_drain()
        sent0 = (caller.sent(), callee.sent())
        received0 = (callee.received(), caller.received())
        bytes0 = (callee.received_bytes(), caller.received_bytes())
        window_start = time.monotonic()
        for track in [*caller.tracks.values(), *callee.tracks.values()]:
            track.resume()
        await self._watch(until=max(end, window_start + 0.5))
        await self._pause_and_drain()
        result.media_seconds = round(time.monotonic() - DRAIN - window_start, 3)
        sent1 = (caller.sent(), callee.sent())
        received1 = (callee.received(), caller.received())
        bytes1 = (callee.received_bytes(), caller.received_bytes())
        self._measure(sent0, sent1, received0, received1, bytes0, bytes1)
        self._stage("hangup")
        with contextlib.suppress(janus.LoadClientError):
            await caller.handle.message({"request": "hangup"}, what="hangup", timeout=5)

    async def _pause_and_drain(self) -> None:
        for track in [*self.caller.tracks.values(), *self.callee.tracks.values()]:
            track.pause()
        await self._watch(until=time.monotonic() + DRAIN)

    async def _watch(self, until: float) -> None:
        """Sleep until ``until``, failing as soon as the server ends the call or dies."""
        while True:
            for peer in (self.caller, self.callee):
                reason = peer.failure()
                if reason is not None:
                    raise janus.LoadClientError(reason)
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.1))

    def _measure(self, sent0: Counts, sent1: Counts, received0: Counts, received1: Counts,
                 bytes0: Counts, bytes1: Counts) -> None:
        result = self.result
        receivers = (self.callee, self.caller)
        problems: list[str] = []
        for d, direction in enumerate(DIRECTIONS):
            result.media[direction] = {}
            for kind in self.options.clips:
                sent = sent1[d].get(kind, 0) - sent0[d].get(kind, 0)
                received = received1[d].get(kind, 0) - received0[d].get(kind, 0)
                tap = receivers[d].taps.get(kind)
                stats = tap.stats.summary() if tap is not None else {}
                if result.media_seconds > 0:  # payload bitrate over the window, pauses excluded
                    window_bytes = bytes1[d].get(kind, 0) - bytes0[d].get(kind, 0)
                    stats["bitrate_kbps"] = round(window_bytes * 8 / result.media_seconds / 1000, 1)
                source = (self.caller, self.callee)[d].tracks.get(kind)
                stats["keyframe_requests"] = source.keyframe_requests if source is not None else 0
                result.media[direction][kind] = {"sent": sent, "received": received, **stats}
                if sent == 0:
                    problems.append(f"no {kind} sent {direction}")
                elif received == 0:
                    problems.append(f"no {kind} received {direction}")
                elif stats.get("malformed"):
                    problems.append(f"malformed {kind} payloads {direction}")
        if self.options.verify and self.caller.decoded is not None:
            result.verify = {"callee": self.callee.decoded.summary() if self.callee.decoded else None,
                             "caller": self.caller.decoded.summary()}
            for side, check in (("callee", self.callee.decoded), ("caller", self.caller.decoded)):
                if check is None:
                    continue
                for kind in self.options.clips:
                    if check.frames.get(kind, 0) == 0:
                        problems.append(f"verify: no {kind} frame decoded at the {side}")
                clip = self.options.clips.get("video")
                if clip is not None and check.sizes and check.sizes != {(clip.width, clip.height)}:
                    problems.append(f"verify: {side} decoded {sorted(check.sizes)}, sent {clip.width}x{clip.height}")
        if problems:
            result.reason = "; ".join(problems)
        else:
            result.ok = True
