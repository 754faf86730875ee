#!/usr/bin/env python
"""Call setup CPU and setup p95 of two (or more) source trees, measured alternately (A/B).

    python bench/setup_ab.py --rounds 3 /work/wt-base /work/wt-change

Each round starts ``videocall serve --workers 1`` from every tree in turn (``PYTHONPATH`` set to
the tree; the order alternates between rounds, so a machine that gets busier or quieter favours
neither) and measures it exactly as ``compare_janus.py --only ours --parts ''`` does: a warm-up
call, the fixed load (setup p95: call -> first media at the callee) and ``setup_cost`` (CPU per
call setup + hangup, signalling and worker, less idle and media). It needs root for the same
reasons (a network namespace, ``taskset``) but uses its own namespace (``vcsetup``,
10.81.0.0/24), so it can run beside ``compare_janus.py``, not beside itself.

Printed per run one JSON line, then per tree the median, minimum and maximum of each figure.
On a shared machine expect a spread of +-15% between runs: compare medians of several rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare_janus as cj

cj.NAMESPACE, cj.VETH_HOST, cj.VETH_NS = "vcsetup", "vcs0", "vcs1"
cj.SUBNET, cj.HOST_IP, cj.SERVER_IP = "10.81.0", "10.81.0.1", "10.81.0.2"  # read when called

FIGURES = ("cpu_ms_per_call", "raw_cpu_ms_per_call", "setup_p95_ms", "webrtcup_p95_ms", "media_cpu_pct_per_call")


def measure(tree: str, plan: cj.Plan, server_cpu: int, client_cpu: int, workdir: Path) -> dict[str, Any]:
    """One run of the server from ``tree``: the fixed load and the setup-cost load."""
    server = cj.our_server(server_cpu, workdir)
    server.env["PYTHONPATH"] = tree
    server.start()
    try:
        time.sleep(1)
        cj.run_calls(server, 1, 1, 3, client_cpu, workdir, "warmup")
        fixed = cj.run_calls(server, plan.calls, plan.rate, plan.duration, client_cpu, workdir, "fixed")
        setup = cj.setup_cost(server, plan, client_cpu, workdir, fixed.get("server_cpu_pct_per_call"))
    finally:
        server.stop()
    return {"cpu_ms_per_call": setup["cpu_ms_per_call"], "raw_cpu_ms_per_call": setup.get("raw_cpu_ms_per_call"),
            "setup_p95_ms": fixed["setup_first_media_p95_ms"], "webrtcup_p95_ms": fixed["setup_webrtcup_p95_ms"],
            "media_cpu_pct_per_call": fixed.get("server_cpu_pct_per_call"),
            "succeeded": f"{fixed['succeeded']}/{plan.calls} {setup['succeeded']}/{plan.setup_calls}",
            "load": cj._loadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", help="source trees (git worktrees) to compare")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree (default 3)")
    parser.add_argument("--fixed-duration", type=float, default=cj.FULL.duration,
                        help=f"media seconds of the fixed load's calls (default {cj.FULL.duration:g})")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespace)")
    trees = [str(Path(tree).resolve()) for tree in args.trees]
    plan = dataclasses.replace(cj.FULL, duration=args.fixed_duration)
    os.sched_setaffinity(0, {args.client_cpu})
    workdir = Path(tempfile.mkdtemp(prefix="setup-ab-"))
    # ``python -m`` puts the working folder first on sys.path: from an empty one, each server
    # imports its tree (PYTHONPATH), and every load client the installed videocall, the same for all.
    os.environ.pop("PYTHONPATH", None)
    os.chdir(workdir)
    runs: dict[str, list[dict[str, Any]]] = {tree: [] for tree in trees}
    try:
        with cj.Namespace():
            for round_ in range(args.rounds):
                for tree in trees if round_ % 2 == 0 else trees[::-1]:
                    run = measure(tree, plan, args.server_cpu, args.client_cpu, workdir)
                    runs[tree].append(run)
                    print(json.dumps({"tree": tree, "round": round_, **run}), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for tree, results in runs.items():
        for figure in FIGURES:
            values = [r[figure] for r in results if isinstance(r[figure], (int, float))]
            if values:
                print(f"{tree} {figure}: median {statistics.median(values):.1f} "
                      f"(min {min(values):.1f}, max {max(values):.1f}; {values})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
