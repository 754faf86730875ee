"""The signalling node's side of the relay workers: connections, placement, call routing.

A call is placed on the least loaded connected worker when it is created and stays
there; every later request for it goes to the same worker. "Least loaded" is from what each
worker reports: the pool asks every connected worker for ``worker.stats`` every
``stats_interval`` seconds (``worker_load.py`` turns the reports into a score; the same
reports feed ``/metrics``). The same poll is the worker's heartbeat: a worker that does not
answer it within ``heartbeat_timeout`` seconds is hung (stopped, swapped out, stuck in a
loop), and is treated as dead at once: its channel is closed (so it drops those calls
itself if it ever resumes), it gets no new calls, and its calls are reported lost. Worker
notifications (``leg.state``, ``leg.media``) are handed to the plugin runner as they come. When a worker's
channel closes (it died, or the network failed), the calls it held are reported lost so
both users get a clean ``hangup``, and the pool keeps reconnecting in the background:
signalling goes on serving with the workers it has.

A request whose worker does not answer in time, or whose channel closes under it, fails with
``RelayUnavailable`` (the client's "try again" error), never as if the client's offer were
bad. A ``call.create`` answered after it timed out made a call nobody owns: it is hung up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, SecretStr

from shared import ipc
from shared import messages as m
from shared.logs import call_log
from signaling.worker_load import WorkerLoad

log = logging.getLogger("videocall.relay_client")

ResultT = TypeVar("ResultT", bound=BaseModel)


class RelayUnavailable(ipc.IpcError):
    """No connected worker, or the call's worker is gone: not the client's fault, try again."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"relay unavailable: {detail}")


@dataclass
class Worker:
    address: str
    channel: ipc.Channel | None = None
    calls: set[str] = field(default_factory=set)
    load: WorkerLoad = field(default_factory=WorkerLoad)


LostHandler = Callable[[list[str]], None]


