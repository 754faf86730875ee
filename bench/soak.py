#!/usr/bin/env python
"""Soak ``videocall serve``: a steady number of calls for a long time, and whether memory and
file descriptors stay flat.

    python bench/soak.py                          # 30 minutes at 80% of the held capacity
    python bench/soak.py --calls 4 --minutes 3    # a quick check
    python bench/soak.py --capacity-json compare.json   # 80% of what compare_janus.py held

A script, not a test. It starts ``videocall serve --workers N`` on loopback, then runs
``videocall loadtest`` in back-to-back rounds (``--round-seconds`` of media each, so calls are
also set up and torn down all along, as in real use) until ``--minutes`` have passed. Every
``--interval`` seconds (default 10) it samples, for every process of the serve tree
(signalling and each worker, replaced workers included), the resident memory (RSS), the
anonymous memory in it (heap and stacks, from ``/proc/PID/smaps_rollup``: what a leak grows)
and the open file descriptors. Not PSS: on a shared machine a process's PSS rises whenever
another process sharing its libraries exits (their pages are then split among fewer), which
reads as growth that is not ours.

Printed: one row per sample (total and per process), each round's result with the tree's
memory and fds just after it (no call up: what a leak would show as a rising floor), and for
each process and the total the least-squares slope per hour, over the whole run, over its
second half (after warm-up: caches filled, arenas grown), and of the after-round floors.
Flat means those slopes are within noise: a few MB/h and 0 fds/h (the samples taken during
rounds swing with the calls up). A JSON line with everything ends the output.

Calls: ``--calls N``, or 80% of ``ours.capacity.held`` in a ``bench/compare_janus.py
--json-out`` file (its step search), or 80% of the default 10 if neither is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadtest import procstat  # noqa: E402 - after the path is set

DEFAULT_HELD = 10


@dataclass
class Sample:
    at: float  # seconds since the soak started
    #: pid -> (role, RSS MB, anonymous MB, open fds)
    processes: dict[int, tuple[str, float, float, int]] = field(default_factory=dict)

    def total(self) -> tuple[float, float, int]:
        values = self.processes.values()
        return (sum(p[1] for p in values), sum(p[2] for p in values), sum(p[3] for p in values))


def memory_mb(pid: int) -> tuple[float, float]:
    """RSS and its anonymous part (MB); the anonymous part is 0 where smaps_rollup is not readable."""
    anon = 0.0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Anonymous:"):
                anon = int(line.split()[1]) / 1024
    except OSError:
        pass
    return procstat.rss_mb(pid, children=False), anon


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def role(pid: int, root: int) -> str:
    if pid == root:
        return "signalling"
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
    if name.startswith("vc-relay-"):  # forked by serve's fork server (videocall/worker_forks.py)
        return "fork server" if name == "vc-relay-forks" else "worker-" + name.removeprefix("vc-relay-")
    if b"--worker-id" in args:
        return args[args.index(b"--worker-id") + 1].decode()
    return "child"


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value), per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 3600 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


class Sampler(threading.Thread):
    def __init__(self, root: int, interval: float, started: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.started = root, interval, started
        self.samples: list[Sample] = []
        self._halt = threading.Event()

    def sample(self) -> Sample:
        sample = Sample(round(time.monotonic() - self.started, 1))
        for pid in procstat.tree(self.root):
            rss, anon = memory_mb(pid)
            if not rss:  # gone meanwhile
                continue
            sample.processes[pid] = (role(pid, self.root), round(rss, 1), round(anon, 1), open_fds(pid))
        return sample

    def run(self) -> None:
        while not self._halt.is_set():
            sample = self.sample()
            self.samples.append(sample)
            rss, anon, fds = sample.total()
            parts = "  ".join(f"{r}[{pid}] {m:.1f}/{a:.1f}/{f}" for pid, (r, m, a, f) in sorted(sample.processes.items()))
            print(f"{sample.at:7.0f} s  total {rss:7.1f}/{anon:.1f} MB {fds:4d} fds   {parts}", flush=True)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"videocall serve exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit("videocall serve did not start listening")


def calls_from(args: argparse.Namespace) -> int:
    if args.calls:
        return int(args.calls)
    held = DEFAULT_HELD
    if args.capacity_json:
        held = int(json.loads(Path(args.capacity_json).read_text())["ours"]["capacity"]["held"])
    return max(1, int(0.8 * held))


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Slopes per role (a replaced worker keeps its role) and for the total, whole run and second half."""
    if not samples:
        return {}
    half = samples[-1].at / 2
    series: dict[str, list[tuple[float, float, float, int]]] = {}
    for sample in samples:
        mb, anon, fds = sample.total()
        series.setdefault("total", []).append((sample.at, mb, anon, fds))
        for name, pmb, panon, pfds in sample.processes.values():
            series.setdefault(name, []).append((sample.at, pmb, panon, pfds))
    out: dict[str, Any] = {}
    for name, points in series.items():
        second = [p for p in points if p[0] >= half]

        def rounded(value: float | None, digits: int = 1) -> float | None:
            return None if value is None else round(value, digits)

        def slope(of: list[tuple[float, float, float, int]], index: int) -> float | None:
            return rounded(slope_per_hour([(p[0], float(p[index])) for p in of]))

        out[name] = {
            "first_mb": points[0][1], "last_mb": points[-1][1], "min_mb": min(p[1] for p in points),
            "max_mb": max(p[1] for p in points), "first_anon_mb": points[0][2], "last_anon_mb": points[-1][2],
            "first_fds": points[0][3], "last_fds": points[-1][3], "max_fds": max(p[3] for p in points),
            "mb_per_hour": slope(points, 1), "mb_per_hour_second_half": slope(second, 1),
            "anon_mb_per_hour": slope(points, 2), "anon_mb_per_hour_second_half": slope(second, 2),
            "fds_per_hour": slope(points, 3), "fds_per_hour_second_half": slope(second, 3),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, help="calls held at once (default: 80%% of the held capacity)")
    parser.add_argument("--capacity-json", metavar="FILE", help="a compare_janus.py --json-out file")
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    parser.add_argument("--workers", type=int, default=2, help="relay workers of serve (default 2)")
    parser.add_argument("--round-seconds", type=float, default=60.0,
                        help="seconds of media per loadtest round (default 60)")
    parser.add_argument("--rate", type=float, default=2.0, help="calls started per second (default 2)")
    parser.add_argument("--processes", type=int, default=1, help="load client processes (default 1)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--audio-only", action="store_true", help="Opus only (lighter clients)")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON to this file")
    args = parser.parse_args(argv)

    calls = calls_from(args)
    command = shlex.split(os.environ.get("VIDEOCALL_SERVE_CMD", f"{sys.executable} -m videocall"))
    port = free_port()
    # The load clients are all on this machine (one address): the per-address limits are off.
    env = {**os.environ, "VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "VIDEOCALL_LOG_LEVEL": "WARNING",
           "VIDEOCALL_MAX_CONNECTIONS_PER_ADDRESS": "0", "VIDEOCALL_CREATE_RATE": "0", "VIDEOCALL_REGISTER_RATE": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="videocall-soak-") as tmp:
        log_path = Path(tmp) / "serve.log"
        with log_path.open("wb") as log:
            serve = subprocess.Popen([*command, "serve", "--port", str(port), "--workers", str(args.workers)],
                                     env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started = time.monotonic()
        rounds: list[dict[str, Any]] = []
        sampler = Sampler(serve.pid, args.interval, started)
        try:
            wait_listening(port, serve)
            time.sleep(2)  # workers connected
            print(f"soak: {calls} calls, {args.minutes:g} min, rounds of {args.round_seconds:g} s, serve pid "
                  f"{serve.pid}, {args.workers} workers; columns: RSS MB/anonymous MB/fds", flush=True)
            sampler.start()
            end = started + 60 * args.minutes
            while time.monotonic() < end:
                left = end - time.monotonic()
                media = min(args.round_seconds, left - calls / args.rate - 5)
                if rounds and media < args.round_seconds / 2:
                    break  # too little time left for a round like the others
                report_path = Path(tmp) / f"round{len(rounds)}.json"
                load = [*command, "loadtest", f"ws://127.0.0.1:{port}/", "--calls", str(calls), "--rate",
                        str(args.rate), "--duration", f"{media:g}", "--processes", str(args.processes),
                        "--json", str(report_path), "--quiet", *(["--audio-only"] if args.audio_only else [])]
                code = subprocess.run(load, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                                      timeout=120 + calls / args.rate + media).returncode
                report = json.loads(report_path.read_text()) if report_path.exists() else {}
                block = report.get("calls", {})
                time.sleep(2)  # the hangups carried out
                floor = sampler.sample()
                mb, anon, fds = floor.total()
                rounds.append({"round": len(rounds), "exit": code, "succeeded": block.get("succeeded"),
                               "failures": block.get("failures"), "seconds": round(media), "at": floor.at,
                               "floor_mb": round(mb, 1), "floor_anon_mb": round(anon, 1), "floor_fds": fds,
                               "floor": {r: [m, a, f] for r, m, a, f in floor.processes.values()}})
                print(f"round {len(rounds)}: {block.get('succeeded')}/{calls} calls ok, exit {code}"
                      + (f", failures {block.get('failures')}" if block.get("failures") else "")
                      + f"; after it RSS {mb:.1f} MB, anonymous {anon:.1f} MB, {fds} fds", flush=True)
                if serve.poll() is not None:
                    print(f"videocall serve exited with {serve.returncode}", flush=True)
                    break
            time.sleep(args.interval)  # one sample with the calls gone
        finally:
            sampler.stop()
            if serve.poll() is None:
                os.killpg(serve.pid, signal.SIGTERM)
                try:
                    serve.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(serve.pid, signal.SIGKILL)
        summary = summarize(sampler.samples)
    print("\nslopes (least squares; whole run / second half; RSS, its anonymous part, fds):")
    print(f"{'process':<12} {'RSS MB':>13} {'MB/h':>7} {'2nd':>7} {'anon MB':>13} {'MB/h':>7} {'2nd':>7} "
          f"{'fds':>9} {'fds/h':>7} {'2nd':>7}")
    for name, s in summary.items():
        print(f"{name:<12} {s['first_mb']:>6.1f}->{s['last_mb']:<6.1f} {_f(s['mb_per_hour']):>7} "
              f"{_f(s['mb_per_hour_second_half']):>7} {s['first_anon_mb']:>6.1f}->{s['last_anon_mb']:<6.1f} "
              f"{_f(s['anon_mb_per_hour']):>7} {_f(s['anon_mb_per_hour_second_half']):>7} "
              f"{s['first_fds']:>4}->{s['last_fds']:<4} {_f(s['fds_per_hour']):>7} {_f(s['fds_per_hour_second_half']):>7}")
    floor_mb = slope_per_hour([(r["at"], r["floor_mb"]) for r in rounds])
    floor_anon = slope_per_hour([(r["at"], r["floor_anon_mb"]) for r in rounds])
    floor_fds = slope_per_hour([(r["at"], float(r["floor_fds"])) for r in rounds])
    summary["after_rounds"] = {"mb_per_hour": floor_mb, "anon_mb_per_hour": floor_anon, "fds_per_hour": floor_fds,
                               "mb": [r["floor_mb"] for r in rounds], "anon_mb": [r["floor_anon_mb"] for r in rounds],
                               "fds": [r["floor_fds"] for r in rounds]}
    print(f"after each round (no call up): RSS MB {[r['floor_mb'] for r in rounds]} ({_f(floor_mb)}/h), anonymous MB "
          f"{[r['floor_anon_mb'] for r in rounds]} ({_f(floor_anon)}/h), fds {[r['floor_fds'] for r in rounds]} "
          f"({_f(floor_fds)}/h)")
    for name in sorted({n for r in rounds for n in r["floor"]}):
        print(f"  {name}: RSS/anonymous MB/fds after each round: "
              + " ".join("{}/{}/{}".format(*r["floor"][name]) if name in r["floor"] else "-" for r in rounds))
    ok = sum(r["succeeded"] or 0 for r in rounds)
    print(f"{len(rounds)} rounds, {ok}/{calls * len(rounds)} calls ok")
    out = {"calls": calls, "minutes": args.minutes, "workers": args.workers, "memory": "RSS, anonymous",
           "rounds": rounds, "summary": summary,
           "samples": [{"at": s.at, "processes": {str(pid): list(v) for pid, v in s.processes.items()}}
                       for s in sampler.samples]}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "samples"}, separators=(",", ":")))
    return 0


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
