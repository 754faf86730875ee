"""``videocall loadtest URL --signalling-only``: the Janus API without media.

Two phases, with ``--clients N`` WebSocket clients spread over ``--processes``:

1. *Idle sessions.* Each client opens a WebSocket, creates a session, attaches the VideoCall
   plugin and registers a name, then stays idle (keepalives only). With ``--server-pid`` the
   server's RSS (children included) is read before and after: memory per idle session.
2. *Round trips.* For ``--duration`` seconds every client repeats, on its own WebSocket, a
   second session's life: ``create``, ``attach``, ``register``, ``list``, ``detach``,
   ``destroy``, each waiting for its reply (for plugin messages: the ``event``). Reported:
   round trips per second in all, and latency per request p50/p95/p99.

Errors (refusals, timeouts, a server that goes away) are counted by reason; any makes the exit
status 1. No aiortc here.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import queue as queue_module
import secrets
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtest import janus, procstat
from loadtest.report import normalise_reason, percentiles

VERBS = ("create", "attach", "register", "list", "detach", "destroy")


@dataclass(frozen=True)
class SignallingOptions:
    url: str
    clients: int
    duration: float
    processes: int
    json_path: str | None
    server_pid: int | None
    quiet: bool


# --- one load process ---------------------------------------------------------------------------


def worker_main(url: str, clients: range, duration: float, run_id: str, worker: int, out: Any,
                go: Any, finish: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_worker(url, clients, duration, run_id, worker, out, go, finish))
    except Exception as exc:  # noqa: BLE001 - reported, never a traceback
        out.put(("error", worker, f"{type(exc).__name__}: {exc}"))


async def _wait_event(event: Any) -> bool:
    while not event.is_set():
        await asyncio.sleep(0.02)
    return True


async def _worker(url: str, clients: range, duration: float, run_id: str, worker: int, out: Any,
                  go: Any, finish: Any) -> None:
    errors: Counter[str] = Counter()
    latencies: dict[str, list[float]] = {verb: [] for verb in VERBS}

    async def idle(index: int) -> janus.Connection | None:
        try:
            conn = await janus.Connection.open(url)
            session = await conn.create_session()
            session.start_keepalive()
            handle = await session.attach()
            await handle.message({"request": "register", "username": f"lt-{run_id}-idle-{index}"},
                                 what="register (idle)")
            return conn
        except janus.LoadClientError as exc:
            errors[normalise_reason(str(exc))] += 1
            return None

    connections = list(await asyncio.gather(*(idle(i) for i in clients)))
    out.put(("idle", worker, sum(c is not None for c in connections)))
    await _wait_event(go)
    deadline = time.monotonic() + duration
    counter = [0]

    async def timed(verb: str, request: Any) -> Any:
        started = time.monotonic()
        result = await request
        latencies[verb].append((time.monotonic() - started) * 1000)
        return result

    async def cycles(index: int, conn: janus.Connection | None) -> None:
        while conn is not None and time.monotonic() < deadline:
            counter[0] += 1
            try:
                session = await timed("create", conn.create_session())
                handle = await timed("attach", session.attach())
                await timed("register", handle.message(
                    {"request": "register", "username": f"lt-{run_id}-{index}-{counter[0]}"}, what="register"))
                await timed("list", handle.message({"request": "list"}, what="list"))
                await timed("detach", handle.detach())
                await timed("destroy", session.destroy())
            except janus.LoadClientError as exc:
                errors[normalise_reason(str(exc))] += 1
                if conn.closed.is_set():
                    return
                await asyncio.sleep(0.05)

    started = time.monotonic()
    await asyncio.gather(*(cycles(i, c) for i, c in zip(clients, connections, strict=True)))
    elapsed = time.monotonic() - started
    out.put(("result", worker, {"latencies": latencies, "errors": dict(errors), "seconds": elapsed,
                                "cpu_seconds": time.process_time()}))
    await _wait_event(finish)
    await asyncio.gather(*(c.close() for c in connections if c is not None))
    out.put(("done", worker, None))


# --- the coordinator ----------------------------------------------------------------------------


def run(options: SignallingOptions) -> int:
    from rich.console import Console

    from loadtest.runner import preflight

    console = Console() if Console().is_terminal else Console(width=130, no_color=True)
    error = asyncio.run(preflight(options.url))
    if error is not None:
        return _finish(options, {"error": error}, console)

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    go, finish = ctx.Event(), ctx.Event()
    count = max(1, min(options.processes, options.clients))
    per = [range(w, options.clients, count) for w in range(count)]
    run_id = secrets.token_hex(3)
    pid = options.server_pid
    rss_before = procstat.rss_mb(pid) if pid and procstat.alive(pid) else None
    processes = [ctx.Process(target=worker_main, args=(options.url, share, options.duration, run_id, w, out, go, finish),
                             daemon=True) for w, share in enumerate(per)]
    for process in processes:
        process.start()
    status = console.status("opening idle sessions...") if not options.quiet and console.is_terminal else None
    if status is not None:
        status.start()
    idle, results = 0, []
    errors: list[str] = []
    rss_idle = None
    try:
        idle_seen = _collect(out, processes, "idle", count, timeout=60 + options.clients / 20, errors=errors)
        idle = sum(idle_seen.values())
        time.sleep(1.0)  # let the server settle before reading its memory
        rss_idle = procstat.rss_mb(pid) if pid and procstat.alive(pid) else None
        if status is not None:
            status.update(f"{options.clients} clients running create/attach/register/list/detach/destroy "
                          f"for {options.duration:g} s...")
        go.set()
        results = list(_collect(out, processes, "result", count, timeout=options.duration + 60, errors=errors).values())
        finish.set()
        _collect(out, processes, "done", count, timeout=15, errors=errors)
    finally:
        if status is not None:
            status.stop()
        go.set()
        finish.set()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    summary = _summarise(options, idle, results, errors, rss_before, rss_idle)
    return _finish(options, summary, console)


def _collect(out: Any, processes: list[Any], kind: str, count: int, *, timeout: float,
             errors: list[str]) -> dict[int, Any]:
    seen: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        try:
            message = out.get(timeout=0.2)
        except queue_module.Empty:
            lost = [w for w, p in enumerate(processes) if p.exitcode is not None and w not in seen]
            if lost:
                errors.append(f"load process {lost[0]} exited (status {processes[lost[0]].exitcode})")
                return seen
            continue
        if message[0] == "error":
            errors.append(f"load process {message[1]}: {message[2]}")
            return seen
        if message[0] == kind:
            seen[message[1]] = message[2]
    if len(seen) < count:
        errors.append(f"load processes did not report '{kind}' within {timeout:g} s")
    return seen


def _summarise(options: SignallingOptions, idle: int, results: list[dict[str, Any]], errors: list[str],
               rss_before: float | None, rss_idle: float | None) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {verb: [] for verb in VERBS}
    failures: Counter[str] = Counter()
    seconds = max([r["seconds"] for r in results] or [0.0])
    for result in results:
        for verb, values in result["latencies"].items():
            latencies[verb].extend(values)
        failures.update(result["errors"])
    failures.update(errors)
    total = sum(len(v) for v in latencies.values())
    summary: dict[str, Any] = {
        "url": options.url, "mode": "signalling-only", "options": {k: v for k, v in asdict(options).items() if k != "quiet"},
        "idle_sessions": idle, "round_trips": total, "seconds": round(seconds, 2),
        "round_trips_per_second": round(total / seconds, 1) if seconds else 0.0,
        "cycles": len(latencies["destroy"]),
        "latency_ms": {verb: percentiles(values) for verb, values in latencies.items()},
        "errors": dict(failures.most_common()),
        "client_cpu_percent": round(100 * sum(r["cpu_seconds"] for r in results) / seconds, 1) if seconds else None,
    }
    if options.server_pid is not None:
        per = (rss_idle - rss_before) / idle if rss_before is not None and rss_idle is not None and idle else None
        summary["server"] = {"pid": options.server_pid, "alive": procstat.alive(options.server_pid),
                             "rss_mb_before": rss_before and round(rss_before, 1),
                             "rss_mb_idle": rss_idle and round(rss_idle, 1),
                             "kb_per_idle_session": round(per * 1024, 1) if per is not None else None}
    return summary


def _finish(options: SignallingOptions, summary: dict[str, Any], console: Any) -> int:
    from rich.table import Table

    summary.setdefault("url", options.url)
    if "error" in summary:
        console.print(f"[bold red]signalling benchmark could not run:[/] {summary['error']}")
    else:
        console.print(f"[bold]{options.url}[/]: {summary['round_trips_per_second']:g} round trips/s "
                      f"({summary['round_trips']} in {summary['seconds']:g} s, {summary['cycles']} full cycles, "
                      f"{options.clients} clients, {summary['idle_sessions']} idle sessions held)")
        table = Table(title="latency per request (ms)", title_justify="left")
        for column in ("request", "n", "p50", "p95", "p99", "max"):
            table.add_column(column, justify="left" if column == "request" else "right")
        for verb, p in summary["latency_ms"].items():
            table.add_row(verb, *("-" if p[k] is None else str(p[k]) for k in ("n", "p50", "p95", "p99", "max")))
        console.print(table)
        if summary["errors"]:
            errors = Table(title="errors", title_justify="left")
            errors.add_column("count", justify="right")
            errors.add_column("reason")
            for reason, count in summary["errors"].items():
                errors.add_row(str(count), reason)
            console.print(errors)
        server = summary.get("server")
        if server:
            console.print(f"server (pid {server['pid']} and children): RSS {server['rss_mb_before']} MB -> "
                          f"{server['rss_mb_idle']} MB with the idle sessions: "
                          f"{server['kb_per_idle_session']} kB per idle session")
        console.print(f"load clients: {summary['client_cpu_percent']}% of a core in all")
    if options.json_path:
        Path(options.json_path).write_text(json.dumps(summary, indent=2) + "\n")
    failed = "error" in summary or summary.get("errors") or summary.get("round_trips", 0) == 0
    return 1 if failed else 0
