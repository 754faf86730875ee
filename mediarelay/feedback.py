"""The relay's RTCP duties for forwarded streams, as small pure pieces (time passed in).

Once media skips aiortc's RTCRtpSender/RTCRtpReceiver, their statistics, NACK generator and
RTX history see nothing, so the relay does per hop what an SFU does (Janus's ``janus_rtcp``,
mediasoup's ``RtpStreamRecv``/``RtpStreamSend``/``KeyFrameRequestManager``):

- ``ReceiveStats``: a source stream as the relay receives it (RFC 3550 A.1, A.3, A.8):
  extended highest sequence number, losses, interarrival jitter, last SR; its report block
  goes to the source in the relay's RR.
- ``NackRequester``: holes in a source stream, NACKed at once and again every round trip
  until repaired, too old, or asked too often (RFC 4585 generic NACK).
- ``KeyframeRequester``: PLIs to a source, throttled, repeated while no keyframe comes.
- ``RttEstimator``: round-trip time of a leg from the LSR/DLSR of its reports about our SRs.
- ``capped_remb``: what the sender hears of the receiver's REMB under a ``bitrate`` cap.
- RTCP bytes: builders for SR, RR, SDES, BYE, NACK, PLI and REMB, and ``parse`` (aiortc's
  parser, with NACK sequence numbers wrapped as they must be).

Nothing here opens a socket, starts a task or reads a clock: ``now`` is seconds on a
monotonic clock, ``ntp`` a 64-bit NTP timestamp, both given by the caller. ``media.py`` is
the adapter that sends what these return and wakes them at their deadlines.
"""

from __future__ import annotations

from struct import Struct

from aiortc.rtp import (
    RTCP_PSFB,
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    clamp_packets_lost,
    pack_remb_fci,
    pack_rtcp_packet,
)

#: Seconds between 1900 (NTP) and 1970 (Unix).
NTP_EPOCH_OFFSET = 2208988800

#: RFC 3550 A.1: a jump ahead this large is a restart, not losses.
MAX_DROPOUT = 3000


def ntp_timestamp(unix_seconds: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point) of a Unix time."""
    return int((unix_seconds + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: how LSR names a sender report."""
    return (ntp >> 16) & 0xFFFFFFFF


class ReceiveStats:
    """One source SSRC as the relay receives it: what its report block says."""

    __slots__ = ("clock_rate", "base_seq", "max_seq", "cycles", "received", "jitter", "_last_ts", "_last_arrival",
                 "_expected_prior", "_received_prior", "_lsr", "_lsr_time", "started")

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.started = False
        self.base_seq = self.max_seq = self.cycles = self.received = 0
        self.jitter = 0.0
        self._last_ts = 0
        self._last_arrival = 0.0
        self._expected_prior = self._received_prior = 0
        self._lsr = 0
        self._lsr_time = 0.0

    def reset(self) -> None:
        """A new SSRC (or a restart): start counting again."""
        self.__init__(self.clock_rate)  # type: ignore[misc]

    def on_packet(self, seq: int, ts: int, now: float) -> int:
        """Count a packet arriving at ``now``; returns how many packets are missing right
        before it (a hole to NACK), 0 when it is in order, late or a duplicate."""
        if not self.started:
            self.started = True
            self.base_seq = self.max_seq = seq
            self.received = 1
            self._last_ts, self._last_arrival = ts, now
            return 0
        self.received += 1
        if ts != self._last_ts:
            # RFC 3550 A.8, updated once per RTP timestamp (a video frame's packets share one).
            dts = (ts - self._last_ts) % 0x100000000
            if dts >= 0x80000000:
                dts -= 0x100000000
            d = abs((now - self._last_arrival) * self.clock_rate - dts)
            self.jitter += (d - self.jitter) / 16
            self._last_ts, self._last_arrival = ts, now
        delta = (seq - self.max_seq) % 0x10000
        if delta == 0 or delta >= 0x8000:
            return 0  # duplicate, or late (reordered / retransmitted)
        if seq < self.max_seq:
            self.cycles += 0x10000
        self.max_seq = seq
        if delta >= MAX_DROPOUT:  # the source restarted its numbering: nothing to repair
            self.base_seq = seq
            self.cycles = 0
            self.received = 1
            self._expected_prior = self._received_prior = 0
            return 0
        return delta - 1

    def on_recovered(self) -> None:
        """A missing packet arrived by RTX: it counts as received."""
        self.received += 1

    def on_sender_report(self, ntp: int, now: float) -> None:
        """The source's SR: its middle NTP bits and arrival time make LSR/DLSR."""
        self._lsr = ntp_middle(ntp)
        self._lsr_time = now

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    def report(self, ssrc: int, now: float) -> RtcpReceiverInfo:
        """The report block for this source (RFC 3550 6.4.1, A.3); starts a new interval."""
        expected = self.extended_max - self.base_seq + 1
        lost = expected - self.received
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        dlsr = 0
        if self._lsr:
            dlsr = min(int((now - self._lsr_time) * 65536), 0xFFFFFFFF)
        return RtcpReceiverInfo(ssrc=ssrc, fraction_lost=min(fraction, 255), packets_lost=clamp_packets_lost(lost),
                                highest_sequence=self.extended_max & 0xFFFFFFFF, jitter=int(self.jitter),
                                lsr=self._lsr, dlsr=dlsr)


