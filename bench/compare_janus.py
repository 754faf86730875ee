#!/usr/bin/env python
"""The same loads against real Janus and against ``videocall serve --workers 1``, one after
the other on this machine, and one table of ratios (ours / Janus).

    python bench/compare_janus.py            # about 10 minutes
    python bench/compare_janus.py --quick    # about 2 minutes
    python bench/compare_janus.py --json-out result.json

Needs root (a network namespace, ``ip``, ``taskset``) and Janus (``apt-get install -y janus``,
run by ``../shared/janus/run-janus.sh``).

**Where the servers run.** Janus never offers loopback ICE candidates, so it must run on a
non-loopback address: a private network namespace reached over a veth pair, as
``janus-in-netns.sh`` does. Ours runs in the *same* namespace, on the same address and port
(one server at a time): both then see the same path (veth, the same UDP stack work, the same
candidates), and the namespace's ``/proc/net/snmp`` counts only the server's datagrams
(receive-buffer drops included). Ours on loopback would skip the veth hop and look cheaper
than it is. The namespace is this script's own (``vcbench``, 10.79.0.0/24, so it never collides
with ``janus-in-netns.sh``'s) and is removed on the way out.

**Pinning.** The server under test (with every thread and child) runs on one core
(``--server-cpu``, default 0), the load clients and this script on another (``--client-cpu``,
default 1). Logging is at the equivalent level on both: ``run-janus.sh``'s debug level 3
(warnings) and ``--log-level WARNING`` for ours.

**Idle footprint** first: RSS and PSS (``/proc/PID/smaps_rollup``, so pages shared between
processes count once) of the whole process tree 3 s after it listens: Janus, and our default
``serve`` (one worker per core), and ours with 1, cores and cores + 1 workers for what an added
worker costs.

**What is measured**, for each server, with ``videocall loadtest`` (the same options for both):

1. warm-up: one short call (code paths and lazy imports loaded; not measured);
2. the fixed load (``--calls`` calls at ``--rate`` per second, ``--duration`` s of media each).
   CPU is read from ``/proc`` every 0.25 s and taken over the *steady window*: from the first
   to the last moment the namespace's received datagrams per second are within 15% of their
   peak (every call up and sending; setup and hangup left out). Relay CPU per call = server CPU in that
   window / calls: for ours the whole tree (signalling + worker), and the worker alone
   beside it; Janus is one process. RSS per call = (peak RSS during the run - RSS before it)
   / calls. Setup p95 is call request -> first media packet at the callee. Delivery =
   packets received / sent over the measured windows, all directions and kinds (and video
   alone);
3. the step search: call counts from 4 up (steps of 4, then of 6), each a short load, until one fails or the time
   budget of that server is spent. A step *holds* when every call succeeds and >= 99.5% of
   packets arrive (and none is late by more than the load tester's 0.3 s drain: more received
   than sent in the windows); the table gives the largest step held before the first that did
   not (and, stricter, with every video packet delivered). Each step records the server's CPU in its
   steady window, the clients' CPU and event-loop lag, and the receive-buffer drops of the
   server's sockets, so that a step lost to a saturated client reads as such ("client-bound").
   On two cores the load clients (about 2% of a core per call) saturate long before a server
   with a whole core (under 1% per call, less per call as it gets busier) does, so during the
   search the server is also held to a *share* of its core by a CPU quota (cgroup ``cpu``,
   ``--capacity-share``, default 0.15, in 10 ms periods so that a throttled server pauses for
   ms, not 100 ms): the same share for both, and the server, not the client, is what runs out.
   Calls start at 5/s there, so that the search is about holding calls more than about setting
   them up (setup has its own row). ``--capacity-share 1`` searches without a quota (then
   expect "client-bound");
4. signalling: ``--signalling-only`` round trips per second (create, attach, register, list,
   detach, destroy), the server's CPU per 1000 of them (meaningful even when the clients set
   the pace) and memory per idle session.

Printed: one table (Janus, ours, ratio, goal), then one JSON line with everything.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest import procstat  # noqa: E402 - importable once ROOT is on sys.path

JANUS_DIR = Path(os.environ.get("VIDEOCALL_JANUS_DIR", ROOT.parent / "shared" / "janus"))
NAMESPACE = "vcbench"
VETH_HOST, VETH_NS = "vcb0", "vcb1"
SUBNET = "10.79.0"
HOST_IP, SERVER_IP = f"{SUBNET}.1", f"{SUBNET}.2"
PORT = 8188
#: A step holds with at least this share of packets delivered.
HELD_DELIVERY = 0.995
#: More received than sent by this much: packets late by more than the load tester's 0.3 s drain.
LATE_DELIVERY = 1.002
#: A client process above this share of its core is saturated.
CLIENT_BUSY_PCT = 85.0
SAMPLE_INTERVAL = 0.25
#: Every call of a step is up (and sending) together for at least this long, whatever the
#: step's size and rate: the steady window needs 2 s after its trim, and a step whose window
#: ran out would report no server CPU.
ALL_UP_SECONDS = 4.0

#: Media seconds of each call of the setup-cost load: as short as the load tester allows to
#: still see the call up; what media costs in them is taken off with the fixed load's rate.
SETUP_MEDIA_SECONDS = 1.0
#: Seconds the server is watched idle before the setup-cost load, for its own idle CPU.
IDLE_WATCH_SECONDS = 2.0

#: Issue 18's goals (ours / Janus); ``worker_pss`` is in MB, not a ratio.
GOALS = {"idle_pss": ("<=", 3.0), "relay_cpu_per_call": ("<=", 0.8), "rss_per_call": ("<=", 1.2),
         "setup_p95": ("<=", 1.0), "setup_cpu": ("<=", 1.3), "signalling_cpu": ("<=", 1.0), "held_video_100": (">=", 0.7)}
#: MB of PSS each worker added to the default serve may cost.
WORKER_PSS_GOAL = 15.0


@dataclass(frozen=True)
class Plan:
    calls: int
    rate: float
    duration: float
    steps: tuple[int, ...]  # call counts of the step search, in order
    step_duration: float
    step_rate: float
    step_budget: float  # seconds of step search per server
    signalling_clients: int
    signalling_duration: float
    setup_calls: int = 24  # calls of the setup-cost load, at setup_rate, SETUP_MEDIA_SECONDS each
    setup_rate: float = 4.0


FULL = Plan(calls=16, rate=8, duration=20, steps=(4, 8, 12, 16, 20, 24, 30, 36, 42, 48), step_duration=12, step_rate=5,
            step_budget=180, signalling_clients=50, signalling_duration=8)
QUICK = Plan(calls=6, rate=6, duration=8, steps=(4, 8, 12, 16), step_duration=6, step_rate=8,
             step_budget=40, signalling_clients=30, signalling_duration=3, setup_calls=12)


# --- /proc ---------------------------------------------------------------------------------------


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / procstat._TICKS
    return total


def _rss(pids: list[int]) -> float:
    return sum(procstat.rss_mb(pid, children=False) for pid in pids)


def _pss(pids: list[int]) -> float:
    """MB of proportional set size summed over ``pids``: shared pages counted once in all."""
    return sum(_rollup(pid).get("Pss", 0.0) for pid in pids)


def _rollup(pid: int) -> dict[str, float]:
    """``/proc/PID/smaps_rollup`` in MB (empty if the process is gone)."""
    fields: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, value, *_ = line.split()
            fields[name.rstrip(":")] = int(value) / 1024
    return fields


def _by_process(pids: list[int]) -> dict[str, dict[str, float]]:
    """Where an idle tree's memory is, per process (by name): its PSS, the part of it that is
    anonymous (the interpreter's objects, not the libraries' code), and what it alone wrote."""
    found = {}
    for pid in pids:
        memory = _rollup(pid)
        found[f"{_comm(pid)}[{pid}]"] = {key: round(memory.get(field, 0.0), 1) for key, field in
                                         (("pss", "Pss"), ("pss_anon", "Pss_Anon"), ("private_dirty", "Private_Dirty"))}
    return found


def udp_counters(pid: int) -> dict[str, int]:
    """UDP counters of ``pid``'s network namespace (the server's own: nothing else runs there)."""
    try:
        lines = [line.split() for line in Path(f"/proc/{pid}/net/snmp").read_text().splitlines()
                 if line.startswith("Udp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=True)}
    except (OSError, IndexError, ValueError):
        return {}


@dataclass
class Sample:
    t: float
    server_cpu: float
    relay_cpu: float
    client_cpu: float
    server_rss: float
    relay_rss: float
    udp_in: int
    rcvbuf_errors: int


class Sampler(threading.Thread):
    """Reads the server's, its relay's and the clients' CPU and RSS, and the namespace's
    datagrams, every ``SAMPLE_INTERVAL`` s (process trees refreshed every 2 s)."""

    def __init__(self, server: Server, client_pid: int) -> None:
        super().__init__(daemon=True)
        self.server, self.client_pid = server, client_pid
        self.samples: list[Sample] = []
        self._halt = threading.Event()

    def run(self) -> None:
        refreshed = 0.0
        server_tree: list[int] = []
        client_tree: list[int] = []
        while True:
            now = time.monotonic()
            if now - refreshed > 2:
                server_tree, client_tree, refreshed = procstat.tree(self.server.pid), procstat.tree(self.client_pid), now
            relay = [self.server.relay_pid] if self.server.relay_pid else server_tree
            udp = udp_counters(self.server.pid)
            self.samples.append(Sample(now, _cpu(server_tree), _cpu(relay), _cpu(client_tree), _rss(server_tree),
                                       _rss(relay), udp.get("InDatagrams", 0), udp.get("RcvbufErrors", 0)))
            if self._halt.wait(SAMPLE_INTERVAL):
                return

    def stop(self) -> list[Sample]:
        self._halt.set()
        self.join()
        return self.samples


def steady_window(samples: list[Sample], *, within: float = 0.15, trim: int = 1) -> tuple[int, int] | None:
    """Indices (i, j) of the steady part of a run: from the first to the last sample interval
    whose datagram rate is within ``within`` of the peak (the median of the top tenth of the
    rates, so one burst does not set it), less ``trim`` intervals at each end; None if that
    leaves under 2 s. Dips in between stay in: they are the server's (or the machine's)."""
    rates = [(b.udp_in - a.udp_in) / (b.t - a.t) if b.t > a.t else 0.0 for a, b in itertools.pairwise(samples)]
    if not rates or max(rates) <= 0:
        return None
    top = sorted(rates)[-max(1, len(rates) // 10):]
    floor = (1 - within) * top[len(top) // 2]
    steady = [k for k, rate in enumerate(rates) if rate >= floor]
    i, j = steady[0] + trim, steady[-1] + 1 - trim  # rate k spans samples k and k + 1
    if j <= i or samples[j].t - samples[i].t < 2.0:
        return None
    return i, j


# --- the network namespace -----------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


class Namespace:
    """``vcbench``: the servers' side 10.79.0.2, this machine's 10.79.0.1 (removed on close)."""

    def __enter__(self) -> Self:
        if NAMESPACE in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split():
            raise SystemExit(f"network namespace {NAMESPACE} exists (another run? `ip netns del {NAMESPACE}`)")
        try:
            _ip("netns", "add", NAMESPACE)
            _ip("link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
            _ip("link", "set", VETH_NS, "netns", NAMESPACE)
            _ip("addr", "add", f"{HOST_IP}/24", "dev", VETH_HOST)
            _ip("link", "set", VETH_HOST, "up")
            _ip("netns", "exec", NAMESPACE, "ip", "addr", "add", f"{SERVER_IP}/24", "dev", VETH_NS)
            _ip("netns", "exec", NAMESPACE, "ip", "link", "set", VETH_NS, "up")
            _ip("netns", "exec", NAMESPACE, "ip", "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            self.__exit__()
            raise SystemExit(f"cannot create the network namespace (root and iproute2 needed): {exc}") from None
        return self

    def __exit__(self, *_: object) -> None:
        _ip("link", "del", VETH_HOST, check=False)
        _ip("netns", "del", NAMESPACE, check=False)

    @staticmethod
    def prefix(cpu: int) -> list[str]:
        return ["ip", "netns", "exec", NAMESPACE, "taskset", "-c", str(cpu)]


# --- the CPU quota of the step search ------------------------------------------------------------


class CpuQuota:
    """A cgroup (v1 ``cpu`` controller, or v2) the server is put in; ``limit(share)`` caps it."""

    PERIOD_US = 10_000

    def __init__(self) -> None:
        v1 = Path("/sys/fs/cgroup/cpu")
        self.v2 = not (v1 / "cpu.cfs_quota_us").exists()
        base = Path("/sys/fs/cgroup") if self.v2 else v1
        self.path = base / NAMESPACE
        self.available = (base / ("cgroup.controllers" if self.v2 else "cpu.cfs_quota_us")).exists()

    def __enter__(self) -> Self:
        if self.available:
            try:
                self.path.mkdir(exist_ok=True)
                self.limit(None)
            except OSError:
                self.available = False
        return self

    def __exit__(self, *_: object) -> None:
        if self.available:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def add(self, pids: list[int]) -> None:
        for pid in pids if self.available else []:
            with contextlib.suppress(OSError):
                (self.path / "cgroup.procs").write_text(str(pid))

    def limit(self, share: float | None) -> None:
        if not self.available:
            return
        quota = -1 if share is None or share >= 1 else int(share * self.PERIOD_US)
        if self.v2:
            (self.path / "cpu.max").write_text(f"{'max' if quota < 0 else quota} {self.PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))


# --- the servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    pid: int = 0
    relay_pid: int = 0  # ours: the worker; Janus: 0 (the one process is the relay)
    workers: int = 1  # ours: relay workers to wait for
    process: subprocess.Popen[bytes] | None = None
    cleanup: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://{SERVER_IP}:{PORT}/"

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.command, env={**os.environ, **self.env}, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid  # ip netns exec, taskset and run-janus.sh all exec: this is the server
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: see {self.log_path}")
            with contextlib.suppress(OSError), socket.create_connection((SERVER_IP, PORT), timeout=0.5):
                if self.name == "ours":
                    relays = relay_workers(self.pid)
                    if len(relays) < self.workers:
                        raise OSError("worker not up yet")
                    self.relay_pid = relays[0]
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not listen on {self.url} within 60 s: see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a worker left behind
            os.killpg(self.process.pid, signal.SIGKILL)
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)
        for line in self.log_path.read_text(errors="replace").splitlines():  # run-janus.sh's config dir
            if " config in /tmp/janus-run." in line:
                shutil.rmtree(line.rsplit(" config in ", 1)[1].strip(), ignore_errors=True)
        self.process = None


def relay_workers(pid: int) -> list[int]:
    """Our relay workers under ``pid``: forked ones by name (their command line is the fork
    server's, videocall/worker_forks.py), else ``videocall relay`` by command line."""
    tree = procstat.tree(pid)[1:]
    names = {p: _comm(p) for p in tree}
    forked = [p for p in tree if names[p].startswith("vc-relay-") and names[p] != "vc-relay-forks"]
    return forked or [p for p in tree if b"relay" in _cmdline(p).split(b"\0") and names[p] != "vc-relay-forks"]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def janus_server(cpu: int, workdir: Path) -> Server:
    script = JANUS_DIR / "run-janus.sh"
    if not script.exists() or not shutil.which("janus"):
        raise SystemExit(f"Janus not found ({script}, janus on PATH): apt-get install -y janus janus-tools")
    recordings = workdir / "janus-recordings"
    return Server("janus", [*Namespace.prefix(cpu), str(script), str(PORT), str(recordings)],
                  {"JANUS_WS_IP": SERVER_IP, "JANUS_ICE_ENFORCE": SERVER_IP}, workdir / "janus.log",
                  cleanup=[recordings])


#: Every load client runs on this machine, so from one address: the per-address front-door
#: limits (connections, create and register rates) are off for the benchmark's server.
ONE_MACHINE_CLIENTS = {
    "VIDEOCALL_MAX_CONNECTIONS_PER_ADDRESS": "0", "VIDEOCALL_CREATE_RATE": "0", "VIDEOCALL_REGISTER_RATE": "0",
}


def our_server(cpu: int, workdir: Path, workers: int | None = 1, tag: str = "ours") -> Server:
    """``videocall serve`` with ``workers`` relay workers (None: its default, one per core)."""
    count = ["--workers", str(workers)] if workers else []
    return Server("ours", [*Namespace.prefix(cpu), sys.executable, "-m", "videocall", "serve", "--host", SERVER_IP,
                           "--port", str(PORT), *count, "--ice-enforce-list", SERVER_IP,
                           "--log-level", "WARNING"], dict(ONE_MACHINE_CLIENTS), workdir / f"{tag}.log",
                  workers=workers or os.cpu_count() or 1)


def idle_footprint(server: Server, settle: float = 3.0) -> dict[str, Any]:
    """RSS and PSS of ``server``'s process tree, idle, ``settle`` s after it listens, and by process."""
    server.start()
    try:
        time.sleep(settle)
        tree = procstat.tree(server.pid)
        return {"rss_mb": round(_rss(tree), 1), "pss_mb": round(_pss(tree), 1), "processes": len(tree),
                "by_process": _by_process(tree)}
    finally:
        server.stop()


def our_idle(cpu: int, workdir: Path) -> dict[str, Any]:
    """Idle footprint of the default ``serve`` (one worker per core) and with one worker more
    and one worker: what each added worker costs (PSS, so shared pages count once)."""
    cores = os.cpu_count() or 1
    sizes = {n: idle_footprint(our_server(cpu, workdir, n, f"idle{n}")) for n in (1, cores, cores + 1)}
    default = idle_footprint(our_server(cpu, workdir, None, "idle-default"))
    added = [round(sizes[n + 1]["pss_mb"] - sizes[n]["pss_mb"], 1) for n in (cores,)]
    per_worker = round((sizes[cores + 1]["pss_mb"] - sizes[1]["pss_mb"]) / cores, 1)
    return {"default": default, "workers": {str(n): f for n, f in sizes.items()}, "default_workers": cores,
            "added_worker_pss_mb": added[0], "worker_pss_mb_mean": per_worker}


# --- one load ------------------------------------------------------------------------------------


def loadtest(server: Server, args: list[str], client_cpu: int, workdir: Path, tag: str,
             timeout: float) -> tuple[dict[str, Any], list[Sample], dict[str, float]]:
    """Run ``videocall loadtest`` on the client core: (its JSON report, samples, RSS before)."""
    out = workdir / f"{server.name}-{tag}.json"
    out.unlink(missing_ok=True)
    tree = procstat.tree(server.pid)
    before = {"server": _rss(tree), "relay": _rss([server.relay_pid] if server.relay_pid else tree)}
    command = ["taskset", "-c", str(client_cpu), sys.executable, "-m", "videocall", "loadtest", server.url,
               *args, "--json", str(out), "--quiet", "--server-pid", str(server.pid)]
    with (workdir / f"{server.name}-{tag}.txt").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(server, process.pid)
        sampler.start()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=20)
        samples = sampler.stop()
    with (workdir / f"{server.name}-{tag}.samples.csv").open("w") as csv:
        csv.write("t,server_cpu,relay_cpu,client_cpu,server_rss,relay_rss,udp_in,rcvbuf_errors\n")
        for x in samples:
            csv.write(f"{x.t:.3f},{x.server_cpu:.2f},{x.relay_cpu:.2f},{x.client_cpu:.2f},{x.server_rss:.1f},"
                      f"{x.relay_rss:.1f},{x.udp_in},{x.rcvbuf_errors}\n")
    try:
        report = json.loads(out.read_text())
    except (OSError, ValueError):
        report = {"error": f"no report (exit status {process.returncode}; see {log.name})"}
    return report, samples, before


