#!/usr/bin/env python
"""Relay worker benchmark: N concurrent calls through one worker, fast path against transcoding.

    python bench/relay.py --calls 8 --duration 10

Each call is two clients in this process, each sending a pre-encoded 640x480 30 fps VP8 clip at
about 1 Mbit/s and Opus at 48 kbit/s to the other, through the relay worker: the real
``python -m mediarelay.worker`` (uvloop, fast path), then, as the baseline, a worker that decodes
and re-encodes with aiortc's MediaRelay (``bench/transcoding_worker.py``). The worker is pinned
to one core and this process (all clients) to the other (``os.sched_setaffinity``).

The clients are thin so that they do not eat the CPU being measured: aiortc does their ICE,
DTLS and RTCP, but their media is pre-packetized RTP sent on their own socket (the relay's
``aiortc_hooks`` used the other way round), and what they receive is counted at the socket,
not decoded (every 50th packet is SRTP-checked). Frames are RTP marker bits on the video
payload type; the relay's decoding correctness is proven by the tests, not here.

``--simulcast``: the fast path is measured twice, plain calls then the same number of simulcast
calls: each caller sends three VP8 substreams (SSRC simulcast, ``a=ssrc-group:SIM``: the
640x480 clip at 1 Mbit/s, 320x240 at 300 kbit/s and 160x120 at 100 kbit/s) of which the relay
forwards one to the callee (the top one, once its keyframe came). "Delivered" then counts what
the callees got against all that was sent (about the top substream's share for video).

``--record``: every caller is recorded by the worker (``leg.record``: Janus ``.mjr`` files in a
temporary recordings folder, removed afterwards), to measure what recording costs per call.

Printed per mode: the worker's CPU (utime+stime of all its threads, % of one core) per call,
RSS growth per call, packet and video frame delivery ratios over the window, and call setup
time (``call.create`` sent -> first media packet at the callee) p50/p95; then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from struct import Struct
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from pylibsrtp import Error as SrtpError  # noqa: E402

from loadtest.clip import Clip, load_or_make  # noqa: E402
from mediarelay import aiortc_hooks, ice, routes  # noqa: E402
from mediarelay.rtp_header import MID_URI, pack_extensions  # noqa: E402
from shared import ipc  # noqa: E402
from shared.messages import CallAccept, CallCreate, CallHangup, LegRecord  # noqa: E402

ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_FIXED = Struct("!BBHII")
MAX_PAYLOAD = 1200
VERIFY_EVERY = 50
TICK = 0.005


# --- media ------------------------------------------------------------------------------------


def vp8_payloads(frame: bytes, picture_id: int) -> list[bytes]:
    """RFC 7741 packetization: a descriptor with a 15-bit picture id, then up to MAX_PAYLOAD bytes."""
    chunks = [frame[i:i + MAX_PAYLOAD] for i in range(0, len(frame), MAX_PAYLOAD)] or [b""]
    pid = bytes([0x80 | (picture_id >> 8), picture_id & 0xFF])
    return [bytes([0x90 if i == 0 else 0x80, 0x80]) + pid + chunk for i, chunk in enumerate(chunks)]


@dataclass
class Media:
    video: list[list[bytes]]  # per frame: its RTP payloads
    audio: list[list[bytes]]
    fps: float
    #: ``--simulcast``: the lower substreams' frames (160x120, 320x240), lowest first.
    lower: list[list[list[bytes]]]


def load_media(simulcast: bool = False) -> Media:
    video: Clip = load_or_make("vp8", 640, 480, 1_000_000)
    audio: Clip = load_or_make("opus")
    lower = [load_or_make("vp8", 160, 120, 100_000), load_or_make("vp8", 320, 240, 300_000)] if simulcast else []
    return Media([vp8_payloads(f, i & 0x7FFF) for i, f in enumerate(video.frames)], [[f] for f in audio.frames],
                 1 / video.frame_seconds,
                 [[vp8_payloads(f, i & 0x7FFF) for i, f in enumerate(clip.frames)] for clip in lower])


class Sender:
    """One outgoing stream of a thin client: the clip's packets, in real time, on the PC's socket."""

    def __init__(self, section: routes.Section, socket: aiortc_hooks.MediaSocket, media: Media, *,
                 ssrc: int | None = None, frames: list[list[bytes]] | None = None) -> None:
        codec = section.media_codecs[0]
        self.kind = section.kind
        self.pt = codec.payloadType or 0
        self.ssrc = ssrc if ssrc is not None else section.local_ssrc or 0
        self.frames = frames if frames is not None else media.video if section.kind == "video" else media.audio
        self.interval = 1 / media.fps if section.kind == "video" else 0.02
        self.step = int(codec.clockRate * self.interval)
        self.protect, self.sendto, self.remote = socket.srtp_tx.protect, socket.sendto, socket.remote
        elements = []
        if MID_URI in section.extensions:
            elements.append((section.extensions[MID_URI], section.mid.encode()))
        if ABS_SEND_TIME_URI in section.extensions:
            elements.append((section.extensions[ABS_SEND_TIME_URI], b"\x00\x00\x00"))
        self.extensions = bytearray(pack_extensions(elements))
        self.abs_at = self.extensions.find(b"\x00\x00\x00", 4) if ABS_SEND_TIME_URI in section.extensions else -1
        self.b0 = 0x90 if self.extensions else 0x80
        self.seq = random.randrange(0x8000)
        self.ts = random.getrandbits(32)
        self.index = 0
        self.due: float | None = None
        self.packets = self.frames_sent = 0

    def pump(self, now: float) -> None:
        if self.due is None:
            self.due = now
        while self.due <= now:
            self.due += self.interval
            payloads = self.frames[self.index % len(self.frames)]
            self.index += 1
            if self.abs_at >= 0:
                ast = int((time.time() + 2208988800) * (1 << 18)) & 0xFFFFFF
                self.extensions[self.abs_at:self.abs_at + 3] = ast.to_bytes(3, "big")
            extensions = bytes(self.extensions)
            last = len(payloads) - 1
            for i, payload in enumerate(payloads):
                header = _FIXED.pack(self.b0, (0x80 if i == last else 0) | self.pt, self.seq, self.ts, self.ssrc)
                self.sendto(self.protect(header + extensions + payload), self.remote)
                self.seq = (self.seq + 1) & 0xFFFF
                self.packets += 1
            self.frames_sent += 1
            self.ts = (self.ts + self.step) & 0xFFFFFFFF


@dataclass
class Received:
    packets: int = 0
    octets: int = 0
    video_frames: int = 0
    first: float | None = None
    verified: int = 0
    failed: int = 0


class ThinClient:
    """A PeerConnection whose media bypasses aiortc's sender and receiver (see the module doc)."""

    def __init__(self, media: Media, senders: list[Sender], simulcast: bool = False) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        #: ``--simulcast`` caller: the SSRCs of its two lower substreams (the top one is aiortc's).
        self.lower_ssrcs = [random.getrandbits(31) + 1, random.getrandbits(31) + 1] if simulcast else []
        for kind in ("audio", "video"):
            transceiver = self.pc.addTransceiver(kind)
            aiortc_hooks.idle_sender(transceiver.sender)
        self.media = media
        self.all_senders = senders
        self.senders: list[Sender] = []
        self.received = Received()
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState != "connected" or self.senders:
            return
        local, remote = self.pc.localDescription, self.pc.remoteDescription
        sections = routes.sections(local.sdp, remote.sdp, local_is_answer=local.type == "answer")
        dtls = self.pc.getTransceivers()[0].receiver.transport
        socket = aiortc_hooks.media_socket(dtls)
        self.senders = [Sender(s, socket, self.media) for s in sections if s.relay_sends]
        video_section = next((s for s in sections if s.kind == "video" and s.relay_sends), None)
        if video_section is not None:
            self.senders += [Sender(video_section, socket, self.media, ssrc=ssrc, frames=frames)
                             for ssrc, frames in zip(self.lower_ssrcs, self.media.lower, strict=False)]
        self.all_senders.extend(self.senders)
        video = {c.payloadType for s in sections if s.kind == "video" for c in s.media_codecs}
        media = {c.payloadType for s in sections for c in s.media_codecs}
        aiortc_hooks.tap_datagrams(dtls, lambda original: self._counter(original, socket, video, media), set())

    def _counter(self, original: Any, socket: aiortc_hooks.MediaSocket, video: set[int | None],
                 media: set[int | None]) -> Any:
        received = self.received
        unprotect = socket.srtp_rx.unprotect

        def datagram_received(data: bytes, addr: Any) -> None:
            if 127 < data[0] < 192 and not 191 < data[1] < 224:
                pt = data[1] & 0x7F
                if pt in media:
                    received.packets += 1
                    received.octets += len(data)
                    if received.first is None:
                        received.first = time.perf_counter()
                    if pt in video and data[1] & 0x80:
                        received.video_frames += 1
                    if received.packets % VERIFY_EVERY == 1:
                        try:
                            unprotect(data)
                            received.verified += 1
                        except SrtpError:
                            received.failed += 1
                return
            original(data, addr)

        return datagram_received

    def offer(self) -> str:
        """The client's offer; a simulcast caller's announces its substreams (lowest first)."""
        sdp: str = self.pc.localDescription.sdp
        if not self.lower_ssrcs:
            return sdp
        head, video = sdp.split("m=video", 1)
        lines = video.split("\r\n")
        top = next(line for line in lines if line.startswith("a=ssrc:") and " cname:" in line)
        ssrc, cname = top[len("a=ssrc:"):].split(" cname:")
        extra = [f"a=ssrc:{lower} cname:{cname}" for lower in self.lower_ssrcs]
        extra.append("a=ssrc-group:SIM " + " ".join(str(s) for s in [*self.lower_ssrcs, int(ssrc)]))
        at = lines.index(top) + 1
        return head + "m=video" + "\r\n".join(lines[:at] + extra + lines[at:])


