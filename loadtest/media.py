"""How a load client sends and receives media through aiortc without encoding or decoding.

Sending: :class:`ClipTrack` is a MediaStreamTrack whose ``recv()`` returns the clip's
*encoded* frames as ``av.Packet`` objects, paced in real time. aiortc's RTCRtpSender sees a
packet rather than a frame and takes its pre-encoded path: the codec's ``pack()`` only
packetizes (RFC 7741 VP8 descriptors, RFC 6184 FU-A/STAP-A, Opus as is), then the usual
SRTP/ICE send. So the wire carries exactly what a real encoder produced, at the real frame
rate and bitrate, for the cost of packetizing. A keyframe request (PLI or FIR) reaching the
sender makes the track jump to the clip's next keyframe, as an encoder would send one
(:func:`answer_keyframe_requests`). Not modelled: bitrate adaptation to REMB.

Receiving: :func:`tap_receiver` sends every decrypted, parsed RTP packet of one RTCRtpReceiver to
a counter (:class:`loadtest.rtp_stats.StreamStats`): no jitter buffer, no depacketizing, no decoder, so
a receiver costs little more than SRTP. The receiver then sends no NACK, PLI or REMB and its
RR reports nothing received; that is the price of a cheap client. With ``verify`` the packet
also goes on to aiortc's own path, is decoded by libvpx/libx264/libopus, and the decoded
frames are counted with their size: the proof that what was relayed is intact media.

The aiortc internals this needs (the receiver's RTP entry point, the sender's RTCP entry point
and packet counter) are reached through ``mediarelay.aiortc_hooks`` (``intercept_rtp``,
``intercept_rtcp``, ``packets_sent``), where every private name is listed and probed.
"""

from __future__ import annotations

import asyncio
import fractions
import random
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket, RtpPacket
from aiortc.sdp import SessionDescription

from loadtest.clip import Clip
from loadtest.rtp_stats import StreamStats
from mediarelay import aiortc_hooks
from mediarelay.aiortc_hooks import packets_sent

__all__ = ["ClipTrack", "DecodeCheck", "ReceiverTap", "answer_keyframe_requests", "packets_sent", "receive_codecs",
           "tap_receiver"]


class ClipTrack(MediaStreamTrack):
    """Replays a :class:`Clip`'s encoded frames in real time, looping, as ``av.Packet``."""

    def __init__(self, clip: Clip) -> None:
        super().__init__()
        self.kind = clip.kind
        self.clip = clip
        self._time_base = fractions.Fraction(1, clip.clock_rate)
        keys = sorted(clip.keyframes)
        # Start each sender at a random keyframe so many calls do not send keyframes in step.
        self._index = random.choice(keys) if keys else random.randrange(len(clip.frames))
        self._count = 0
        self._start: float | None = None  # when frame 0 was (or would have been) due
        self._origin: float | None = None  # when the first frame was sent: RTP time 0
        self._resume = asyncio.Event()
        self._resume.set()
        self._keyframe_wanted = False
        self.frames_sent = 0
        self.keyframe_requests = 0

    def request_keyframe(self) -> None:
        """Send the clip's next keyframe next (what an encoder does on PLI/FIR)."""
        self.keyframe_requests += 1
        self._keyframe_wanted = bool(self.clip.keyframes)

    def pause(self) -> None:
        """Stop handing out frames (the sender then sends nothing) until :meth:`resume`."""
        self._resume.clear()

    def resume(self) -> None:
        self._start = None
        self._resume.set()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        await self._resume.wait()
        now = time.monotonic()
        if self._start is None:  # first frame, or first after a pause
            self._start = now - self._count * self.clip.frame_seconds
        if self._origin is None:
            self._origin = now
        due = self._start + self._count * self.clip.frame_seconds
        if due > now:
            await asyncio.sleep(due - now)
        elif due < now - 1.0:  # the loop was starved: skip ahead rather than burst a backlog
            self._start = now - self._count * self.clip.frame_seconds
            due = now
        if self.readyState != "live":
            raise MediaStreamError
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            later = [k for k in sorted(self.clip.keyframes) if k >= self._index]
            self._index = later[0] if later else min(self.clip.keyframes)
        packet = av.Packet(self.clip.frames[self._index])
        # RTP time follows the wall clock (across pauses too), as a live source's does.
        packet.pts = round((due - self._origin) * self.clip.clock_rate)
        packet.time_base = self._time_base
        self._index = (self._index + 1) % len(self.clip.frames)
        self._count += 1
        self.frames_sent += 1
        return packet


def answer_keyframe_requests(sender: RTCRtpSender, track: ClipTrack) -> None:
    """Let PLI and FIR received for this sender reach its track (aiortc only tells an encoder)."""

    def on_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            track.request_keyframe()

    aiortc_hooks.intercept_rtcp(sender, on_rtcp)


def receive_codecs(sdp: str) -> dict[str, dict[int, tuple[str, int]]]:
    """Per m-line mid: payload type -> (codec name in lower case, clock rate) from an SDP."""
    codecs: dict[str, dict[int, tuple[str, int]]] = {}
    for media in SessionDescription.parse(sdp).media:
        if media.kind in ("audio", "video") and media.rtp.muxId is not None:
            codecs[media.rtp.muxId] = {c.payloadType: (c.mimeType.split("/")[1].lower(), c.clockRate)
                                       for c in media.rtp.codecs if c.payloadType is not None}
    return codecs


class ReceiverTap:
    """Counts one receiver's RTP; optionally lets it continue to aiortc's decoder."""

    def __init__(self, kind: str, codecs: dict[int, tuple[str, int]], verify: bool) -> None:
        media = [(name, rate) for name, rate in codecs.values() if name not in ("rtx", "red", "ulpfec")]
        name, rate = media[0] if media else ("unknown", 90_000)
        self.stats = StreamStats(kind=kind, codec=name, clock_rate=rate)
        self._rtx = {pt for pt, (n, _) in codecs.items() if n == "rtx"}
        self.verify = verify
        self.on_first: Callable[[], None] | None = None

    def handle(self, packet: RtpPacket, arrival: float) -> None:
        if packet.payload_type in self._rtx:
            self.stats.rtx_packets += 1
            return
        first = self.stats.first_arrival is None
        self.stats.on_packet(seq=packet.sequence_number, timestamp=packet.timestamp, ssrc=packet.ssrc,
                             marker=bool(packet.marker), payload=packet.payload, arrival=arrival)
        if first and self.on_first is not None:
            self.on_first()


def tap_receiver(receiver: RTCRtpReceiver, tap: ReceiverTap) -> None:
    """Route this receiver's RTP to ``tap`` (and, when verifying, on to aiortc's decoder)."""
    clock = time.monotonic
    aiortc_hooks.intercept_rtp(receiver, lambda packet: tap.handle(packet, clock()), then_aiortc=tap.verify)


class DecodeCheck:
    """Consumes a remote track decoded by aiortc (``--verify``): frames and picture sizes."""

    def __init__(self) -> None:
        self.frames: dict[str, int] = {"audio": 0, "video": 0}
        self.sizes: set[tuple[int, int]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def consume(self, track: Any) -> None:
        self._tasks.append(asyncio.create_task(self._run(track)))

    async def _run(self, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames[track.kind] += 1
            if track.kind == "video":
                self.sizes.add((frame.width, frame.height))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def summary(self) -> dict[str, Any]:
        return {"decoded_frames": dict(self.frames), "video_sizes": sorted(list(s) for s in self.sizes)}