def delivery(report: dict[str, Any], kind: str | None = None) -> float | None:
    sent = received = 0
    for per_kind in report.get("media", {}).values():
        for k, stats in per_kind.items():
            if kind is None or k == kind:
                sent += stats.get("sent", 0)
                received += stats.get("received", 0)
    return received / sent if sent else None


def window_figures(samples: list[Sample], calls: int) -> dict[str, Any]:
    """CPU of server, relay and clients over the steady window, and datagram rates there."""
    window = steady_window(samples)
    if window is None:
        return {"window_seconds": 0.0}
    a, b = samples[window[0]], samples[window[1]]
    span = b.t - a.t

    def pct(x: float) -> float:
        return round(100 * x / span, 2)

    return {"window_seconds": round(span, 2), "server_cpu_pct": pct(b.server_cpu - a.server_cpu),
            "relay_cpu_pct": pct(b.relay_cpu - a.relay_cpu), "client_cpu_pct": pct(b.client_cpu - a.client_cpu),
            "server_cpu_pct_per_call": round(100 * (b.server_cpu - a.server_cpu) / span / calls, 3),
            "relay_cpu_pct_per_call": round(100 * (b.relay_cpu - a.relay_cpu) / span / calls, 3),
            "datagrams_in_per_s": round((b.udp_in - a.udp_in) / span),
            "rcvbuf_errors": samples[-1].rcvbuf_errors - samples[0].rcvbuf_errors}


