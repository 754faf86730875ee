"""Random clients, a slow relay and a slow registry against the VideoCall plugin runner.

Many handles send random plugin messages at once through ``PluginRunner.message``, while
others detach, close their PeerConnection, trickle, and the relay reports legs and lost
calls; the relay and the registry answer each request after a random number of loop ticks,
with random outcomes. Whatever the interleaving, once everything has run: the machine
never raised (no 499 "Unknown error" was sent, nothing was logged as failed), every
plugin message of a handle still attached got exactly one event carrying its transaction,
names in the registry and handles agree both ways, and a call is shared by exactly its two
handles. That includes a ``call``, ``accept`` or ``set`` with a jsep still waiting for
the relay when its call ends (the peer detached, a leg failed, the worker was lost): the
``hangup`` event that tells its handle carries its transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Literal

import pytest

from shared import ipc
from shared import messages as m
from signaling.effects import Delivery, Event
from signaling.plugin_runner import PluginRunner
from signaling.registry import MemoryRegistry, owner_id, parse_owner
from signaling.relay_client import RelayUnavailable
from signaling.videocall import VideoCall
from tests.support.toy_relay import worker_answer

NODE = "n1"
USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
BAD_NAMES = ["", 42, None, "x" * 200]
OFFER: dict[str, Any] = {"type": "offer", "sdp": "v=0\r\n"}
ANSWER: dict[str, Any] = {"type": "answer", "sdp": "v=0\r\n"}
JSEPS: list[dict[str, Any] | None] = [None, None, OFFER, ANSWER]
STATES: list[Literal["connected", "failed"]] = ["connected", "connected", "failed"]
LEGS: list[m.LegName] = ["caller", "callee"]
UNKNOWN_ERROR = {"videocall": "event", "error_code": 499, "error": "Unknown error"}


async def ticks(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def random_message(rng: random.Random) -> tuple[Any, dict[str, Any] | None]:
    """A plugin message and its jsep: mostly well formed, so calls ring and get accepted."""
    request = rng.choice(["list", "register", "register", "call", "call", "accept", "accept", "set", "set", "hangup",
                          "LIST", "bogus", 5, None])
    body: dict[str, Any] = {} if request is None else {"request": request}
    if request in ("register", "call") or rng.random() < 0.2:
        body["username"] = rng.choice(USERS) if rng.random() < 0.85 else rng.choice(BAD_NAMES)
    for field, values in (("audio", [True, False, "no"]), ("video", [True, False, 1]),
                          ("bitrate", [0, 128000, -1, 1.5]), ("reason", ["bye", 3]), ("restart", [True, 0])):
        if rng.random() < 0.1:
            body[field] = rng.choice(values)
    likely = {"call": OFFER, "accept": ANSWER}.get(str(request))
    jsep = likely if likely is not None and rng.random() < 0.8 else rng.choice(JSEPS)
    return rng.choice([body] * 10 + [None, "text", []]), jsep


def fitting(plugin: VideoCall, attached: list[int], body: Any) -> list[int]:
    """Handles for which ``body`` makes sense now (a registered caller, a ringing callee...)."""
    request = body.get("request") if isinstance(body, dict) else None
    states = [plugin.handles[h] for h in attached if h in plugin.handles]
    if request == "register":
        return [s.handle for s in states if s.username is None]
    if request == "call":
        return [s.handle for s in states if s.username is not None and s.call is None]
    if request == "accept":
        return [s.handle for s in states if s.call is not None and s.call.callee == s.handle and s.call.phase == "ringing"]
    if request in ("set", "hangup"):
        return [s.handle for s in states if s.call is not None and s.call.phase == "active"]
    return []


class SlowRelay:
    """Answers after a few loop ticks: mostly a result, sometimes a refusal or an outage."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    async def request(self, body: m.Request[Any]) -> Any:
        await ticks(self.rng.randint(0, 6))
        roll = self.rng.random()
        if roll < 0.08:
            raise RelayUnavailable("worker gone")
        if roll < 0.18:
            raise ipc.IpcError("bad sdp")
        return worker_answer(body, offer="offer", answer="answer", sdp="sdp")