class NackRequester:
    """Holes in one source stream and when to NACK each again (Janus and libwebrtc alike
    retry every round trip, for a bounded time and number of times)."""

    __slots__ = ("max_age", "max_retries", "max_missing", "holes")

    def __init__(self, max_age: float = 1.0, max_retries: int = 10, max_missing: int = 256) -> None:
        self.max_age = max_age
        self.max_retries = max_retries
        self.max_missing = max_missing
        #: seq -> [first NACK time, last NACK time, NACKs sent]. The fast path reads it (empty: no
        #: ``received`` call per packet; ``__bool__`` is a Python call too).
        self.holes: dict[int, list[float]] = {}

    def __bool__(self) -> bool:
        return bool(self.holes)

    @property
    def missing(self) -> list[int]:
        return list(self.holes)

    def on_gap(self, after: int, count: int, now: float) -> list[int] | None:
        """``count`` packets are missing right after ``after``: the numbers to NACK now, or
        None when the hole is too big to repair (ask for a keyframe instead)."""
        if count > self.max_missing:
            self.holes.clear()
            return None
        seqs = [(after + i) % 0x10000 for i in range(1, count + 1)]
        for seq in seqs:
            self.holes[seq] = [now, now, 1]
        overflow = len(self.holes) - self.max_missing
        if overflow > 0:
            for seq in list(self.holes)[:overflow]:
                del self.holes[seq]
        return seqs

    def received(self, seq: int) -> bool:
        """A packet arrived (late or repaired): no more NACKs for it. True if it was missing."""
        return self.holes.pop(seq, None) is not None

    def due(self, now: float, rtt: float) -> list[int]:
        """The numbers to NACK again now (each at most once per round trip); forgets the
        ones too old or NACKed too often."""
        again = []
        interval = max(rtt, 0.01)
        for seq, entry in list(self.holes.items()):
            first, last, sent = entry
            if now - first > self.max_age or sent >= self.max_retries:
                del self.holes[seq]
            elif now - last >= interval:
                entry[1], entry[2] = now, sent + 1
                again.append(seq)
        return again

    def deadline(self, rtt: float) -> float | None:
        """When ``due`` may next have something to say; None with nothing missing."""
        if not self.holes:
            return None
        interval = max(rtt, 0.01)
        return min(min(last + interval, first + self.max_age) for first, last, _ in self.holes.values())