def run_calls(server: Server, calls: int, rate: float, duration: float, client_cpu: int, workdir: Path,
              tag: str) -> dict[str, Any]:
    args = ["--calls", str(calls), "--rate", str(rate), "--duration", str(duration)]
    report, samples, before = loadtest(server, args, client_cpu, workdir, tag,
                                       timeout=90 + calls / rate + duration + 60)
    peak_server = max([s.server_rss for s in samples] or [before["server"]])
    peak_relay = max([s.relay_rss for s in samples] or [before["relay"]])
    clients = report.get("clients", {})
    calls_block = report.get("calls", {})
    return {
        "calls": calls, "succeeded": calls_block.get("succeeded", 0), "failures": calls_block.get("failures", {}),
        "error": report.get("error"), "delivery": delivery(report), "video_delivery": delivery(report, "video"),
        "setup_first_media_p95_ms": report.get("setup_ms", {}).get("first_media", {}).get("p95"),
        "setup_webrtcup_p95_ms": report.get("setup_ms", {}).get("webrtcup", {}).get("p95"),
        "rss_mb_before": round(before["server"], 1), "rss_mb_peak": round(peak_server, 1),
        "rss_mb_per_call": round((peak_server - before["server"]) / calls, 3),
        "relay_rss_mb_per_call": round((peak_relay - before["relay"]) / calls, 3),
        "client_cpu_pct_run": clients.get("cpu_percent"),
        "client_busiest_pct": clients.get("busiest_process_cpu_percent"),
        "client_loop_lag_p99_ms": (clients.get("loop_lag_ms") or {}).get("p99"),
        **window_figures(samples, calls),
    }