class RelayPool:
    """Channels to every configured worker, and which call lives on which."""

    def __init__(
        self,
        addresses: list[str],
        *,
        node_id: str,
        timeout: float,
        on_notification: ipc.NotificationHandler,
        on_calls_lost: LostHandler,
        reconnect_delay: float = 0.5,
        stats_interval: float = 2.0,
        heartbeat_timeout: float = 3.0,
        secret: SecretStr | None = None,
    ) -> None:
        self.workers = [Worker(address) for address in addresses]
        #: ``relay_secret``: each worker must prove it knows it, and is proved to.
        self._secret = secret
        self.node_id = node_id
        self.timeout = timeout
        self.on_notification = on_notification
        self.on_calls_lost = on_calls_lost
        self.reconnect_delay = reconnect_delay
        self.stats_interval = stats_interval
        self.heartbeat_timeout = heartbeat_timeout
        self._call_worker: dict[str, Worker] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._late_hangups: set[asyncio.Task[m.Empty]] = set()
        self._closing = False

    async def start(self, wait: float = 0.0) -> None:
        """Start connecting to every worker; wait up to ``wait`` s for at least one."""
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(self._keep_connected(worker)))
        deadline = asyncio.get_running_loop().time() + wait
        while wait and self.workers and not self.connected() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    def connected(self) -> list[Worker]:
        return [w for w in self.workers if w.channel is not None and not w.channel.closed]

    async def close(self) -> None:
        self._closing = True
        for task in [*self._tasks, *self._late_hangups]:
            task.cancel()
        for worker in self.workers:
            if worker.channel is not None:
                await worker.channel.close()

    async def _keep_connected(self, worker: Worker) -> None:
        delay = self.reconnect_delay
        loop = asyncio.get_running_loop()
        while not self._closing:
            closed: asyncio.Future[None] = loop.create_future()

            def on_close(closed: asyncio.Future[None] = closed) -> None:
                if not closed.done():
                    closed.set_result(None)

            try:
                channel = await ipc.connect(
                    worker.address,
                    node_id=self.node_id,
                    secret=self._secret,
                    on_notification=self.on_notification,
                    on_close=on_close,
                    on_late_response=lambda body, ok, w=worker: self._answered_late(w, body, ok),
                    timeout=self.timeout,
                    name=worker.address,
                )
            except (OSError, ipc.IpcError) as exc:
                log.debug("worker %s not reachable: %s", worker.address, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = self.reconnect_delay
            worker.channel = channel
            log.info("connected to relay worker %s", worker.address)
            poller = asyncio.create_task(self._poll_stats(worker, channel))
            await closed
            poller.cancel()
            worker.channel = None
            worker.load.forget()
            lost = sorted(worker.calls)
            worker.calls.clear()
            for call_id in lost:
                self._call_worker.pop(call_id, None)
            if not self._closing:
                log.warning("lost relay worker %s with %d call(s)", worker.address, len(lost))
                if lost:
                    self.on_calls_lost(lost)
                await asyncio.sleep(self.reconnect_delay)

    # --- requests -----------------------------------------------------------------------

    async def request(self, body: m.Request[ResultT]) -> ResultT:
        """Send ``body`` to the worker of its call: ``call.create`` places a new call on
        the least loaded worker, ``call.hangup`` forgets it (and never fails: an unknown or
        unreachable call is already hung up), anything else goes where its call lives."""
        if isinstance(body, m.CallCreate):
            return await self._create(body)  # type: ignore[return-value]
        if isinstance(body, m.CallHangup):
            return await self._hangup(body)  # type: ignore[return-value]
        call_id: str = getattr(body, "call_id", "")
        worker = self._call_worker.get(call_id)
        if worker is None:
            raise RelayUnavailable(f"call {call_id} is not on any connected worker")
        return await self._request(worker, body)

    async def _create(self, body: m.CallCreate) -> m.CallCreateResult:
        candidates = self.connected()
        if not candidates:
            raise RelayUnavailable("no relay worker is connected")
        now = asyncio.get_running_loop().time()
        max_age = 3 * self.stats_interval
        worker = min(candidates, key=lambda w: (w.load.score(now, max_age, len(w.calls)), len(w.calls)))
        worker.calls.add(body.call_id)
        worker.load.placed()
        log.debug("call %s placed on worker %s", body.call_id, worker.address, extra=call_log(body.call_id))
        self._call_worker[body.call_id] = worker
        try:
            return await self._request(worker, body)
        except ipc.IpcError:
            self._forget(body.call_id)
            worker.load.placed(-1)
            raise

    async def _hangup(self, body: m.CallHangup) -> m.Empty:
        worker = self._call_worker.get(body.call_id)
        self._forget(body.call_id)
        if worker is not None and worker.channel is not None:
            try:
                await self._request(worker, body)
            except ipc.IpcError as exc:
                log.warning("hangup of %s on %s failed: %s", body.call_id, worker.address, exc.reason,
                            extra=call_log(body.call_id))
        return m.Empty()

    async def _request(self, worker: Worker, body: m.Request[ResultT]) -> ResultT:
        channel = worker.channel
        if channel is None or channel.closed:
            raise RelayUnavailable(f"worker {worker.address} is not connected")
        try:
            return await channel.request(body)
        except ipc.RequestTimeout:
            raise RelayUnavailable(f"worker {worker.address} did not answer in time") from None
        except ipc.ChannelClosed:
            raise RelayUnavailable(f"worker {worker.address} went away") from None

    def _answered_late(self, worker: Worker, body: m.Request[BaseModel], ok: bool) -> None:
        """A worker answered a request this node had given up on: a call it created then is
        nobody's (the caller was told the relay is unavailable), so it is hung up."""
        if not (ok and isinstance(body, m.CallCreate)) or self._call_worker.get(body.call_id) is worker:
            return
        channel = worker.channel
        if channel is None or channel.closed:
            return  # the worker drops that channel's calls itself
        log.warning("call %s was created on %s after it timed out; hanging it up", body.call_id, worker.address,
                    extra=call_log(body.call_id))
        task = asyncio.get_running_loop().create_task(self._request(worker, m.CallHangup(
            call_id=body.call_id, reason="Call setup timed out")))
        self._late_hangups.add(task)
        task.add_done_callback(self._late_hangup_done)

    def _late_hangup_done(self, task: asyncio.Task[m.Empty]) -> None:
        self._late_hangups.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("late hangup failed: %s", task.exception())

    async def _poll_stats(self, worker: Worker, channel: ipc.Channel) -> None:
        """Ask ``worker`` how loaded it is, now and every ``stats_interval`` s, while ``channel``
        lasts. An error answer keeps the last report until it goes stale (the worker is alive);
        no answer within ``heartbeat_timeout`` s closes the channel: the worker is hung."""
        loop = asyncio.get_running_loop()
        while not channel.closed:
            sent, counted = loop.time(), worker.load.placed_since
            try:
                stats = await channel.request(m.WorkerStats(), timeout=self.heartbeat_timeout)
            except ipc.RequestTimeout:
                log.warning("relay worker %s missed its heartbeat (no answer in %g s): dropping it",
                            worker.address, self.heartbeat_timeout)
                await channel.close()
                return
            except ipc.IpcError as exc:
                log.debug("worker %s did not report its stats: %s", worker.address, exc.reason)
            else:
                now = loop.time()
                worker.load.update(stats, now, now - sent, counted)
            await asyncio.sleep(self.stats_interval)

    def _forget(self, call_id: str) -> None:
        worker = self._call_worker.pop(call_id, None)
        if worker is not None:
            worker.calls.discard(call_id)


def _settle(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` once: a channel may report its close more than once."""
    if not future.done():
        future.set_result(None)
