#!/usr/bin/env python
"""What a relay worker's or the signalling process's memory is made of, round after round.

    python bench/memory_probe.py --rounds 8 --calls 6 --seconds 3
    python bench/memory_probe.py --loadtest --calls 6 --seconds 20   # through signalling, as users call
    python bench/memory_probe.py --tracemalloc        # also Python allocations by line (slower)
    python bench/memory_probe.py --signalling --connections 3000     # a connection burst, then closed
    python bench/memory_probe.py --during --calls 16 --seconds 20 --tracemalloc  # what a call costs while up

A script, not a test: it starts the real ``python -m mediarelay.worker`` (this file's
``--child`` mode: the same worker, plus a SIGUSR1 handler that writes what it holds), then runs
rounds of ``--calls`` concurrent calls of two aiortc clients each (audio and video m-lines, a
data channel; Opus silence and small VP8 frames flowing for ``--seconds``), hung up at the end
of each round. After each round (no call up, a full ``gc.collect()``) the worker reports:

- its RSS, and from ``/proc/self/smaps_rollup`` the anonymous memory;
- glibc's ``mallinfo2``: heap in use (``uordblks``) against heap kept free inside the arenas
  (``fordblks``) and the arenas' size (``arena`` + ``hblkhd``): real growth raises the first,
  fragmentation the second;
- live objects by type (``gc.get_objects()``), the types that grew since the round before, and
  how many of the call-scoped classes (``Call``, ``Leg``, ``RTCPeerConnection``, ``RTCDtlsTransport``,
  ``Connection`` of aioice, SRTP sessions...) are still alive;
- with ``--tracemalloc``: the lines whose allocations grew most since the round before.

Printed: one block per round; the rows to compare are the first rounds (warm-up) against the
last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Classes whose instances belong to one call: none should outlive its hangup.
CALL_SCOPED = ("Call", "Leg", "RTCPeerConnection", "RTCDtlsTransport", "RTCIceTransport", "RTCIceGatherer",
               "RTCSctpTransport", "RTCRtpSender", "RTCRtpReceiver", "RTCRtpTransceiver", "Connection",
               "StunProtocol", "Session", "CallMedia", "DataChannelRelay", "RTCDataChannel", "MediaFlow")


_MALLINFO2_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS]


def mallinfo2() -> dict[str, float]:
    try:
        func = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    func.restype = _Mallinfo2
    info = func()
    return {name: round(getattr(info, name) / 2**20, 2) for name in _MALLINFO2_FIELDS
            if name in ("arena", "hblkhd", "uordblks", "fordblks", "keepcost")}


def malloc_info() -> dict[str, float]:
    """All arenas (``mallinfo2`` sees the main one only): glibc's ``malloc_info`` XML totals."""
    import re

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.open_memstream.restype = ctypes.c_void_p
        buf, size = ctypes.c_char_p(), ctypes.c_size_t()
        stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
        libc.malloc_info(0, ctypes.c_void_p(stream))
        libc.fclose(ctypes.c_void_p(stream))
        xml = ctypes.string_at(buf, size.value).decode()
        libc.free(buf)
    except (OSError, AttributeError):
        return {}
    tail = xml.rsplit("</heap>", 1)[-1]
    out = {"arenas": float(xml.count("<heap nr="))}
    for kind in ("fast", "rest"):
        found = re.search(rf'<total type="{kind}" count="\d+" size="(\d+)"/>', tail)
        if found:
            out[f"free_{kind}"] = round(int(found.group(1)) / 2**20, 2)
    for kind in ("current", "max"):
        found = re.search(rf'<system type="{kind}" size="(\d+)"/>', tail)
        if found:
            out[f"system_{kind}"] = round(int(found.group(1)) / 2**20, 2)
    found = re.search(r'<aspace type="total" size="(\d+)"/>', tail)
    if found:
        out["aspace"] = round(int(found.group(1)) / 2**20, 2)
    return out


def _libc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_trim()


