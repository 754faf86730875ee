"""Calls through a relay worker over IPC, with two aiortc clients: helpers for tests.

    async with running_worker() as address:
        async with WorkerCall.start(address, setup_caller=lambda pc: pc.addTransceiver("audio")) as call:
            await call.connected()
            answer = await call.renegotiate("callee", offer_sdp)   # what signalling would deliver

The worker runs in the test's own process and loop (as ``tests/mediarelay/test_worker.py`` runs it),
on 127.0.0.1; ``WorkerCall`` plays the signalling side: it sends the requests a call needs and
collects the notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from mediarelay.worker import run_worker
from shared import ipc
from shared.messages import (
    CallAccept,
    CallCreate,
    CallHangup,
    LegRenegotiate,
    LegRenegotiateResult,
)
from shared.settings import Settings
from tests.support.relay_clients import Notifications, apply_answer, client, make_answer, make_offer


@contextlib.asynccontextmanager
async def running_worker(**settings: Any) -> AsyncIterator[str]:
    """A worker on a Unix socket in this process, ICE on loopback (``settings``: more of its
    settings, e.g. ``recordings_dir``); yields its address."""
    path = os.path.join(tempfile.mkdtemp(prefix="relay-"), "w.sock")
    task = asyncio.ensure_future(run_worker(Settings(ice_enforce_list="127.0.0.1", **settings), f"unix:{path}",
                                            worker_id="w"))
    try:
        for _ in range(500):
            if os.path.exists(path):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"no worker socket at {path}")
        yield f"unix:{path}"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@dataclass
class WorkerCall:
    """Two aiortc clients in one call through a worker, and the IPC channel that set it up."""

    call_id: str
    channel: ipc.Channel
    notes: Notifications
    caller: RTCPeerConnection
    callee: RTCPeerConnection

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, address: str, setup_caller: Callable[[RTCPeerConnection], Any],
                    setup_callee: Callable[[RTCPeerConnection], Any] | None = None,
                    call_id: str = "c1") -> AsyncIterator[WorkerCall]:
        """Create and accept a call: ``setup_*`` add each client's tracks/channels before its SDP."""
        notes = Notifications()
        channel = await ipc.connect(address, node_id="test", on_notification=notes)
        call = cls(call_id, channel, notes, client(), client())
        try:
            setup_caller(call.caller)
            created = await channel.request(CallCreate(call_id=call_id, caller_offer=await make_offer(call.caller)))
            await call.callee.setRemoteDescription(RTCSessionDescription(sdp=created.callee_offer, type="offer"))  # type: ignore[attr-defined]
            if setup_callee is not None:
                setup_callee(call.callee)
            await call.callee.setLocalDescription(await call.callee.createAnswer())
            accepted = await channel.request(CallAccept(call_id=call_id, callee_answer=call.callee.localDescription.sdp))
            await apply_answer(call.caller, accepted.caller_answer)  # type: ignore[attr-defined]
            yield call
        finally:
            with contextlib.suppress(Exception):
                await channel.request(CallHangup(call_id=call_id))
            await channel.close()
            await call.caller.close()
            await call.callee.close()

    def client(self, leg: str) -> RTCPeerConnection:
        return self.caller if leg == "caller" else self.callee

    async def connected(self, timeout: float = 10.0) -> None:
        await self.notes.wait(lambda n: {("caller", "connected", ""), ("callee", "connected", "")} <= set(n.states()),
                              timeout)

    async def renegotiate(self, leg: str, sdp_type: str, sdp: str, restart: bool = False) -> LegRenegotiateResult:
        result = await self.channel.request(LegRenegotiate(
            call_id=self.call_id, leg=leg, sdp_type=sdp_type, sdp=sdp, restart=restart))  # type: ignore[arg-type]
        assert isinstance(result, LegRenegotiateResult)
        return result

    async def update(self, offerer: str, restart: bool = False) -> tuple[str, str]:
        """The whole renegotiation as signalling runs it: ``offerer``'s client offers, the other
        client gets the relay's offer (``update``) and answers, the offerer gets the relay's answer.

        Returns (the relay's offer to the other client, the relay's answer to the offerer)."""
        other = "callee" if offerer == "caller" else "caller"
        mirrored = await self.renegotiate(offerer, "offer", await make_offer(self.client(offerer)), restart)
        assert mirrored.sdp_type == "offer"
        answered = await self.renegotiate(other, "answer", await make_answer(self.client(other), mirrored.sdp))
        assert answered.sdp_type == "answer"
        await apply_answer(self.client(offerer), answered.sdp)
        return mirrored.sdp, answered.sdp

