"""Operations on a real ``videocall serve --workers 1``: metrics through a call with media, JSON
logs with the call id, and SIGTERM's drain (each test starts its own server: it ends it)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from tests.e2e.conftest import REPO, ServerProcess
from tests.e2e.e2e_support import Clients, Server, User, connect_call, expect_result
from tests.signaling.test_ops_http import http_get, samples
from tests.support.janus_ws import JanusConnection, offer_host_address
from tests.support.servers import free_port, videocall_command


@contextmanager
def serve(tmp: Path, *args: str) -> Iterator[ServerProcess]:
    port = free_port()
    env = {"VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "VIDEOCALL_HOST": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = ServerProcess("videocall-ops", [*videocall_command(), "serve", "--port", str(port), "--workers", "1",
                                              *args], host="127.0.0.1", port=port, logdir=tmp, env=env, cwd=REPO)
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def until_ready(process: ServerProcess, want: tuple[int, str] = (200, "ready\n"), timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (got := (await http_get(process.port, "/readyz"))[::2]) != want:
        assert time.monotonic() < deadline, f"/readyz said {got}, not {want}"
        await asyncio.sleep(0.1)


#: Samples of a /metrics page: (name, labels) -> value.
Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(process: ServerProcess) -> Metrics:
    status, _, text = await http_get(process.port, "/metrics")
    assert status == 200
    return samples(text)


async def scrape_until(process: ServerProcess, wanted: Callable[[Metrics], bool], timeout: float = 10) -> Metrics:
    """The first scrape that shows ``wanted`` (a worker's report comes every 2 s): polled, not slept on."""
    deadline = time.monotonic() + timeout
    while not wanted(metrics := await scrape(process)):
        assert time.monotonic() < deadline, f"not seen within {timeout} s: {metrics}"
        await asyncio.sleep(0.1)
    return metrics


def total(metrics: Metrics, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (any worker)."""
    return sum(value for (sample, have), value in metrics.items()
               if sample == name and set(labels.items()) <= set(have))


@asynccontextmanager
async def call_in_progress(process: ServerProcess) -> AsyncIterator[tuple[User, User]]:
    server = Server("videocall", f"ws://127.0.0.1:{process.port}/", "127.0.0.1", 60)
    with offer_host_address("127.0.0.1"):
        async with Clients(server) as clients:
            alice, bob = await clients.user("alice"), await clients.user("bob")
            await connect_call(alice, bob)
            yield alice, bob


async def exited(process: ServerProcess, timeout: float) -> float:
    """Seconds until the process exited (fails after ``timeout``)."""
    assert process.proc is not None
    started = time.monotonic()
    while process.proc.poll() is None:
        assert time.monotonic() - started < timeout, f"still running after {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_metrics_follow_a_call_and_json_logs_carry_its_id(tmp_path: Path) -> None:
    with serve(tmp_path, "--log-format", "json") as process:
        await until_ready(process)
        before = await scrape(process)
        assert total(before, "videocall_calls") == 0 and before[("videocall_sessions", ())] == 0
        async with call_in_progress(process) as (alice, _bob):
            during = await scrape(process)
            assert during[("videocall_sessions", ())] == 2
            assert during[("videocall_handles", ())] == 2
            assert during[("videocall_registered_users", ())] == 2
            assert during[("videocall_calls", (("state", "active"),))] == 1
            assert total(during, "videocall_worker_placed_calls") == 1
            assert during[("videocall_call_setup_seconds_count", ())] == 1
            assert 0 < during[("videocall_call_setup_seconds_sum", ())] < 10
            # the worker's counters come with its next report (every 2 s) and keep rising
            first = await scrape_until(process, lambda m: total(m, "videocall_worker_calls") == 1 and all(
                total(m, "videocall_worker_packets_total", direction=d) > 0 for d in ("in", "out")))

            def rose(metrics: Metrics) -> bool:
                return all(total(metrics, "videocall_worker_packets_total", direction=d)
                           > total(first, "videocall_worker_packets_total", direction=d) for d in ("in", "out"))

            second = await scrape_until(process, rose)
            for direction in ("in", "out"):
                assert total(second, "videocall_worker_bytes_total", direction=direction) > 0
            assert total(second, "videocall_worker_cpu_seconds_total") > 0
            assert total(second, "videocall_worker_resident_memory_bytes") > 10_000_000
            await expect_result(alice, {"request": "hangup"}, {"event": "hangup", "username": alice.name,
                                                              "reason": "Explicit hangup"})
            deadline = time.monotonic() + 5
            while total(await scrape(process), "videocall_calls"):
                assert time.monotonic() < deadline, "the call is still counted"
                await asyncio.sleep(0.1)
    lines = [json.loads(line) for line in process.stderr.read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message", "process"} <= set(line) for line in lines)
    about_call = [line for line in lines if re.search(r"\bcall-1\b", line["message"])]
    assert about_call and all(line.get("call_id") == "call-1" for line in about_call)
    assert len({line["process"] for line in about_call}) == 2  # the node's lines and the worker's


async def test_sigterm_drains_calls_go_on_and_the_process_exits_when_they_end(tmp_path: Path) -> None:
    with serve(tmp_path) as process:
        await until_ready(process)
        assert process.proc is not None
        async with call_in_progress(process) as (alice, bob):
            process.proc.send_signal(signal.SIGTERM)
            await until_ready(process, (503, "draining\n"))
            conn = await JanusConnection.connect(f"ws://127.0.0.1:{process.port}/")
            try:
                refused = await conn.request({"janus": "create"})
                assert refused["janus"] == "error"
                assert refused["error"] == {"code": 472, "reason": "Currently not accepting new sessions"}
            finally:
                await conn.close()
            assert bob.peer is not None and alice.peer is not None
            await bob.peer.wait_frames("video", 10)  # the call goes on
            await alice.peer.wait_frames("video", 10)
            assert process.proc.poll() is None
            await expect_result(alice, {"request": "hangup"}, {"event": "hangup", "username": alice.name,
                                                              "reason": "Explicit hangup"})
            await exited(process, 10)
        assert process.proc.returncode == 0
    log = process.stderr.read_text()
    assert "draining: new sessions refused; 1 call(s) in progress" in log
    assert "drain over: 0 call(s) left" in log
    assert "Traceback" not in log  # workers stop quietly too (no CancelledError from their channels)


async def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    with serve(tmp_path) as process:
        await until_ready(process)
        assert process.proc is not None
        async with call_in_progress(process):
            process.proc.send_signal(signal.SIGTERM)
            await until_ready(process, (503, "draining\n"))
            process.proc.send_signal(signal.SIGTERM)
            assert await exited(process, 8) < 8
    assert "drain over" not in process.stderr.read_text()


async def test_drain_timeout_ends_a_drain_with_calls_left(tmp_path: Path) -> None:
    with serve(tmp_path, "--drain-timeout", "1") as process:
        await until_ready(process)
        assert process.proc is not None
        async with call_in_progress(process):
            process.proc.send_signal(signal.SIGTERM)
            waited = await exited(process, 10)
            assert 0.9 < waited < 8
        assert process.proc.returncode == 0
    assert "drain over: 1 call(s) left" in process.stderr.read_text()
