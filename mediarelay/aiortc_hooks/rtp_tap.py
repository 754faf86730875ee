"""Where the relay takes media away from aiortc: RTP at its receivers, SRTP at its sockets.

- ``tap_rtp``: a relay receiver hands every RTP packet to the leg (counted, never decoded); no
  decoder thread, RTCP loop, jitter buffer or bitrate estimator exists for it.
- ``idle_sender``: a relay sender runs no RTP/RTCP loop of aiortc's; the relay sends for it.
- ``tap_datagrams`` and ``media_socket``: the fast path (``forwarder.py``) sees each datagram at
  a leg's ICE sockets before aioice parses it as STUN, and sends on aioice's nominated pair with
  aiortc's SRTP sessions (``FastSrtp``).
- ``intercept_rtp``, ``intercept_rtcp``, ``watch_decoder_input``, ``without_remb``,
  ``packets_sent``: an aiortc client (a load client in ``loadtest/media.py``, a test's client)
  sees its RTP, RTCP and decoder input, sends no REMB of its own, reads its sender's count.

Everything here changes one object when called; nothing changes aiortc for the whole process.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiortc.rtcrtpreceiver
from aiortc import RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import AnyRtcpPacket, RtpPacket

from mediarelay.aiortc_hooks.srtp import FastSrtp

log = logging.getLogger(__name__)

# --- the relay's receivers and senders ------------------------------------------------------


class _NoThread:
    """What ``threading.Thread(...)`` makes in ``aiortc.rtcrtpreceiver`` while a relay receiver
    starts: nothing runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


_NO_THREADS = types.SimpleNamespace(Thread=_NoThread)

#: What the relay's senders and receivers get for aiortc's started/exited events, whose tasks
#: (replaced) end at once: one event, set for good. A set ``asyncio.Event`` is never waited on
#: (``wait()`` returns at once, bound to no loop), so one serves every leg; an event of its own
#: is a deque of waiters each, ~0.7 kB, 24 per call.
_ALWAYS_SET = asyncio.Event()
_ALWAYS_SET.set()


def tap_rtp(receiver: RTCRtpReceiver, on_rtp: Callable[[RtpPacket, int], None]) -> None:
    """Send every RTP packet this receiver gets to ``on_rtp(packet, arrival_ms)`` instead of aiortc.

    The DTLS transport calls ``receiver._handle_rtp_packet`` after SRTP and routing; an
    instance attribute shadows the method, so only the relay's receivers change (the
    packets never reach a jitter buffer, NACK generator or decoder). ``receive()`` would start
    a decoder thread: it starts none (a thread per m-line and leg, started and joined, cost
    setup time), so the worker has no decoder threads at all. Once a call's legs are linked the
    fast path takes SRTP at the socket (``tap_datagrams``) and no RTP reaches here any more.
    """

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        on_rtp(packet, arrival_time_ms)

    original_receive = receiver.receive

    async def receive(parameters: Any) -> None:
        # receive() never awaits: while it runs, its module's ``threading.Thread`` makes no thread.
        real = aiortc.rtcrtpreceiver.threading
        aiortc.rtcrtpreceiver.threading = _NO_THREADS  # type: ignore[assignment]
        try:
            await original_receive(parameters)
        finally:
            aiortc.rtcrtpreceiver.threading = real
        receiver._RTCRtpReceiver__decoder_thread = None  # type: ignore[attr-defined]

    async def run_rtcp() -> None:
        """aiortc's loop would wake every 0.5-1.5 s to report on streams it never sees (the
        relay sends its own RRs): none runs, and ``stop()`` finds its events already set."""

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
    receiver.receive = receive  # type: ignore[method-assign]
    receiver._run_rtcp = run_rtcp  # type: ignore[method-assign]
    receiver._RTCRtpReceiver__rtcp_started = _ALWAYS_SET  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__rtcp_exited = _ALWAYS_SET  # type: ignore[attr-defined]
    # Only the replaced _handle_rtp_packet and the decoder thread (never started) used these: a
    # video receiver's bitrate estimator alone is 1,000 rate buckets (~48 kB, ~190 kB a call),
    # the jitter buffer 512 slots, the decoder's queue and error event 5 deques and 4 locks.
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__jitter_buffer = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__nack_generator = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__decoder_queue = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__decoder_error = None  # type: ignore[attr-defined]


def idle_sender(sender: RTCRtpSender, on_stop: Callable[[int], None] | None = None) -> None:
    """The relay sends this sender's RTP and RTCP itself: aiortc's loops for it do nothing.

    When the sender starts, aiortc runs ``_run_rtp`` (encode a track; without one, wake every
    20 ms) and ``_run_rtcp`` (SR and SDES with its own counters, which would contradict the
    relay's). Both are replaced per instance by coroutines that return at once, and the events
    ``RTCRtpSender.stop`` waits for are already set: no task waits for the whole call.
    ``on_stop(ssrc)`` runs as a started sender stops, while its transport is still up (the
    relay's BYE, on the ICE socket: the DTLS may have ended first, as the leg ends its data
    channels' DTLS before it closes the PC), and not when ICE is gone (the client vanished):
    whatever it raises is logged,
    and ``stop()`` goes on, or aiortc's ``close()`` would never end. Call before the sender
    starts (before aiortc's connect task runs after an SDP is set).
    """
    started = False

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        nonlocal started
        started = True

    async def run_rtcp() -> None:
        pass

    original_stop = sender.stop

    async def stop() -> None:
        nonlocal started
        if started and on_stop is not None and sender.transport.transport.state not in ("failed", "closed"):
            try:
                on_stop(sender._ssrc)
            except Exception:  # the PC must close whatever its BYE does
                log.exception("a relay sender's BYE failed (ssrc %d)", sender._ssrc)
        started = False
        await original_stop()

    sender._run_rtp = run_rtp  # type: ignore[method-assign]
    sender._run_rtcp = run_rtcp  # type: ignore[method-assign]
    sender.stop = stop  # type: ignore[method-assign]
    for name in ("rtp_started", "rtp_exited", "rtcp_started", "rtcp_exited"):
        setattr(sender, f"_RTCRtpSender__{name}", _ALWAYS_SET)