@dataclass
class Call:
    caller: ThinClient
    callee: ThinClient
    started: float = 0.0
    setup: float | None = None


# --- the worker -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def folder_bytes(path: str) -> int:
    """Bytes of the files under ``path`` (what the worker recorded so far)."""
    return sum(entry.stat().st_size for entry in Path(path).rglob("*") if entry.is_file())


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def start_worker(mode: str, address: str, cpu: int | None, recordings: str) -> asyncio.subprocess.Process:
    if mode == "fastpath":
        command = [sys.executable, "-m", "mediarelay.worker", "--listen", address, "--log-level", "WARNING"]
    else:
        command = [sys.executable, str(ROOT / "bench" / "transcoding_worker.py"), "--listen", address]
    env = {**os.environ, "VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "PYTHONPATH": str(ROOT),
           "VIDEOCALL_RECORDINGS_DIR": recordings}
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
    path = address.split(":", 1)[1]
    for _ in range(1000):
        if os.path.exists(path):
            return process
        await asyncio.sleep(0.01)
    raise RuntimeError(f"{mode} worker did not listen on {address}")


# --- one run ----------------------------------------------------------------------------------


class Ticker:
    """Pumps every sender every TICK; paused, it sends nothing (and does not catch up after)."""

    def __init__(self, senders: list[Sender]) -> None:
        self.senders = senders
        self.paused = False
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            now = time.perf_counter()
            for sender in self.senders:
                if self.paused:
                    sender.due = None
                else:
                    sender.pump(now)
            await asyncio.sleep(TICK)

    async def drained(self, seconds: float = 0.3) -> None:
        """Stop sending and wait until what was sent has arrived (a window edge)."""
        self.paused = True
        await asyncio.sleep(seconds)


