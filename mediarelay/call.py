"""A call at the relay: the caller's leg and the callee's leg, and the SDP between them.

The relay is the answerer towards the caller and the offerer towards the callee, as in
Janus's VideoCall: the callee gets the caller's media (kinds, order, directions) with the
relay's ICE/DTLS, and the callee's answer decides the codecs of the whole call.

    call, callee_offer = await Call.create(call_id, caller_offer, policy=..., notify=...)
    caller_answer = await call.accept(callee_answer)
    await call.add_candidates("caller", [{"candidate": ..., "sdpMid": "0"}], completed=False)
    await call.record("caller", "recordings", "alice-call", on_state)   # what the caller sends
    await call.stop_recording("caller")
    await call.close("Explicit hangup")

Every SDP and candidate is checked before it touches a PeerConnection; a refusal is an
``SdpError`` (ValueError) with a sentence for the client, and a refused request changes
nothing. The callee's answer is carried over to the caller by ``negotiation.apply_answer``, as
every later answer is. ``media`` (``media.py``) forwards between the legs once both are
connected; this module does not forward media itself, it tells ``media`` what changed. A
renegotiation (``renegotiate``, see ``renegotiation.py``) may add ``pairs`` (caller m-line <->
callee m-line); after each one (pairs added, directions or codecs changed) the media links
again and ``listeners`` are told ``"renegotiated"``; ``"ice-restarted"`` when a leg's restarted
ICE agent takes over (its selected candidate pair changed).

A recording (``recorder.py``) follows the media of the user it records: each time the media
links, its tracks are attached to that leg's streams (a file opens for a medium a
renegotiation added, and closes for one it removed); a lost leg or the call's end closes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Literal

from aiortc import RTCIceCandidate

from mediarelay import aiortc_hooks, sdp, simulcast_sdp
from mediarelay.datachannels import DataChannelRelay
from mediarelay.forwarder import RecvStream
from mediarelay.ice import IcePolicy
from mediarelay.leg import Leg, Notify
from mediarelay.media import CallMedia
from mediarelay.negotiation import MediaPair, apply_answer
from mediarelay.recorder import OnState, Recorder
from mediarelay.renegotiation import Renegotiation
from mediarelay.sdp import SdpError
from mediarelay.simulcast import ChangeKind
from shared.logs import call_log
from shared.messages import CLOSE_PC, MEDIA_KINDS, LegName, LegSimulcast, RidOrder

log = logging.getLogger(__name__)


class Call:
    """Two legs of one call inside a worker. Build it with ``await Call.create(...)``."""

    def __init__(self, call_id: str, caller: Leg, callee: Leg, pairs: list[MediaPair]) -> None:
        self.call_id = call_id
        self.caller = caller
        self.callee = callee
        self.pairs = pairs
        #: Data channel messages relayed between the legs by label (``datachannels.py``).
        self.data = DataChannelRelay(call_id, {"caller": caller.pc, "callee": callee.pc})
        #: Called with "renegotiated" or "ice-restarted", after the media re-linked; must not block.
        self.listeners: list[Callable[[str], None]] = []
        #: Adds to ``pairs`` (the same list) and calls ``changed`` after each renegotiation.
        self.renegotiation = Renegotiation(call_id, {"caller": caller, "callee": callee}, pairs, self.changed)
        #: The media between the legs: forwarded without decoding once both are connected.
        self.media = CallMedia(call_id, {"caller": caller, "callee": callee})
        #: What each user's recording is (one at most per leg), and the streams it is attached to.
        self.recordings: dict[LegName, Recorder] = {}
        self._recorded: dict[LegName, list[RecvStream]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self.media.on_simulcast = self._simulcast_changed
        self.media.on_linked = self._follow_recordings
        self.media.on_unlinked = self._lose_recordings
        for leg in (caller, callee):
            leg.on_connection_state = partial(self._connection_changed, leg.name)
            leg.on_sender_stop = partial(self.media.sender_stopped, leg.name)
        self.accepted = False
        self._accepting = False
        self._closing: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<Call {self.call_id} caller={self.caller.state} callee={self.callee.state}>"

    @property
    def closed(self) -> bool:
        return self._closing is not None

    def leg(self, name: object) -> Leg:
        if name == "caller":
            return self.caller
        if name == "callee":
            return self.callee
        raise ValueError("leg must be 'caller' or 'callee'")

    @classmethod
    async def create(cls, call_id: str, caller_offer: str, *, policy: IcePolicy,
                     notify: Notify, rid_order: RidOrder = "hml") -> tuple[Call, str]:
        """Set the caller's offer on the caller leg and offer the same media to the callee.

        ``rid_order``: how the offer lists rid simulcast layers (the jsep's, as Janus reads it).
        Returns the call and the relay's offer for the callee. SdpError if the offer is refused.
        """
        parsed = sdp.parse(caller_offer, "offer")
        lines = sdp.plan_offer(parsed)
        simulcast = simulcast_sdp.read_offer(caller_offer, rid_order)
        data = [line for line in lines if line.kind == "application"]
        caller = Leg(call_id, "caller", policy, notify)
        caller.simulcast = simulcast  # the callee is offered one plain stream (aiortc's own offer)
        callee = Leg(call_id, "callee", policy, notify, data_first=bool(data) and lines[0].kind == "application")
        try:
            await caller.set_remote(caller_offer, "offer", parsed)  # aiortc takes the parse: not read after
            for line in lines:
                if line.kind in MEDIA_KINDS:
                    transceiver = callee.pc.addTransceiver(line.kind, direction=line.direction)
                    transceiver.setCodecPreferences(list(line.codecs))
            if data and lines[0].kind != "application":
                aiortc_hooks.add_sctp_transport(callee.pc)  # after the media, as the caller has it
            callee_offer = await callee.set_local("offer")
        except BaseException:
            await asyncio.gather(caller.close(report=False), callee.close(report=False))
            raise
        media = list(caller.pc.getTransceivers())
        mirrored = list(callee.pc.getTransceivers())
        pairs = [MediaPair(a.kind, a, b) for a, b in zip(media, mirrored, strict=True)]
        log.info("call %s: created (%s%s)", call_id, ", ".join(f"{line.kind} {line.direction}" for line in lines),
                 f"; caller simulcasts {simulcast.count} layers by {simulcast.form}" if simulcast else "",
                 extra=call_log(call_id))
        return cls(call_id, caller, callee, pairs), callee_offer

    async def accept(self, callee_answer: str) -> str:
        """Apply the callee's answer, then answer the caller with the codecs the callee chose.

        Returns the relay's answer for the caller. SdpError if the answer is refused (the
        call is then unchanged, and the callee may answer again).
        """
        if self.closed:
            raise ValueError("the call is over")
        if self.accepted or self._accepting:
            raise ValueError("the call was already accepted")
        self._accepting = True
        try:
            return await self._accept(callee_answer)
        except Exception:
            if self.closed:  # hung up meanwhile: whatever aiortc said, that is the reason
                raise ValueError("the call was hung up while being accepted") from None
            raise
        finally:
            self._accepting = False

    async def _accept(self, callee_answer: str) -> str:
        caller_answer, agreed = await apply_answer(
            callee_answer, answerer=self.callee, offerer=self.caller,
            lines=[(pair.caller, pair.callee) for pair in self.pairs], offered_by="the caller")
        self.accepted = True
        log.info("call %s: accepted (%s)", self.call_id, agreed, extra=call_log(self.call_id))
        return caller_answer

    async def renegotiate(self, leg: LegName, sdp_type: str, sdp_text: str, restart: bool = False,
                          rid_order: RidOrder = "hml") -> str:
        """A client's new offer (-> the relay's offer for the other client) or its answer to the
        relay's mirrored offer (-> the relay's answer for the client that offered)."""
        if self._accepting:
            raise ValueError("the call is being accepted")
        self.leg(leg)
        if sdp_type == "offer":
            self._check_renegotiable()
            return await self.renegotiation.offer(leg, sdp_text, restart, rid_order)
        if sdp_type == "answer":
            self._check_renegotiable()
            return await self.renegotiation.answer(leg, sdp_text)
        raise SdpError("a renegotiation SDP must be an offer or an answer")

    def _check_renegotiable(self) -> None:
        if self.closed:
            raise ValueError("the call is over")
        if not self.accepted:
            raise ValueError("the call is not accepted yet: there is nothing to renegotiate")

    def _connection_changed(self, name: LegName) -> None:
        """A leg's PC changed connection state; the leg has already updated and reported its
        ``state``, and the media follows it now (links once both legs are connected)."""
        self.media.connection_changed(name)

    def _simulcast_changed(self, receiver: str, codec: str, kind: ChangeKind, value: int) -> None:
        """The fast path changed what ``receiver`` gets of its simulcasting peer: ``leg.simulcast``."""
        leg = self.leg(receiver)
        layer = {"substream": value} if kind == "substream" else {"temporal": value}
        leg.report(LegSimulcast(call_id=self.call_id, leg=leg.name, videocodec=codec.lower()[:16], **layer))

    def changed(self, what: str) -> None:
        """A renegotiation or an ICE restart changed a leg: the media links again first, then
        the ``listeners`` hear ``what``."""
        for listener in (self.media.changed, *self.listeners):
            try:
                listener(what)
            except Exception:  # a broken listener must not break the call
                log.exception("call %s: a listener failed on %s", self.call_id, what, extra=call_log(self.call_id))

    async def add_candidates(self, leg: LegName, candidates: Sequence[Mapping[str, object]],
                             completed: bool = False) -> None:
        """Trickled candidates for a leg, as janus.js sends them; all are checked first."""
        target = self.leg(leg)
        if len(candidates) > 64:
            raise SdpError("too many candidates in one trickle (at most 64)")
        parsed: list[RTCIceCandidate | None] = []
        for item in candidates:
            if not isinstance(item, Mapping):
                raise SdpError("a candidate must be an object with candidate, sdpMid and sdpMLineIndex")
            parsed.append(sdp.parse_candidate(item.get("candidate"), item.get("sdpMid"), item.get("sdpMLineIndex")))
        if completed:
            parsed.append(None)
        await target.add_candidates(parsed)

    def configure(self, leg: LegName, audio: bool | None = None, video: bool | None = None,
                  bitrate: int | None = None, *, substream: int | None = None, temporal: int | None = None,
                  fallback: int | None = None, auto: bool | None = None) -> None:
        """``set`` for the media this leg sends: relayed or not (audio, video), REMB cap (bitrate);
        and for what it receives of a simulcasting peer: substream, temporal layer, fallback (µs),
        automatic choice (``media.configure_simulcast``: kept until the media links)."""
        for name, value in (("substream", substream), ("temporal", temporal)):
            if value is not None and not 0 <= value <= 2:
                raise ValueError(f"{name} must be 0, 1 or 2")
        if fallback is not None and fallback < 0:
            raise ValueError("fallback must not be negative")
        if (substream, temporal, fallback, auto) != (None, None, None, None):
            self.media.configure_simulcast(self.leg(leg).name, substream=substream, temporal=temporal,
                                           fallback=fallback, auto=auto)
        settings = self.leg(leg).settings
        if audio is not None:
            settings.audio = audio
        if video is not None:
            settings.video = video
        if bitrate is not None:
            if bitrate < 0:
                raise ValueError("bitrate must not be negative")
            settings.bitrate = bitrate
        self.media.apply(leg, settings)

    # --- recording ----------------------------------------------------------------------------

    async def record(self, leg: LegName, recordings_dir: str, base: str, on_state: OnState) -> None:
        """Start recording what ``leg``'s user sends into ``<base>-<kind>.mjr`` inside
        ``recordings_dir``; nothing changes if it is recorded already (as in Janus).
        ``recording_files.RecordingRefused`` (nothing created) when the files cannot be opened."""
        self.leg(leg)
        if self.closed:
            raise ValueError("the call is over")
        current = self.recordings.get(leg)
        if current is not None and current.active:
            return

        def state_changed(state: str, files: list[str], reason: str) -> None:
            if state != "started":
                self._detach_recording(leg)
                if self.recordings.get(leg) is recorder:
                    del self.recordings[leg]
            on_state(state, files, reason)

        recorder = self.recordings[leg] = Recorder(f"{self.call_id}/{leg}", recordings_dir, base, state_changed)
        try:
            await recorder.start(self._recorded_kinds(leg))
        except BaseException:
            if self.recordings.get(leg) is recorder:
                del self.recordings[leg]
            raise
        if recorder.state == "recording":
            self._attach_recording(leg, recorder)

    async def stop_recording(self, leg: LegName) -> None:
        """Flush and close ``leg``'s recording at once (``record: false``); fine when there is none."""
        recorder = self.recordings.pop(self.leg(leg).name, None)
        if recorder is not None:
            self._detach_recording(leg)
            await recorder.close()

    def _recorded_kinds(self, leg: LegName) -> list[Literal["audio", "video", "data"]]:
        """What ``leg``'s client sends now: its linked streams (or, before the media links, its
        m-lines that send to the relay), and data when the leg has a data channel transport."""
        kinds: list[Literal["audio", "video", "data"]] = []
        if self.media.linked:
            sent = [link.recv_stream.kind for link in self.media.links if link.source == leg]
        else:
            sent = [t.kind for t in self.leg(leg).pc.getTransceivers()
                    if t.currentDirection in ("sendrecv", "recvonly")]
        for kind in ("audio", "video"):
            if kind in sent:
                kinds.append(kind)
        if self.leg(leg).pc.sctp is not None:
            kinds.append("data")
        return kinds

    def _follow_recordings(self) -> None:
        """The media (re)linked: each recording follows its user's streams."""
        for leg, recorder in list(self.recordings.items()):
            if recorder.state == "recording":
                self._attach_recording(leg, recorder)

    def _attach_recording(self, leg: LegName, recorder: Recorder) -> None:
        self._detach_recording(leg)
        # Per kind, the streams of the first m-line: one, or a simulcast one's substreams (each
        # records what it gets forwarded: the relayed substream, as Janus records).
        streams: dict[str, list[RecvStream]] = {}
        for link in self.media.links:
            if link.source == leg:
                first = streams.setdefault(link.recv_stream.kind, [link.recv_stream])
                if link.recv_stream not in first and link.recv_stream.mid == first[0].mid:
                    first.append(link.recv_stream)
        if self.media.linked:
            for kind in [k for k in recorder.tracks if k != "data" and k not in streams]:
                recorder.remove(kind)  # its m-line went away
        loop = asyncio.get_running_loop()
        attached = self._recorded[leg] = []
        for kind, kind_streams in streams.items():
            track = recorder.add(kind)  # type: ignore[arg-type]
            if track is None:
                continue
            track.codec_names = kind_streams[0].codec_names
            for stream in kind_streams:
                stream.record = track.rtp
                attached.append(stream)
            if kind == "video" and not track.asked_keyframe:  # so the file starts decodable (Janus: a PLI)
                track.asked_keyframe = True
                for stream in kind_streams:
                    selector = stream.selector
                    if selector is None or selector.substream in (None, stream.layer):
                        self.media.rtcp.keyframe(stream, loop.time())
        if self.leg(leg).pc.sctp is not None:
            data = recorder.add("data")
            if data is not None:
                self.data.record[leg] = lambda message: data.message(message, loop.time())

    def _detach_recording(self, leg: LegName) -> None:
        for stream in self._recorded.pop(leg, []):
            stream.record = None
        self.data.record.pop(leg, None)

    def _lose_recordings(self) -> None:
        """A leg failed or closed: the recordings end (their files stay valid)."""
        for leg in list(self.recordings):
            task = asyncio.ensure_future(self.stop_recording(leg))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def close(self, reason: str = CLOSE_PC) -> None:
        """Close both legs (each reports ``closed`` with ``reason`` unless it already ended); idempotent."""
        if self._closing is None:
            log.info("call %s: closing (%s)", self.call_id, reason, extra=call_log(self.call_id))
            self._closing = asyncio.ensure_future(self._close(reason))
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        await asyncio.gather(*(self.stop_recording(leg) for leg in list(self.recordings)), *self._stopping)
        await self.renegotiation.close()  # first: a PC closing under a restart waits for its old agent
        await asyncio.gather(self.caller.close(reason), self.callee.close(reason))
        self.media.close()
