"""Data channels relayed between the legs by label (mediarelay/datachannels.py), aiortc clients."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCDataChannel, RTCPeerConnection

from mediarelay import datachannels
from mediarelay.call import Call
from mediarelay.ice import LOOPBACK
from shared.messages import CallHangup
from tests.support.relay_clients import Notifications, apply_answer, client, make_answer, make_offer
from tests.support.worker_calls import WorkerCall

pytestmark = pytest.mark.usefixtures("relay_on_loopback")


class Inbox:
    """Channels a client was given by the relay, and the messages on every channel it knows."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.channels: dict[str, RTCDataChannel] = {}
        self.messages: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()
        pc.on("datachannel", self.follow)

    def follow(self, channel: RTCDataChannel) -> None:
        self.channels.setdefault(channel.label, channel)
        self.listen(channel)

    def listen(self, channel: RTCDataChannel) -> None:
        channel.on("message", lambda message: self._add(channel.label, message))
        self._changed.set()

    def _add(self, label: str, message: Any) -> None:
        self.messages.append((label, message))
        self._changed.set()

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(loop(), timeout)


async def opened(channel: RTCDataChannel, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if channel.readyState == "open":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"data channel {channel.label!r} never opened")


async def test_a_channel_opened_by_one_side_carries_text_and_binary_both_ways(address: str) -> None:
    channels: dict[str, RTCDataChannel] = {}
    async with WorkerCall.start(address, lambda pc: channels.setdefault("chat", pc.createDataChannel("chat"))) as call:
        caller_inbox, callee_inbox = Inbox(call.caller), Inbox(call.callee)
        await call.connected()
        chat = channels["chat"]
        await opened(chat)
        # Only the caller opened a channel: the relay opens "chat" towards the callee itself.
        await callee_inbox.wait(lambda box: "chat" in box.channels)
        chat.send("hello")
        chat.send(b"\x00\x01\xff")
        chat.send("")
        await callee_inbox.wait(lambda box: len(box.messages) == 3)
        assert callee_inbox.messages == [("chat", "hello"), ("chat", b"\x00\x01\xff"), ("chat", "")]

        reply = callee_inbox.channels["chat"]
        reply.send("hi back")
        reply.send(bytes(range(256)) * 40)  # 10 KiB, more than one SCTP chunk
        caller_inbox.listen(chat)
        await caller_inbox.wait(lambda box: len(box.messages) == 2)
        assert caller_inbox.messages == [("chat", "hi back"), ("chat", bytes(range(256)) * 40)]
        assert not caller_inbox.channels  # the caller's own channel is used, none is added


async def test_a_channel_opened_later_by_the_callee_keeps_label_protocol_and_reliability(address: str) -> None:
    async with WorkerCall.start(address, lambda pc: pc.createDataChannel("first")) as call:
        caller_inbox, callee_inbox = Inbox(call.caller), Inbox(call.callee)
        await call.connected()
        await callee_inbox.wait(lambda box: "first" in box.channels)
        files = call.callee.createDataChannel("files", protocol="x-files", ordered=False, maxRetransmits=2)
        await opened(files)
        await caller_inbox.wait(lambda box: "files" in box.channels)
        twin = caller_inbox.channels["files"]
        assert (twin.protocol, twin.ordered, twin.maxRetransmits, twin.maxPacketLifeTime) == ("x-files", False, 2, None)
        files.send(b"blob")
        await caller_inbox.wait(lambda box: ("files", b"blob") in box.messages)
        twin.send("ack")
        callee_inbox.listen(files)
        await callee_inbox.wait(lambda box: ("files", "ack") in box.messages)
        assert ("first", "ack") not in callee_inbox.messages  # labels are kept apart


async def test_closing_a_channel_closes_its_twin_on_the_other_leg(address: str) -> None:
    channels: dict[str, RTCDataChannel] = {}
    async with WorkerCall.start(address, lambda pc: channels.setdefault("chat", pc.createDataChannel("chat"))) as call:
        callee_inbox = Inbox(call.callee)
        await call.connected()
        await callee_inbox.wait(lambda box: "chat" in box.channels)
        twin = callee_inbox.channels["chat"]
        await opened(twin)
        channels["chat"].close()
        for _ in range(500):
            if twin.readyState == "closed":
                break
            await asyncio.sleep(0.01)
        assert twin.readyState == "closed"


async def test_a_hangup_ends_dtls_before_sctp_so_clients_see_no_abort(address: str) -> None:
    """As Janus does: DTLS close_notify first, so a client never sees an SCTP ABORT while its
    PeerConnection is open (a browser would fire an error event on every data channel). Here a
    call with a data channel only, where nothing else stands between DTLS and SCTP in a close."""
    channels: dict[str, RTCDataChannel] = {}
    async with WorkerCall.start(address, lambda pc: channels.setdefault("chat", pc.createDataChannel("chat"))) as call:
        callee_inbox = Inbox(call.callee)
        await call.connected()
        await callee_inbox.wait(lambda box: "chat" in box.channels)
        await opened(callee_inbox.channels["chat"])
        seen: dict[str, list[str]] = {"caller": [], "callee": []}
        for leg, channel in (("caller", channels["chat"]), ("callee", callee_inbox.channels["chat"])):
            dtls = call.client(leg).sctp.transport
            channel.on("close", lambda leg=leg: seen[leg].append("data channel closed"))
            dtls.on("statechange", lambda leg=leg, dtls=dtls: seen[leg].append(f"DTLS {dtls.state}"))
        await call.channel.request(CallHangup(call_id=call.call_id, reason="Explicit hangup"))
        await call.notes.wait(lambda n: {("caller", "closed", "Explicit hangup"),
                                         ("callee", "closed", "Explicit hangup")} <= set(n.states()))
        for _ in range(200):
            if all(events for events in seen.values()):
                break
            await asyncio.sleep(0.01)
        # An ABORT first would close the data channel before DTLS ends.
        assert {leg: events[:1] for leg, events in seen.items()} == {"caller": ["DTLS closed"], "callee": ["DTLS closed"]}, seen


async def test_messages_beyond_the_buffer_limit_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:

    monkeypatch.setattr(datachannels, "MAX_BUFFERED", 1000)
    caller, callee = client(), client()
    chat = caller.createDataChannel("chat")
    call, callee_offer = await Call.create("c1", await make_offer(caller), policy=LOOPBACK, notify=Notifications())
    try:
        answer = await make_answer(callee, callee_offer)
        await callee.close()  # the callee never connects: the relay's channel towards it stays opening
        await apply_answer(caller, await call.accept(answer))
        await opened(chat)
        for _ in range(5):
            chat.send(b"x" * 300)
        for _ in range(500):
            if sum(call.data.stats.relayed.values()) + sum(call.data.stats.dropped.values()) == 5:
                break
            await asyncio.sleep(0.01)
        assert call.data.stats.relayed["caller"] == 3  # 900 bytes wait for the callee ...
        assert call.data.stats.dropped["caller"] == 2  # ... and no more than MAX_BUFFERED
        assert [c.readyState for c in call.data.channels("callee")] == ["connecting"]
    finally:
        await call.close()
        await caller.close()
        await callee.close()
