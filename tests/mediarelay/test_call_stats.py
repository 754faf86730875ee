"""``call.stats``: one call's legs as the relay counts them, through a real worker and aiortc clients."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from shared.ipc import IpcError
from shared.messages import CallStats, CallStatsResult, LegStats
from tests.support.worker_calls import WorkerCall

pytestmark = pytest.mark.usefixtures("relay_on_loopback")


def both_tracks(pc: object) -> None:
    pc.addTrack(AudioStreamTrack())  # type: ignore[attr-defined]
    pc.addTrack(VideoStreamTrack())  # type: ignore[attr-defined]


def medium(leg: LegStats, kind: str) -> dict[str, int]:
    found = [m for m in leg.media if m.kind == kind]
    assert len(found) == 1, leg
    return {"in": found[0].packets_in, "bytes_in": found[0].bytes_in, "out": found[0].packets_out,
            "bytes_out": found[0].bytes_out}


async def test_both_legs_counters_grow_while_media_flows(address: str) -> None:
    async with WorkerCall.start(address, both_tracks, both_tracks) as call:
        await call.connected()
        await call.notes.wait(lambda n: {("caller", "video", "1", True), ("callee", "video", "1", True)} <= set(n.media()))
        first = await call.channel.request(CallStats(call_id=call.call_id))
        assert isinstance(first, CallStatsResult)
        await asyncio.sleep(1.0)
        second = await call.channel.request(CallStats(call_id=call.call_id))
        for name in ("caller", "callee"):
            before, after = getattr(first, name), getattr(second, name)
            assert after.state == "connected"
            for kind in ("audio", "video"):
                was, now = medium(before, kind), medium(after, kind)
                assert all(now[key] > was[key] for key in now), (name, kind, was, now)
            assert after.nacks_sent >= 0 and after.nacks_received >= 0 and after.retransmitted <= after.nacks_received
        # Each client's receiver reports about the relay's sender reports give its leg's round trip.
        for _ in range(200):  # aiortc's receivers report every few seconds
            stats = await call.channel.request(CallStats(call_id=call.call_id))
            if stats.caller.rtt_ms is not None and stats.callee.rtt_ms is not None:
                break
            await asyncio.sleep(0.1)
        assert stats.caller.rtt_ms is not None and stats.callee.rtt_ms is not None, stats
        assert 0 <= stats.caller.rtt_ms < 1000 and 0 <= stats.callee.rtt_ms < 1000
        # What one leg's client sent reached the other: the relay sends the callee what the
        # caller sent, less what it dropped, never more.
        assert medium(second.callee, "video")["out"] <= medium(second.caller, "video")["in"]


async def test_stats_of_an_unknown_call_are_refused(address: str) -> None:
    async with WorkerCall.start(address, lambda pc: pc.addTransceiver("audio")) as call:
        with pytest.raises(IpcError, match="no call 'nope'"):
            await call.channel.request(CallStats(call_id="nope"))