def pymalloc() -> dict[str, float]:
    """Python's own allocator (``sys._debugmallocstats``): its arenas, and the bytes in use in them."""
    import re

    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(write)
        os.close(saved)
    with open(read) as pipe:
        text = pipe.read()
    out: dict[str, float] = {}
    for key, pattern in (("arenas", r"# arenas allocated current\s*=\s*([\d,]+)"),
                         ("arenas_mb", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
                         ("total_mb", r"Total\s*=\s*([\d,]+)")):
        found = re.search(pattern, text)
        if found:
            value = float(found.group(1).replace(",", ""))
            out[key] = value if key == "arenas" else round(value / 2**20, 2)
    return out


def dtls_sessions() -> list[int]:
    """The OpenSSL session cache mode of each shared DTLS context of a relay process (0: off)."""
    try:
        from mediarelay.aiortc_hooks.process import SharedCertificate
    except ImportError:
        return []
    shared = SharedCertificate._current
    if shared is None:
        return []
    return [int(context.get_session_cache_mode()) for context in shared._contexts.values()]


def smaps() -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        if key in ("Rss", "Pss", "Anonymous", "Private_Dirty"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


# --- children: the worker, or signalling, with a report on SIGUSR1 -------------------------------


def reporter(report: str, trace: bool, scoped: tuple[str, ...]) -> Any:
    """The SIGUSR1 report: what this process holds, and what grew since the last one."""
    import tracemalloc

    if trace:
        tracemalloc.start(int(os.environ.get("PROBE_TRACE_DEPTH", "12")))
    state: dict[str, Any] = {"types": None, "snapshot": None}

    def dump() -> None:
        if Path(report + ".during").exists():
            dump_during()
            return
        # What a full collection would free, and the call-scoped objects alive before it: cyclic
        # garbage waits in the oldest generation for a full collection, which may be rare.
        uncollected = Counter(type(o).__name__ for o in gc.get_objects() if type(o).__name__ in scoped)
        gc_counts = gc.get_count()
        freed = gc.collect()
        counts = Counter(type(o).__name__ for o in gc.get_objects())
        before = state["types"] or Counter()
        grown = {name: (n, n - before.get(name, 0)) for name, n in counts.items() if n - before.get(name, 0) > 0}
        state["types"] = counts
        out: dict[str, Any] = {
            "smaps": smaps(), "mallinfo2": mallinfo2(), "malloc_info": malloc_info(),
            "threads": len(os.listdir("/proc/self/task")), "objects": len(gc.get_objects()),
            "alive": {name: counts[name] for name in scoped if counts.get(name)},
            "grown": sorted(grown.items(), key=lambda item: -item[1][1])[:25],
            "tasks": len(asyncio.all_tasks()),
            "fds": len(os.listdir("/proc/self/fd")),
            "before_collect": {"alive": dict(uncollected), "gc_counts": gc_counts, "freed": freed,
                               "stats": gc.get_stats()[2], "frozen": gc.get_freeze_count()},
        }
        if trace:
            snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            if state["snapshot"] is not None:
                stats = snapshot.compare_to(state["snapshot"], "traceback")
                out["trace"] = [{"kb": round(s.size_diff / 1024, 1), "count": s.count_diff,
                                 "where": [f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno}"
                                           for f in s.traceback][-6:]} for s in stats[:15] if s.size_diff > 0]
            state["snapshot"] = snapshot
            out["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
        holders: list[str] = []
        for obj in gc.get_objects():
            if type(obj).__name__ in ("Connection", "Call", "Leg") and type(obj).__module__.split(".")[0] in (
                    "signaling", "mediarelay"):
                holders.append(f"{obj!r}: " + ", ".join(_describe(r) for r in gc.get_referrers(obj)
                                                        if r is not holders)[:400])
        out["holders"] = holders[:5]
        if _MALLOC_TRIM is not None:
            _MALLOC_TRIM(0)
            out["after_trim"] = smaps()
        out["pymalloc"] = pymalloc()
        out["dtls_sessions"] = dtls_sessions()
        Path(report).write_text(json.dumps(out))

    def dump_during() -> None:
        """What the process holds now, calls up: nothing collected or trimmed first (as RSS is
        sampled by ``compare_janus.py``); objects by type with their shallow sizes, and with
        ``--tracemalloc`` every traced allocation by line and by file (diffed by the parent)."""
        import sys as _sys

        out: dict[str, Any] = {"smaps": smaps(), "mallinfo2": mallinfo2(), "malloc_info": malloc_info(),
                               "pymalloc": pymalloc(), "tasks": len(asyncio.all_tasks()),
                               # asyncio's timer heap; uvloop (the worker's loop) shows none: "-"
                               "timers": len(getattr(asyncio.get_running_loop(), "_scheduled", ())) or "-",
                               "fds": len(os.listdir("/proc/self/fd")), "threads": len(os.listdir("/proc/self/task"))}
        counts: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for obj in gc.get_objects():
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            counts[name] += 1
            sizes[name] += _sys.getsizeof(obj)
        out["types"] = {name: [counts[name], sizes[name]] for name in counts}
        tasks: Counter[str] = Counter()
        for task in asyncio.all_tasks():
            coro = task.get_coro()
            tasks[getattr(coro, "__qualname__", type(coro).__name__)] += 1
        out["task_names"] = dict(tasks)
        if trace:
            snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            for key in ("lineno", "filename"):
                out[f"trace_{key}"] = {str(stat.traceback[0].filename.rsplit("site-packages/", 1)[-1]) + (
                    f":{stat.traceback[0].lineno}" if key == "lineno" else ""): [stat.size, stat.count]
                    for stat in snapshot.statistics(key)}
            out["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
            if state.get("during") is not None:
                stats = snapshot.compare_to(state["during"], "traceback")
                out["trace"] = [{"kb": round(s.size_diff / 1024, 1), "count": s.count_diff,
                                 "where": [f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno}"
                                           for f in s.traceback][-8:]} for s in stats[:40] if s.size_diff > 0]
            state["during"] = snapshot
        Path(report).write_text(json.dumps(out))

    def on_usr1(*_: object) -> None:
        asyncio.get_running_loop().call_soon(dump)

    return on_usr1


#: Classes whose instances belong to one WebSocket connection of signalling.
CONNECTION_SCOPED = ("Connection", "GuardedConnection", "ServerConnection", "ServerProtocol", "StreamReader",
                     "Queue", "Session", "Task", "_SelectorSocketTransport", "UVStream", "TCPTransport",
                     "PerMessageDeflate", "Compress", "Decompress")


def signalling_child(port: int, report: str, trace: bool) -> int:
    from shared.settings import Settings
    from signaling.server import run
    from videocall.cli import _run

    on_usr1 = reporter(report, trace, CONNECTION_SCOPED)
    settings = Settings(port=port, trusted_proxies=["127.0.0.1"], log_level="WARNING")

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_usr1)
        await run(settings)

    with contextlib.suppress(KeyboardInterrupt):
        _run(main())
    return 0


def _describe(referrer: object) -> str:
    """A referrer's type, and for a function, frame or coroutine its name."""
    name = getattr(referrer, "__qualname__", "") or getattr(getattr(referrer, "f_code", None), "co_qualname", "")
    return f"{type(referrer).__name__}({name})"


def child(listen: str, report: str, trace: bool, trim: bool) -> int:
    from mediarelay import worker

    if not trim:
        from shared import heap

        heap.HeapTrimmer.soon = lambda self: None  # type: ignore[method-assign]
    on_usr1 = reporter(report, trace, CALL_SCOPED)
    original = worker._until_signalled

    async def until_signalled(*args: Any) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_usr1)
        await original(*args)

    worker._until_signalled = until_signalled  # type: ignore[assignment]
    return worker.main(["--listen", listen, "--worker-id", "probe", "--log-level", "WARNING"])


