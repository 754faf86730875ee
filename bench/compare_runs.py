#!/usr/bin/env python
"""Several runs of ``bench/compare_janus.py`` as one table: each cell the median and, in
brackets, the range over the runs, for Janus, ours and the ratio; then how many runs met each goal.

    python bench/compare_janus.py --json-out run1.json    # three times, on a quiet machine
    python bench/compare_runs.py run1.json run2.json run3.json

The README's performance table is this script's output. A single run flatters or wrongs either
server (a shared machine, a slow minute); the spread says how much to trust a ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_janus import GOALS, WORKER_PSS_GOAL, rows


def _cell(values: list[float | None], digits: int) -> str:
    """``median (min-max)`` of the values that are there, '-' if none is."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return "-"
    median = statistics.median(present)
    if present[0] == present[-1]:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({present[0]:.{digits}f}-{present[-1]:.{digits}f})"


def _digits(values: list[Any]) -> int:
    present = [abs(v) for v in values if isinstance(v, (int, float))]
    return 3 if present and max(present) < 10 else 1


def table(runs: list[dict[str, Any]]) -> str:
    """The markdown table of ``runs`` (each a compare_janus JSON with both servers)."""
    per_run = [rows(run["janus"], run["ours"]) for run in runs]
    lines = ["| | Janus | ours | ours/Janus | goal | runs meeting it |", "|---|--:|--:|--:|--:|--:|"]
    for index, (key, label, *_rest, stated_goal) in enumerate(per_run[0]):
        goal = stated_goal
        janus = [r[index][2] for r in per_run]
        ours = [r[index][3] for r in per_run]
        ratio = [r[index][4] for r in per_run]
        met = ""
        if key in GOALS:
            op, limit = GOALS[key]
            met = f"{sum(1 for x in ratio if x is not None and (x <= limit if op == '<=' else x >= limit))}/{len(runs)}"
        elif key == "worker_pss":
            met = f"{sum(1 for x in ours if x is not None and x <= WORKER_PSS_GOAL)}/{len(runs)}"
            goal = f"<= {WORKER_PSS_GOAL:g} MB"
        lines.append(f"| {label.strip()} | {_cell(janus, _digits(janus))} | {_cell(ours, _digits(ours))} | "
                     f"{_cell(ratio, 3 if key != 'idle_rss' else 2)} | {goal} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="JSON files written by compare_janus.py --json-out")
    args = parser.parse_args(argv)
    runs = []
    for path in args.runs:
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"{path}: {exc}")
        if not isinstance(run, dict) or "janus" not in run or "ours" not in run:
            parser.error(f"{path}: not a full compare_janus run (both servers, every part)")
        runs.append(run)
    for path, run in zip(args.runs, runs, strict=True):
        meta = run.get("meta", {})
        print(f"{path}: {meta.get('date', '?')}, load average {meta.get('load_before', ['?'])[0]} before, "
              f"{meta.get('load_after', ['?'])[0]} after")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