async def place_call(channel: ipc.Channel, number: int, media: Media, senders: list[Sender],
                     simulcast: bool = False) -> Call:
    call = Call(ThinClient(media, senders, simulcast), ThinClient(media, senders))
    await call.caller.pc.setLocalDescription(await call.caller.pc.createOffer())
    call.started = time.perf_counter()
    created = await channel.request(CallCreate(call_id=f"bench-{number}", caller_offer=call.caller.offer()))
    await call.callee.pc.setRemoteDescription(RTCSessionDescription(sdp=created.callee_offer, type="offer"))
    await call.callee.pc.setLocalDescription(await call.callee.pc.createAnswer())
    accepted = await channel.request(CallAccept(call_id=f"bench-{number}",
                                                               callee_answer=call.callee.pc.localDescription.sdp))
    await call.caller.pc.setRemoteDescription(RTCSessionDescription(sdp=accepted.caller_answer, type="answer"))
    return call


def snapshot(calls: list[Call], senders: list[Sender]) -> dict[str, int]:
    return {
        "sent_packets": sum(s.packets for s in senders),
        "sent_video_frames": sum(s.frames_sent for s in senders if s.kind == "video"),
        "received_packets": sum(c.caller.received.packets + c.callee.received.packets for c in calls),
        "received_video_frames": sum(c.caller.received.video_frames + c.callee.received.video_frames for c in calls),
        "callee_octets": sum(c.callee.received.octets for c in calls),
    }


