"""A call's media: the fast path of both legs, linked once both are connected, and the RTCP
the relay owes each client. The adapter between aiortc's events, the event loop's clock and
timers, and the pure pieces (``routes``, ``forwarder``, ``feedback``).

- When both legs are connected: the routes are read from both legs' SDP, each leg's sockets
  are tapped (``Port``), the streams linked, and each video sender is asked for a keyframe
  (as Janus does when a peer attaches). A leg that fails or closes unlinks everything.
- Every ``RTCP_INTERVAL`` each client gets the relay's compound RTCP: an SR per stream the
  relay sends it (counts and timestamps of what was forwarded), an RR with a report block
  per stream it sends (losses, jitter, LSR/DLSR), SDES, and while its ``bitrate`` is capped,
  a REMB (Janus sends one every second too).
- RTCP from a client: its NACKs answered from the history by RTX (a miss goes upstream,
  renumbered), PLI/FIR turned into a throttled PLI to the sender, REMB passed to the sender
  capped, SRs and report blocks kept for LSR/DLSR and the round trip.
- ``configure`` applies ``set``: audio/video of a *sender* stop or resume relaying that
  direction (resuming continues the numbering and asks for a keyframe), ``bitrate`` caps the
  REMB it hears.

Nothing here runs per packet except the callbacks the forwarder makes on a hole or a new
stream; all RTCP is sent synchronously on the leg's socket (no task per packet).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from mediarelay import aiortc_hooks, feedback, routes
from mediarelay.feedback import RttEstimator
from mediarelay.forwarder import HISTORY_SIZE, Counters, InStream, OutStream, Port
from mediarelay.inbound import InboundStream

if TYPE_CHECKING:
    from mediarelay.leg import Leg, LegSettings

log = logging.getLogger(__name__)

#: Seconds between the relay's compound RTCP reports to each client.
RTCP_INTERVAL = 1.0
#: Sent video kept to answer NACKs: this many seconds, or 4 round trips of the receiver if
#: longer (Janus keeps ``min_nack_queue``, 200 ms by default, longer with the RTT); the packet
#: count follows the stream's rate, at least ``MIN_HISTORY_PACKETS``, at most the ring.
HISTORY_SECONDS = 0.5
MIN_HISTORY_PACKETS = 16


@dataclass
class _Route:
    """A linked direction of one m-line: where packets come from and go to."""

    source: str
    sink: str
    inbound: InStream
    out: OutStream


class CallMedia:
    """The media of one call's two legs (``Call`` makes one and tells it about ``set``)."""

    def __init__(self, call_id: str, legs: dict[str, Leg]) -> None:
        self.call_id = call_id
        self.legs = legs
        self.counters = Counters()
        self.linked = False
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._wall_offset = time.time() - self._loop.time()
        self.ports: dict[str, Port] = {}
        self._routes: list[_Route] = []
        #: Kept across re-links so numbering stays continuous: by (leg, mid).
        self._outs: dict[tuple[str, str], OutStream] = {}
        self._ins: dict[tuple[str, str], InStream] = {}
        self._rtt = {name: RttEstimator() for name in legs}
        self._rtcp_ssrc: dict[str, int] = {}
        self._tick: asyncio.TimerHandle | None = None
        self._wake: asyncio.TimerHandle | None = None
        #: Per video OutStream: (packets sent, when) at the last tick, to size its history.
        self._history_marks: dict[OutStream, tuple[int, float]] = {}
        for name, leg in legs.items():
            leg.pc.on("connectionstatechange", partial(self._on_state, name))
            leg.on_sender_stop = partial(self._bye, name)

    def __repr__(self) -> str:
        return f"<CallMedia {self.call_id} linked={self.linked} {self.counters.as_dict()}>"

    # --- lifecycle --------------------------------------------------------------------------------

    def _on_state(self, name: str) -> None:
        state = self.legs[name].pc.connectionState
        if state == "connected":
            if not self.linked and all(leg.state == "connected" for leg in self.legs.values()):
                self.link()
        elif state in ("failed", "closed"):
            self.unlink()

    def link(self) -> None:
        """Tap both legs and forward between them, as both legs' SDP says (again after a
        renegotiation or an ICE restart: numbering continues)."""
        if self.closed or not all(leg.state == "connected" for leg in self.legs.values()):
            return
        now = self._loop.time()
        try:
            sections = {name: self._sections(leg) for name, leg in self.legs.items()}
            for name, leg in self.legs.items():
                self._connect_port(name, leg)
        except (ValueError, AttributeError) as exc:  # e.g. a restarted ICE agent not up yet: next time
            log.info("call %s: media not (re)linked now: %s", self.call_id, exc)
            return
        for port in self.ports.values():
            port.clear()
        self._routes = []
        (first, a), (second, b) = sections.items()
        for source, sink, plan in ((first, second, routes.plan(a, b)), (second, first, routes.plan(b, a))):
            for route in plan:
                self._add_route(source, sink, route)
        for name, leg_sections in sections.items():
            ssrc = next((s.local_ssrc for s in leg_sections if s.local_ssrc), None)
            self._rtcp_ssrc[name] = ssrc or random.getrandbits(32)
        first_link = not self.linked
        self.linked = True
        for linked in self._routes:
            self.apply(linked.source, self.legs[linked.source].settings)
            if first_link:
                self._keyframe(linked.inbound, now)
        if self._tick is None:
            self._tick = self._loop.call_later(RTCP_INTERVAL / 2, self._on_tick)
        log.info("call %s: media linked (%s)", self.call_id, ", ".join(
            f"{r.source}->{r.sink} {r.inbound.kind} {r.inbound.mid}->{r.out.mid}" for r in self._routes) or "nothing")

    def changed(self, what: str) -> None:
        """``Call.listeners``: a renegotiation or an ICE restart changed a leg: link again."""
        if self.linked:
            self.link()

    def _sections(self, leg: Leg) -> list[routes.Section]:
        # aiortc's own parsed descriptions: printing and parsing 4 SDPs was 3/4 of a link's time
        local, remote = aiortc_hooks.session_descriptions(leg.pc)
        if local is None or remote is None:
            raise ValueError(f"the {leg.name} leg has no SDP")
        return routes.sections(local, remote, local_is_answer=local.type == "answer")

    def _connect_port(self, name: str, leg: Leg) -> None:
        transceivers = [t for t in leg.pc.getTransceivers() if t.kind in routes.MEDIA_KINDS]
        if not transceivers:
            return
        dtls = transceivers[0].receiver.transport
        socket = aiortc_hooks.media_socket(dtls)
        port = self.ports.get(name)
        if port is None:
            port = self.ports[name] = Port(name, self.counters, self._loop.time, self._on_rtcp)
        port.connect(socket.srtp_rx, socket.srtp_tx, socket.sendto, socket.remote)
        aiortc_hooks.tap_datagrams(dtls, port.handler, port.tapped)
        for (leg_name, _), out in self._outs.items():
            if leg_name == name:
                port.feed(out)

    def _add_route(self, source: str, sink: str, route: routes.Route) -> None:
        sink_port, source_port = self.ports.get(sink), self.ports.get(source)
        if sink_port is None or source_port is None:
            return
        out = self._outs.get((sink, route.sink_mid))
        if out is None or out.ssrc != route.sink_ssrc:
            out = OutStream(route.kind, route.sink_mid, route.sink_ssrc, route.clock_rate, self.counters,
                            rtx_ssrc=route.sink_rtx_ssrc, rtx_payload_types=route.sink_rtx, cname=route.sink_cname,
                            seq_start=random.getrandbits(15), ts_start=random.getrandbits(32),
                            rtx_seq_start=random.getrandbits(15))
            self._outs[(sink, route.sink_mid)] = out
        else:
            out.rtx_ssrc, out.rtx_payload_types = route.sink_rtx_ssrc, route.sink_rtx
        sink_port.feed(out)
        leg = self.legs[source]
        inbound = self._ins.get((source, route.source_mid))
        if inbound is None:
            stream = next((s for s in leg.streams if s.mid == route.source_mid), None)
            if stream is None:
                stream = InboundStream(kind=route.kind, mid=route.source_mid)
                leg.streams.append(stream)
            inbound = InStream(route.kind, route.source_mid, route.clock_rate, stream, self.counters,
                               on_media=leg.media_changed, nack=route.nack)
            inbound.on_gap = partial(self._on_gap, source)
            self._ins[(source, route.source_mid)] = inbound
        inbound.link(out, route.payload_types, route.source_rtx, route.codec_names, route.extensions)
        source_port.add(inbound, route.source_ssrcs, route.source_rtx_ssrcs, list(route.payload_types),
                        list(route.source_rtx))
        self._routes.append(_Route(source, sink, inbound, out))

    def unlink(self) -> None:
        """Stop forwarding (a leg failed or closed): packets still arriving are only counted."""
        if not self.linked:
            return
        self.linked = False
        for route in self._routes:
            route.inbound.out = None
            route.out.disconnect()
        for port in self.ports.values():
            port.disconnect()
        self._cancel_timers()
        log.info("call %s: media unlinked %s", self.call_id, self.counters.as_dict())

    def close(self) -> None:
        self.closed = True
        self.unlink()
        self._cancel_timers()

    def _cancel_timers(self) -> None:
        for handle in (self._tick, self._wake):
            if handle is not None:
                handle.cancel()
        self._tick = self._wake = None

    # --- set ----------------------------------------------------------------------------------------

    def apply(self, sender: str, settings: LegSettings) -> None:
        """``set`` for the media ``sender`` sends: audio/video relayed or not, bitrate cap."""
        now = self._loop.time()
        for route in self._routes:
            if route.source != sender:
                continue
            stream = route.inbound
            enabled = settings.audio if stream.kind == "audio" else settings.video
            if enabled and not stream.enabled:
                # Resuming: the receiver sees the numbering go on and, for video, a keyframe soon.
                route.out.seq.sync()
                route.out.ts.sync()
                self._keyframe(stream, now)
            stream.enabled = enabled
        if settings.bitrate and self.linked:
            self._send_remb(sender)

    # --- timers -------------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        self._tick = None
        if not self.linked:
            return
        now = self._loop.time()
        try:
            for name in self.ports:
                self.ports[name].send_rtcp(self._report(name, now))
            self._service(now)
            self._size_histories(now)
        except Exception:
            log.exception("call %s: RTCP reports failed", self.call_id)
        self._tick = self._loop.call_later(RTCP_INTERVAL, self._on_tick)

    def _size_histories(self, now: float) -> None:
        """Each video history keeps what was sent in the last ``HISTORY_SECONDS`` (or 4 RTTs)."""
        for route in self._routes:
            out = route.out
            if out.history is None:
                continue
            last = self._history_marks.get(out)
            self._history_marks[out] = (out.packets, now)
            if last is not None and now > last[1]:
                rate = (out.packets - last[0]) / (now - last[1])
                seconds = max(HISTORY_SECONDS, 4 * self._rtt[route.sink].rtt)
                out.keep = min(HISTORY_SIZE - 1, max(MIN_HISTORY_PACKETS, math.ceil(rate * seconds)))

    def _report(self, name: str, now: float) -> bytes:
        """The compound RTCP for one leg's client: SRs, RR, SDES (and REMB under a cap)."""
        ntp = feedback.ntp_timestamp(now + self._wall_offset)
        parts = []
        cnames = {}
        for route in self._routes:
            out = route.out
            if route.sink == name and out.packets:
                parts.append(feedback.sender_report(out.ssrc, ntp, out.ts.at(now), out.packets, out.octets))
                self._rtt[name].sender_report_sent(ntp, now)
                cnames[out.ssrc] = out.cname
        blocks = [route.inbound.stats.report(route.inbound.ssrc, now) for route in self._routes
                  if route.source == name and route.inbound.ssrc is not None and route.inbound.stats.started]
        if blocks or not parts:
            parts.append(feedback.receiver_report(self._rtcp_ssrc[name], blocks))
        if cnames:
            parts.append(feedback.sdes(cnames))
        remb = self._remb(name)
        if remb is not None and self.legs[name].settings.bitrate:
            parts.append(remb)
        return b"".join(parts)

    def _service(self, now: float) -> None:
        """NACK retries and delayed or repeated PLIs that are due; wake again when the next is."""
        deadline = None
        for route in self._routes:
            stream, source = route.inbound, route.source
            rtt = self._rtt[source].rtt
            if stream.nack is not None and stream.nack and stream.ssrc is not None:
                again = stream.nack.due(now, rtt)
                if again:
                    self._send_nack(source, stream, again)
                when = stream.nack.deadline(rtt)
                deadline = when if deadline is None or (when is not None and when < deadline) else deadline
            if stream.keyframes is not None and stream.ssrc is not None:
                if stream.keyframes.due(now):
                    self._send_pli(source, stream)
                when = stream.keyframes.deadline()
                deadline = when if deadline is None or (when is not None and when < deadline) else deadline
        self._wake_at(deadline)

    def _wake_at(self, deadline: float | None) -> None:
        if deadline is None or not self.linked:
            return
        if self._wake is not None:
            if self._wake.when() <= deadline:
                return
            self._wake.cancel()
        self._wake = self._loop.call_at(deadline, self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        if self.linked:
            self._service(self._loop.time())

    # --- towards a sender ---------------------------------------------------------------------------

    def _on_gap(self, source: str, stream: InStream, seqs: list[int] | None, now: float) -> None:
        """The forwarder found a hole in what ``source`` sends: NACK it now (or ask a keyframe)."""
        if seqs is None:
            self._keyframe(stream, now)
        elif seqs and stream.ssrc is not None:
            self._send_nack(source, stream, seqs)
            if stream.nack is not None:
                self._wake_at(stream.nack.deadline(self._rtt[source].rtt))

    def _send_nack(self, source: str, stream: InStream, seqs: list[int]) -> None:
        port = self.ports.get(source)
        if port is not None and stream.ssrc is not None:
            port.send_rtcp(feedback.nack(self._rtcp_ssrc[source], stream.ssrc, seqs))

    def _keyframe(self, stream: InStream, now: float) -> None:
        if stream.keyframes is None:
            return
        if stream.keyframes.request(now):
            self._send_pli(self._source_of(stream), stream)
        self._wake_at(stream.keyframes.deadline())

    def _send_pli(self, source: str, stream: InStream) -> None:
        port = self.ports.get(source)
        if port is not None and stream.ssrc is not None:
            port.send_rtcp(feedback.pli(self._rtcp_ssrc[source], stream.ssrc))

    def _source_of(self, stream: InStream) -> str:
        return next(route.source for route in self._routes if route.inbound is stream)

    def _remb(self, sender: str) -> bytes | None:
        """REMB for ``sender``: its receiver's estimate under its cap, for its video streams."""
        cap = self.legs[sender].settings.bitrate
        video = [r for r in self._routes if r.source == sender and r.inbound.kind == "video"
                 and r.inbound.ssrc is not None]
        if not video:
            return None
        estimates = [r.out.estimate for r in video if r.out.estimate is not None]
        bitrate = feedback.capped_remb(min(estimates) if estimates else None, cap)
        if bitrate is None:
            return None
        return feedback.remb(self._rtcp_ssrc[sender], bitrate, [r.inbound.ssrc for r in video])  # type: ignore[misc]

    def _send_remb(self, sender: str) -> None:
        packet = self._remb(sender)
        port = self.ports.get(sender)
        if packet is not None and port is not None:
            port.send_rtcp(packet)

    def _bye(self, leg: str, ssrc: int) -> None:
        """A relay sender stops (its PC closes): BYE while the socket is up, then no more to it."""
        port = self.ports.get(leg)
        for route in self._routes:
            if route.sink == leg and route.out.ssrc == ssrc:
                if port is not None and route.out.packets:
                    port.send_rtcp(feedback.bye([ssrc]))
                route.out.disconnect()

    # --- RTCP from a client -------------------------------------------------------------------------

    def _on_rtcp(self, port: Port, plain: bytes, now: float) -> None:
        try:
            packets = feedback.parse(plain)
        except ValueError:
            self.counters.malformed += 1
            return
        name = port.name
        for packet in packets:
            if isinstance(packet, (RtcpSrPacket, RtcpRrPacket)):
                if isinstance(packet, RtcpSrPacket):
                    for route in self._routes:
                        if route.source == name and route.inbound.ssrc == packet.ssrc:
                            route.inbound.stats.on_sender_report(packet.sender_info.ntp_timestamp, now)
                for block in packet.reports:
                    self._rtt[name].report_block(block.lsr, block.dlsr, now)
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                self._on_nack(name, packet.media_ssrc, packet.lost)
            elif isinstance(packet, RtcpPsfbPacket):
                if packet.fmt == RTCP_PSFB_PLI:
                    self._on_keyframe_request(name, [packet.media_ssrc], now)
                elif packet.fmt == RTCP_PSFB_FIR:
                    fci = packet.fci
                    self._on_keyframe_request(name, [int.from_bytes(fci[i:i + 4], "big")
                                                     for i in range(0, len(fci) - 7, 8)], now)
                elif packet.fmt == RTCP_PSFB_APP:
                    self._on_remb(name, packet.fci)

    def _routes_to(self, sink: str, ssrcs: list[int]) -> list[_Route]:
        return [r for r in self._routes if r.sink == sink and r.out.ssrc in ssrcs]

    def _on_nack(self, sink: str, media_ssrc: int, lost: list[int]) -> None:
        for route in self._routes_to(sink, [media_ssrc]):
            missed = [seq for seq in lost if not route.out.retransmit(seq)]
            # Not in the history: it never reached the relay (or is old). Ask the sender, in its numbers.
            upstream = [s for s in (route.out.seq.source(seq) for seq in missed) if s is not None]
            if upstream:
                self._send_nack(route.source, route.inbound, upstream)

    def _on_keyframe_request(self, sink: str, ssrcs: list[int], now: float) -> None:
        for route in self._routes_to(sink, ssrcs):
            self._keyframe(route.inbound, now)

    def _on_remb(self, sink: str, fci: bytes) -> None:
        try:
            bitrate, ssrcs = unpack_remb_fci(fci)
        except ValueError:
            return
        senders = set()
        for route in self._routes_to(sink, ssrcs):
            route.out.estimate = bitrate
            senders.add(route.source)
        for sender in senders:
            self._send_remb(sender)

    # --- introspection ------------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        """Counters and, per linked direction, what was forwarded (tests, benchmark)."""
        return {
            "counters": self.counters.as_dict(),
            "routes": [{"source": r.source, "sink": r.sink, "kind": r.inbound.kind, "mid": r.inbound.mid,
                        "ssrc": r.inbound.ssrc, "enabled": r.inbound.enabled, "packets": r.out.packets,
                        "octets": r.out.octets, "estimate": r.out.estimate} for r in self._routes],
            "rtt": {name: est.rtt for name, est in self._rtt.items()},
        }
