"""Helpers for tests that drive the relay with real aiortc clients on 127.0.0.1.

Clients are plain aiortc PeerConnections with an explicit, empty ICE server list; their host
candidates are loopback because the tests install ``mediarelay.ice.LOOPBACK``
(``ice.installed``), which applies to every aioice connection in the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from pydantic import BaseModel

from shared.messages import Notification


def client() -> RTCPeerConnection:
    """A client PeerConnection that contacts no STUN server."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def make_offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


async def make_answer(pc: RTCPeerConnection, offer: str) -> str:
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription.sdp


async def apply_answer(pc: RTCPeerConnection, answer: str) -> None:
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))


def split_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """The SDP without its candidates, and those candidates as janus.js would trickle them."""
    lines, found = [], []
    mid, index = None, -1
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            index += 1
        elif line.startswith("a=mid:"):
            mid = line[6:]
        if line.startswith("a=candidate:"):
            found.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index})
            continue
        if line == "a=end-of-candidates":
            continue
        lines.append(line)
    unique = list({c["candidate"]: c for c in found}.values())  # BUNDLE repeats them per m-line
    return "\r\n".join(lines), unique


def m_lines(sdp: str) -> list[dict[str, Any]]:
    """Each m-line's kind, direction, codec names (in order) and candidate addresses."""
    result: list[dict[str, Any]] = []
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            result.append({"kind": line[2:].split()[0], "direction": "sendrecv", "codecs": [],
                           "candidates": [], "mid": None})
        elif not result:
            continue
        elif line[2:] in ("sendrecv", "sendonly", "recvonly", "inactive"):
            result[-1]["direction"] = line[2:]
        elif line.startswith("a=rtpmap:"):
            result[-1]["codecs"].append(line.split()[1].split("/")[0])
        elif line.startswith("a=candidate:"):
            bits = line.split()
            result[-1]["candidates"].append((bits[4], int(bits[5])))
        elif line.startswith("a=mid:"):
            result[-1]["mid"] = line[6:]
    return result


@dataclass
class Notifications:
    """Collects what legs notify; ``wait`` for the one a test expects."""

    seen: list[tuple[str, BaseModel]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, model: Notification) -> None:
        self.seen.append((model.METHOD, model))
        self._changed.set()

    def states(self, leg: str | None = None) -> list[tuple[str, str, str]]:
        return [(m.leg, m.state, m.reason) for name, m in self.seen  # type: ignore[attr-defined]
                if name == "leg.state" and (leg is None or m.leg == leg)]  # type: ignore[attr-defined]

    def media(self) -> list[tuple[str, str, str, bool]]:
        return [(m.leg, m.kind, m.mid, m.receiving) for name, m in self.seen  # type: ignore[attr-defined]
                if name == "leg.media"]

    async def wait(self, predicate: Callable[[Notifications], bool], timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(loop(), timeout)


async def wait_connected(*pcs: RTCPeerConnection, timeout: float = 10.0) -> None:
    async def loop() -> None:
        while any(pc.connectionState != "connected" for pc in pcs):
            await asyncio.sleep(0.01)
    await asyncio.wait_for(loop(), timeout)
