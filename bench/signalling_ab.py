"""Signalling CPU per 1000 round trips, A/B: ``videocall serve`` from two or more source trees,
run alternately, so that a shared machine's load falls on each alike.

    python bench/signalling_ab.py old=/path/to/tree-a new=/path/to/tree-b --rounds 6

Each run starts ``videocall serve --workers 1`` from one tree (``PYTHONPATH`` and working
directory that tree) on 127.0.0.1, pinned to core 0, and drives it with that tree's
``videocall loadtest --signalling-only`` pinned to core 1. The signalling process's CPU
(``/proc/PID/stat``, the serve process itself, not its relay worker) is read every 0.1 s.
Two figures per run: as ``bench/compare_janus.py``'s ``signalling()`` computes it (the
busiest ``duration - 1`` s of CPU over the mean round trips per second), and the CPU of the
whole load run over its round trips (idle sessions and start-up included: a few hundred
requests against tens of thousands). Rounds alternate the order of the trees. Printed: each
run, then per tree the median and range. No network namespace, unlike compare_janus.py:
loopback is enough for an A/B.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
#: Every load client is on this machine: the per-address limits are off, as in compare_janus.py.
ONE_MACHINE_CLIENTS = {
    "VIDEOCALL_MAX_CONNECTIONS_PER_ADDRESS": "0", "VIDEOCALL_CREATE_RATE": "0", "VIDEOCALL_REGISTER_RATE": "0",
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _wait_listening(port: int, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"the server did not listen on {port}") from None
            time.sleep(0.2)


def one_run(tree: str, clients: int, duration: float, port: int, workdir: Path, tag: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": tree, **ONE_MACHINE_CLIENTS}
    with (workdir / f"{tag}.log").open("wb") as log:
        server = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-m", "videocall", "serve", "--host", "127.0.0.1", "--port",
             str(port), "--workers", "1", "--ice-enforce-list", "127.0.0.1", "--log-level", "WARNING"],
            cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(port, server)
        time.sleep(1.5)  # the relay worker up, start-up over
        out = workdir / f"{tag}.json"
        load = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, "-m", "videocall", "loadtest", f"ws://127.0.0.1:{port}/",
             "--signalling-only", "--clients", str(clients), "--duration", str(duration), "--json", str(out), "--quiet"],
            cwd=tree, env={**os.environ, "PYTHONPATH": tree}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = cpu_seconds(server.pid)
        samples: list[tuple[float, float]] = []
        while load.poll() is None:
            samples.append((time.monotonic(), cpu_seconds(server.pid)))
            time.sleep(0.1)
        whole = cpu_seconds(server.pid) - first
        report = json.loads(out.read_text())
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        try:
            os.killpg(server.pid, signal.SIGKILL)  # a worker left behind
        except ProcessLookupError:
            pass
    span, busiest = max(1.0, duration - 1), 0.0
    for i, (t0, c0) in enumerate(samples):
        last = next(((t, c) for t, c in samples[i:] if t - t0 >= span), None)
        if last is not None:
            busiest = max(busiest, (last[1] - c0) / (last[0] - t0))
    rate = report.get("round_trips_per_second") or 0
    trips = report.get("round_trips") or 0
    return {"round_trips_per_s": rate, "errors": report.get("errors"),
            "ms_per_1000": round(1e6 * busiest / rate, 2) if rate else None,
            "whole_run_ms_per_1000": round(1e6 * whole / trips, 2) if trips else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", metavar="NAME=PATH", help="source trees to compare")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--port", type=int, default=18488)
    args = parser.parse_args()
    trees = [tuple(spec.split("=", 1)) for spec in args.trees]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory(prefix="signalling-ab-") as tmp:
        for round_ in range(args.rounds):
            for name, tree in trees if round_ % 2 == 0 else trees[::-1]:
                result = one_run(tree, args.clients, args.duration, args.port, Path(tmp), f"{name}-{round_}")
                results[name].append(result)
                print(name, round_, result, flush=True)
    for name, runs in results.items():
        for key in ("ms_per_1000", "whole_run_ms_per_1000"):
            values = sorted(r[key] for r in runs if r[key] is not None)
            if values:
                print(f"{name} {key}: median {statistics.median(values):.1f} (range {values[0]:.1f}-{values[-1]:.1f}), "
                      f"runs {values}")


if __name__ == "__main__":
    main()