def setup_cost(server: Server, plan: Plan, client_cpu: int, workdir: Path,
               media_pct_per_call: float | None) -> dict[str, Any]:
    """CPU the server spends on one call's setup and hangup (signalling and worker: SDP, ICE,
    DTLS, the plugin's events), from a load of short calls: the server's CPU over the whole
    run, less its idle CPU over the same time and the media the calls carried (at the fixed
    load's CPU per call-second), per call that succeeded."""
    tree = procstat.tree(server.pid)
    first = _cpu(tree)
    time.sleep(IDLE_WATCH_SECONDS)
    idle_rate = (_cpu(tree) - first) / IDLE_WATCH_SECONDS
    args = ["--calls", str(plan.setup_calls), "--rate", str(plan.setup_rate), "--duration", str(SETUP_MEDIA_SECONDS)]
    report, samples, _ = loadtest(server, args, client_cpu, workdir, "setup",
                                  timeout=90 + plan.setup_calls / plan.setup_rate + 60)
    ok = (report.get("calls") or {}).get("succeeded", 0)
    if len(samples) < 2 or not ok:
        return {"calls": plan.setup_calls, "succeeded": ok, "cpu_ms_per_call": None, "error": report.get("error")}
    span = samples[-1].t - samples[0].t
    total = samples[-1].server_cpu - samples[0].server_cpu
    media = (media_pct_per_call or 0.0) / 100 * SETUP_MEDIA_SECONDS * ok
    return {"calls": plan.setup_calls, "succeeded": ok, "seconds": round(span, 1),
            "idle_cpu_pct": round(100 * idle_rate, 2), "raw_cpu_ms_per_call": round(1000 * total / ok, 1),
            "cpu_ms_per_call": round(1000 * (total - idle_rate * span - media) / ok, 1)}


