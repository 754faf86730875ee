"""The load-test report: call results in, one dictionary out, rendered with rich or as JSON.

Pure apart from :func:`render` (which prints). The dictionary is what ``--json FILE`` writes;
its keys are stable for scripts (``bench/compare_janus.py`` reads them):

- ``calls``: requested, succeeded, failed, ``failures`` {reason: count} (user names in
  reasons are replaced by "caller"/"callee" so that equal causes add up)
- ``setup_ms``: ``webrtcup`` (call request to both webrtcup) and ``first_media`` (call
  request to the callee's first media packet), each with n, p50, p95, p99, max
- ``media``: per direction ("caller->callee", "callee->caller") and kind: packets sent and
  received in the measured windows, lost and loss_pct (sent - received), lost_by_seq (gaps in
  sequence numbers), jitter_ms mean and max over calls, bitrate_kbps mean, malformed, rtx,
  keyframe_requests (PLI/FIR that reached the sender: the receivers' own go through the relay)
- ``verify`` (with --verify): frames decoded per side and kind, picture sizes seen
- ``clip``: what the senders replay (codec, size, actual bitrate of the encoded clip)
- ``clients``: load processes, their CPU (in all and the busiest one) and event-loop lag, so
  that a saturated client is not mistaken for a saturated server; ``server`` (with
  --server-pid): CPU and memory of the server process tree
- ``error``: set when the run could not start at all (unreachable server...); ``notes``: what
  went wrong with the run itself (interrupted, a load process died, deadline overrun)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

_USER = re.compile(r"lt-[0-9a-f]+-\d+-([ab])")


def percentiles(values: list[float]) -> dict[str, Any]:
    """n, p50, p95, p99 and max (linear interpolation between closest ranks)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        position = (len(ordered) - 1) * q
        low, high = math.floor(position), math.ceil(position)
        value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
        return round(value, 1)

    return {"n": len(ordered), "p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "max": round(ordered[-1], 1)}


def normalise_reason(reason: str) -> str:
    return _USER.sub(lambda m: "caller" if m.group(1) == "a" else "callee", reason)


def build(results: list[dict[str, Any]], *, requested: int, options: dict[str, Any],
          wall_seconds: float, clients: dict[str, Any], server: dict[str, Any] | None = None,
          error: str | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    ok = [r for r in results if r.get("ok")]
    failures = Counter(normalise_reason(r.get("reason") or "unknown") for r in results if not r.get("ok"))
    missing = requested - len(results)
    if missing > 0:
        failures[error or (notes[0] if notes else "no result (load client process lost)")] += missing
    report: dict[str, Any] = {
        "url": options.get("url"),
        "options": options,
        "wall_seconds": round(wall_seconds, 2),
        "calls": {"requested": requested, "succeeded": len(ok), "failed": requested - len(ok),
                  "failures": dict(failures.most_common())},
        "setup_ms": {
            "webrtcup": percentiles([r["setup_webrtcup_ms"] for r in results if r.get("setup_webrtcup_ms") is not None]),
            "first_media": percentiles([r["setup_first_media_ms"] for r in results
                                        if r.get("setup_first_media_ms") is not None]),
        },
        "media": _media(results),
        "clients": clients,
    }
    verify = [r["verify"] for r in results if r.get("verify")]
    if verify:
        report["verify"] = _verify(verify)
    if server is not None:
        report["server"] = server
    if error is not None:
        report["error"] = error
    if notes:
        report["notes"] = notes
    return report


def _media(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for result in results:
        for direction, kinds in (result.get("media") or {}).items():
            for kind, m in kinds.items():
                agg = out.setdefault(direction, {}).setdefault(kind, {
                    "calls": 0, "sent": 0, "received": 0, "lost_by_seq": 0, "malformed": 0, "rtx": 0,
                    "keyframe_requests": 0,
                    "_jitter": [], "_bitrate": [], "media_seconds": 0.0})
                agg["calls"] += 1
                if m.get("codec"):
                    agg["codec"] = m["codec"]
                agg["sent"] += m.get("sent", 0)
                agg["received"] += m.get("received", 0)
                agg["lost_by_seq"] += m.get("lost_by_seq", 0)
                agg["malformed"] += m.get("malformed", 0)
                agg["rtx"] += m.get("rtx_packets", 0)
                agg["keyframe_requests"] += m.get("keyframe_requests", 0)
                if m.get("packets"):
                    agg["_jitter"].append(m.get("jitter_ms", 0.0))
                    agg["_bitrate"].append(m.get("bitrate_kbps", 0.0))
                agg["media_seconds"] += result.get("media_seconds", 0.0)
    for kinds in out.values():
        for agg in kinds.values():
            jitter, bitrate = agg.pop("_jitter"), agg.pop("_bitrate")
            agg["lost"] = max(0, agg["sent"] - agg["received"])
            agg["loss_pct"] = round(100 * agg["lost"] / agg["sent"], 3) if agg["sent"] else None
            agg["delivery"] = round(agg["received"] / agg["sent"], 4) if agg["sent"] else None
            agg["jitter_ms_mean"] = round(sum(jitter) / len(jitter), 2) if jitter else None
            agg["jitter_ms_max"] = round(max(jitter), 2) if jitter else None
            agg["bitrate_kbps_mean"] = round(sum(bitrate) / len(bitrate), 1) if bitrate else None
            agg["media_seconds"] = round(agg["media_seconds"], 2)
    return out


def _verify(items: list[dict[str, Any]]) -> dict[str, Any]:
    frames: Counter[str] = Counter()
    sizes: set[tuple[int, int]] = set()
    for item in items:
        for side, summary in item.items():
            if not summary:
                continue
            for kind, count in summary["decoded_frames"].items():
                frames[f"{side} {kind}"] += count
            sizes.update(tuple(s) for s in summary["video_sizes"])
    return {"calls": len(items), "decoded_frames": dict(frames), "video_sizes": sorted(list(s) for s in sizes)}


def saturated(clients: dict[str, Any]) -> bool:
    """Whether a load process ran out of CPU: then setup times and loss are the client's too."""
    lag = (clients.get("loop_lag_ms") or {}).get("p99")
    return (clients.get("busiest_process_cpu_percent") or 0) > 85 or (lag is not None and lag > 50)


def exit_code(report: dict[str, Any]) -> int:
    """0 when every requested call succeeded, 1 otherwise (or when the run could not start)."""
    calls = report["calls"]
    clean = report.get("error") is None and not report.get("notes")
    return 0 if clean and calls["failed"] == 0 and calls["requested"] > 0 else 1


def render(report: dict[str, Any], console: Any) -> None:
    """Print the report as rich tables."""
    from rich.table import Table

    calls = report["calls"]
    if report.get("error"):
        console.print(f"[bold red]load test could not run:[/] {report['error']}")
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    style = "green" if calls["failed"] == 0 and calls["requested"] else "red"
    console.print(f"[bold]{report['url']}[/]: [{style}]{calls['succeeded']} of {calls['requested']} calls "
                  f"succeeded[/], {calls['failed']} failed ({report['wall_seconds']:g} s)")
    if calls["failures"]:
        table = Table(title="failures", title_justify="left")
        table.add_column("calls", justify="right")
        table.add_column("reason")
        for reason, count in calls["failures"].items():
            table.add_row(str(count), reason)
        console.print(table)
    if not any(report["setup_ms"][name]["n"] for name in ("webrtcup", "first_media")):
        _footer(report, console)
        return
    setup = Table(title="setup time (ms, from the call request)", title_justify="left")
    for column in ("to", "n", "p50", "p95", "p99", "max"):
        setup.add_column(column, justify="right" if column != "to" else "left")
    for name, label in (("webrtcup", "both webrtcup"), ("first_media", "first media at callee")):
        p = report["setup_ms"][name]
        setup.add_row(label, *(_fmt(p[k]) for k in ("n", "p50", "p95", "p99", "max")))
    console.print(setup)
    if report["media"]:
        media = Table(title="media (measured windows, after 1 s warm-up)", title_justify="left")
        for column in ("direction", "kind", "sent", "received", "lost", "loss %", "seq gaps", "jitter ms (mean/max)",
                       "kbit/s", "malformed"):
            media.add_column(column, justify="left" if column in ("direction", "kind") else "right")
        for direction, kinds in report["media"].items():
            for kind, m in kinds.items():
                media.add_row(direction, f"{kind} ({m.get('codec', '?')})", str(m["sent"]), str(m["received"]), str(m["lost"]),
                              _fmt(m["loss_pct"]), str(m["lost_by_seq"]),
                              f"{_fmt(m['jitter_ms_mean'])} / {_fmt(m['jitter_ms_max'])}",
                              _fmt(m["bitrate_kbps_mean"]), str(m["malformed"]))
        console.print(media)
    if "verify" in report:
        v = report["verify"]
        frames = ", ".join(f"{k}: {n}" for k, n in sorted(v["decoded_frames"].items()))
        sizes = ", ".join(f"{w}x{h}" for w, h in v["video_sizes"]) or "none"
        console.print(f"verify ({v['calls']} call(s) decoded by aiortc): {frames}; video sizes {sizes}")
    _footer(report, console)


def _footer(report: dict[str, Any], console: Any) -> None:
    clip = report.get("clip")
    if clip:
        parts = [f"{c['codec']} {c.get('size', '')} {c['kbps']:g} kbit/s".replace("  ", " ") for c in clip.values()]
        console.print(f"replayed clip: {' + '.join(parts)} (keyframe every second)")
    clients = report.get("clients") or {}
    if clients.get("processes"):
        lag = clients.get("loop_lag_ms") or {}
        console.print(f"load clients: {clients['processes']} process(es), {_fmt(clients.get('cpu_percent'))}% of a core "
                      f"in all, event-loop lag p99 {_fmt(lag.get('p99'))} ms")
        if saturated(clients):
            console.print("[bold yellow]the load clients were saturated (a process above 85% of a core, or its event "
                          "loop late by more than 50 ms): the figures describe the client as much as the server; "
                          "use more --processes or fewer calls[/]")
    server = report.get("server")
    if server and not server.get("alive"):
        console.print(f"[red]server process {server['pid']} is not running (it exited during the run, or the pid is wrong)[/]")
    elif server:
        console.print("server (pid {pid} and children): CPU {cpu_percent}% of a core, RSS {rss_mb_before} -> "
                      "peak {rss_mb_peak} MB ({rss_mb_per_call} MB per call)".format(**server))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