async def run(mode: str, calls_wanted: int, duration: float, warmup: float, relay_cpu: int | None,
              profile: str = "", record: bool = False, simulcast: bool = False) -> dict[str, Any]:
    media = load_media(simulcast)
    folder = tempfile.mkdtemp(prefix='bench-relay-')
    address = f"unix:{folder}/worker.sock"
    recordings = os.path.join(folder, "recordings")
    worker = await start_worker(mode, address, relay_cpu, recordings)
    senders: list[Sender] = []
    calls: list[Call] = []
    ticker = Ticker(senders)
    with ice.installed(ice.LOOPBACK):
        channel = await ipc.connect(address, node_id="bench")
        try:
            await asyncio.sleep(0.5)
            rss_before = rss_mb(worker.pid)
            for number in range(calls_wanted):
                calls.append(await place_call(channel, number, media, senders, simulcast))
                if record:
                    await channel.request(LegRecord(call_id=f"bench-{number}", leg="caller", record=True,
                                                    base=f"bench-{number}"))
                await asyncio.sleep(0.05)
            deadline = time.perf_counter() + 10
            while time.perf_counter() < deadline and any(c.callee.received.first is None for c in calls):
                await asyncio.sleep(0.05)
            for call in calls:
                if call.callee.received.first is not None:
                    call.setup = call.callee.received.first - call.started
            await asyncio.sleep(warmup)
            rss_after = rss_mb(worker.pid)
            # Delivery counts between two edges where nothing is in flight (senders paused, drained).
            await ticker.drained()
            before = snapshot(calls, senders)
            ticker.paused = False
            cpu0, client0, t0 = cpu_seconds(worker.pid), time.process_time(), time.perf_counter()
            recorded0 = folder_bytes(recordings)
            if profile:
                spy = await asyncio.create_subprocess_exec(
                    "py-spy", "record", "--pid", str(worker.pid), "--duration", str(int(duration)), "--rate", "1000",
                    "--format", "raw", "--output", profile, "--native",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await asyncio.sleep(duration)
            if profile:
                await spy.wait()
            cpu1, client1, t1 = cpu_seconds(worker.pid), time.process_time(), time.perf_counter()
            await ticker.drained()
            recorded = folder_bytes(recordings) - recorded0
            after = snapshot(calls, senders)
            wall = t1 - t0
            setups = sorted(c.setup * 1000 for c in calls if c.setup is not None)
            user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
            worker_cpu = (user + system) / wall * 100
            sent_packets = after["sent_packets"] - before["sent_packets"]
            sent_frames = after["sent_video_frames"] - before["sent_video_frames"]
            return {
                "mode": mode,
                "recording": record,
                "simulcast": simulcast,
                "recorded_kbit_s_per_call": round(recorded * 8 / 1000 / wall / calls_wanted, 1),
                "calls": calls_wanted,
                "calls_with_media": len(setups),
                "window_s": round(wall, 2),
                "worker_cpu_pct": round(worker_cpu, 2),
                "worker_cpu_pct_per_call": round(worker_cpu / calls_wanted, 3),
                "worker_us_per_packet": round((user + system) * 1e6 / max(1, sent_packets), 1),
                "worker_user_us_per_packet": round(user * 1e6 / max(1, sent_packets), 1),
                "worker_system_us_per_packet": round(system * 1e6 / max(1, sent_packets), 1),
                "worker_rss_mb_per_call": round((rss_after - rss_before) / calls_wanted, 2),
                "worker_rss_mb": round(rss_after, 1),
                "packet_delivery": round((after["received_packets"] - before["received_packets"])
                                         / max(1, sent_packets), 4),
                "video_frame_delivery": round((after["received_video_frames"] - before["received_video_frames"])
                                              / max(1, sent_frames), 4),
                "packets_per_s": round(sent_packets / wall),
                "callee_kbit_s": round((after["callee_octets"] - before["callee_octets"]) * 8 / 1000 / wall
                                       / calls_wanted),
                "setup_ms_p50": round(statistics.median(setups), 1) if setups else None,
                "setup_ms_p95": round(setups[min(len(setups) - 1, int(0.95 * len(setups)))], 1) if setups else None,
                "client_cpu_pct": round((client1 - client0) / wall * 100, 1),
                "srtp_checks_failed": sum(c.caller.received.failed + c.callee.received.failed for c in calls),
                "loadavg": os.getloadavg()[0],
            }
        finally:
            ticker.task.cancel()
            for number, call in enumerate(calls):
                try:
                    await channel.request(CallHangup(call_id=f"bench-{number}"), timeout=5)
                except Exception:  # noqa: BLE001 - the worker may be gone already; close the clients anyway
                    pass
                await call.caller.pc.close()
                await call.callee.pc.close()
            await channel.close()
            worker.terminate()
            await worker.wait()
            shutil.rmtree(folder, ignore_errors=True)


# --- profile ----------------------------------------------------------------------------------

#: User-space buckets: (name, test on a sample's stack, outermost frame first); the first that
#: matches takes the sample. py-spy runs with --native, so C frames (libsrtp, OpenSSL, uvloop)
#: are in the stacks; samples inside a system call are left out here: the kernel's share is
#: measured exactly by the process's system time instead.
def _has(frames: list[str], *needles: str) -> bool:
    return any(needle in frame for frame in frames for needle in needles)


SYSCALLS = ("sendmsg", "sendto (libc", "recvmsg", "recvfrom", "epoll", "getpid")
BUCKETS: list[tuple[str, Any]] = [
    ("SRTP unprotect: pylibsrtp wrapper + libsrtp", lambda f: _has(f, "Session.unprotect")),
    ("SRTP protect: pylibsrtp wrapper + libsrtp", lambda f: _has(f, "Session.protect")),
    ("fast path Python: demux, stats, rewrite", lambda f: _has(
        f, "forwarder.py", "rewriter.py", "feedback.py", "media_flow.py", "rtp_header.py")),
    ("relay RTCP and its timers (rtcp.py, media.py)", lambda f: _has(f, "rtcp.py", "media.py")),
    ("aiortc/aioice: DTLS, SCTP, STUN and their timers", lambda f: _has(f, "aiortc", "aioice", "pyee")),
    ("uvloop: reading sockets, calling back, timers", lambda f: True),
]


def summarize_profile(path: str, user_us: float) -> list[tuple[str, float, float]]:
    """Share of user-space samples per bucket, and that share of the user time per packet."""
    counts = dict.fromkeys((name for name, _ in BUCKETS), 0)
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            if len(frames) < 2 or not count.isdigit() or _has(frames[-1:], *SYSCALLS):
                continue
            for name, test in BUCKETS:
                if test(frames):
                    counts[name] += int(count)
                    break
    total = sum(counts.values()) or 1
    return [(name, n / total, n / total * user_us) for name, n in counts.items()]


def describe(result: dict[str, Any]) -> str:
    name = {"fastpath": "fast path", "transcode": "decode+re-encode (MediaRelay)"}[result["mode"]]
    if result.get("simulcast"):
        name += ", simulcast calls (3 substreams in, 1 out)"
    if result["recording"]:
        name += f", every caller recorded ({result['recorded_kbit_s_per_call']} kbit/s to disk per call)"
    return (f"{name}: {result['calls']} calls, {result['window_s']} s window: worker CPU {result['worker_cpu_pct']}% "
            f"of a core = {result['worker_cpu_pct_per_call']}% per call ({result['worker_us_per_packet']} us/packet, "
            f"{result['packets_per_s']} packets/s); RSS {result['worker_rss_mb_per_call']} MB per call; delivered "
            f"{result['packet_delivery']:.2%} of packets, {result['video_frame_delivery']:.2%} of video frames "
            f"({result['callee_kbit_s']} kbit/s to each callee); setup "
            f"p50 {result['setup_ms_p50']} ms, p95 {result['setup_ms_p95']} ms (call.create -> first packet at the "
            f"callee; {result['calls_with_media']}/{result['calls']} calls with media); client CPU "
            f"{result['client_cpu_pct']}%, load average {result['loadavg']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="measured window, seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds between setup and the window")
    parser.add_argument("--baseline-calls", type=int, default=None,
                        help="calls for the transcoding baseline (default: min(calls, 2): it needs ~a core per call)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--relay-cpu", type=int, default=0, help="core for the worker (-1: no pinning)")
    parser.add_argument("--client-cpu", type=int, default=1, help="core for the clients (-1: no pinning)")
    parser.add_argument("--record", action="store_true", help="the fast-path worker records every caller (.mjr)")
    parser.add_argument("--simulcast", action="store_true",
                        help="measure simulcast calls (3 substreams from each caller) after the plain ones")
    parser.add_argument("--profile", metavar="FILE", default="",
                        help="py-spy the fast-path worker during the window (raw stacks to FILE) and summarize")
    args = parser.parse_args()
    if args.client_cpu >= 0:
        os.sched_setaffinity(0, {args.client_cpu})
    relay_cpu = args.relay_cpu if args.relay_cpu >= 0 else None
    import uvloop

    results = [uvloop.run(run("fastpath", args.calls, args.duration, args.warmup, relay_cpu, args.profile,
                              args.record))]
    print(describe(results[0]), flush=True)
    if args.simulcast:
        results.append(uvloop.run(run("fastpath", args.calls, args.duration, args.warmup, relay_cpu,
                                      record=args.record, simulcast=True)))
        print(describe(results[-1]), flush=True)
    if args.profile:
        fast = results[0]
        print(f"where the worker's {fast['worker_us_per_packet']} us per forwarded packet go:")
        print(f"  {fast['worker_system_us_per_packet']:5.1f} us  kernel (system time: sendmsg, recvmsg, epoll; on "
              "loopback sendmsg also delivers to the receiving socket)")
        print(f"  {fast['worker_user_us_per_packet']:5.1f} us  user space, by py-spy samples:")
        for name, share, us in summarize_profile(args.profile, fast["worker_user_us_per_packet"]):
            print(f"    {us:5.1f} us  {share:6.1%}  {name}")
    if not args.no_baseline:
        calls = args.baseline_calls or min(args.calls, 2)
        results.append(uvloop.run(run("transcode", calls, args.duration, args.warmup, relay_cpu)))
        print(describe(results[-1]), flush=True)
    print(json.dumps({"command": " ".join(sys.argv), "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