# --- the fast path's sockets ----------------------------------------------------------------


@dataclass
class MediaSocket:
    """What the fast path uses of a leg's connected DTLS transport."""

    #: aiortc's SRTP sessions (pylibsrtp), shared with aiortc's own RTCP: use on the loop only.
    srtp_rx: FastSrtp
    srtp_tx: FastSrtp
    #: The nominated pair's socket and the client's address on it.
    sendto: Callable[[bytes, tuple[Any, ...]], None]
    remote: tuple[Any, ...]
    #: The pair's transport (``sendto`` is its method).
    transport: asyncio.DatagramTransport


def media_socket(dtls: RTCDtlsTransport) -> MediaSocket:
    """The SRTP sessions and nominated pair of a connected DTLS transport (ValueError if not).

    Keys exist once ``RTCDtlsTransport.start`` has returned (the "connected" state); the pair
    is aioice's ``Connection._nominated[1]``, which aioice never changes afterwards (an ICE
    restart replaces the Connection: read it again then).
    """
    pair = dtls.transport._connection._nominated.get(1)
    # aiortc annotates _rx_srtp/_tx_srtp as Sessions, but they are None until the handshake ends.
    if dtls._rx_srtp is None or dtls._tx_srtp is None or pair is None:  # type: ignore[redundant-expr]
        raise ValueError("the DTLS transport is not connected")
    transport = pair.protocol.transport
    return MediaSocket(FastSrtp(dtls._rx_srtp), FastSrtp(dtls._tx_srtp), transport.sendto, pair.remote_addr,
                       transport)


DatagramHandler = Callable[[bytes, tuple[Any, ...]], None]


def tap_datagrams(dtls: RTCDtlsTransport, make: Callable[[DatagramHandler], DatagramHandler],
                  tapped: set[int]) -> None:
    """Put ``make(original)`` in front of every ICE socket of this transport's Connection.

    Each socket's ``StunProtocol.datagram_received`` is shadowed by an instance attribute
    (uvloop and asyncio look it up per datagram), so the handler sees every datagram before
    aioice parses it as STUN; it passes what it does not take to ``original``. ``tapped``
    holds the ids of the protocols already tapped (a Connection replaced by an ICE restart
    brings new ones).
    """
    for protocol in dtls.transport._connection._protocols:
        if id(protocol) not in tapped:
            tapped.add(id(protocol))
            protocol.datagram_received = make(protocol.datagram_received)  # type: ignore[method-assign,assignment]


# --- an aiortc client's receivers and senders ------------------------------------------------


def intercept_rtp(receiver: RTCRtpReceiver, on_rtp: Callable[[RtpPacket], None], *, then_aiortc: bool) -> None:
    """Call ``on_rtp(packet)`` for every RTP packet this receiver gets (after SRTP and routing).

    ``then_aiortc``: the packet goes on to aiortc's own path (jitter buffer, decoder) as before;
    else it stops here, and the receiver sends no NACK, PLI or REMB and reports nothing received.
    """
    original = receiver._handle_rtp_packet

    if then_aiortc:
        async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
            on_rtp(packet)
            await original(packet, arrival_time_ms)
    else:
        async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
            on_rtp(packet)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


def intercept_rtcp(end: RTCRtpSender | RTCRtpReceiver, on_rtcp: Callable[[AnyRtcpPacket], None]) -> None:
    """Call ``on_rtcp(packet)`` for every RTCP packet the DTLS transport routes to this sender or
    receiver, before aiortc handles it (aiortc tells only an encoder about PLI and FIR)."""
    original: Callable[[AnyRtcpPacket], Awaitable[None]] = end._handle_rtcp_packet

    async def handle(packet: AnyRtcpPacket) -> None:
        on_rtcp(packet)
        await original(packet)

    end._handle_rtcp_packet = handle  # type: ignore[method-assign]


def watch_decoder_input(receiver: RTCRtpReceiver, on_frame: Callable[[bytes], None]) -> None:
    """Call ``on_frame(data)`` with each whole encoded frame this receiver hands its decoder
    (libvpx does not flag decoded keyframes: a test looks at what goes in). Call before the
    receiver starts: its decoder thread takes the queue replaced here."""

    class Watched(queue.Queue):
        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            if item is not None:  # None stops the decoder thread
                on_frame(item[1].data)
            super().put(item, block, timeout)

    receiver._RTCRtpReceiver__decoder_queue = Watched()  # type: ignore[attr-defined]


def without_remb(receiver: RTCRtpReceiver) -> None:
    """This receiver estimates no bitrate and so sends no REMB of its own (a test sends its own)."""
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]


def packets_sent(sender: RTCRtpSender) -> int:
    """RTP packets this sender has sent (aiortc's own counter, as ``getStats`` reports it)."""
    return int(getattr(sender, "_RTCRtpSender__packet_count", 0))
