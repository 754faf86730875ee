"""The RTCP the relay owes each client of a call, and what it does with the RTCP they send.

The relay terminates RTCP on each leg, as Janus does: each hop has its own reports, losses
and round trip. This is the adapter between the event loop (clock, timers, the legs' ports)
and the pure pieces of ``feedback.py``; ``CallMedia`` (``media.py``) links the streams and
starts and stops it, and it never links or unlinks anything itself.

- Every ``RTCP_INTERVAL`` each client gets the relay's compound RTCP: an SR per
  ``SendStream`` to it (counts and timestamps of what was forwarded), an RR with a report
  block per ``RecvStream`` from it (losses, jitter, LSR/DLSR), SDES, and while its
  ``bitrate`` is capped or it simulcasts, a REMB (Janus answers each REMB a client sends,
  about one a second, with one of its cap, or 10 Mbit/s without).
- RTCP from a client: its NACKs answered from the history by RTX (a miss goes upstream,
  renumbered), PLI/FIR turned into a throttled PLI to the sender, REMB passed to the sender
  capped, SRs and report blocks kept for LSR/DLSR and the round trip.
- Towards a sender: NACKs for the holes the forwarder finds (``on_gap``) and their retries,
  keyframe requests and their retries, a BYE when a relay sender stops.
- Each video ``SendStream`` keeps as much history as NACKs can still ask for.

Nothing here runs per packet except ``on_gap`` on a hole; all RTCP is sent synchronously on
the leg's socket (no task per packet).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Mapping

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

from mediarelay import feedback
from mediarelay.feedback import RttEstimator
from mediarelay.forwarder import Counters, RecvStream, SendStream
from mediarelay.layer_policy import LayerPolicy
from mediarelay.leg import LegSettings
from mediarelay.port import Link, Port
from mediarelay.simulcast import SimulcastSelector
from shared.logs import call_log

log = logging.getLogger(__name__)

#: Seconds between the relay's compound RTCP reports to each client.
RTCP_INTERVAL = 1.0
#: Sent video kept to answer NACKs: this many seconds, or 4 round trips of the receiver if
#: longer; the packet count follows the stream's rate, at least ``MIN_HISTORY_PACKETS``, at
#: most the ring. Janus's floor (``min_nack_queue``, 200 ms by default, longer with the RTT): a
#: receiver NACKs a hole about one RTT after it, so 4 RTTs leave room for retries. The history
#: is the largest Python item of a call (each packet ~1.1 kB): 0.5 s of 800 kbit/s video was
#: ~110 kB a call, ~45 kB at 0.2 s (``bench/memory_probe.py --during``).
HISTORY_SECONDS = 0.2
MIN_HISTORY_PACKETS = 16
#: The REMB a simulcasting sender hears without a ``bitrate`` cap: Janus's "no limit" (its
#: VideoCall sends ``bitrate ? bitrate : 10000000``). Chromium trusts a REMB in the first
#: 2 s of a call and starts its send-side estimate there (else it ramps up on its own by
#: about 8% a second and its top substream waits 20 s); later a REMB only caps it.
SIMULCAST_REMB = 10_000_000


class CallRtcp:
    """The relay's RTCP on both legs of one call.

    ``links`` and ``ports`` are ``CallMedia``'s own list and dict, read as they change;
    ``settings`` is each leg's ``set`` (its ``bitrate`` caps the REMB that leg hears).
    """

    def __init__(self, call_id: str, links: list[Link], ports: dict[str, Port],
                 settings: Mapping[str, LegSettings], counters: Counters) -> None:
        self.call_id = call_id
        self.links = links
        self.ports = ports
        self.settings = settings
        self.counters = counters
        self.running = False
        self._loop = asyncio.get_running_loop()
        self._wall_offset = time.time() - self._loop.time()
        self._rtt = {name: RttEstimator() for name in settings}
        #: The relay's SSRC in the RTCP it sends each leg (RR, REMB, NACK, PLI).
        self._ssrc: dict[str, int] = {}
        self._tick: asyncio.TimerHandle | None = None
        self._wake: asyncio.TimerHandle | None = None
        #: Per leg: packets the relay asked its client again, packets its client asked again,
        #: and those answered from the history (the Admin API's ``handle_info``).
        self.nacks_sent = dict.fromkeys(settings, 0)
        self.nacks_received = dict.fromkeys(settings, 0)
        self.retransmitted = dict.fromkeys(settings, 0)
        #: Per video SendStream: (packets sent, when) at the last tick, to size its history.
        self._history_marks: dict[SendStream, tuple[int, float]] = {}
        #: Per simulcast selector: the automatic choice for its receiver, and the substreams'
        #: octet counts at the last tick (their bitrates).
        self._policies: dict[SimulcastSelector, LayerPolicy] = {}
        self._octet_marks: dict[RecvStream, tuple[int, float]] = {}

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self, local_ssrcs: Mapping[str, int | None]) -> None:
        """The streams are linked (again): send with each leg's first relay sender SSRC (a
        random one without), report every ``RTCP_INTERVAL`` from half an interval on."""
        for name, ssrc in local_ssrcs.items():
            self._ssrc[name] = ssrc or random.getrandbits(32)
        self.running = True
        if self._tick is None:
            self._tick = self._loop.call_later(RTCP_INTERVAL / 2, self._on_tick)

    def stop(self) -> None:
        """The streams are unlinked: no more reports, retries or keyframe requests."""
        self.running = False
        for handle in (self._tick, self._wake):
            if handle is not None:
                handle.cancel()
        self._tick = self._wake = None

    @property
    def rtt(self) -> dict[str, float]:
        """Each leg's round trip (seconds), as its RTCP shows it."""
        return {name: estimator.rtt for name, estimator in self._rtt.items()}

    def measured_rtt(self, name: str) -> float | None:
        """Leg ``name``'s round trip (seconds) once a report showed one, else None."""
        estimator = self._rtt.get(name)
        return estimator.rtt if estimator is not None and estimator.measured else None

    # --- timers -------------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        self._tick = None
        if not self.running:
            return
        now = self._loop.time()
        try:
            for name in self.ports:
                self.ports[name].send_rtcp(self._report(name, now))
            self._service(now)
            self._size_histories(now)
            self._measure_substreams(now)
        except Exception:
            log.exception("call %s: RTCP reports failed", self.call_id, extra=call_log(self.call_id))
        self._tick = self._loop.call_later(RTCP_INTERVAL, self._on_tick)

    def _sending(self) -> list[Link]:
        """One link per ``SendStream`` (a simulcast one is fed by a link per substream)."""
        seen: set[int] = set()
        result = []
        for link in self.links:
            if id(link.send_stream) not in seen:
                seen.add(id(link.send_stream))
                result.append(link)
        return result

    def _size_histories(self, now: float) -> None:
        """Each video history keeps what was sent in the last ``HISTORY_SECONDS`` (or 4 RTTs)."""
        for link in self._sending():
            send_stream = link.send_stream
            if send_stream.history is None:
                continue
            last = self._history_marks.get(send_stream)
            self._history_marks[send_stream] = (send_stream.packets, now)
            if last is not None and now > last[1]:
                rate = (send_stream.packets - last[0]) / (now - last[1])
                seconds = max(HISTORY_SECONDS, 4 * self._rtt[link.sink].rtt)
                send_stream.resize(max(MIN_HISTORY_PACKETS, math.ceil(rate * seconds)))

    # --- automatic simulcast choice ----------------------------------------------------------------

    def _policy(self, selector: SimulcastSelector, sink: str, now: float) -> LayerPolicy:
        policy = self._policies.get(selector)
        if policy is None:
            policy = self._policies[selector] = LayerPolicy(selector.layers, now)
        policy.cap = self.settings[sink].bitrate
        return policy

    def _choose(self, selector: SimulcastSelector, policy: LayerPolicy, now: float) -> None:
        if policy.choice != selector.auto_substream:
            rates = {i: round(r) for i, r in sorted(policy.rates.items())}
            expected = {i: round(e) for i in policy.layers if (e := policy.expected(i)) is not None}
            log.info("call %s: automatic simulcast choice: substream %d (%s; estimate %s, cap %d, rates %s, "
                     "expected %s)", self.call_id, policy.choice, policy.reason, policy.estimate, policy.cap, rates,
                     expected, extra=call_log(self.call_id))
        selector.set_auto_target(policy.choice, now)  # acts only while the receiver has not pinned one

    def cap_changed(self, leg: str) -> None:
        """``leg``'s ``bitrate`` changed: the automatic choice of what it receives follows at
        once (not at the next measurement)."""
        now = self._loop.time()
        for selector, policy in list(self._policies.items()):
            sink = next((link.sink for link in self.links if link.recv_stream.selector is selector), None)
            if sink == leg:
                policy.set_cap(self.settings[leg].bitrate, now)
                self._choose(selector, policy, now)

    def _measure_substreams(self, now: float) -> None:
        """Each simulcast substream's bitrate since the last tick, to its selector's policy."""
        rates: dict[SimulcastSelector, tuple[str, dict[int, float]]] = {}
        for link in self.links:
            stream = link.recv_stream
            if stream.selector is None:
                continue
            last = self._octet_marks.get(stream)
            self._octet_marks[stream] = (stream.octets, now)
            entry = rates.setdefault(stream.selector, (link.sink, {}))
            if last is not None and now > last[1]:
                entry[1][stream.layer] = 8 * (stream.octets - last[0]) / (now - last[1])
        for selector, (sink, layer_rates) in rates.items():
            policy = self._policy(selector, sink, now)
            policy.on_rates(layer_rates, now)
            self._choose(selector, policy, now)

    def _report(self, name: str, now: float) -> bytes:
        """The compound RTCP for one leg's client: SRs, RR, SDES (and REMB under a cap)."""
        ntp = feedback.ntp_timestamp(now + self._wall_offset)
        parts = []
        cnames = {}
        for link in self._sending():
            send_stream = link.send_stream
            if link.sink == name and send_stream.packets:
                parts.append(feedback.sender_report(send_stream.ssrc, ntp, send_stream.ts.at(now),
                                                    send_stream.packets, send_stream.octets))
                self._rtt[name].sender_report_sent(ntp, now)
                cnames[send_stream.ssrc] = send_stream.cname
        blocks = [link.recv_stream.stats.report(link.recv_stream.ssrc, now) for link in self.links
                  if link.source == name and link.recv_stream.ssrc is not None and link.recv_stream.stats.started]
        if blocks or not parts:
            parts.append(feedback.receiver_report(self._ssrc[name], blocks))
        if cnames:
            parts.append(feedback.sdes(cnames))
        remb = self._remb(name)
        if remb is not None and (self.settings[name].bitrate or self._simulcasting(name)):
            parts.append(remb)
        return b"".join(parts)

    def _service(self, now: float) -> None:
        """NACK retries and delayed or repeated PLIs that are due; wake again when the next is."""
        deadline = None
        for link in self.links:
            stream, source = link.recv_stream, link.source
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
        if deadline is None or not self.running:
            return
        if self._wake is not None:
            if self._wake.when() <= deadline:
                return
            self._wake.cancel()
        self._wake = self._loop.call_at(deadline, self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        if self.running:
            self._service(self._loop.time())

    # --- towards a sender ---------------------------------------------------------------------------

    def on_gap(self, source: str, stream: RecvStream, seqs: list[int] | None, now: float) -> None:
        """The forwarder found a hole in what ``source`` sends: NACK it now (or ask a keyframe)."""
        if seqs is None:
            self.keyframe(stream, now)
        elif seqs and stream.ssrc is not None:
            self._send_nack(source, stream, seqs)
            if stream.nack is not None:
                self._wake_at(stream.nack.deadline(self._rtt[source].rtt))

    def keyframe(self, stream: RecvStream, now: float) -> None:
        """Ask the client sending ``stream`` for a keyframe (throttled, retried until one comes)."""
        if stream.keyframes is None:
            return
        if stream.keyframes.request(now):
            self._send_pli(self._source_of(stream), stream)
        self._wake_at(stream.keyframes.deadline())

    def send_remb(self, sender: str) -> None:
        """Tell ``sender`` its cap now (``set`` changed it), not at the next report."""
        packet = self._remb(sender)
        port = self.ports.get(sender)
        if packet is not None and port is not None:
            port.send_rtcp(packet)

    def bye(self, leg: str, ssrc: int) -> None:
        """A relay sender stops (its PC closes): BYE while the socket is up, then no more to it."""
        port = self.ports.get(leg)
        for link in self._sending():
            if link.sink == leg and link.send_stream.ssrc == ssrc:
                if port is not None and link.send_stream.packets:
                    port.send_rtcp(feedback.bye([ssrc]))
                link.send_stream.disconnect()

    def _send_nack(self, source: str, stream: RecvStream, seqs: list[int]) -> None:
        port = self.ports.get(source)
        if port is not None and stream.ssrc is not None:
            port.send_rtcp(feedback.nack(self._ssrc[source], stream.ssrc, seqs))
            self.nacks_sent[source] = self.nacks_sent.get(source, 0) + len(seqs)

    def _send_pli(self, source: str, stream: RecvStream) -> None:
        port = self.ports.get(source)
        if port is not None and stream.ssrc is not None:
            port.send_rtcp(feedback.pli(self._ssrc[source], stream.ssrc))

    def _source_of(self, stream: RecvStream) -> str:
        return next(link.source for link in self.links if link.recv_stream is stream)

    def _remb(self, sender: str) -> bytes | None:
        """REMB for ``sender``: its receiver's estimate under its cap, for its video streams."""
        cap = self.settings[sender].bitrate
        video = [link for link in self.links if link.source == sender and link.recv_stream.kind == "video"
                 and link.recv_stream.ssrc is not None]
        if not video:
            return None
        # A simulcast sender is not told its receiver's estimate: that is for one substream, and
        # the sender would drop its upper ones (the estimate chooses the substream instead). It
        # is told enough for all its substreams, as Janus tells every sender (below its cap).
        estimates = [link.send_stream.estimate for link in video
                     if link.send_stream.estimate is not None and link.recv_stream.selector is None]
        if not estimates and any(link.recv_stream.selector is not None for link in video):
            estimates = [SIMULCAST_REMB]
        bitrate = feedback.capped_remb(min(estimates) if estimates else None, cap)
        if bitrate is None:
            return None
        return feedback.remb(self._ssrc[sender], bitrate, [link.recv_stream.ssrc for link in video])  # type: ignore[misc]

    # --- RTCP from a client -------------------------------------------------------------------------

    def on_rtcp(self, port: Port, plain: bytes, now: float) -> None:
        """Compound RTCP (plain) from the client of ``port``'s leg."""
        try:
            packets = feedback.parse(plain)
        except ValueError:
            self.counters.malformed += 1
            return
        name = port.name
        for packet in packets:
            if isinstance(packet, (RtcpSrPacket, RtcpRrPacket)):
                if isinstance(packet, RtcpSrPacket):
                    for link in self.links:
                        if link.source == name and link.recv_stream.ssrc == packet.ssrc:
                            link.recv_stream.stats.on_sender_report(packet.sender_info.ntp_timestamp, now)
                for block in packet.reports:
                    self._rtt[name].report_block(block.lsr, block.dlsr, now)
                    self._on_report_block(name, block.ssrc, block.fraction_lost, now)
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
                    self._on_remb(name, packet.fci, now)

    def _simulcasting(self, sender: str) -> bool:
        return any(link.source == sender and link.recv_stream.selector is not None for link in self.links)

    def _links_to(self, sink: str, ssrcs: list[int]) -> list[Link]:
        """The links feeding ``sink`` on these SSRCs; of a simulcast one, the forwarded
        substream's link alone (the one aimed at while none is forwarded yet)."""
        return [link for link in self.links if link.sink == sink and link.send_stream.ssrc in ssrcs
                and _feeds(link)]

    def _on_nack(self, sink: str, media_ssrc: int, lost: list[int]) -> None:
        self.nacks_received[sink] = self.nacks_received.get(sink, 0) + len(lost)
        for link in self._links_to(sink, [media_ssrc]):
            missed = [seq for seq in lost if not link.send_stream.retransmit(seq)]
            self.retransmitted[sink] = self.retransmitted.get(sink, 0) + len(lost) - len(missed)
            # Not in the history: it never reached the relay (or is old). Ask the sender, in its numbers.
            upstream = [s for s in (link.send_stream.seq.source(seq) for seq in missed) if s is not None]
            if upstream:
                self._send_nack(link.source, link.recv_stream, upstream)

    def _on_keyframe_request(self, sink: str, ssrcs: list[int], now: float) -> None:
        for link in self._links_to(sink, ssrcs):
            self.keyframe(link.recv_stream, now)

    def _on_report_block(self, sink: str, ssrc: int, fraction_lost: int, now: float) -> None:
        """The receiver's loss on a simulcast stream the relay sends it: to the automatic choice."""
        for link in self._links_to(sink, [ssrc]):
            selector = link.recv_stream.selector
            if selector is not None:
                policy = self._policy(selector, sink, now)
                policy.on_loss(fraction_lost / 256, now)
                self._choose(selector, policy, now)

    def _on_remb(self, sink: str, fci: bytes, now: float) -> None:
        try:
            bitrate, ssrcs = unpack_remb_fci(fci)
        except ValueError:
            return
        senders = set()
        for link in self._links_to(sink, ssrcs):
            link.send_stream.estimate = bitrate
            senders.add(link.source)
            selector = link.recv_stream.selector
            if selector is not None:
                policy = self._policy(selector, sink, now)
                policy.on_estimate(bitrate, now)
                self._choose(selector, policy, now)
        for sender in senders:
            self.send_remb(sender)


def _feeds(link: Link) -> bool:
    """Whether ``link``'s stream is what its ``SendStream`` forwards now: always, but of a
    simulcast m-line's substreams only the forwarded one (or the one aimed at before any is)."""
    selector = link.recv_stream.selector
    if selector is None:
        return True
    current = selector.substream if selector.substream is not None else selector.want
    return link.recv_stream.layer == current