# --- parent: calls through it ---------------------------------------------------------------------


def tracks() -> tuple[Any, Any]:
    import numpy
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
    from av import VideoFrame

    class SmallVideo(VideoStreamTrack):
        async def recv(self) -> VideoFrame:
            pts, time_base = await self.next_timestamp()
            frame = VideoFrame.from_ndarray(numpy.zeros((120, 160, 3), numpy.uint8), format="bgr24")
            frame.pts, frame.time_base = pts, time_base
            return frame

    return AudioStreamTrack(), SmallVideo()


def vanish(pc: Any) -> None:
    """The client is gone without a word (its ICE sockets closed, no DTLS close_notify): the
    relay sees consent expire and the leg fail, as with a browser whose network went away."""
    for transceiver in pc.getTransceivers()[:1]:
        connection = transceiver.receiver.transport.transport._connection
        for protocol in connection._protocols:
            protocol.transport.close()


async def one_call(address: str, call_id: str, seconds: float, fail: bool = False) -> bool:
    from shared import ipc
    from shared.messages import CallAccept, CallCreate, CallHangup
    from tests.support.relay_clients import Notifications, apply_answer, client, make_offer

    notes = Notifications()
    channel = await ipc.connect(address, node_id=f"n-{call_id}", on_notification=notes)
    caller, callee = client(), client()
    ok = False
    try:
        audio, video = tracks()
        caller.addTrack(audio)
        caller.addTrack(video)
        caller.createDataChannel("chat")
        created = await channel.request(CallCreate(call_id=call_id, caller_offer=await make_offer(caller)))
        from aiortc import RTCSessionDescription
        await callee.setRemoteDescription(RTCSessionDescription(sdp=created.callee_offer, type="offer"))
        audio2, video2 = tracks()
        for transceiver in callee.getTransceivers():
            transceiver.sender.replaceTrack(audio2 if transceiver.kind == "audio" else video2)
            transceiver.direction = "sendrecv"
        await callee.setLocalDescription(await callee.createAnswer())
        accepted = await channel.request(CallAccept(call_id=call_id, callee_answer=callee.localDescription.sdp))
        await apply_answer(caller, accepted.caller_answer)
        await notes.wait(lambda n: {("caller", "connected", ""), ("callee", "connected", "")} <= set(n.states()), 20)
        await asyncio.sleep(seconds)
        if fail:
            vanish(caller)
            await notes.wait(lambda n: any(s[0] == "caller" and s[1] == "failed" for s in n.states()), 30)
        ok = True
    except Exception as exc:  # noqa: BLE001 - a bench: count it and go on
        print(f"  call {call_id} failed: {exc!r}", flush=True)
    finally:
        with contextlib.suppress(Exception):
            await channel.request(CallHangup(call_id=call_id))
        await channel.close()
        await caller.close()
        await callee.close()
    return ok