def held(step: dict[str, Any], *, video_all: bool = False) -> bool:
    """Every call up, and the packets delivered. More received than sent in the windows means
    packets still in flight 0.3 s after the senders paused (the load tester's drain): a server
    that far behind is not holding its calls either."""
    if step["succeeded"] != step["calls"] or step["delivery"] is None or step["delivery"] > LATE_DELIVERY:
        return False
    if video_all:
        return step["video_delivery"] is not None and step["video_delivery"] >= 1.0
    return step["delivery"] >= HELD_DELIVERY


def client_saturated(step: dict[str, Any]) -> bool:
    """By CPU: the clients' event-loop lag is reported too, but it reaches 60-200 ms against
    Janus at a third of a core (something in aiortc's handling of what Janus sends), so lag
    alone does not mean the clients ran out."""
    return (step.get("client_busiest_pct") or 0) > CLIENT_BUSY_PCT


def step_media_seconds(plan: Plan, calls: int) -> float:
    """Media seconds of each call of a step: the plan's, or longer when the calls take so long
    to start that they would not all be up together for ``ALL_UP_SECONDS``."""
    return max(plan.step_duration, calls / plan.step_rate + ALL_UP_SECONDS)


def _cpu_pct(step: dict[str, Any]) -> str:
    """The step's server CPU, or why there is none (never a bare "-")."""
    if step.get("server_cpu_pct") is None:
        return "not measured (no steady window of 2 s)"
    return f"{step['server_cpu_pct']}%"


