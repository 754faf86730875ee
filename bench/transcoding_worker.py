"""The benchmark's baseline: a relay worker that decodes and re-encodes, with aiortc's MediaRelay.

It speaks the same IPC as ``python -m mediarelay.worker`` (``call.create``, ``call.accept``,
``call.hangup``), so ``bench/relay.py`` drives both the same way. Each call is two aiortc
PeerConnections; every track one side sends is decoded by aiortc and handed, through
``MediaRelay``, to the other side's sender, which encodes it again: what a relay built on
aiortc's public API does. Not part of the product.

    python bench/transcoding_worker.py --listen unix:/tmp/transcode.sock
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from pydantic import BaseModel

from mediarelay import ice
from shared import ipc
from shared.ipc import IpcError
from shared.messages import CallAccept, CallAcceptResult, CallCreate, CallCreateResult, CallHangup, Empty, Request


class TranscodingCall:
    def __init__(self) -> None:
        self.caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.callee = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.relay = MediaRelay()

    async def create(self, offer: str) -> str:
        tracks: list[MediaStreamTrack] = []
        self.caller.on("track", tracks.append)
        await self.caller.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        for track in tracks:
            self.callee.addTrack(self.relay.subscribe(track))
        await self.callee.setLocalDescription(await self.callee.createOffer())
        return str(self.callee.localDescription.sdp)

    async def accept(self, answer: str) -> str:
        tracks: list[MediaStreamTrack] = []
        self.callee.on("track", tracks.append)
        await self.callee.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        for track in tracks:
            self.caller.addTrack(self.relay.subscribe(track))
        await self.caller.setLocalDescription(await self.caller.createAnswer())
        return str(self.caller.localDescription.sdp)

    async def close(self) -> None:
        await self.caller.close()
        await self.callee.close()


class Worker:
    def __init__(self) -> None:
        self.calls: dict[str, TranscodingCall] = {}

    async def handle(self, channel: ipc.Channel, body: Request[Any]) -> BaseModel:
        if isinstance(body, CallCreate):
            call = self.calls[body.call_id] = TranscodingCall()
            return CallCreateResult(callee_offer=await call.create(body.caller_offer))
        if isinstance(body, CallAccept):
            return CallAcceptResult(caller_answer=await self.calls[body.call_id].accept(body.callee_answer))
        if isinstance(body, CallHangup):
            ended = self.calls.pop(body.call_id, None)
            if ended is not None:
                await ended.close()
            return Empty()
        raise IpcError(f"'{body.METHOD}' is not handled by the transcoding worker")


async def serve(listen: str) -> None:
    worker = Worker()
    with ice.installed(ice.LOOPBACK):
        server = await ipc.serve(listen, worker.handle, calls=lambda: len(worker.calls))
        try:
            await server.serve_forever()
        finally:
            server.close()
            await asyncio.gather(*(call.close() for call in worker.calls.values()), return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True)
    args = parser.parse_args()

    async def run() -> Any:
        task = asyncio.ensure_future(serve(args.listen))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    import uvloop

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
