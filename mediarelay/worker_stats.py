"""What a worker reports: to ``worker.stats`` its calls, what it relayed, its own CPU and
memory; to ``call.stats`` one call's legs (``call_stats``, the Admin API's counters).

Packets in are counted per m-line by ``MediaFlow`` (the aiortc tap before the legs are linked,
the fast path after); packets out and drops by the fast path's per-call ``Counters``. Both
live with their call, so when a call ends its last numbers are added to ``WorkerTotals``:
what a worker reports only grows for the life of the process, and a node can take rates
from two polls. Reading the numbers walks the calls (a few objects each), once per poll,
never on the packet path.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Protocol

from mediarelay.feedback import ReceiveStats
from mediarelay.forwarder import Counters
from mediarelay.media_flow import MediaFlow
from shared.messages import MAX_TEXT, CallStatsResult, LegStats, MediumStats, WorkerStatsResult

if TYPE_CHECKING:
    from mediarelay.call import Call
    from mediarelay.leg import Leg

#: ``Counters`` fields that count packets the fast path did not forward (the drop reasons).
DROP_REASONS = ("srtp_failed", "unknown", "unlinked", "muted", "payload_type", "stale", "other_layer", "temporal",
                "padding", "malformed", "send_failed", "errors")
#: ``Counters`` fields that are not drops (what was forwarded, RTX and RTCP seen).
NOT_DROPS = ("forwarded", "forwarded_octets", "rtx_received", "rtx_sent", "rtcp_received")


class _Leg(Protocol):
    flows: list[MediaFlow]


class _Media(Protocol):
    counters: Counters


class CallLike(Protocol):
    """What is read from a ``mediarelay.call.Call``."""

    @property
    def caller(self) -> _Leg: ...

    @property
    def callee(self) -> _Leg: ...

    @property
    def media(self) -> _Media: ...


@dataclass
class Relayed:
    """Packets and payload bytes in and out, drops by reason."""

    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    def add(self, call: CallLike) -> None:
        for leg in (call.caller, call.callee):
            for flow in leg.flows:
                self.packets_in += flow.packets
                self.bytes_in += flow.octets
        counters = call.media.counters
        self.packets_out += counters.forwarded
        self.bytes_out += counters.forwarded_octets
        for reason in DROP_REASONS:
            self.drops[reason] += getattr(counters, reason)

    def plus(self, other: Relayed) -> Relayed:
        return Relayed(self.packets_in + other.packets_in, self.packets_out + other.packets_out,
                       self.bytes_in + other.bytes_in, self.bytes_out + other.bytes_out,
                       {reason: self.drops[reason] + other.drops[reason] for reason in DROP_REASONS})


class WorkerTotals:
    """The relayed numbers of every call this process ever held."""

    def __init__(self) -> None:
        self.ended = Relayed()

    def call_ended(self, call: CallLike) -> None:
        """Keep a closed call's last numbers (``Worker.hangup`` calls this once per call)."""
        self.ended.add(call)

    def result(self, calls: Iterable[CallLike], *, creating: int = 0) -> WorkerStatsResult:
        """The report: ``calls`` held now, plus ``creating`` still being set up (they count
        as load at once, so a node that placed them sees them in the next report)."""
        live = Relayed()
        count = creating
        for call in calls:
            live.add(call)
            count += 1
        total = self.ended.plus(live)
        times = os.times()
        return WorkerStatsResult(
            calls=count, legs=2 * count, pid=os.getpid(),
            packets_in=total.packets_in, packets_out=total.packets_out,
            bytes_in=total.bytes_in, bytes_out=total.bytes_out, drops=total.drops,
            cpu_seconds=times.user + times.system, rss_bytes=resident_bytes(),
        )


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``), else its peak (``getrusage``)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def counters_fields() -> set[str]:
    """Every ``Counters`` field (a test checks each is a drop reason or named in ``NOT_DROPS``)."""
    return {f.name for f in fields(Counters)}


def lost_packets(stats: ReceiveStats) -> int:
    """Packets a source never delivered, as its report block counts them (RFC 3550 A.3)."""
    if not stats.started:
        return 0
    return max(0, stats.extended_max - stats.base_seq + 1 - stats.received)


def call_stats(call: Call) -> CallStatsResult:
    """Both legs of ``call`` now (``call.stats``): read from the legs' flows, the fast path's
    streams and the call's RTCP, a few objects per m-line; never on the packet path."""
    media, rtcp = call.media, call.media.rtcp

    def leg_stats(leg: Leg) -> LegStats:
        mediums: list[MediumStats] = []
        seen: set[str] = set()
        for flow in leg.flows:
            seen.add(flow.mid)
            recv, send = media.recv_stream(leg.name, flow.mid), media.send_stream(leg.name, flow.mid)
            mediums.append(MediumStats(
                mid=flow.mid[:MAX_TEXT], kind="video" if flow.kind == "video" else "audio",
                packets_in=flow.packets, bytes_in=flow.octets,
                lost=lost_packets(recv.stats) if recv is not None else 0,
                jitter_ms=round(1000 * recv.stats.jitter / recv.stats.clock_rate, 3) if recv is not None else 0.0,
                packets_out=send.packets if send is not None else 0, bytes_out=send.octets if send is not None else 0,
            ))
        for mid in media.sent_mids(leg.name):  # a sender towards a client that sends nothing itself
            send = media.send_stream(leg.name, mid)
            if mid not in seen and send is not None:
                mediums.append(MediumStats(mid=mid[:MAX_TEXT], kind="video" if send.kind == "video" else "audio",
                                           packets_out=send.packets, bytes_out=send.octets))
        rtt = rtcp.measured_rtt(leg.name)
        return LegStats(state=leg.state, rtt_ms=None if rtt is None else round(rtt * 1000, 3),
                        nacks_sent=rtcp.nacks_sent.get(leg.name, 0), nacks_received=rtcp.nacks_received.get(leg.name, 0),
                        retransmitted=rtcp.retransmitted.get(leg.name, 0), media=mediums[:16])

    return CallStatsResult(caller=leg_stats(call.caller), callee=leg_stats(call.callee))