def step_search(server: Server, plan: Plan, client_cpu: int, workdir: Path, quota: CpuQuota,
                share: float) -> dict[str, Any]:
    """Steps up until a step fails (both criteria) or the budget is spent, the server held to
    ``share`` of its core."""
    grid = list(plan.steps)
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    held_any = held_video = 0
    ok_any = ok_video = True  # no failure yet, for each criterion
    stopped = "all steps held"
    quota.limit(share)
    try:
        for calls in grid:
            duration = step_media_seconds(plan, calls)
            expected = 8 + calls / plan.step_rate + duration
            if steps and time.monotonic() - started + expected > plan.step_budget:
                stopped = f"time budget ({plan.step_budget:g} s) spent"
                break
            step = run_calls(server, calls, plan.step_rate, duration, client_cpu, workdir, f"step{calls}")
            step["held"], step["held_video_100"] = held(step), held(step, video_all=True)
            step["client_saturated"] = client_saturated(step)
            steps.append(step)
            _say(f"  {server.name} {calls} calls: {step['succeeded']}/{calls} ok, delivery {_fmt(step['delivery'], 4)}, "
                 f"video {_fmt(step['video_delivery'], 4)}, server CPU {_cpu_pct(step)} "
                 f"(quota {100 * share:g}%), clients {step.get('client_busiest_pct', '-')}%"
                 + (" (client saturated)" if step["client_saturated"] else ""))
            ok_any = ok_any and step["held"]
            ok_video = ok_video and step["held_video_100"]
            held_any = calls if ok_any else held_any
            held_video = calls if ok_video else held_video
            if not ok_any and not ok_video:
                stopped = f"{calls} calls not held"
                break
    finally:
        quota.limit(None)
    failing = next((s for s in steps if not s["held_video_100"]), None)
    if failing is None:
        limit = "client" if steps and steps[-1]["client_saturated"] else "not reached"
    elif failing["client_saturated"]:
        limit = "client"
    elif (failing.get("server_cpu_pct") or 0) >= 90 * share:
        limit = "server CPU"
    else:
        limit = "server (not CPU: " + (", ".join(failing["failures"]) or "packets lost") + ")"
    return {"share": share, "held": held_any, "held_video_100": held_video, "stopped": stopped, "limit": limit,
            "seconds": round(time.monotonic() - started, 1), "steps": steps}