class KeyframeRequester:
    """PLIs to one video source: at most one per ``interval``, a request made meanwhile is
    sent when the interval ends, and one is repeated every ``retry`` s until a keyframe comes
    (as mediasoup's KeyFrameRequestManager)."""

    __slots__ = ("interval", "retry", "max_retries", "waiting", "_last", "_pending", "_retries")

    def __init__(self, interval: float = 0.3, retry: float = 1.0, max_retries: int = 3) -> None:
        self.interval = interval
        self.retry = retry
        self.max_retries = max_retries
        #: True from a request until a keyframe arrives (the forwarder only looks then).
        self.waiting = False
        self._last: float | None = None
        self._pending = False
        self._retries = 0

    def request(self, now: float) -> bool:
        """A keyframe is wanted: True if a PLI is to be sent now (else it waits its turn)."""
        self.waiting = True
        self._retries = 0
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            self._pending = False
            return True
        self._pending = True
        return False

    def received(self) -> None:
        """A keyframe arrived: nothing to ask for."""
        self.waiting = self._pending = False

    def due(self, now: float) -> bool:
        """True if a (delayed or repeated) PLI is to be sent now."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return False
        if not self._pending:
            self._retries += 1
            if self._retries > self.max_retries:
                self.waiting = False
                return False
        self._pending = False
        self._last = now
        return True

    def deadline(self) -> float | None:
        if self._last is None:
            return None
        if self._pending:
            return self._last + self.interval
        if self.waiting:
            return self._last + self.retry
        return None


class RttEstimator:
    """A leg's round-trip time from its clients' report blocks about the relay's SRs."""

    __slots__ = ("rtt", "measured", "_sent")

    def __init__(self, initial: float = 0.1) -> None:
        self.rtt = initial
        #: Whether ``rtt`` comes from a report yet (else it is ``initial``, a guess).
        self.measured = False
        self._sent: dict[int, float] = {}  # LSR of a sender report we sent -> when

    def sender_report_sent(self, ntp: int, now: float) -> None:
        self._sent[ntp_middle(ntp)] = now
        if len(self._sent) > 16:
            del self._sent[next(iter(self._sent))]

    def report_block(self, lsr: int, dlsr: int, now: float) -> None:
        sent = self._sent.get(lsr)
        if sent is None or not lsr:
            return
        rtt = now - sent - dlsr / 65536
        if 0 <= rtt < 10:
            self.rtt = 0.85 * self.rtt + 0.15 * rtt
            self.measured = True


def capped_remb(estimate: int | None, cap: int) -> int | None:
    """The bitrate to tell the sender: the receiver's estimate, never above a ``set`` cap
    (0: no cap); the cap alone when there is no estimate."""
    if cap <= 0:
        return estimate
    return cap if estimate is None else min(estimate, cap)


# --- RTCP bytes -------------------------------------------------------------------------------

_NACK_HEAD = Struct("!LL")
_NACK_FCI = Struct("!HH")


def sender_report(ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int,
                  reports: list[RtcpReceiverInfo] | None = None) -> bytes:
    info = RtcpSenderInfo(ntp_timestamp=ntp, rtp_timestamp=rtp_timestamp & 0xFFFFFFFF,
                          packet_count=packets & 0xFFFFFFFF, octet_count=octets & 0xFFFFFFFF)
    return bytes(RtcpSrPacket(ssrc=ssrc, sender_info=info, reports=reports or []))


def receiver_report(ssrc: int, reports: list[RtcpReceiverInfo]) -> bytes:
    return bytes(RtcpRrPacket(ssrc=ssrc, reports=reports[:31]))


def sdes(cnames: dict[int, str]) -> bytes:
    return bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=ssrc, items=[(1, cname.encode())])
                                        for ssrc, cname in cnames.items()]))


def bye(ssrcs: list[int]) -> bytes:
    return bytes(RtcpByePacket(sources=ssrcs))


def nack(sender_ssrc: int, media_ssrc: int, seqs: list[int]) -> bytes:
    """Generic NACK (RFC 4585 6.2.1) for ``seqs``, in order, across the 65535 -> 0 wrap."""
    payload = bytearray(_NACK_HEAD.pack(sender_ssrc, media_ssrc))
    pid = blp = -1
    for seq in seqs:
        if pid >= 0:
            d = (seq - pid) % 0x10000 - 1
            if 0 <= d < 16:
                blp |= 1 << d
                continue
            payload += _NACK_FCI.pack(pid, blp)
        pid, blp = seq, 0
    if pid >= 0:
        payload += _NACK_FCI.pack(pid, blp)
    return pack_rtcp_packet(RTCP_RTPFB, RTCP_RTPFB_NACK, bytes(payload))


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=sender_ssrc, media_ssrc=media_ssrc))


def remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=sender_ssrc, media_ssrc=0,
                                fci=pack_remb_fci(bitrate, ssrcs)))


def parse(data: bytes) -> list[AnyRtcpPacket]:
    """A compound RTCP packet; ValueError if malformed. NACK numbers are wrapped to 16 bits
    (aiortc's parser leaves ``pid + n`` past 65535 as it is)."""
    packets = RtcpPacket.parse(data)
    for packet in packets:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            packet.lost = [seq & 0xFFFF for seq in packet.lost]
    return packets


__all__ = [
    "RTCP_PSFB", "RTCP_RTPFB", "ReceiveStats", "NackRequester", "KeyframeRequester", "RttEstimator", "capped_remb",
    "ntp_timestamp", "ntp_middle", "sender_report", "receiver_report", "sdes", "bye", "nack", "pli", "remb", "parse",
]
