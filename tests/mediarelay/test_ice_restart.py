"""ICE restart of one leg (renegotiation.py + aiortc_hooks.IceRestart), and how legs end (leg.py).

aiortc clients cannot restart ICE by themselves (aiortc 1.16 has no ``iceRestart``), so the
restarting client here does what a browser does, through the same hook the relay uses: a
fresh ICE agent (new ufrag, password, candidates and sockets) under its unchanged DTLS
association, offered with ``restart: true``; its old agent is closed once the new one is up.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCDataChannel, RTCIceParameters, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack
from aiortc.sdp import SessionDescription

from mediarelay.aiortc_hooks import IceRestart, consent_interval, ice_restart
from mediarelay.call import Call
from mediarelay.ice import LOOPBACK
from tests.support.relay_clients import Notifications, apply_answer, client, m_lines, make_answer, make_offer

pytestmark = pytest.mark.usefixtures("relay_on_loopback")


class Running:
    """A connected audio + data call between two aiortc clients, straight on ``Call``."""

    def __init__(self) -> None:
        self.caller, self.callee = client(), client()
        self.notes = Notifications()
        self.heard: list[str] = []
        self.chat: RTCDataChannel | None = None
        self.received: dict[str, asyncio.Queue[object]] = {"caller": asyncio.Queue(), "callee": asyncio.Queue()}
        self.call: Call | None = None

    async def start(self) -> Call:
        self.caller.addTrack(AudioStreamTrack())
        self.callee.addTrack(AudioStreamTrack())
        self.chat = self.caller.createDataChannel("chat")
        self.chat.on("message", self.received["caller"].put_nowait)
        self.callee.on("datachannel", lambda channel: channel.on("message", self.received["callee"].put_nowait))
        call, offer = await Call.create("c1", await make_offer(self.caller), policy=LOOPBACK, notify=self.notes)
        self.call = call
        call.listeners.append(self.heard.append)
        await apply_answer(self.caller, await call.accept(await make_answer(self.callee, offer)))
        await self.notes.wait(lambda n: {("caller", "audio", "0", True), ("callee", "audio", "0", True)} <= set(n.media()))
        return call

    async def roundtrip(self, text: str) -> None:
        """A data channel message each way, through the relay."""
        assert self.chat is not None
        for _ in range(500):
            if self.chat.readyState == "open" and self.call and self.call.data.channels("callee"):
                break
            await asyncio.sleep(0.01)
        self.chat.send(text)
        assert await asyncio.wait_for(self.received["callee"].get(), 10) == text
        for channel in _remote_channels(self.callee):  # the one the relay opened towards the callee
            channel.send(text + " back")
        assert await asyncio.wait_for(self.received["caller"].get(), 10) == text + " back"

    async def close(self) -> None:
        if self.call is not None:
            await self.call.close()
        await self.caller.close()
        await self.callee.close()


def _remote_channels(pc: RTCPeerConnection) -> list[RTCDataChannel]:
    sctp = pc.sctp
    return [c for c in sctp._data_channels.values() if c.readyState == "open"] if sctp else []


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    call = Running()
    yield call
    await call.close()


def ice_of(sdp: str) -> RTCIceParameters:
    parameters = SessionDescription.parse(sdp).media[0].ice
    assert parameters is not None
    return parameters


def ports(sdp: str) -> set[int]:
    return {port for line in m_lines(sdp) for _, port in line["candidates"]}


@pytest.mark.parametrize("leg", ["caller", "callee"])  # the relay answered the caller first, offered the callee
async def test_an_ice_restart_moves_the_leg_to_new_credentials_and_sockets_keeping_dtls(running: Running, leg: str) -> None:
    call = await running.start()
    await running.roundtrip("before")
    restarting, other = (running.caller, running.callee) if leg == "caller" else (running.callee, running.caller)
    relay_leg = call.leg(leg)
    dtls = relay_leg.pc.getTransceivers()[0].receiver.transport
    first = relay_leg.local_sdp()

    restart = await IceRestart.prepare(restarting)  # the client restarts ICE, as a browser does
    offer = await make_offer(restarting)
    assert ice_of(offer).usernameFragment != ice_of(relay_leg.pc.remoteDescription.sdp).usernameFragment
    mirrored = await call.renegotiate(leg, "offer", offer, restart=True)
    other_leg = call.leg("callee" if leg == "caller" else "caller")
    assert ice_of(mirrored).usernameFragment == ice_of(other_leg.local_sdp()).usernameFragment  # no restart there
    answer = await call.renegotiate(other_leg.name, "answer", await make_answer(other, mirrored))
    assert ice_of(answer).usernameFragment != ice_of(first).usernameFragment
    assert ports(answer).isdisjoint(ports(first))  # new sockets
    await apply_answer(restarting, answer)
    restart.start(ice_of(answer))

    for _ in range(1000):
        if restart.done and "ice-restarted" in running.heard:
            break
        await asyncio.sleep(0.01)
    assert restart.done and running.heard == ["renegotiated", "ice-restarted"]
    await restart.close()  # the client's old agent is gone: only the new path is left
    assert relay_leg.pc.getTransceivers()[0].receiver.transport is dtls and dtls.state == "connected"
    for port in ports(first):  # the relay closed its old sockets
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", port))
    packets = relay_leg.flows[0].packets
    await running.roundtrip("after")  # SCTP over the same DTLS, on the new path, both ways
    await asyncio.sleep(0.3)
    assert relay_leg.flows[0].packets > packets  # audio from the restarted client goes on
    assert [s for s in running.notes.states() if s[1] != "connected"] == []
    assert (leg, "audio", "0", False) not in running.notes.media()


async def test_an_ice_restart_whose_checks_fail_is_ice_failed(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ice_restart, "ICE_RESTART_TIMEOUT", 1.0)
    call = await running.start()
    restart = await IceRestart.prepare(running.caller)
    mirrored = await call.renegotiate("caller", "offer", await make_offer(running.caller), restart=True)
    answer = await call.renegotiate("callee", "answer", await make_answer(running.callee, mirrored))
    await apply_answer(running.caller, answer)
    await restart.close()  # the client never starts its new agent: the relay's checks get no answer
    await running.notes.wait(lambda n: ("caller", "failed", "ICE failed") in n.states(), timeout=10)


async def test_a_client_that_vanishes_is_ice_failed_once_consent_expires(running: Running) -> None:
    # aioice checks consent every 5 s (x0.8-1.2) and gives up after 6 failures in a row: about
    # 30 s by default (measured 27-39 s). Here every 0.05 s, so the test takes about 4 s.
    with consent_interval(0.05):
        call = await running.start()
        for protocol in running.caller.getTransceivers()[0].receiver.transport.transport._connection._protocols:
            protocol.transport.close()  # no DTLS close_notify, no STUN: the machine is just gone
        await running.notes.wait(lambda n: any(state != "connected" for _, state, _ in n.states()), timeout=20)
    assert [s for s in running.notes.states() if s[1] != "connected"] == [("caller", "failed", "ICE failed")]
    await call.close("Remote WebRTC hangup")  # what signalling asks next
    assert ("callee", "closed", "Remote WebRTC hangup") in running.notes.states()