class SlowRegistry(MemoryRegistry):
    """A memory registry whose every answer takes a few loop ticks, as a networked one would."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    async def claim(self, name: str, owner: str) -> bool:
        await ticks(self.rng.randint(0, 4))
        return await super().claim(name, owner)

    async def release(self, name: str, owner: str) -> None:
        await ticks(self.rng.randint(0, 4))
        await super().release(name, owner)

    async def lookup(self, name: str) -> str | None:
        await ticks(self.rng.randint(0, 4))
        return await super().lookup(name)

    async def names(self) -> list[str]:
        await ticks(self.rng.randint(0, 4))
        return await super().names()


async def check_invariants(plugin: VideoCall, registry: MemoryRegistry) -> None:
    for name in await registry.names():
        owner = await registry.lookup(name)
        parsed = parse_owner(owner or "")
        assert parsed is not None and parsed[0] == NODE, (name, owner)
        assert parsed[1] in plugin.handles and plugin.handles[parsed[1]].username == name, (name, owner)
    for handle, state in plugin.handles.items():
        if state.username is not None:
            assert await registry.lookup(state.username) == owner_id(NODE, handle)
        if state.call is not None:
            call = state.call
            assert handle in (call.caller, call.callee)
            assert plugin.calls[call.call_id] is call
    for call in plugin.calls.values():
        assert call.caller != call.callee
        for side in (call.caller, call.callee):
            assert side in plugin.handles and plugin.handles[side].call is call


async def run(seed: int, steps: int = 250) -> None:
    """One random run, checked once everything has run."""
    rng = random.Random(seed)
    plugin = VideoCall(max_pending_trickles=8)
    registry = SlowRegistry(rng)
    relay = SlowRelay(rng)
    delivered: list[Delivery] = []
    runner = PluginRunner(plugin, registry=registry, relay=relay, deliver=delivered.append, node_id=NODE)
    attached: list[int] = []
    next_handle = 1
    sent: list[tuple[int, str]] = []
    background: list[asyncio.Task[None]] = []

    def attach() -> None:
        nonlocal next_handle
        runner.attach(next_handle)
        attached.append(next_handle)
        next_handle += 1

    for _ in range(8):
        attach()
    for step in range(steps):
        roll = rng.random()
        handle = rng.choice(attached)
        if roll < 0.6:
            tx = f"t{step}"
            body, jsep = random_message(rng)
            if rng.random() < 0.6:  # as a real client would: the request that fits its state
                handle = rng.choice(fitting(plugin, attached, body) or [handle])
            sent.append((handle, tx))
            runner.message(handle, body, jsep, tx)
        elif roll < 0.64:
            attached.remove(handle)
            background.append(asyncio.create_task(runner.detach(handle)))
            attach()
        elif roll < 0.72:
            background.append(asyncio.create_task(runner.pc_closed(handle)))
        elif roll < 0.8:
            count = rng.choice([0, 1, 3, 70])
            candidates = [m.IceCandidate(candidate=f"candidate:{i} 1 udp 1 127.0.0.1 {i} typ host") for i in range(count)]
            runner.trickle(handle, candidates, rng.random() < 0.3)
        elif roll < 0.9 and plugin.calls:
            call_id = rng.choice(list(plugin.calls))
            leg = rng.choice(LEGS)
            if rng.random() < 0.5:
                state = rng.choice(STATES)
                runner.on_relay_notification(m.LegState(call_id=call_id, leg=leg, state=state, reason="ICE failed"))
            else:
                runner.on_relay_notification(m.LegMedia(call_id=call_id, leg=leg, kind="video", mid="1", receiving=True))
        elif roll < 0.93 and plugin.calls:
            runner.on_calls_lost([rng.choice(list(plugin.calls))])
        await ticks(rng.randint(0, 3))
    await asyncio.gather(*background)
    await runner.drain()

    assert not any(isinstance(e, Event) and e.data == UNKNOWN_ERROR for e in delivered), "the machine raised"
    answers: dict[tuple[int, str], int] = {}
    for e in delivered:
        if isinstance(e, Event) and e.transaction is not None:
            answers[(e.handle, e.transaction)] = answers.get((e.handle, e.transaction), 0) + 1
    assert all(n == 1 for n in answers.values()), {k: n for k, n in answers.items() if n != 1}
    unanswered = [(h, tx) for h, tx in sent if h in plugin.handles and (h, tx) not in answers]
    assert unanswered == [], f"seed {seed}: no event for {unanswered}"
    await check_invariants(plugin, registry)


async def test_random_concurrent_clients_keep_state_consistent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    for seed in range(60):
        await run(seed)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
