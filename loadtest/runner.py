"""The coordinator of a media load test: checks the server, starts the load processes, shows
progress, collects the call results and writes the report.

It never touches aiortc itself (the load processes do, see :mod:`loadtest.worker`), so its
own CPU stays out of the way and a load process that crashes is reported, not fatal. The
server is first asked for ``info``: a wrong URL, a refused connection or a server without the
VideoCall plugin ends the run at once with a one-line reason and exit status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import queue as queue_module
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtest import janus, procstat, report


@dataclass(frozen=True)
class LoadOptions:
    url: str
    calls: int
    rate: float
    duration: float
    processes: int
    codec: str  # "vp8" | "h264" | "opus" (audio only)
    width: int
    height: int
    bitrate: int
    ice_address: str
    verify: bool
    json_path: str | None
    server_pid: int | None
    quiet: bool


def default_ice_address(url: str) -> str:
    """The local address that routes to the server (127.0.0.1 for a loopback server)."""
    host = urlsplit(url).hostname or "127.0.0.1"
    try:
        address = socket.gethostbyname(host)
        if address.startswith("127."):
            return "127.0.0.1"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 9))  # no packet is sent: this only picks the route
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


async def preflight(url: str) -> str | None:
    """None if ``url`` answers ``info`` with the VideoCall plugin, else why not."""
    try:
        conn = await janus.Connection.open(url, timeout=5)
    except janus.LoadClientError as exc:
        return str(exc)
    try:
        info = await conn.info()
    except janus.LoadClientError as exc:
        return f"{url} does not answer a Janus 'info' request: {exc}"
    finally:
        await conn.close()
    plugins = info.get("plugins")
    if isinstance(plugins, dict) and janus.VIDEOCALL not in plugins:
        return f"{url} has no {janus.VIDEOCALL} plugin (it has: {', '.join(sorted(plugins)) or 'none'})"
    return None


class Progress:
    """Totals over the load processes, and the live view of them."""

    def __init__(self, options: LoadOptions) -> None:
        self.options = options
        self.by_worker: dict[int, dict[str, int]] = {}
        self.results: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self._last: tuple[float, int, int] | None = None
        self.tx_rate = self.rx_rate = 0.0
        #: The server's highest RSS seen while calls ran (with --server-pid), read once a second.
        self.server_rss_peak = 0.0

    def update(self, worker: int, counters: dict[str, int]) -> None:
        self.by_worker[worker] = counters

    def total(self, key: str) -> int:
        return sum(c.get(key, 0) for c in self.by_worker.values())

    def tick(self) -> None:
        now, tx, rx = time.monotonic(), self.total("tx"), self.total("rx")
        if self._last is not None and now - self._last[0] >= 0.9:
            span = now - self._last[0]
            self.tx_rate = (tx - self._last[1]) / span
            self.rx_rate = (rx - self._last[2]) / span
            self._last = (now, tx, rx)
            if self.options.server_pid is not None:
                self.server_rss_peak = max(self.server_rss_peak, procstat.rss_mb(self.options.server_pid))
        elif self._last is None:
            self._last = (now, tx, rx)

    def line(self) -> str:
        ok = sum(1 for r in self.results if r.get("ok"))
        return (f"{time.monotonic() - self.started:.0f} s: started {self.total('started')}/{self.options.calls}, "
                f"up {self.total('up')}, succeeded {ok}, failed {len(self.results) - ok}, "
                f"sent {self.tx_rate:.0f} pkt/s, received {self.rx_rate:.0f} pkt/s")

    def view(self) -> Any:
        from rich.table import Table

        ok = sum(1 for r in self.results if r.get("ok"))
        failed = len(self.results) - ok
        loss = 100 * (1 - self.rx_rate / self.tx_rate) if self.tx_rate > 0 else None
        table = Table(title=f"videocall loadtest {self.options.url}", title_justify="left")
        for column in ("elapsed", "started", "up", "succeeded", "failed", "sent pkt/s", "received pkt/s", "loss"):
            table.add_column(column, justify="right")
        table.add_row(f"{time.monotonic() - self.started:.0f} s", f"{self.total('started')}/{self.options.calls}",
                      str(self.total("up")), f"[green]{ok}[/]", f"[red]{failed}[/]" if failed else "0",
                      f"{self.tx_rate:.0f}", f"{self.rx_rate:.0f}",
                      "-" if loss is None else f"{max(0.0, loss):.1f}%")
        return table


def run(options: LoadOptions) -> int:
    from rich.console import Console

    out, err = Console(), Console(stderr=True)
    if not out.is_terminal:  # a log or a pipe: wide enough for the tables, no colour codes
        out = Console(width=130, no_color=True)
    if not err.is_terminal:
        err = Console(stderr=True, width=200, no_color=True)
    wall0 = time.monotonic()
    error = asyncio.run(preflight(options.url))
    if error is not None:
        return _finish(options, [], wall0, {"processes": 0}, None, error, out)

    from loadtest.clip import load_or_make

    try:  # encoded once here so the load processes only read the cache
        clips = [load_or_make("opus")]
        if options.codec != "opus":
            clips.append(load_or_make(options.codec, options.width, options.height, options.bitrate))
    except (ValueError, RuntimeError, OSError) as exc:
        return _finish(options, [], wall0, {"processes": 0}, None, f"cannot make the media clip: {exc}", out)
    clip_info = {clip.kind: {"codec": clip.codec, "kbps": round(clip.bitrate / 1000, 1),
                             **({"size": f"{clip.width}x{clip.height}", "fps": round(1 / clip.frame_seconds)}
                                if clip.kind == "video" else {})} for clip in clips}

    server0 = _server_sample(options.server_pid)
    results, clients, error, notes, rss_peak = _run_processes(options, err)
    server = _server_report(options.server_pid, server0, options.calls, rss_peak)
    return _finish(options, results, wall0, clients, server, error, out, clip_info, notes)


def _run_processes(options: LoadOptions, console: Any
                   ) -> tuple[list[dict[str, Any]], dict[str, Any], str | None, list[str], float]:
    """Run the calls in load processes: (results, client CPU, fatal error, notes, server RSS peak)."""
    from rich.live import Live

    from loadtest.worker import WorkerPlan
    from loadtest.worker import main as worker_main

    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    count = max(1, min(options.processes, options.calls))
    run_id = secrets.token_hex(3)
    shares = [tuple(range(w, options.calls, count)) for w in range(count)]
    processes = []
    for worker, share in enumerate(shares):
        plan = WorkerPlan(url=options.url, calls=share, rate=options.rate, duration=options.duration,
                          codec=options.codec, width=options.width, height=options.height, bitrate=options.bitrate,
                          ice_address=options.ice_address, run_id=run_id,
                          verify_calls=frozenset(share[:1]) if options.verify else frozenset())
        process = ctx.Process(target=worker_main, args=(plan, worker, messages, go, start_at, stop),
                              name=f"loadtest-{worker}", daemon=True)
        process.start()
        processes.append(process)

    progress = Progress(options)
    ready: set[int] = set()
    done: dict[int, dict[str, Any]] = {}
    errors: list[str] = []
    deadline = time.monotonic() + 90  # spawning and importing aiortc on a busy machine
    interrupted = False

    def receive(timeout: float) -> None:
        try:
            message = messages.get(timeout=timeout)
        except queue_module.Empty:
            return
        kind, worker = message[0], message[1]
        if kind == "ready":
            ready.add(worker)
        elif kind == "progress":
            progress.update(worker, message[2])
        elif kind == "call":
            progress.results.append(message[2])
        elif kind == "done":
            done[worker] = message[2]
        elif kind == "error":
            errors.append(f"load process {worker}: {message[2]}")
            done.setdefault(worker, {})

    def dead() -> list[int]:
        return [w for w, p in enumerate(processes) if p.exitcode is not None and w not in done]

    try:
        while len(ready) + len(done) < count and time.monotonic() < deadline and not dead():
            receive(0.2)
        if len(ready) < count:
            stop.set()
            lost = dead()
            reason = errors[0] if errors else (
                f"load process {lost[0]} exited with status {processes[lost[0]].exitcode} before it was ready"
                if lost else "load processes not ready within 90 s")
            _reap(processes)
            return [], {"processes": count}, reason, [], 0.0
        start_at.value = time.time() + 0.3
        go.set()
        progress.started = time.monotonic()
        deadline = progress.started + 0.3 + options.calls / options.rate + options.duration + 60
        animate = not options.quiet and console.is_terminal
        display = (Live(progress.view(), console=console, auto_refresh=False, redirect_stderr=False)
                   if animate else contextlib.nullcontext())
        with display as live:
            last_draw = time.monotonic()
            while len(done) < count:
                try:
                    receive(0.1)
                    for worker in dead():  # a process that died without saying "done"
                        errors.append(f"load process {worker} died (exit status {processes[worker].exitcode})")
                        done[worker] = {}
                    if time.monotonic() > deadline and not stop.is_set():
                        errors.append("run overran its deadline: calls still running were stopped")
                        stop.set()
                        deadline += 30
                    elif time.monotonic() > deadline:
                        break
                except KeyboardInterrupt:
                    if interrupted:
                        break
                    interrupted = True
                    errors.append("interrupted (Ctrl-C)")
                    stop.set()
                progress.tick()
                if live is not None and time.monotonic() - last_draw > 0.5:
                    live.update(progress.view(), refresh=True)
                    last_draw = time.monotonic()
                elif not options.quiet and not animate and time.monotonic() - last_draw > 5:
                    console.print(progress.line(), highlight=False)  # one plain line for a log
                    last_draw = time.monotonic()
            while True:  # results already queued
                try:
                    receive(0.05 if not messages.empty() else 0)
                except KeyboardInterrupt:
                    break
                if messages.empty():
                    break
            progress.tick()
            if live is not None:
                live.update(progress.view(), refresh=True)
    finally:
        stop.set()
        _reap(processes)
    cpu = sum(d.get("cpu_seconds", 0.0) for d in done.values())
    wall = max([d.get("wall_seconds", 0.0) for d in done.values()] or [0.0])
    busiest = max([d["cpu_seconds"] / d["wall_seconds"] for d in done.values() if d.get("wall_seconds")] or [0.0])
    lags = [lag for d in done.values() for lag in d.get("loop_lag_ms", [])]
    clients = {"processes": count, "cpu_seconds": round(cpu, 2),
               "cpu_percent": round(100 * cpu / wall, 1) if wall else None,
               "busiest_process_cpu_percent": round(100 * busiest, 1),
               "loop_lag_ms": report.percentiles(lags)}
    # Results seen once per call index (a process that died may have sent some).
    unique = {r["index"]: r for r in progress.results}
    return list(unique.values()), clients, None, errors, progress.server_rss_peak


def _reap(processes: list[Any]) -> None:
    for process in processes:
        process.join(timeout=15)
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)


def _server_sample(pid: int | None) -> tuple[float, float, float] | None:
    if pid is None or not procstat.alive(pid):
        return None
    return time.monotonic(), procstat.cpu_seconds(pid), procstat.rss_mb(pid)


def _server_report(pid: int | None, before: tuple[float, float, float] | None, calls: int,
                   rss_peak: float) -> dict[str, Any] | None:
    if pid is None:
        return None
    if before is None or not procstat.alive(pid):  # never seen, or exited during the run
        return {"pid": pid, "alive": False, "cpu_percent": None, "rss_mb_before": before and round(before[2], 1),
                "rss_mb_peak": round(rss_peak, 1) or None, "rss_mb_per_call": None}
    t0, cpu0, rss0 = before
    cpu1, peak = procstat.cpu_seconds(pid), max(rss0, rss_peak, procstat.rss_mb(pid))
    return {"pid": pid, "alive": True, "cpu_percent": round(100 * (cpu1 - cpu0) / (time.monotonic() - t0), 1),
            "rss_mb_before": round(rss0, 1), "rss_mb_peak": round(peak, 1),
            "rss_mb_per_call": round((peak - rss0) / calls, 3) if calls else None}


def _finish(options: LoadOptions, results: list[dict[str, Any]], wall0: float, clients: dict[str, Any],
            server: dict[str, Any] | None, error: str | None, console: Any,
            clip: dict[str, Any] | None = None, notes: list[str] | None = None) -> int:
    opts = asdict(options)
    opts.pop("quiet")
    built = report.build(results, requested=options.calls, options=opts, wall_seconds=time.monotonic() - wall0,
                         clients=clients, server=server, error=error, notes=notes)
    if clip:
        built["clip"] = clip
    report.render(built, console)
    if options.json_path:
        Path(options.json_path).write_text(json.dumps(built, indent=2) + "\n")
    return report.exit_code(built)
