"""The relay worker over a real Unix socket (mediarelay/worker.py, through shared/ipc.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator

import pytest

from mediarelay.ice import IcePolicy
from mediarelay.worker import Worker, _Hosted, run_worker
from shared import ipc
from shared.ipc import IpcError
from shared.messages import (
    CallAccept,
    CallCreate,
    CallHangup,
    IceCandidate,
    LegConfigure,
    LegRenegotiate,
    LegTrickle,
    WorkerStats,
)
from shared.settings import Settings
from tests.support.relay_clients import Notifications, apply_answer, client, make_answer, make_offer


async def _until_listening(path: str, process: asyncio.subprocess.Process | None = None) -> None:
    for _ in range(500):
        if os.path.exists(path):
            return
        if process is not None and process.returncode is not None:
            break
        await asyncio.sleep(0.01)
    raise AssertionError(f"no worker socket at {path}")


@pytest.fixture
async def worker_address() -> AsyncIterator[str]:
    """A worker running in this process, on loopback, as `videocall relay` would run it."""
    path = os.path.join(tempfile.mkdtemp(prefix="relay-"), "w.sock")
    task = asyncio.ensure_future(run_worker(Settings(ice_enforce_list="127.0.0.1"), f"unix:{path}", worker_id="w1"))
    await _until_listening(path)
    yield f"unix:{path}"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not os.path.exists(path)  # the worker removes its socket


async def test_a_call_through_the_worker_connects_and_hangs_up(worker_address: str) -> None:
    notes = Notifications()
    channel = await ipc.connect(worker_address, node_id="test", on_notification=notes)
    caller, callee = client(), client()
    try:
        assert channel.peer is not None and channel.peer.worker_id == "w1"
        caller.addTransceiver("audio")
        caller.createDataChannel("chat")
        created = await channel.request(CallCreate(call_id="c1", caller_offer=await make_offer(caller)))
        answer = await make_answer(callee, created.callee_offer)  # type: ignore[attr-defined]
        accepted = await channel.request(CallAccept(call_id="c1", callee_answer=answer))
        await apply_answer(caller, accepted.caller_answer)  # type: ignore[attr-defined]
        await notes.wait(lambda n: {("caller", "connected", ""), ("callee", "connected", "")} <= set(n.states()))
        await channel.request(LegTrickle(call_id="c1", leg="caller", completed=True))
        await channel.request(LegConfigure(call_id="c1", leg="callee", video=False, bitrate=64000))
        assert (await channel.request(WorkerStats())).calls == 1  # type: ignore[attr-defined]

        await channel.request(CallHangup(call_id="c1", reason="Explicit hangup"))
        await channel.request(CallHangup(call_id="c1"))  # idempotent
        await notes.wait(lambda n: {("caller", "closed", "Explicit hangup"),
                                    ("callee", "closed", "Explicit hangup")} <= set(n.states()))
        assert (await channel.request(WorkerStats())).calls == 0  # type: ignore[attr-defined]
    finally:
        await channel.close()
        await caller.close()
        await callee.close()


async def test_a_call_whose_clients_both_left_is_dropped_by_the_worker(worker_address: str) -> None:
    notes = Notifications()
    channel = await ipc.connect(worker_address, node_id="test", on_notification=notes)
    caller, callee = client(), client()
    try:
        caller.addTransceiver("audio")
        created = await channel.request(CallCreate(call_id="c4", caller_offer=await make_offer(caller)))
        answer = await make_answer(callee, created.callee_offer)  # type: ignore[attr-defined]
        accepted = await channel.request(CallAccept(call_id="c4", callee_answer=answer))
        await apply_answer(caller, accepted.caller_answer)  # type: ignore[attr-defined]
        await notes.wait(lambda n: len(n.states()) == 2)
        await caller.close()
        await callee.close()
        await notes.wait(lambda n: {("caller", "closed", "DTLS alert"), ("callee", "closed", "DTLS alert")}
                         <= set(n.states()))
        for _ in range(100):
            if (await channel.request(WorkerStats())).calls == 0:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the worker kept a call with no client left")
    finally:
        await channel.close()


async def test_bad_requests_get_a_reason_and_the_worker_goes_on(worker_address: str) -> None:
    channel = await ipc.connect(worker_address, node_id="test")
    caller = client()
    try:
        with pytest.raises(IpcError, match="the offer is not SDP"):
            await channel.request(CallCreate(call_id="c1", caller_offer="hello"))
        with pytest.raises(IpcError, match="no call 'nope' on this worker"):
            await channel.request(CallAccept(call_id="nope", callee_answer="v=0"))
        caller.addTransceiver("audio")
        await channel.request(CallCreate(call_id="c2", caller_offer=await make_offer(caller)))
        with pytest.raises(IpcError, match="call 'c2' already exists"):
            await channel.request(CallCreate(call_id="c2", caller_offer=await make_offer(caller)))
        with pytest.raises(IpcError, match="a candidate's address"):
            await channel.request(LegTrickle(call_id="c2", leg="caller", candidates=[
                IceCandidate(candidate="candidate:1 1 udp 1 nowhere 9 typ host", sdpMid="0")]))
        with pytest.raises(IpcError, match="not accepted yet"):
            await channel.request(LegRenegotiate(call_id="c2", leg="caller", sdp_type="offer",
                                                                     sdp="v=0"))
        assert (await channel.request(WorkerStats())).calls == 1  # type: ignore[attr-defined]
    finally:
        await channel.close()
        await caller.close()


async def test_calls_of_a_closed_channel_are_hung_up(worker_address: str) -> None:
    first = await ipc.connect(worker_address, node_id="gone")
    caller = client()
    try:
        caller.addTransceiver("audio")
        await first.request(CallCreate(call_id="c3", caller_offer=await make_offer(caller)))
        await first.close()
        second = await ipc.connect(worker_address, node_id="other")
        for _ in range(200):
            if (await second.request(WorkerStats())).calls == 0:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the closed channel's call is still there")
        await second.close()
    finally:
        await caller.close()


async def test_python_m_mediarelay_worker_serves_until_sigterm() -> None:
    path = os.path.join(tempfile.mkdtemp(prefix="relay-"), "w.sock")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediarelay.worker", "--listen", f"unix:{path}", "--worker-id", "sub",
        env={**os.environ, "VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        await _until_listening(path, process)
        channel = await ipc.connect(f"unix:{path}", node_id="test")
        assert channel.peer is not None and channel.peer.worker_id == "sub" and channel.peer.pid == process.pid
        await channel.close()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode()
    assert not os.path.exists(path)


class _SlowClose:
    """A call whose close takes a while and goes on when its caller is cancelled (as ``Call.close``)."""

    def __init__(self) -> None:
        self.closed = False
        self._closing: asyncio.Future[None] | None = None

    async def close(self, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        await asyncio.sleep(0.1)  # a recording's last flush, the legs closing
        self.closed = True


async def test_shutdown_waits_for_a_call_whose_hangup_was_cancelled() -> None:
    """A hangup request cancelled with its channel (signalling stopping) leaves its call
    closing; the worker's shutdown waits for it, so the recording's last flush and its log
    line are not lost when the process exits."""
    worker = Worker(IcePolicy())
    call = _SlowClose()
    worker.calls["c1"] = _Hosted(call, None)  # type: ignore[arg-type]
    hangup = asyncio.ensure_future(worker.hangup("c1", "Close PC"))
    await asyncio.sleep(0.01)
    hangup.cancel()
    await asyncio.sleep(0.01)  # the cancellation is delivered before the shutdown starts
    await worker.close()
    assert call.closed and "c1" not in worker.calls
