"""``mediarelay.outbox``: what the fast path sends is held to the end of the loop iteration, then
sent in order on the real socket; one flush per iteration for every held socket; nothing is
sent on a transport that closed meanwhile (counted instead). Real UDP sockets on loopback, run
on asyncio's loop and on uvloop's (the worker's). A ``Port`` holds RTP only, never RTCP."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from mediarelay.forwarder import Counters, SendStream
from mediarelay.outbox import HeldSender, outbox
from mediarelay.port import Port
from tests.support.waits import until

#: Each test runs on asyncio's own loop and on uvloop's (the worker's).
LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


class Receiver:
    """A plain UDP socket that collects what arrives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.got: list[bytes] = []

    def read(self) -> list[bytes]:
        while True:
            try:
                self.got.append(self.sock.recv(2048))
            except BlockingIOError:
                return self.got


async def endpoint() -> asyncio.DatagramTransport:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    return transport


async def _held_packets_are_sent_once_the_loop_runs() -> None:
    receiver, transport = Receiver(), await endpoint()
    failed: list[int] = []
    sender = HeldSender(transport, outbox(asyncio.get_running_loop()), failed.append)
    for number in range(5):
        sender.sendto(bytes([number]) * 100, receiver.address)
    assert receiver.read() == []  # held: nothing yet (the coroutine has not yielded)
    await until(lambda: len(receiver.read()) == 5, "the five held packets")
    assert receiver.got == [bytes([number]) * 100 for number in range(5)]
    assert failed == []
    transport.close()
    receiver.sock.close()


async def _one_flush_sends_every_held_socket() -> None:
    loop = asyncio.get_running_loop()
    receiver = Receiver()
    transports = [await endpoint(), await endpoint()]
    failed: list[int] = []
    senders = [HeldSender(t, outbox(loop), failed.append) for t in transports]
    scheduled: list[object] = []
    real_call_soon = loop.call_soon

    def call_soon(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
        scheduled.append(callback)
        return real_call_soon(callback, *args, **kwargs)

    loop.call_soon = call_soon  # type: ignore[method-assign]
    try:
        for round_ in range(3):
            for sender in senders:
                sender.sendto(bytes([round_]), receiver.address)
    finally:
        loop.call_soon = real_call_soon  # type: ignore[method-assign]
    assert len(scheduled) == 1  # one flush for both sockets and all six packets
    await until(lambda: len(receiver.read()) == 6, "six packets from two sockets")
    assert sorted(receiver.got) == sorted(bytes([r]) for r in range(3) for _ in senders)
    for transport in transports:
        transport.close()
    receiver.sock.close()


async def _packets_held_for_a_transport_that_closed_are_counted_not_sent() -> None:
    receiver, transport = Receiver(), await endpoint()
    failed: list[int] = []
    sender = HeldSender(transport, outbox(asyncio.get_running_loop()), failed.append)
    sender.sendto(b"one", receiver.address)
    sender.sendto(b"two", receiver.address)
    transport.close()
    await until(lambda: failed == [2], "the two packets counted as failed")
    assert receiver.read() == []
    # The socket can be held again afterwards, and the next flush counts again.
    sender.sendto(b"three", receiver.address)
    await until(lambda: failed == [2, 1], "the third packet counted")
    receiver.sock.close()


@LOOPS
def test_held_packets_are_sent_once_the_loop_runs(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    run(_held_packets_are_sent_once_the_loop_runs())


@LOOPS
def test_one_flush_sends_every_held_socket(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    run(_one_flush_sends_every_held_socket())


@LOOPS
def test_packets_held_for_a_transport_that_closed_are_counted_not_sent(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    run(_packets_held_for_a_transport_that_closed_are_counted_not_sent())


class ClearSession:
    """An SRTP session that leaves the bytes as they are."""

    @staticmethod
    def protect(data: bytes) -> bytes:
        return data

    protect_rtcp = protect


def test_a_port_sends_rtp_by_its_held_sender_and_rtcp_at_once() -> None:
    """RTCP is not held: a BYE goes out before the socket closes behind it."""
    direct: list[bytes] = []
    held: list[bytes | bytearray] = []
    port = Port("callee", Counters(), lambda: 0.0, lambda *_: None)
    port.connect(ClearSession(), ClearSession(), lambda data, _addr: direct.append(data), ("127.0.0.1", 9),
                 held.append)
    stream = SendStream("audio", "0", 1234, 48000, Counters())
    port.feed(stream)
    rtp = struct.pack("!BBHII", 0x80, 111, 1, 0, 1234) + b"\x00" * 20
    stream.send(rtp, 1, 20)
    port.send_rtcp(b"\x81\xcb\x00\x01" + (1234).to_bytes(4, "big"))  # a BYE
    assert held == [rtp]
    assert direct == [b"\x81\xcb\x00\x01" + (1234).to_bytes(4, "big")]