def report(proc: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    path.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    for _ in range(600):
        if path.exists() and path.stat().st_size:
            time.sleep(0.05)
            return dict(json.loads(path.read_text()))
        time.sleep(0.05)
    raise SystemExit("the worker did not report")


def show(label: str, data: dict[str, Any]) -> None:
    m = data["mallinfo2"]
    print(f"{label}: rss {data['smaps'].get('Rss')} MB anon {data['smaps'].get('Anonymous')} MB | heap in use "
          f"{m.get('uordblks')} free-in-arenas {m.get('fordblks')} arena {m.get('arena')} mmap {m.get('hblkhd')} | "
          f"objects {data['objects']} tasks {data['tasks']} fds {data['fds']}"
          + (f" traced {data['traced_mb']} MB" if "traced_mb" in data else ""), flush=True)
    for holder in data.get("holders", []):
        print(f"  held: {holder}")
    if "after_trim" in data:
        print(f"  after malloc_trim(0): {data['after_trim']}")
    print(f"  pymalloc: {data.get('pymalloc')} dtls session cache modes: {data.get('dtls_sessions')}")
    print(f"  all arenas: {data['malloc_info']} threads {data['threads']}")
    print(f"  alive call-scoped: {data['alive'] or 'none'}; before a full collection: {data['before_collect']}")
    print(f"  grown types: {', '.join(f'{n} {c}(+{d})' for n, (c, d) in data['grown'][:15])}")
    for stat in data.get("trace", [])[:8]:
        print(f"  +{stat['kb']} kB ({stat['count']:+d}) {' <- '.join(reversed(stat['where']))}")


async def drive(args: argparse.Namespace, address: str, proc: subprocess.Popen[bytes], path: Path) -> None:
    from mediarelay import ice

    with ice.installed(ice.LOOPBACK):
        show("start", await asyncio.to_thread(report, proc, path))
        for number in range(args.rounds):
            results = await asyncio.gather(*(one_call(address, f"r{number}c{i}", args.seconds,
                                                      bool(args.fail_every) and i % args.fail_every == 0)
                                             for i in range(args.calls)))
            await asyncio.sleep(2)  # the hangups carried out, the trim done
            show(f"round {number + 1} ({sum(results)}/{args.calls} ok)", await asyncio.to_thread(report, proc, path))


def drive_loadtest(args: argparse.Namespace, address: str, proc: subprocess.Popen[bytes], path: Path,
                   env: dict[str, str]) -> None:
    """The calls as users make them: ``videocall signaling`` on this worker, ``videocall loadtest`` rounds."""
    port = free_port()
    signalling = subprocess.Popen([sys.executable, "-m", "videocall", "signaling", "--port", str(port),
                                   "--worker", address], env=env, start_new_session=True)
    try:
        time.sleep(3)
        show("start", report(proc, path))
        for number in range(args.rounds):
            out = path.with_name(f"round{number}.json")
            subprocess.run([sys.executable, "-m", "videocall", "loadtest", f"ws://127.0.0.1:{port}/", "--calls",
                            str(args.calls), "--rate", "4", "--duration", f"{args.seconds:g}", "--json", str(out),
                            "--quiet", "--resolution", args.resolution], env=env, check=False, timeout=300,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ok = json.loads(out.read_text()).get("calls", {}).get("succeeded") if out.exists() else None
            time.sleep(2)
            show(f"round {number + 1} ({ok}/{args.calls} ok; signalling rss "
                 f"{rss_mb(signalling.pid)} MB)", report(proc, path))
    finally:
        signalling.terminate()
        signalling.wait(30)


def drive_during(args: argparse.Namespace, address: str, proc: subprocess.Popen[bytes], path: Path,
                 env: dict[str, str]) -> None:
    """What ``--calls`` calls cost while they are up: ``videocall signaling`` on this worker, a
    warm-up ``videocall loadtest`` call, a report (calls down, collected, trimmed), then the
    calls at ``--rate`` and a report while all are up and sending; printed, per call, the
    difference between the two (RSS, heap, objects by type, with ``--tracemalloc`` by line)."""
    port = free_port()
    signalling = subprocess.Popen([sys.executable, "-m", "videocall", "signaling", "--port", str(port),
                                   "--worker", address], env=env, start_new_session=True)

    def load(calls: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "videocall", "loadtest", f"ws://127.0.0.1:{port}/", "--calls",
                                 str(calls), "--rate", f"{args.rate:g}", "--duration", f"{seconds:g}", "--json",
                                 str(out), "--quiet", "--resolution", args.resolution], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    try:
        time.sleep(3)
        load(2, 3, path.with_name("warmup.json")).wait(120)
        time.sleep(3)  # the hangups carried out, collected and trimmed
        before_signalling = rss_mb(signalling.pid)
        base = report(proc, path)  # the first report is a round report (collected)
        path.with_name(path.name + ".during").touch()
        base = report(proc, path)
        running = load(args.calls, args.seconds, path.with_name("calls.json"))
        time.sleep(args.calls / args.rate + min(args.seconds / 2, 10))
        during_signalling = rss_mb(signalling.pid)
        during = report(proc, path)
        running.wait(args.seconds + 120)
        result = json.loads(path.with_name("calls.json").read_text()).get("calls", {})
        show_during(args.calls, base, during, during_signalling - before_signalling, result)
    finally:
        signalling.terminate()
        signalling.wait(30)


def show_during(calls: int, base: dict[str, Any], during: dict[str, Any], signalling_mb: float,
                result: dict[str, Any]) -> None:
    def per_call(section: str, key: str) -> str:
        a, b = base.get(section, {}).get(key), during.get(section, {}).get(key)
        return "-" if a is None or b is None else f"{1024 * (b - a) / calls:.0f} kB"

    arenas = during["pymalloc"].get("arenas", 0) - base["pymalloc"].get("arenas", 0)  # 1 MiB each (3.10+)
    print(f"{calls} calls up ({result.get('succeeded')} ok); per call, in the worker: "
          f"RSS {per_call('smaps', 'Rss')}, anonymous {per_call('smaps', 'Anonymous')}, "
          f"malloc in use (main arena) {per_call('mallinfo2', 'uordblks')}, pymalloc blocks "
          f"{per_call('pymalloc', 'arenas_mb')}, pymalloc arenas {1024 * arenas / calls:.0f} kB, "
          f"system (all arenas) {per_call('malloc_info', 'system_current')}; "
          f"signalling RSS {1024 * signalling_mb / calls:.0f} kB")
    if "traced_mb" in during:
        print(f"  traced by tracemalloc: {1024 * (during['traced_mb'] - base['traced_mb']) / calls:.0f} kB per call")
    print(f"  tasks {base['tasks']} -> {during['tasks']}, timers {base['timers']} -> {during['timers']}, "
          f"fds {base['fds']} -> {during['fds']}, threads {base['threads']} -> {during['threads']}")
    print(f"  tasks by coroutine: {sorted(during['task_names'].items(), key=lambda x: -x[1])[:12]}")
    grown = []
    for name, (count, size) in during["types"].items():
        count0, size0 = base["types"].get(name, (0, 0))
        if size - size0 > 0:
            grown.append((size - size0, count - count0, name))
    print("  objects by type (gc-tracked, shallow size), per call:")
    for size, count, name in sorted(grown, reverse=True)[:25]:
        print(f"    {size / calls / 1024:7.1f} kB {count / calls:7.1f}  {name}")
    for key in ("filename", "lineno"):
        if f"trace_{key}" not in during:
            continue
        rows = []
        for where, (size, count) in during[f"trace_{key}"].items():
            size0, count0 = base[f"trace_{key}"].get(where, (0, 0))
            rows.append((size - size0, count - count0, where))
        print(f"  tracemalloc by {key}, per call:")
        for size, count, where in sorted(rows, reverse=True)[:30 if key == "lineno" else 20]:
            print(f"    {size / calls / 1024:7.1f} kB {count / calls:7.1f}  {where}")
    for stat in during.get("trace", [])[:25]:
        print(f"  +{stat['kb'] / calls:.1f} kB/call ({stat['count'] / calls:+.1f}) {' <- '.join(reversed(stat['where']))}")


async def burst(port: int, connections: int, per_address: int, sessions: bool) -> int:
    """``connections`` WebSockets at once, ``per_address`` "from" each address (X-Forwarded-For,
    the probe's signalling trusts loopback as a proxy), each with a session and a VideoCall handle
    when ``sessions``; all closed at the end. Returns how many opened."""
    import websockets

    opened: list[Any] = []

    async def one(number: int) -> None:
        address = f"10.{number // per_address // 250}.{number // per_address % 250}.1"
        try:
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/", subprotocols=["janus-protocol"],  # type: ignore[list-item]
                                          additional_headers={"X-Forwarded-For": address}, open_timeout=30,
                                          proxy=None)
        except Exception as exc:  # noqa: BLE001 - a bench: count it
            print(f"  connection {number} refused: {exc!r}", flush=True)
            return
        opened.append(ws)
        if sessions:
            await ws.send(json.dumps({"janus": "create", "transaction": "c"}))
            sid = json.loads(await ws.recv())["data"]["id"]
            await ws.send(json.dumps({"janus": "attach", "transaction": "a", "session_id": sid,
                                      "plugin": "janus.plugin.videocall"}))
            await ws.recv()

    for start in range(0, connections, 200):
        await asyncio.gather(*(one(n) for n in range(start, min(connections, start + 200))))
    count = len(opened)
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return count


def drive_signalling(args: argparse.Namespace, env: dict[str, str]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="signalling-memory-"))
    path, port = tmp / "report.json", free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--signalling-child", str(port), str(path),
                             *(["--tracemalloc"] if args.tracemalloc else [])], env=env)
    try:
        for _ in range(300):
            with contextlib.suppress(OSError), __import__("socket").create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.1)
        show("start", report(proc, path))
        for number in range(args.rounds):
            count = asyncio.run(burst(port, args.connections, args.per_address, not args.no_sessions))
            time.sleep(2)
            show(f"burst {number + 1} ({count} connections opened and closed; rss during: see above)", report(proc, path))
    finally:
        proc.terminate()
        proc.wait(30)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=6, help="concurrent calls per round")
    parser.add_argument("--seconds", type=float, default=3.0, help="media seconds per call")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--no-trim", action="store_true", help="the worker without its collection and malloc_trim after calls "
                        "(each report collects and trims, though: compare the figures before it)")
    parser.add_argument("--fail-every", type=int, default=0, metavar="N",
                        help="every Nth call's caller vanishes mid-call (ICE consent expires at the relay; "
                        "consent checks made fast in the worker for this)")
    parser.add_argument("--loadtest", action="store_true",
                        help="calls through videocall signaling and videocall loadtest instead of IPC clients")
    parser.add_argument("--resolution", default="640x480", help="video size of the loadtest clips (--loadtest)")
    parser.add_argument("--during", action="store_true", help="what --calls calls cost while up, through signalling "
                        "and videocall loadtest (--seconds each, started at --rate)")
    parser.add_argument("--rate", type=float, default=8.0, help="calls started per second (--during)")
    parser.add_argument("--signalling", action="store_true", help="signalling alone, connection bursts")
    parser.add_argument("--connections", type=int, default=3000, help="connections per burst (--signalling)")
    parser.add_argument("--per-address", type=int, default=50, help="connections per client address (--signalling)")
    parser.add_argument("--no-sessions", action="store_true", help="bare connections (--signalling)")
    parser.add_argument("--child", nargs=2, metavar=("LISTEN", "REPORT"), help=argparse.SUPPRESS)
    parser.add_argument("--signalling-child", nargs=2, metavar=("PORT", "REPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.fail_every:
            import aioice.ice
            aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES = 1, 3  # seconds, checks
        return child(args.child[0], args.child[1], args.tracemalloc, not args.no_trim)
    if args.signalling_child:
        return signalling_child(int(args.signalling_child[0]), args.signalling_child[1], args.tracemalloc)
    env = {**os.environ, "VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "VIDEOCALL_LOG_LEVEL": "WARNING",
           "VIDEOCALL_MAX_CONNECTIONS_PER_ADDRESS": "0", "VIDEOCALL_CREATE_RATE": "0", "VIDEOCALL_REGISTER_RATE": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if args.signalling:
        drive_signalling(args, env)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="worker-memory-"))
    listen, path = f"unix:{tmp / 'w.sock'}", tmp / "report.json"
    proc = subprocess.Popen([sys.executable, __file__, "--child", listen, str(path),
                             *(["--tracemalloc"] if args.tracemalloc else []),
                             *(["--no-trim"] if args.no_trim else []),
                             *(["--fail-every", str(args.fail_every)] if args.fail_every else [])], env=env)
    try:
        for _ in range(300):
            if (tmp / "w.sock").exists():
                break
            time.sleep(0.05)
        if args.during:
            drive_during(args, listen, proc, path, env)
        elif args.loadtest:
            drive_loadtest(args, listen, proc, path, env)
        else:
            asyncio.run(drive(args, listen, proc, path))
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
