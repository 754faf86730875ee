"""``aiortc_hooks.SrtpSendBatch``: RTP protected into a ``sendmmsg`` array with the leg's libsrtp
session and sent on the transport's socket once per loop iteration. What arrives is what
``FastSrtp`` would have sent (the receiver's session unprotects it), in order; a closed
transport is counted, not written to. Real UDP sockets on loopback, on asyncio's loop and on
uvloop's; this fails if pylibsrtp's session pointer or the transport's socket goes away."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop
from pylibsrtp import Policy, Session

from mediarelay.aiortc_hooks import FastSrtp, SrtpSendBatch, srtp_send_batch
from mediarelay.aiortc_hooks.srtp_batch import BATCH, sockaddr
from mediarelay.outbox import outbox
from tests.support.waits import until

LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
KEY = bytes(range(28))


def _session(kind: int) -> Session:
    return Session(Policy(key=KEY, ssrc_type=kind, srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM))


def _rtp(seq: int, size: int) -> bytes:
    return bytes([0x80, 96]) + seq.to_bytes(2, "big") + (1000).to_bytes(4, "big") + (1234).to_bytes(4, "big") \
        + os.urandom(size)


async def _setup() -> tuple[socket.socket, asyncio.DatagramTransport, SrtpSendBatch, list[int]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    failed: list[int] = []
    batch = srtp_send_batch(FastSrtp(_session(Policy.SSRC_ANY_OUTBOUND)), transport, receiver.getsockname(),
                            outbox(loop).hold, failed.append)
    assert batch is not None, "no SrtpSendBatch on this platform or pylibsrtp"
    return receiver, transport, batch, failed


def _read(receiver: socket.socket, into: list[bytes]) -> list[bytes]:
    while True:
        try:
            into.append(receiver.recv(2048))
        except BlockingIOError:
            return into


async def _packets_arrive_protected_and_in_order() -> None:
    receiver, transport, batch, failed = await _setup()
    sizes = [0, 1, 160, 1100, 1200, 3] * 6  # more than a batch: a full batch is sent at once
    assert len(sizes) > BATCH
    packets = [_rtp(seq, size) for seq, size in enumerate(sizes)]
    for packet in packets:
        batch.send(packet)
    got: list[bytes] = []
    await until(lambda: len(_read(receiver, got)) == len(packets), "every packet")
    inbound = FastSrtp(_session(Policy.SSRC_ANY_INBOUND))
    assert [inbound.unprotect(data) for data in got] == packets
    reference = FastSrtp(_session(Policy.SSRC_ANY_OUTBOUND))
    assert got == [reference.protect(packet) for packet in packets]  # as FastSrtp protects
    assert failed == []
    transport.close()
    receiver.close()


async def _a_closed_transport_is_counted_not_written() -> None:
    receiver, transport, batch, failed = await _setup()
    batch.send(_rtp(1, 100))
    batch.send(_rtp(2, 100))
    transport.close()
    await until(lambda: failed == [2], "two packets counted as not sent")
    assert _read(receiver, []) == []
    receiver.close()


async def _too_long_a_packet_is_refused_as_by_fast_srtp() -> None:
    receiver, transport, batch, _ = await _setup()
    with pytest.raises(ValueError, match="too long"):
        batch.send(bytes(1400))
    transport.close()
    receiver.close()


@LOOPS
def test_packets_arrive_protected_and_in_order(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    run(_packets_arrive_protected_and_in_order())


@LOOPS
def test_a_closed_transport_is_counted_not_written(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    run(_a_closed_transport_is_counted_not_written())


@LOOPS
def test_too_long_a_packet_is_refused_as_by_fast_srtp(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    run(_too_long_a_packet_is_refused_as_by_fast_srtp())


def test_sockaddr_is_the_kernels_layout() -> None:
    four = sockaddr(("127.0.0.1", 5000))
    assert len(four) == 16 and four[2:4] == (5000).to_bytes(2, "big") and four[4:8] == bytes([127, 0, 0, 1])
    assert int.from_bytes(four[:2], sys.byteorder) == socket.AF_INET
    six = sockaddr(("::1", 5000, 0, 0))
    assert len(six) == 28 and six[2:4] == (5000).to_bytes(2, "big") and six[8:24] == bytes(15) + b"\x01"


async def _a_scoped_ipv6_client_is_left_to_the_transport() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    batch = srtp_send_batch(FastSrtp(_session(Policy.SSRC_ANY_OUTBOUND)), transport, ("fe80::1%lo", 5000, 0, 1),
                            outbox(loop).hold, lambda _count: None)
    assert batch is None  # the leg sends by protect + the transport's sendto instead
    transport.close()


def test_a_scoped_ipv6_client_is_left_to_the_transport() -> None:
    asyncio.run(_a_scoped_ipv6_client_is_left_to_the_transport())


async def _packets_go_behind_what_the_transport_still_queues() -> None:
    """After a full socket the transport queues the rest (its ``sendto``); until that queue is
    empty, later flushes go the same way, behind it, not ahead of it by ``sendmmsg``. A queue
    cannot be made to stay on loopback (the kernel frees a UDP send buffer at once), so the
    transport says it has one."""
    receiver, transport, batch, failed = await _setup()
    through_transport: list[bytes] = []
    original = transport.sendto

    def sendto(data: Any, addr: Any = None) -> None:
        through_transport.append(bytes(data))
        original(data, addr)

    transport.sendto = sendto  # type: ignore[method-assign]
    transport.get_write_buffer_size = lambda: 1  # type: ignore[method-assign]
    packets = [_rtp(seq, 100) for seq in range(5)]
    for packet in packets:
        batch.send(packet)
    got: list[bytes] = []
    await until(lambda: len(_read(receiver, got)) == len(packets), "every packet")
    assert got == through_transport  # every one by the transport's queue, in order
    assert [FastSrtp(_session(Policy.SSRC_ANY_INBOUND)).unprotect(data) for data in got] == packets
    assert failed == []
    transport.close()
    receiver.close()


def test_packets_go_behind_what_the_transport_still_queues() -> None:
    asyncio.run(_packets_go_behind_what_the_transport_still_queues())
