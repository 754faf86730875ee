"""The relay worker process: an IPC server hosting many calls in one event loop.

It owns the ``Call`` objects of this process and nothing else: each request of the
signalling side (``shared/messages.py``) becomes one method call on a ``Call``, and what
the legs report goes back as notifications. A call belongs to the channel that created
it: its notifications go there, and when that channel closes its calls are hung up
(a worker never keeps media flowing for a signalling node that is gone).

Untrusted input stays a request error: a ValueError from ``Call`` (bad SDP, bad candidate)
is answered with its sentence, an unknown call with IpcError, and the worker goes on.

    python -m mediarelay.worker --listen unix:/tmp/relay.sock [--config videocall.toml]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mediarelay import aiortc_hooks, ice
from mediarelay.call import Call
from mediarelay.ice import IcePolicy
from mediarelay.recording_files import RecordingRefused, default_base
from mediarelay.worker_stats import WorkerTotals, call_stats
from shared import ipc
from shared.heap import HeapTrimmer
from shared.ipc import Channel, IpcError
from shared.logs import call_log, setup_logging
from shared.messages import (
    CLOSE_PC,
    CallAccept,
    CallAcceptResult,
    CallCreate,
    CallCreateResult,
    CallHangup,
    CallStats,
    CallStatsResult,
    Empty,
    LegConfigure,
    LegRecord,
    LegRecording,
    LegRenegotiate,
    LegRenegotiateResult,
    LegState,
    LegTrickle,
    Notification,
    Request,
    WorkerStats,
    WorkerStatsResult,
    recording_name_problem,
)
from shared.settings import Settings, load

log = logging.getLogger(__name__)

@dataclass
class _Hosted:
    call: Call
    owner: Channel | None


#: Seconds after a call ends before its memory is freed and given back (several hangups, one
#: collection and trim: ``shared/heap.py``). Measured (``bench/soak.py --calls 6 --workers 1``):
#: a call's objects are cyclic garbage that waits for a rare full collection, and with a trim
#: alone a worker grew by ~0.35 MB per call it had held; with the collection first, flat.
TRIM_DELAY = 1.0


class Worker:
    """The calls of this process, and the dispatch of IPC requests to them."""

    def __init__(self, policy: IcePolicy, recordings_dir: str = "recordings") -> None:
        self.policy = policy
        #: Where recordings are written (``settings.recordings_dir``); no name ever leaves it.
        self.recordings_dir = recordings_dir
        self.calls: dict[str, _Hosted] = {}
        self.channels: set[Channel] = set()
        self._creating: dict[str, bool] = {}  # call id -> hung up while being created
        self._tasks: set[asyncio.Task[None]] = set()
        #: Calls hung up and still closing (their recordings flushing), even when the hangup
        #: request that started it was cancelled with its channel: shutdown waits for them.
        self._ending: set[asyncio.Future[None]] = set()
        #: What ended calls relayed, for ``worker.stats``.
        self.totals = WorkerTotals()
        #: Frees what ended calls leave (cyclic garbage) and gives it back to the system.
        self.heap = HeapTrimmer(TRIM_DELAY)

    def call_count(self) -> int:
        return len(self.calls)

    # --- channels -----------------------------------------------------------------------------

    def attach(self, channel: Channel) -> None:
        """``on_channel``: a node said ``hello`` (with the secret's proof): remember its channel."""
        self.channels.add(channel)
        log.info("signalling channel %s connected", channel.name)

    def detach(self, channel: Channel) -> None:
        """``on_channel_closed``: its connection ended; hang up the calls it owned."""
        self.channels.discard(channel)
        orphans = [call_id for call_id, hosted in self.calls.items() if hosted.owner is channel]
        log.info("signalling channel %s closed; hanging up %d call(s)", channel.name, len(orphans))
        for call_id in orphans:
            self._spawn(self.hangup(call_id, CLOSE_PC))

    def _send(self, owner: Channel | None, call_id: str, model: Notification) -> None:
        """A leg's notification: to the call's channel (dropped once it is closed), or to every
        channel for a call created outside a channel."""
        if owner is not None:
            targets = [] if owner.closed else [owner]
        else:
            targets = [c for c in self.channels if not c.closed]
        for channel in targets:
            try:
                channel.notify(model)
            except Exception:
                log.exception("call %s: could not send %s on %s", call_id, model.METHOD, channel.name, extra=call_log(call_id))
        if isinstance(model, LegState) and model.state != "connected":
            hosted = self.calls.get(call_id)
            if hosted is not None and {hosted.call.caller.state, hosted.call.callee.state} <= {"failed", "closed"}:
                self._spawn(self.hangup(call_id, model.reason or CLOSE_PC))  # nothing left to keep

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- requests -----------------------------------------------------------------------------

    async def handle(self, channel: Channel, body: Request[Any]) -> BaseModel:
        """The IPC handler: one request, one result (or ValueError / IpcError with a reason)."""
        handler = _HANDLERS.get(type(body))
        if handler is None:
            raise IpcError(f"'{body.METHOD}' is not handled by the relay worker")
        return await handler(self, channel, body)

    async def _accept(self, channel: Channel, body: CallAccept) -> CallAcceptResult:
        return CallAcceptResult(caller_answer=await self._call(body.call_id).accept(body.callee_answer))

    async def _trickle(self, channel: Channel, body: LegTrickle) -> Empty:
        candidates = [c.model_dump(exclude_none=True) for c in body.candidates]
        await self._call(body.call_id).add_candidates(body.leg, candidates, body.completed)
        return Empty()

    async def _configure(self, channel: Channel, body: LegConfigure) -> Empty:
        self._call(body.call_id).configure(body.leg, body.audio, body.video, body.bitrate, substream=body.substream,
                                           temporal=body.temporal, fallback=body.fallback, auto=body.auto)
        return Empty()

    async def _renegotiate(self, channel: Channel, body: LegRenegotiate) -> LegRenegotiateResult:
        sdp = await self._call(body.call_id).renegotiate(body.leg, body.sdp_type, body.sdp, body.restart,
                                                         rid_order=body.rid_order)
        # An offer goes on to the other client as an offer, an answer back to the offerer.
        return LegRenegotiateResult(sdp_type=body.sdp_type, sdp=sdp)

    async def _record(self, channel: Channel, body: LegRecord) -> Empty:
        """Start or stop recording what one leg's user sends. A name that cannot be written
        inside the recordings folder, or a file that cannot be opened, is an IpcError whose
        reason says why, and nothing is created."""
        call = self._call(body.call_id)
        if not body.record:
            await call.stop_recording(body.leg)
            return Empty()
        base = body.base or default_base(body.user or "unknown", body.peer or "unknown", time.time_ns() // 1000)
        problem = recording_name_problem(base)
        if problem:
            raise IpcError(problem)
        owner = self.calls[body.call_id].owner
        call_id, leg = body.call_id, body.leg

        def on_state(state: str, files: list[str], reason: str) -> None:
            self._send(owner, call_id, LegRecording(call_id=call_id, leg=leg, state=state,  # type: ignore[arg-type]
                                                    files=files, reason=reason))

        try:
            await call.record(leg, self.recordings_dir, base, on_state)
        except RecordingRefused as exc:
            raise IpcError(str(exc)) from None
        return Empty()

    async def _hangup(self, channel: Channel, body: CallHangup) -> Empty:
        await self.hangup(body.call_id, body.reason or CLOSE_PC)
        return Empty()

    async def _stats(self, channel: Channel, body: WorkerStats) -> WorkerStatsResult:
        return self.totals.result((hosted.call for hosted in self.calls.values()), creating=len(self._creating))

    async def _call_stats(self, channel: Channel, body: CallStats) -> CallStatsResult:
        return call_stats(self._call(body.call_id))

    async def create(self, owner: Channel | None, body: CallCreate) -> CallCreateResult:
        """Prepare a call; it belongs to ``owner``, the channel that asked (None: in-process use)."""
        call_id = body.call_id
        if call_id in self.calls or call_id in self._creating:
            raise IpcError(f"call '{call_id}' already exists")
        self._creating[call_id] = False
        try:
            call, callee_offer = await Call.create(
                call_id, body.caller_offer, policy=self.policy,
                notify=lambda model: self._send(owner, call_id, model), rid_order=body.rid_order)
        finally:
            hung_up = self._creating.pop(call_id)
        if hung_up or (owner is not None and owner.closed):
            await call.close(CLOSE_PC)
            raise IpcError(f"call '{call_id}' was hung up while being created")
        self.calls[call_id] = _Hosted(call, owner)
        return CallCreateResult(callee_offer=callee_offer)

    async def hangup(self, call_id: str, reason: str) -> None:
        """Close a call's legs and forget it; unknown ids are fine (hangup is idempotent)."""
        if call_id in self._creating:
            self._creating[call_id] = True
        hosted = self.calls.pop(call_id, None)
        if hosted is not None:
            closing = asyncio.ensure_future(hosted.call.close(reason))
            self._ending.add(closing)
            closing.add_done_callback(self._ending.discard)
            await asyncio.shield(closing)
            self.totals.call_ended(hosted.call)
            self.heap.soon()

    async def close(self, reason: str = CLOSE_PC) -> None:
        """Hang up every call (worker shutdown), and let those already closing finish: a
        hangup whose request was cancelled with its channel still closes its recordings."""
        await asyncio.gather(*(self.hangup(call_id, reason) for call_id in list(self.calls)), *list(self._ending))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.heap.cancel()

    def _call(self, call_id: str) -> Call:
        hosted = self.calls.get(call_id)
        if hosted is None:
            raise IpcError(f"no call '{call_id}' on this worker")
        return hosted.call


#: Request model -> the ``Worker`` method that answers it (``hello`` is answered by ``ipc.serve``).
_HANDLERS: dict[type[Request[Any]], Callable[[Worker, Channel, Any], Awaitable[BaseModel]]] = {
    CallCreate: Worker.create,
    CallAccept: Worker._accept,
    LegTrickle: Worker._trickle,
    LegConfigure: Worker._configure,
    LegRenegotiate: Worker._renegotiate,
    LegRecord: Worker._record,
    CallHangup: Worker._hangup,
    WorkerStats: Worker._stats,
    CallStats: Worker._call_stats,
}


async def run_worker(settings: Settings, listen: str, *, worker_id: str = "") -> None:
    """Serve calls on ``listen`` (``unix:/path`` or ``tcp:host:port``) until cancelled.

    The ICE settings apply to the whole process while it runs; on the way out every call is
    hung up and a Unix socket file is removed. The process is made ready for relay legs
    (``aiortc_hooks.prepare_relay_legs``, idempotent): ``prepare_process`` does more, once, for
    a process that only relays. Raises ValueError, before binding, for a non-loopback TCP
    address without ``relay_secret`` (``ipc.unguarded_listen``).
    """
    refusal = ipc.unguarded_listen(listen, settings.relay_secret)
    if refusal is not None:
        raise ValueError(refusal)
    aiortc_hooks.prepare_relay_legs()
    policy = ice.policy_from_settings(settings)
    worker = Worker(policy, settings.recordings_dir)
    kind, where = ipc.parse_address(listen)
    with ice.installed(policy):
        server = await ipc.serve(listen, worker.handle, on_channel=worker.attach, on_channel_closed=worker.detach,
                                 worker_id=worker_id or None, calls=worker.call_count, timeout=settings.ipc_timeout,
                                 secret=settings.relay_secret)
        log.info("relay worker %s listening on %s (pid %d; ICE addresses %s, ports %s, public %s)",
                 worker_id or "-", listen, os.getpid(), ",".join(policy.addresses) or "all",
                 settings.rtp_port_range or "any", policy.public_address or "-")
        try:
            await server.serve_forever()
        finally:
            server.close()
            await worker.close()
            if kind == "unix":
                with contextlib.suppress(OSError):
                    os.unlink(str(where))
            log.info("relay worker %s stopped", worker_id or "-")


#: Modules a worker's first call would import (the DTLS handshake's cryptography backend and
#: ciphers): imported before it serves, so that the first call does not wait for them and
#: workers forked from a prepared process (videocall/worker_forks.py) share them.
FIRST_CALL_MODULES = (
    "cryptography.hazmat.backends.openssl.backend",
    "cryptography.hazmat.primitives.ciphers",
    "cryptography.hazmat.primitives.serialization",
)


def prepare_process() -> None:
    """A process that only relays, before it serves: aiortc made lighter for relay legs (one
    DTLS certificate, no receiver estimators: ``aiortc_hooks.prepare_relay_process``), what its
    first call would import imported, and what was loaded so far frozen out of the cyclic
    garbage collector's walks (``gc.freeze``), so a full collection looks at the calls' objects
    only (and, in a forked worker, writes to none of the pages it shares)."""
    aiortc_hooks.prepare_relay_process()
    for name in FIRST_CALL_MODULES:
        with contextlib.suppress(ImportError):  # another cryptography may lay them out otherwise
            importlib.import_module(name)
    gc.freeze()


async def _until_signalled(settings: Settings, listen: str, worker_id: str) -> None:
    task = asyncio.ensure_future(run_worker(settings, listen, worker_id=worker_id))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mediarelay.worker", description="Run one relay worker.")
    parser.add_argument("--listen", required=True, help="unix:/path/to.sock or tcp:host:port")
    parser.add_argument("--worker-id", default="", help="name reported to signalling (default: pid-<pid>)")
    parser.add_argument("--config", help="settings file (TOML or JSON)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)
    try:
        settings = load(args.config, log_level=args.log_level)
        refusal = ipc.unguarded_listen(args.listen, settings.relay_secret)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    if refusal is not None:  # before anything binds
        print(f"{parser.prog}: {refusal}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    prepare_process()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency on Linux
        asyncio.run(_until_signalled(settings, args.listen, args.worker_id))
    else:
        uvloop.run(_until_signalled(settings, args.listen, args.worker_id))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
