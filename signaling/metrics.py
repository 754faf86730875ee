"""What ``/metrics`` shows: this node's state, and each of its relay workers' reports.

One ``CollectorRegistry`` per server (never prometheus-client's global one), so two servers
in one process (tests) do not mix. Most numbers are read at scrape time from the objects
that own them (sessions table, VideoCall state, relay pool), so nothing has to keep a gauge
in step; only what happens and is gone (an error sent, a call set up) is counted as it
happens. The workers' numbers are their last ``worker.stats`` report (the pool polls every
few seconds) with a ``worker`` label, so one scrape of a node sees its workers too.

Nothing here reads the settings: no address with a password, no token, can reach a scrape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from signaling.relay_client import RelayPool
from signaling.sessions import Sessions
from signaling.videocall import VideoCall

__all__ = ["CONTENT_TYPE", "NodeMetrics", "CallSetupTimer"]

#: The text format every Prometheus reads (``generate_latest`` writes it for plain metric names;
#: newer prometheus-client versions name a later version in their own constant).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Call setup (``call`` request to both ``webrtcup``) takes a few hundred ms on a LAN; ICE
#: through TURN or a slow callee's answer stretches it to seconds.
SETUP_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
PHASES = ("creating", "ringing", "accepting", "active")


class _Draining(Protocol):
    @property
    def draining(self) -> bool: ...


class NodeMetrics:
    """The registry a server's ``/metrics`` renders, and the counters it feeds as things happen."""

    def __init__(self, node: _Draining, sessions: Sessions, plugin: VideoCall, relay: RelayPool) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.errors = Counter("videocall_errors", "Errors sent to clients, by Janus code: core API "
                              "errors (kind=core) and VideoCall error events (kind=plugin).",
                              ["kind", "code"], registry=self.registry)
        self.call_setup = Histogram("videocall_call_setup_seconds", "From a call request to webrtcup on "
                                    "both legs, for calls that got there.", buckets=SETUP_BUCKETS,
                                    registry=self.registry)
        self.registry_up = Gauge("videocall_registry_up", "1 when the username registry answered its "
                                 "last readiness check (every scrape and /readyz).", registry=self.registry)
        self.registry_rtt = Gauge("videocall_registry_round_trip_seconds", "How long the registry's last "
                                  "readiness check took (a Redis round trip when it is networked).",
                                  registry=self.registry)
        self.events_dropped = Counter("videocall_session_events_dropped", "Events a session without a "
                                      "transport could not hold (its mailbox full, the oldest dropped).",
                                      registry=self.registry)
        self.held_events = Gauge("videocall_session_events_held", "Events held for sessions without a "
                                 "transport (a dropped WebSocket waiting for a claim, HTTP between polls).",
                                 registry=self.registry)
        self.door_refusals = Counter("videocall_frontdoor_refusals", "Connections the front door refused "
                                     "or closed, by kind: origin and connections (403/429 before the "
                                     "upgrade), idle and frame_too_slow (closed with 1008). Rate-limited "
                                     "create and register are in videocall_errors (490, 499).",
                                     ["kind"], registry=self.registry)
        ProcessCollector(registry=self.registry)  # the node's own CPU, memory, file descriptors
        self.registry.register(_StateCollector(node, sessions, plugin, relay))

    def plugin_error(self, code: int) -> None:
        self.errors.labels("plugin", str(code)).inc()

    def core_error(self, code: int) -> None:
        self.errors.labels("core", str(code)).inc()

    def door_refused(self, kind: str) -> None:
        self.door_refusals.labels(kind.replace(" ", "_")).inc()

    def registry_checked(self, ok: bool, seconds: float) -> None:
        self.registry_up.set(1 if ok else 0)
        self.registry_rtt.set(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Reads the node's state at scrape time."""

    def __init__(self, node: _Draining, sessions: Sessions, plugin: VideoCall, relay: RelayPool) -> None:
        self.node, self.sessions, self.plugin, self.relay = node, sessions, plugin, relay

    def collect(self) -> Iterator[Metric]:
        yield _gauge("videocall_draining", "1 once SIGTERM asked the node to drain.", int(self.node.draining))
        yield _gauge("videocall_sessions", "Janus sessions on this node.", len(self.sessions.sessions))
        yield _gauge("videocall_handles", "Plugin handles on this node.", len(self.plugin.handles))
        yield _gauge("videocall_registered_users", "Handles of this node holding a username.",
                     sum(1 for state in self.plugin.handles.values() if state.username is not None))
        phases = GaugeMetricFamily("videocall_calls", "Calls of this node's users, by phase.", labels=["state"])
        counts = dict.fromkeys(PHASES, 0)
        for call in self.plugin.calls.values():
            counts[call.phase] += 1
        for phase, count in counts.items():
            phases.add_metric([phase], count)
        yield phases
        yield from self._workers()

    def _workers(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily("videocall_worker_connected", "1 when the node's channel to the "
                                      "worker is up.", labels=["worker"])
        placed = GaugeMetricFamily("videocall_worker_placed_calls", "Calls this node holds on each worker.",
                                   labels=["worker"])
        rtt = GaugeMetricFamily("videocall_worker_ipc_round_trip_seconds", "Round trip of the last "
                                "worker.stats request to each worker.", labels=["worker"])
        calls = GaugeMetricFamily("videocall_worker_calls", "Calls each worker reports it holds "
                                  "(for every node that uses it).", labels=["worker"])
        cores = GaugeMetricFamily("videocall_worker_cpu_cores", "Cores each worker kept busy between its "
                                  "last two reports.", labels=["worker"])
        cpu = CounterMetricFamily("videocall_worker_cpu_seconds", "CPU time of each worker process "
                                  "(user + system).", labels=["worker"])
        rss = GaugeMetricFamily("videocall_worker_resident_memory_bytes", "Resident memory of each worker "
                                "process.", labels=["worker"])
        packets = CounterMetricFamily("videocall_worker_packets", "RTP packets each worker received from "
                                      "clients (in) and forwarded to them (out).", labels=["worker", "direction"])
        octets = CounterMetricFamily("videocall_worker_bytes", "RTP payload bytes each worker received "
                                     "(in) and forwarded (out).", labels=["worker", "direction"])
        drops = CounterMetricFamily("videocall_worker_drops", "RTP packets each worker did not forward, "
                                    "by reason.", labels=["worker", "reason"])
        for worker in self.relay.workers:
            name = worker.address
            is_connected = worker.channel is not None and not worker.channel.closed
            connected.add_metric([name], int(is_connected))
            placed.add_metric([name], len(worker.calls))
            load, stats = worker.load, worker.load.stats
            if load.rtt is not None:
                rtt.add_metric([name], load.rtt)
            if stats is None:
                continue
            calls.add_metric([name], stats.calls)
            cores.add_metric([name], load.cpu)
            cpu.add_metric([name], stats.cpu_seconds)
            rss.add_metric([name], stats.rss_bytes)
            packets.add_metric([name, "in"], stats.packets_in)
            packets.add_metric([name, "out"], stats.packets_out)
            octets.add_metric([name, "in"], stats.bytes_in)
            octets.add_metric([name, "out"], stats.bytes_out)
            for reason, count in sorted(stats.drops.items()):
                drops.add_metric([name, reason], count)
        yield from (connected, placed, rtt, calls, cores, cpu, rss, packets, octets, drops)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class CallSetupTimer:
    """When each call was asked for, until both its legs are up (pure: time is passed in).

    The plugin runner tells it of a ``call`` request (the registry lookup it starts), of the
    call the relay is asked to create for it, and of each leg's ``webrtcup``; ``leg_up``
    returns the setup time once both legs are up. Calls that end before are forgotten when
    the next call is created.
    """

    def __init__(self) -> None:
        self._asked: dict[int, float] = {}  # caller handle -> when its call request started
        self._calls: dict[str, tuple[float, set[str]]] = {}  # call id -> (start, legs up)

    def asked(self, handle: int, now: float) -> None:
        self._asked[handle] = now

    def created(self, call_id: str, caller: int | None, now: float, live: set[str] | None = None) -> None:
        """The relay is asked to create ``call_id`` for ``caller``'s request; ``live``: the call
        ids still going (the others are dropped)."""
        if live is not None:
            for gone in [call for call in self._calls if call not in live]:
                del self._calls[gone]
        started = self._asked.pop(caller, now) if caller is not None else now
        self._calls[call_id] = (started, set())

    def leg_up(self, call_id: str, leg: str, now: float) -> float | None:
        entry = self._calls.get(call_id)
        if entry is None:
            return None
        started, up = entry
        up.add(leg)
        if len(up) < 2:
            return None
        del self._calls[call_id]
        return now - started

    def forget_handle(self, handle: int) -> None:
        self._asked.pop(handle, None)
