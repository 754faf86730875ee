"""One side of a call at the relay: an aiortc RTCPeerConnection facing one client.

A ``Leg`` owns its PeerConnection and everything that happens to it: remote SDP and
trickled candidates (buffered, bounded, until the remote description exists), the
transport state reported as ``leg.state``, and incoming RTP counted per m-line (reported as
``leg.media``) and dropped, never decoded. It does not know the other leg: pairing the two
and the SDP decisions belong to ``call.py``, ``negotiation.py`` and ``sdp.py``.

Reasons follow Janus (``janus_ice_webrtc_hangup``): "ICE failed", "DTLS alert" (the peer
closed or broke DTLS), "Close PC" (the relay closed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from aiortc import RTCBundlePolicy, RTCDtlsTransport, RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

from mediarelay import aiortc_hooks, simulcast_sdp
from mediarelay.ice import IcePolicy
from mediarelay.media_flow import MediaFlow
from mediarelay.sdp import SdpError
from mediarelay.simulcast_sdp import Simulcast
from shared.logs import call_log
from shared.messages import CLOSE_PC, DTLS_ALERT, ICE_FAILED, MEDIA_KINDS, LegMedia, LegName, LegState, Notification

log = logging.getLogger(__name__)

#: ``notify(model)``: how a leg reports ``leg.state`` / ``leg.media``; must not block.
Notify = Callable[[Notification], None]


#: Candidates kept for a leg that has no remote description yet.
MAX_PENDING_CANDIDATES = 128
#: How often the leg looks for m-lines that went quiet (a fraction of the 1 s timeout).
MEDIA_POLL_INTERVAL = 0.25
#: How long a close waits for the data channels' DTLS transport to end after its close_notify.
DTLS_END_TIMEOUT = 1.0


@dataclass
class LegSettings:
    """What ``set`` asked for this leg's outgoing media; applied by the call's media (``media.py``)."""

    audio: bool = True
    video: bool = True
    bitrate: int = 0


class Leg:
    """An aiortc PeerConnection for one client of a call, and what the relay reports about it."""

    def __init__(self, call_id: str, name: LegName, policy: IcePolicy, notify: Notify, *,
                 data_first: bool = False) -> None:
        self.call_id = call_id
        self.name: LegName = name
        self.policy = policy
        # One transport per leg: Janus 1.x bundles everything too. A data channel m-line first
        # needs aiortc's "always negotiate" mode, the only way it puts one before the media;
        # there, max-bundle would put the SCTP transport on the first transceiver's and the
        # answer's BUNDLE would then stop that shared transport (aiortc 1.16), so the leg
        # gathers per kind ("balanced") and keeps the data channel's transport, the first.
        self.pc = RTCPeerConnection(policy.rtc_configuration(
            bundlePolicy=RTCBundlePolicy.BALANCED if data_first else RTCBundlePolicy.MAX_BUNDLE,
            alwaysNegotiateDataChannels=data_first))
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.settings = LegSettings()
        #: What this leg's client simulcasts (the caller's first video m-line; ``simulcast_sdp``):
        #: the relay's SDP for it accepts the layers, and the fast path selects among them.
        self.simulcast: Simulcast | None = None
        #: Per m-line: is media flowing in from the client (``leg.media``).
        self.flows: list[MediaFlow] = []
        #: Told the SSRC of a relay sender that stops (its PC closes): the fast path's BYE.
        self.on_sender_stop: Callable[[int], None] | None = None
        #: Called on each change of the PC's connection state, after the leg has taken it into
        #: ``state`` and reported it: this leg is the PC's only listener, so whoever follows the
        #: state (the call's media) sees ``state`` already up to date.
        self.on_connection_state: Callable[[], None] | None = None
        self.state: Literal["new", "connected", "failed", "closed"] = "new"
        self._notify = notify
        self._loop = asyncio.get_running_loop()  # a leg is made inside the worker's loop
        self._pending: list[RTCIceCandidate | None] = []
        self._candidates_lock = asyncio.Lock()
        self._tapped: set[int] = set()
        self._watched: set[int] = set()
        self._ice_lost = False
        self._closing: str | None = None
        self._quiet = False
        self._close_task: asyncio.Future[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Leg {self.call_id}/{self.name} {self.state}>"

    @property
    def closed(self) -> bool:
        return self._close_task is not None or self.state == "closed"

    # --- SDP ----------------------------------------------------------------------------------

    async def set_remote(self, sdp: str, sdp_type: Literal["offer", "answer"],
                         parsed: SessionDescription | None = None) -> None:
        """Apply the client's SDP (already checked by ``sdp.parse``), then its buffered candidates.

        ``parsed``: that check's ``sdp.parse(sdp)``, which aiortc then takes instead of parsing
        the text again (``aiortc_hooks.set_remote_description``); the caller must not use it after.
        """
        try:
            await aiortc_hooks.set_remote_description(self.pc, RTCSessionDescription(sdp=sdp, type=sdp_type), parsed)
        except Exception as exc:  # noqa: BLE001 - aiortc raises ValueError and its own DOM errors
            log.info("call %s: %s leg refused the %s: %r", self.call_id, self.name, sdp_type, exc, extra=call_log(self.call_id))
            raise SdpError(f"the {sdp_type} was refused: {_sentence(exc)}") from None
        self._tap_receivers()
        self._watch_transports()
        pending, self._pending = self._pending, []
        await self._apply_candidates(pending, strict=False)  # each was checked when it came

    async def set_local(self, sdp_type: Literal["offer", "answer"], edit: Callable[[str], str] | None = None) -> str:
        """Create and set the relay's offer or answer; returns it as the client must see it.

        ``edit`` may change aiortc's SDP before it is set (a re-offer keeps negotiated codecs).
        A simulcasting client's layers are accepted (``simulcast_sdp.accept``: aiortc's SDP
        would refuse them), in what aiortc keeps as in what the client gets.
        """
        description = await (self.pc.createOffer() if sdp_type == "offer" else self.pc.createAnswer())
        text = edit(description.sdp) if edit is not None else description.sdp
        if self.simulcast is not None:
            text = simulcast_sdp.accept(text, self.simulcast)
        if text != description.sdp:
            description = RTCSessionDescription(sdp=text, type=description.type)
        await self.pc.setLocalDescription(description)
        self._tap_receivers()
        self._watch_transports()
        return self.local_sdp()

    def local_sdp(self) -> str:
        """The relay's SDP for this client: aiortc's (printed from what it parsed, which has no
        a=rid / a=simulcast lines: those are written again), as the ICE policy advertises it."""
        return self.policy.advertise(simulcast_sdp.accept(self.pc.localDescription.sdp, self.simulcast))

    def _tap_receivers(self) -> None:
        """Count-and-drop every receiver once it has a mid (no decoder ever starts), and idle its
        sender (the fast path sends for it: no encoder, no RTP or RTCP loop of aiortc's). Runs
        right after aiortc sets an SDP, before the task that starts senders and receivers."""
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            if transceiver.mid is None or id(receiver) in self._tapped:
                continue
            self._tapped.add(id(receiver))
            aiortc_hooks.idle_sender(transceiver.sender, self._sender_stopped)
            flow = MediaFlow(kind=transceiver.kind, mid=transceiver.mid)
            self.flows.append(flow)
            aiortc_hooks.tap_rtp(receiver, partial(self._on_rtp, flow))

    # --- candidates ---------------------------------------------------------------------------

    async def add_candidates(self, candidates: list[RTCIceCandidate | None]) -> None:
        """Apply trickled candidates (None = end of candidates), or keep them for later."""
        if self.closed:
            return
        if aiortc_hooks.session_descriptions(self.pc)[1] is None:  # not printed as SDP per trickle
            if len(self._pending) + len(candidates) > MAX_PENDING_CANDIDATES:
                raise SdpError(
                    f"too many candidates before the {self.name}'s SDP (at most {MAX_PENDING_CANDIDATES})")
            self._pending.extend(candidates)
            return
        await self._apply_candidates(candidates)

    async def _apply_candidates(self, candidates: list[RTCIceCandidate | None], *, strict: bool = True) -> None:
        # One batch at a time, so an end-of-candidates never overtakes candidates sent before it.
        async with self._candidates_lock:
            for candidate in candidates:
                try:
                    await self.pc.addIceCandidate(candidate)
                except Exception as exc:  # noqa: BLE001 - aiortc/aioice refuse a few the parser lets through
                    log.info("call %s: %s leg refused a candidate: %r", self.call_id, self.name, exc,
                             extra=call_log(self.call_id))
                    if strict:
                        raise SdpError(f"a candidate was refused: {_sentence(exc)}") from None

    # --- state --------------------------------------------------------------------------------

    def _on_connection_state(self) -> None:
        """The PC's only connection-state listener: first the leg's own ``state`` (and its
        report), then ``on_connection_state``, so that order never depends on listeners."""
        self._follow_connection_state()
        if self.on_connection_state is not None:
            try:
                self.on_connection_state()
            except Exception:  # a broken listener must not break aiortc's event handling
                log.exception("call %s: %s leg: following its connection state failed", self.call_id, self.name,
                              extra=call_log(self.call_id))

    def _follow_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self._report("connected")
        elif state == "failed":
            self._report("failed", ICE_FAILED if self.pc.iceConnectionState == "failed" else DTLS_ALERT)
        elif state == "closed" and self._closing is None and self._ice_lost:
            # The ICE agent gave up (consent expired, RFC 7675: the client vanished) and aiortc
            # closed the PC: an ICE failure, as Janus reports it, not a DTLS alert.
            self._report("failed", ICE_FAILED)
        elif state == "closed":
            # Closed without us asking: the client ended DTLS (close_notify), as Janus's "DTLS alert".
            self._report("closed", self._closing or DTLS_ALERT)

    def _watch_transports(self) -> None:
        """Tell a DTLS transport that ends because its ICE agent closed from one the client closed."""
        transports = [t.receiver.transport for t in self.pc.getTransceivers()]
        transports += [self.pc.sctp.transport] if self.pc.sctp is not None else []
        for dtls in transports:
            if id(dtls) not in self._watched:
                self._watched.add(id(dtls))
                dtls.on("statechange", partial(self._on_dtls_state, dtls))

    def _on_dtls_state(self, dtls: RTCDtlsTransport) -> None:
        if dtls.state == "closed" and self._closing is None and aiortc_hooks.ice_agent_closed(dtls):
            self._ice_lost = True

    def _report(self, state: Literal["connected", "failed", "closed"], reason: str = "") -> None:
        """Move to ``state`` and say so; a leg reports at most one end (failed or closed)."""
        if self.state == state or self.state in ("failed", "closed"):
            return
        self.state = state
        log.info("call %s: %s leg %s%s", self.call_id, self.name, state, f" ({reason})" if reason else "",
                 extra=call_log(self.call_id))
        if state == "connected":
            self._watch_task = asyncio.ensure_future(self._watch_media())
        elif self._watch_task is not None:
            # Let go of the task too: cancelled in its sleep, it keeps its CancelledError, whose
            # traceback holds the watch's frame and so this leg: one more cycle between a call's
            # end and the collection that frees it.
            self._watch_task.cancel()
            self._watch_task = None
        self._emit(LegState(call_id=self.call_id, leg=self.name, state=state, reason=reason))

    async def close(self, reason: str = CLOSE_PC, *, report: bool = True) -> None:
        """Close the PeerConnection (its sockets too); idempotent, concurrent calls wait for one close.

        ``report=False`` closes silently: a leg of a call that was never created.
        """
        if self._close_task is None:
            self._closing = reason
            self._quiet = not report
            self._pending.clear()
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        try:
            await self._end_sctp_dtls()
            await self.pc.close()
        except Exception:
            log.exception("call %s: closing the %s leg failed", self.call_id, self.name, extra=call_log(self.call_id))
        self._report("closed", self._closing or CLOSE_PC)

    async def _end_sctp_dtls(self) -> None:
        """End the data channels' DTLS (close_notify) before ``pc.close()`` aborts SCTP, as Janus
        does (``janus_ice_webrtc_hangup`` sends the DTLS alert first): a browser then ends its data
        channels quietly, where an SCTP ABORT makes each fire an error event while its page has
        not yet closed the PeerConnection (janus.js logs "Got error on data channel")."""
        dtls = self.pc.sctp.transport if self.pc.sctp is not None else None
        if dtls is None or dtls.state != "connected":
            return
        ended = asyncio.Event()
        dtls.on("statechange", lambda: ended.set() if dtls.state == "closed" else None)
        await dtls.stop()
        # Closed a loop turn later; until then aiortc's ABORT would write into the shut-down TLS.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), DTLS_END_TIMEOUT)

    # --- media --------------------------------------------------------------------------------

    def _on_rtp(self, flow: MediaFlow, packet: RtpPacket, arrival_ms: int) -> None:
        """Every RTP packet aiortc hands this leg (until the fast path takes the socket): counted, dropped."""
        if flow.on_packet(len(packet.payload), self._loop.time()):
            self._media(flow)

    async def _watch_media(self) -> None:
        while True:
            await asyncio.sleep(MEDIA_POLL_INTERVAL)
            now = self._loop.time()
            for flow in self.flows:
                if flow.poll(now):
                    self._media(flow)

    def _sender_stopped(self, ssrc: int) -> None:
        if self.on_sender_stop is not None:
            self.on_sender_stop(ssrc)

    def media_changed(self, flow: MediaFlow) -> None:
        """``flow`` started receiving: the fast path counts packets itself once it has the
        leg's socket, and calls this when ``flow.on_packet`` says so."""
        self._media(flow)

    def _media(self, flow: MediaFlow) -> None:
        if flow.kind not in MEDIA_KINDS:
            return
        log.info("call %s: %s leg %s mid %s receiving=%s", self.call_id, self.name, flow.kind,
                 flow.mid, flow.receiving, extra=call_log(self.call_id))
        self._emit(LegMedia(call_id=self.call_id, leg=self.name, kind=flow.kind,
                            mid=flow.mid, receiving=flow.receiving))

    def report(self, model: Notification) -> None:
        """Send a notification about this leg (one the call made: ``leg.simulcast``)."""
        self._emit(model)

    def _emit(self, model: Notification) -> None:
        if self._quiet:
            return
        try:
            self._notify(model)
        except Exception:  # a broken listener must not break aiortc's event handling
            log.exception("call %s: %s leg: notifying %s failed", self.call_id, self.name, model.METHOD,
                          extra=call_log(self.call_id))


def _sentence(exc: Exception) -> str:
    """aiortc's message when it is one (ValueError and DOM errors), else a generic one."""
    text = str(exc) if isinstance(exc, ValueError) or type(exc).__module__.startswith("aiortc") else ""
    text = text.strip().rstrip(".")
    return text[:200] if text and "\n" not in text else "it does not fit the negotiation"