def signalling(server: Server, plan: Plan, client_cpu: int, workdir: Path) -> dict[str, Any]:
    args = ["--signalling-only", "--clients", str(plan.signalling_clients), "--duration", str(plan.signalling_duration)]
    report, samples, _ = loadtest(server, args, client_cpu, workdir, "signalling",
                                  timeout=90 + plan.signalling_duration + 60)
    busy = [(b.server_cpu - a.server_cpu) / (b.t - a.t) for a, b in itertools.pairwise(samples) if b.t > a.t]
    busy.sort()
    # The round trips run for the last ``duration`` s of the run: the server's busiest span that
    # long (less a second) is that phase; its CPU per round trip does not depend on whether the
    # clients or the server set the pace.
    span = max(1.0, plan.signalling_duration - 1)
    best = 0.0
    for i, first in enumerate(samples):
        last = next((x for x in samples[i:] if x.t - first.t >= span), None)
        if last is not None:
            best = max(best, (last.server_cpu - first.server_cpu) / (last.t - first.t))
    rps = report.get("round_trips_per_second") or 0
    return {"round_trips_per_s": report.get("round_trips_per_second"), "errors": report.get("errors"),
            "server_cpu_pct": round(100 * best, 1),
            "cpu_ms_per_1000_round_trips": round(1e6 * best / rps, 1) if rps else None,
            "latency_p95_ms": {verb: p.get("p95") for verb, p in report.get("latency_ms", {}).items()},
            "kb_per_idle_session": (report.get("server") or {}).get("kb_per_idle_session"),
            "client_cpu_pct": report.get("client_cpu_percent"),
            # the busiest tenth of the run: how close to its core the server got
            "server_cpu_pct_top": round(100 * busy[len(busy) * 9 // 10], 1) if busy else None}


def measure(server: Server, plan: Plan, client_cpu: int, workdir: Path, quota: CpuQuota,
            share: float, parts: set[str]) -> dict[str, Any]:
    _say(f"{server.name}: starting ({' '.join(server.command[-8:])})")
    server.start()
    quota.add(procstat.tree(server.pid))
    try:
        time.sleep(1)
        idle = _rss(procstat.tree(server.pid))
        idle_pss = _pss(procstat.tree(server.pid))
        run_calls(server, 1, 1, 3, client_cpu, workdir, "warmup")
        _say(f"{server.name}: fixed load, {plan.calls} calls at {plan.rate:g}/s, {plan.duration:g} s each")
        fixed = run_calls(server, plan.calls, plan.rate, plan.duration, client_cpu, workdir, "fixed")
        _say(f"  {server.name}: {fixed['succeeded']}/{plan.calls} ok, server CPU {fixed.get('server_cpu_pct')}% "
             f"({fixed.get('server_cpu_pct_per_call')}%/call) over a {fixed.get('window_seconds')} s steady window, "
             f"clients {fixed.get('client_cpu_pct')}%, RSS {fixed['rss_mb_per_call']} MB/call, "
             f"setup p95 {fixed['setup_first_media_p95_ms']} ms")
        result = {"rss_mb_idle": round(idle, 1), "pss_mb_idle": round(idle_pss, 1), "fixed": fixed}
        _say(f"{server.name}: setup cost, {plan.setup_calls} calls of {SETUP_MEDIA_SECONDS:g} s at {plan.setup_rate:g}/s")
        result["setup"] = setup = setup_cost(server, plan, client_cpu, workdir, fixed.get("server_cpu_pct_per_call"))
        _say(f"  {server.name}: {setup['succeeded']}/{plan.setup_calls} ok, {setup['cpu_ms_per_call']} ms CPU per call "
             f"setup + hangup")
        if "capacity" in parts:
            _say(f"{server.name}: step search, the server held to {100 * share:g}% of its core")
            result["capacity"] = step_search(server, plan, client_cpu, workdir, quota, share)
        if "signalling" in parts:
            _say(f"{server.name}: signalling, {plan.signalling_clients} clients for {plan.signalling_duration:g} s")
            result["signalling"] = sig = signalling(server, plan, client_cpu, workdir)
            _say(f"  {server.name}: {sig['round_trips_per_s']} round trips/s")
        return result
    finally:
        server.stop()


# --- the table -----------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ratio(ours: Any, janus: Any) -> float | None:
    if not isinstance(ours, (int, float)) or not isinstance(janus, (int, float)) or janus == 0:
        return None
    return round(ours / janus, 3)


def rows(janus: dict[str, Any], ours: dict[str, Any]) -> list[tuple[str, str, Any, Any, float | None, str]]:
    """(key, label, Janus, ours, ratio, goal) for the table and the JSON."""
    jf, of = janus["fixed"], ours["fixed"]
    jc, oc = janus["capacity"], ours["capacity"]
    js, os_ = janus["signalling"], ours["signalling"]
    ji, oi = janus.get("idle", {}), ours.get("idle", {})
    table = [
        ("idle_pss", f"idle PSS, MB (ours: default serve, {oi.get('default_workers', '?')} workers)",
         ji.get("pss_mb"), (oi.get("default") or {}).get("pss_mb")),
        ("idle_rss", "  idle RSS, MB", ji.get("rss_mb"), (oi.get("default") or {}).get("rss_mb")),
        ("worker_pss", f"  ours: PSS an added worker costs, MB (goal <= {WORKER_PSS_GOAL:g})", None,
         oi.get("added_worker_pss_mb")),
        ("relay_cpu_per_call", "relay CPU per call, % of a core (ours: signalling + worker)",
         jf.get("server_cpu_pct_per_call"), of.get("server_cpu_pct_per_call")),
        ("worker_cpu_per_call", "  ours: the worker alone", jf.get("server_cpu_pct_per_call"),
         of.get("relay_cpu_pct_per_call")),
        ("rss_per_call", "RSS per call, MB (peak - before)", jf["rss_mb_per_call"], of["rss_mb_per_call"]),
        ("setup_p95", "setup p95, ms (call -> first media at callee)", jf["setup_first_media_p95_ms"],
         of["setup_first_media_p95_ms"]),
        ("setup_webrtcup_p95", "  call -> both webrtcup p95, ms", jf["setup_webrtcup_p95_ms"],
         of["setup_webrtcup_p95_ms"]),
        ("setup_cpu", "CPU per call setup + hangup, ms (ours: signalling + worker)",
         janus["setup"]["cpu_ms_per_call"], ours["setup"]["cpu_ms_per_call"]),
        ("delivery", "delivery ratio (packets)", jf["delivery"], of["delivery"]),
        ("held", f"calls held, >= {100 * HELD_DELIVERY:g}% delivered ({100 * jc['share']:g}% of a core)",
         jc["held"], oc["held"]),
        ("held_video_100", f"calls held, 100% video delivered ({100 * jc['share']:g}% of a core)",
         jc["held_video_100"], oc["held_video_100"]),
        ("signalling_rps", "signalling round trips / s", js["round_trips_per_s"], os_["round_trips_per_s"]),
        ("signalling_cpu", "  server CPU ms per 1000 round trips", js["cpu_ms_per_1000_round_trips"],
         os_["cpu_ms_per_1000_round_trips"]),
        ("kb_per_idle_session", "kB per idle session", js["kb_per_idle_session"], os_["kb_per_idle_session"]),
    ]
    out = []
    for key, label, j, o in table:
        goal = GOALS.get(key)
        out.append((key, label, j, o, _ratio(o, j), f"{goal[0]} {goal[1]:g}" if goal else ""))
    return out


def render(janus: dict[str, Any], ours: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = []
    head = ("", "Janus", "ours", "ours/Janus", "goal")
    body = [(label, _fmt(j, 3 if isinstance(j, float) and j < 10 else 1), _fmt(o, 3 if isinstance(o, float) and o < 10 else 1),
             _fmt(r), goal) for _, label, j, o, r, goal in rows(janus, ours)]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(5)]
    for n, row in enumerate([head, *body]):
        lines.append("| " + " | ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                                        for i, cell in enumerate(row)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    jf, of = janus["fixed"], ours["fixed"]
    jc, oc = janus["capacity"], ours["capacity"]
    lines.append("")
    lines.append(f"fixed load: {meta['plan']['calls']} calls, {meta['plan']['duration']:g} s, steady window "
                 f"Janus {jf.get('window_seconds')} s / ours {of.get('window_seconds')} s; server CPU Janus "
                 f"{jf.get('server_cpu_pct')}% / ours {of.get('server_cpu_pct')}% (worker {of.get('relay_cpu_pct')}%) "
                 f"of its core; clients {jf.get('client_cpu_pct')}% / {of.get('client_cpu_pct')}% of theirs")
    for name, cap in (("Janus", jc), ("ours", oc)):
        steps = ", ".join(f"{s['calls']}:{_fmt(s['delivery'], 4)}/srv {_cpu_pct(s)}"
                          f"/cli {s.get('client_busiest_pct', '-')}%" for s in cap["steps"])
        lines.append(f"steps {name} (calls:delivery/server CPU/client CPU): {steps}; stopped: {cap['stopped']}; "
                     f"limit: {cap['limit']}")
    lines.append(f"signalling: server CPU Janus {janus['signalling']['server_cpu_pct']}% / ours "
                 f"{ours['signalling']['server_cpu_pct']}% of its core, clients {janus['signalling']['client_cpu_pct']}% / "
                 f"{ours['signalling']['client_cpu_pct']}% of theirs")
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller loads, about 2 minutes")
    parser.add_argument("--server-cpu", type=int, default=0, help="core of the server under test (default 0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="core of the load clients (default 1)")
    parser.add_argument("--capacity-share", type=float, default=0.15,
                        help="share of its core the server gets during the step search (default 0.15; 1: no quota)")
    parser.add_argument("--steps", help="call counts of the step search, e.g. 16,24,32 (default: the plan's)")
    parser.add_argument("--step-budget", type=float, help="seconds of step search per server")
    parser.add_argument("--only", choices=("janus", "ours"), help="measure one server (no ratios)")
    parser.add_argument("--parts", default="capacity,signalling",
                        help="what to run besides the fixed load: capacity, signalling (comma-separated; '' for "
                             "neither); the table needs both")
    parser.add_argument("--json-out", help="also write the JSON to this file")
    parser.add_argument("--keep", help="keep load reports and server logs in this directory")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespace)")
    if args.server_cpu == args.client_cpu or max(args.server_cpu, args.client_cpu) >= (os.cpu_count() or 1):
        parser.error("needs two distinct cores")
    plan = QUICK if args.quick else FULL
    if args.steps:
        plan = dataclasses.replace(plan, steps=tuple(int(x) for x in args.steps.split(",")))
    if args.step_budget:
        plan = dataclasses.replace(plan, step_budget=args.step_budget)
    parts = {part for part in args.parts.split(",") if part}
    if parts - {"capacity", "signalling"}:
        parser.error(f"unknown --parts: {', '.join(sorted(parts - {'capacity', 'signalling'}))}")
    os.sched_setaffinity(0, {args.client_cpu})  # this script samples from the clients' core
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="compare-janus-"))
    workdir.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "cores": os.cpu_count(), "load_before": _loadavg(), "plan": plan.__dict__,
            "server_cpu": args.server_cpu, "client_cpu": args.client_cpu}
    results: dict[str, Any] = {}
    started = time.monotonic()

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        with Namespace(), CpuQuota() as quota:
            share = args.capacity_share if quota.available else 1.0
            meta["capacity_share"] = share
            for name, make in (("janus", janus_server), ("ours", our_server)):
                if args.only in (None, name):
                    _say(f"{name}: idle footprint")
                    idle = (idle_footprint(janus_server(args.server_cpu, workdir)) if name == "janus"
                            else our_idle(args.server_cpu, workdir))
                    results[name] = measure(make(args.server_cpu, workdir), plan, args.client_cpu, workdir, quota,
                                            share, parts)
                    results[name]["idle"] = idle
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["load_after"] = _loadavg()
    meta["seconds"] = round(time.monotonic() - started, 1)
    out: dict[str, Any] = {"meta": meta, **results}
    if "janus" in results and "ours" in results and parts == {"capacity", "signalling"}:
        table = rows(results["janus"], results["ours"])
        out["ratios"] = {key: ratio for key, _, _, _, ratio, _ in table}
        out["goals_met"] = {key: (out["ratios"][key] is not None and
                                  (out["ratios"][key] <= limit if op == "<=" else out["ratios"][key] >= limit))
                            for key, (op, limit) in GOALS.items()}
        added = results["ours"]["idle"].get("added_worker_pss_mb")
        out["goals_met"]["worker_pss"] = added is not None and added <= WORKER_PSS_GOAL
        print(f"ours / Janus, {meta['date']}, load average {meta['load_before'][0]:.2f} before, "
              f"{meta['load_after'][0]:.2f} after, {meta['seconds']:g} s")
        print(render(results["janus"], results["ours"], meta))
    elif results:
        for name, result in results.items():
            fixed = result["fixed"]
            print(f"{name}: CPU {fixed.get('server_cpu_pct_per_call')}%/call (worker {fixed.get('relay_cpu_pct_per_call')}),"
                  f" RSS {fixed['rss_mb_per_call']} MB/call (worker {fixed['relay_rss_mb_per_call']}), setup p95 "
                  f"{fixed['setup_first_media_p95_ms']} ms (webrtcup {fixed['setup_webrtcup_p95_ms']}), delivery "
                  f"{_fmt(fixed['delivery'], 4)}, clients {fixed.get('client_cpu_pct')}%, setup + hangup "
                  f"{result['setup']['cpu_ms_per_call']} ms CPU per call")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
