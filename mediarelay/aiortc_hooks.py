"""The one module that reaches into aiortc's and aioice's private internals.

Everything the relay needs that aiortc does not offer publicly is done here, and only here:

- ICE host sockets (``ice.py`` decides, this module plugs it in): aioice gathers host
  candidates from ``aioice.ice.get_host_addresses`` (which never offers 127.0.0.1) and binds
  each on port 0 inside ``Connection.get_component_candidates``. Both are replaced while a
  policy is installed, so ``ice_enforce_list`` (loopback included) and ``rtp_port_range`` work.
- RTP entry point: ``RTCRtpReceiver._handle_rtp_packet`` is replaced per receiver, so a
  packet is counted and dropped before any jitter buffer or decoder; the decoder thread that
  ``receive()`` starts is stopped at once, so no decoder ever exists in the worker.
- Codecs of a transceiver (``_codecs``): read to pair legs, written to restrict the caller's
  answer to the codecs the callee chose (aiortc applies preferences only when an offer is set).
- The SCTP transport of a PC, created without opening a data channel (for a mirrored
  ``m=application`` line).
- The SRTP fast path (``forwarder.py``): each ICE socket's ``datagram_received`` is tapped
  (``tap_datagrams``), the DTLS transport's SRTP sessions (libsrtp called straight from cffi,
  ``FastSrtp``) and aioice's nominated pair are used to unprotect, protect and send
  (``media_socket``), the relay's senders and receivers run no RTP/RTCP loop
  of their own (``idle_sender``), and aiortc negotiates VP9, which it cannot decode but the
  relay only forwards (``add_relay_codecs``).
- A relay process (``relay_process``): one DTLS certificate for all its PeerConnections (Janus
  has one per process too) with its fingerprints and OpenSSL contexts made once, and no
  receiver bitrate estimators or decoder threads, which only aiortc's own RTP path used.
- ICE restart (``IceRestart``): aiortc 1.16 has none (``RTCIceTransport.start`` runs once, and
  ``createOffer``/``createAnswer`` always reuse the first ufrag/pwd). A fresh aioice Connection
  is gathered and put behind the PC's ICE transports, and once its checks succeed it carries the
  same DTLS association (keys, SRTP, SCTP untouched), as RFC 8445 restarts do in browsers.

The installed versions are checked when this module is imported: any other aiortc/aioice
fails loudly with a RuntimeError instead of misbehaving later. ``PRIVATE_API`` lists every
private name used, and ``probe()`` checks each on real objects (tests run it).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import socket
import types
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Protocol

import aioice.ice
import aiortc.codecs
import aiortc.rtcdtlstransport
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCDtlsTransport, RTCIceParameters, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import CODECS
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint
from aiortc.rtcpeerconnection import find_common_codecs, is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from pylibsrtp import ERRORS as _SRTP_ERRORS
from pylibsrtp import SRTP_MAX_SRTCP_TRAILER_LEN, SRTP_MAX_TRAILER_LEN, Session
from pylibsrtp import Error as SrtpError
from pylibsrtp._binding import ffi as _srtp_ffi  # type: ignore[import-not-found]
from pylibsrtp._binding import lib as _srtp_lib  # (one ignore covers the module)

__all__ = [
    "TESTED_VERSIONS", "PRIVATE_API", "CODECS", "find_common_codecs", "is_codec_compatible",
    "check_versions", "probe", "HostSockets", "install_host_sockets",
    "add_relay_codecs", "MediaSocket", "media_socket", "tap_datagrams", "idle_sender",
    "tap_rtp", "negotiated_codecs", "set_negotiated_codecs", "add_sctp_transport", "IceRestart",
    "ice_agent_closed", "SharedCertificate", "relay_process", "session_descriptions", "FastSrtp",
]

log = logging.getLogger(__name__)

#: The only versions these hooks were written and tested against.
TESTED_VERSIONS = {"aiortc": "1.16.0", "aioice": "0.13.0", "pylibsrtp": "1.0.0"}

#: (owner, name, why we touch it): every private or unexported name used by the relay.
PRIVATE_API: list[tuple[str, str, str]] = [
    ("aioice.ice", "get_host_addresses", "replaced: host addresses from ice_enforce_list (loopback allowed)"),
    ("aioice.ice.Connection", "get_component_candidates", "replaced: host sockets bound within rtp_port_range"),
    ("aioice.ice.Connection", "_protocols", "host sockets we bind are registered there, as aioice does"),
    ("aioice.ice", "server_reflexive_candidate", "STUN candidates for the sockets we bind"),
    ("aioice.ice", "StunProtocol", "protocol of the sockets we bind"),
    ("RTCRtpReceiver", "_handle_rtp_packet", "replaced per receiver: count and drop RTP, never decode"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__stop_decoder", "stop the decoder thread receive() starts"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__remote_bitrate_estimator", "freed per receiver: memory (tap_rtp)"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__jitter_buffer", "freed per receiver: memory (tap_rtp)"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__nack_generator", "freed per receiver: memory (tap_rtp)"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__decoder_thread", "tap_rtp: receive() starts none (see below)"),
    ("RTCRtpReceiver", "_run_rtcp", "replaced per receiver: no RR loop for streams aiortc never sees"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__rtcp_started", "set by the replaced _run_rtcp (stop() waits for it)"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__rtcp_exited", "set by the replaced _run_rtcp (stop() waits for it)"),
    ("pylibsrtp.Session", "_srtp", "fast path: libsrtp called straight from cffi (FastSrtp)"),
    ("aiortc.rtcrtpreceiver", "threading", "tap_rtp: swapped while receive() runs (it never awaits): no thread"),
    ("aiortc.rtcrtpreceiver", "RemoteBitrateEstimator", "relay_process: receivers get none (1,000 buckets)"),
    ("aiortc.rtcdtlstransport", "generate_certificate", "relay_process: the one certificate of the process"),
    ("RTCCertificate", "_create_ssl_context", "relay_process: one OpenSSL context per SRTP profile list"),
    ("RTCRtpTransceiver", "_codecs", "negotiated codecs: read to pair legs, written to answer the caller"),
    ("RTCPeerConnection", "_RTCPeerConnection__localDescription", "link: the parsed local SDP, not printed again"),
    ("RTCPeerConnection", "_RTCPeerConnection__remoteDescription", "link: the parsed remote SDP, not printed again"),
    ("RTCPeerConnection", "_RTCPeerConnection__createSctpTransport", "m=application without a data channel"),
    ("aiortc.rtcpeerconnection", "find_common_codecs", "aiortc's own codec matching (not exported)"),
    ("aiortc.rtcpeerconnection", "is_codec_compatible", "aiortc's own codec matching (not exported)"),
    ("aiortc.codecs", "CODECS", "the codecs aiortc supports, with their parameters"),
    ("aiortc.codecs", "CODECS", "fast path: VP9 added, negotiated and forwarded, never decoded"),
    ("aioice.ice.StunProtocol", "datagram_received", "fast path: shadowed per socket, sees SRTP before STUN parsing"),
    ("aioice.ice.Connection", "_nominated", "fast path: the selected pair's socket and remote address"),
    ("RTCIceTransport", "_connection", "fast path: the aioice Connection whose sockets are tapped"),
    ("RTCDtlsTransport", "_rx_srtp", "fast path: SRTP/SRTCP unprotect (aiortc's session)"),
    ("RTCDtlsTransport", "_tx_srtp", "fast path: SRTP/SRTCP protect (aiortc's session)"),
    ("RTCRtpSender", "_run_rtp", "replaced per sender: no encoder, no 20 ms polling, no RTP of aiortc's"),
    ("RTCRtpSender", "_run_rtcp", "replaced per sender: the relay sends SR/SDES/BYE itself"),
    ("RTCRtpSender", "_RTCRtpSender__rtp_started", "set by the replaced _run_rtp (stop() waits for it)"),
    ("RTCRtpSender", "_RTCRtpSender__rtp_exited", "set by the replaced _run_rtp (stop() waits for it)"),
    ("RTCRtpSender", "_RTCRtpSender__rtcp_started", "set by the replaced _run_rtcp (stop() waits for it)"),
    ("RTCRtpSender", "_RTCRtpSender__rtcp_exited", "set by the replaced _run_rtcp (stop() waits for it)"),
    ("RTCIceGatherer", "_connection", "ICE restart: the fresh Connection's ufrag/pwd/candidates go in SDP"),
    ("RTCIceGatherer", "_remote_candidates_end", "ICE restart: the client's new candidates are taken again"),
    ("RTCIceTransport", "_connection", "ICE restart: trickled candidates go to the fresh Connection"),
    ("RTCIceTransport", "_recv", "ICE restart: DTLS reads from the fresh Connection once it is up"),
    ("RTCIceTransport", "_send", "ICE restart: DTLS writes to the fresh Connection once it is up"),
    ("RTCIceTransport", "_monitor", "ICE restart: the fresh Connection's close fails the transport"),
    ("RTCIceTransport", "_RTCIceTransport__monitor_task", "ICE restart: the old Connection's monitor is stopped"),
    ("RTCIceTransport", "_RTCIceTransport__setState", "ICE restart: a restart that fails is an ICE failure"),
    ("aioice.ice.Connection", "_queue", "ICE restart: both Connections feed the queue DTLS is reading"),
    ("aioice.ice.Connection", "_transport_policy", "ICE restart: the fresh Connection gathers as the old one"),
    ("aioice.ice.Connection", "_components", "ICE restart: the fresh Connection gathers as the old one"),
    ("aioice.ice.Connection", "_remote_candidates_end", "ICE restart: restored when a restart is undone"),
    ("aioice.ice.Connection", "_closed", "an agent that closed itself (consent expired) is an ICE failure"),
]


def check_versions() -> None:
    """Refuse to run on aiortc/aioice versions these hooks were not written for."""
    found = {name: version(name) for name in TESTED_VERSIONS}
    wrong = [f"{name} {found[name]} (need {want})" for name, want in TESTED_VERSIONS.items() if found[name] != want]
    if wrong:
        raise RuntimeError(
            "mediarelay.aiortc_hooks reaches into aiortc/aioice/pylibsrtp internals and supports only "
            f"aiortc {TESTED_VERSIONS['aiortc']} / aioice {TESTED_VERSIONS['aioice']} / "
            f"pylibsrtp {TESTED_VERSIONS['pylibsrtp']}; installed: "
            + ", ".join(wrong) + ". Install the pinned versions or update the hooks and their test."
        )


check_versions()


# --- ICE host sockets ------------------------------------------------------------------------


class HostSockets(Protocol):
    """What ``ice.IcePolicy`` provides: which host addresses to use and how to bind on one."""

    def host_addresses(self, use_ipv4: bool, use_ipv6: bool) -> list[str] | None:
        """The addresses to gather on, or None for aioice's own choice."""

    def bind(self, address: str) -> socket.socket:
        """A bound, non-blocking UDP socket on ``address`` (OSError if none can be had)."""


_ORIGINAL_GET_HOST_ADDRESSES = aioice.ice.get_host_addresses
_ORIGINAL_GET_COMPONENT_CANDIDATES = aioice.ice.Connection.get_component_candidates
_installed: HostSockets | None = None


def install_host_sockets(provider: HostSockets | None) -> HostSockets | None:
    """Make every aioice Connection of this process gather and bind as ``provider`` says.

    ``None`` gives aioice back its own gathering. Returns the provider it replaces, so a
    caller (a test, ``run_worker``) can put it back when done.
    """
    global _installed
    previous, _installed = _installed, provider
    if provider is None:
        aioice.ice.get_host_addresses = _ORIGINAL_GET_HOST_ADDRESSES
        aioice.ice.Connection.get_component_candidates = _ORIGINAL_GET_COMPONENT_CANDIDATES  # type: ignore[method-assign]
    else:
        aioice.ice.get_host_addresses = _get_host_addresses
        aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]
    return previous


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    provider = _installed
    addresses = provider.host_addresses(use_ipv4, use_ipv6) if provider is not None else None
    return addresses if addresses is not None else _ORIGINAL_GET_HOST_ADDRESSES(use_ipv4, use_ipv6)


async def _get_component_candidates(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
) -> list[Candidate]:
    """aioice's ``get_component_candidates`` with host sockets bound by the provider.

    Host candidates are built exactly as aioice builds them; STUN (server-reflexive) candidates
    come from aioice's own ``server_reflexive_candidate`` on our sockets, and TURN is left to
    aioice's original (called with no host address, it only allocates on the TURN server).
    """
    provider = _installed
    if provider is None:
        return await _ORIGINAL_GET_COMPONENT_CANDIDATES(self, component, addresses, timeout)
    loop = asyncio.get_running_loop()
    candidates: list[Candidate] = []
    host_protocols: list[aioice.ice.StunProtocol] = []
    for address in addresses:
        try:
            sock = provider.bind(address)
        except OSError as exc:
            log.warning("ICE: no UDP socket on %s: %s", address, exc)
            continue
        _, protocol = await loop.create_datagram_endpoint(lambda: aioice.ice.StunProtocol(self), sock=sock)
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        host_protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    self._protocols += host_protocols

    async def reflexive() -> list[Candidate]:
        stun = self.stun_server
        if not stun:
            return []
        tasks = [
            asyncio.ensure_future(aioice.ice.server_reflexive_candidate(protocol, stun))
            for protocol in host_protocols
            if ipaddress.ip_address(protocol.local_candidate.host).version == 4
        ]
        if not tasks:
            return []
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        return [task.result()[0] for task in done if task.exception() is None]

    async def relayed() -> list[Candidate]:
        if not self.turn_server:
            return []
        return await _ORIGINAL_GET_COMPONENT_CANDIDATES(self, component, [], timeout)

    more = await asyncio.gather(reflexive(), relayed())
    return candidates + more[0] + more[1]


# --- RTP entry point ----------------------------------------------------------------------


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


def tap_rtp(receiver: RTCRtpReceiver, on_rtp: Callable[[RtpPacket, int], None]) -> None:
    """Send every RTP packet this receiver gets to ``on_rtp(packet, arrival_ms)`` instead of aiortc.

    The DTLS transport calls ``receiver._handle_rtp_packet`` after SRTP and routing; an
    instance attribute shadows the method, so only the relay's receivers change (the
    packets never reach a jitter buffer, NACK generator or decoder). ``receive()`` would start
    a decoder thread: it starts none (a thread per m-line and leg, started and joined, cost
    setup time), so the worker has no decoder threads at all. The forwarder of the next issue takes
    packets in ``on_rtp`` or below.
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

    rtcp_started: asyncio.Event = receiver._RTCRtpReceiver__rtcp_started  # type: ignore[attr-defined]
    rtcp_exited: asyncio.Event = receiver._RTCRtpReceiver__rtcp_exited  # type: ignore[attr-defined]

    async def run_rtcp() -> None:
        """aiortc's loop would wake every 0.5-1.5 s to report on streams it never sees (the
        relay sends its own RRs): it only sets the events ``stop()`` waits for."""
        rtcp_started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            pass
        finally:
            rtcp_exited.set()

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
    receiver.receive = receive  # type: ignore[method-assign]
    receiver._run_rtcp = run_rtcp  # type: ignore[method-assign]
    # Only the replaced _handle_rtp_packet used these: a video receiver's bitrate estimator
    # alone is 1,000 rate buckets (~48 kB, ~190 kB a call), the jitter buffer 512 slots.
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__jitter_buffer = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__nack_generator = None  # type: ignore[attr-defined]


# --- codecs and SCTP ----------------------------------------------------------------------


def session_descriptions(pc: RTCPeerConnection) -> tuple[SessionDescription | None, SessionDescription | None]:
    """The local and remote descriptions as aiortc keeps them, parsed: ``localDescription`` and
    ``remoteDescription`` print them as SDP each time (to be parsed again by the caller)."""
    return pc._RTCPeerConnection__localDescription(), pc._RTCPeerConnection__remoteDescription()  # type: ignore[attr-defined]


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs aiortc negotiated for this m-line (the remote's payload types), RTX included."""
    return list(transceiver._codecs)


def set_negotiated_codecs(transceiver: RTCRtpTransceiver, codecs: list[RTCRtpCodecParameters]) -> None:
    """Replace the negotiated codecs: ``createAnswer`` and the sender/receiver use these."""
    transceiver._codecs = list(codecs)


def add_sctp_transport(pc: RTCPeerConnection) -> None:
    """Give ``pc`` an SCTP transport, so its next offer has an ``m=application`` line.

    ``createDataChannel`` would do it too, but would also open a channel the callee sees.
    """
    if pc.sctp is None:
        pc._RTCPeerConnection__createSctpTransport()  # type: ignore[attr-defined]


# --- ICE restart ----------------------------------------------------------------------------


def ice_agent_closed(dtls: RTCDtlsTransport) -> bool:
    """Whether the aioice agent under ``dtls`` is closed: when DTLS ends and this is already
    true, the agent closed itself (consent freshness expired, RFC 7675), not the client's DTLS."""
    return bool(dtls.transport._connection._closed)



#: How long the checks of a restarted ICE agent may take before the leg counts as ICE failed.
ICE_RESTART_TIMEOUT = 30.0


class IceRestart:
    """An ICE restart of one PeerConnection, done under aiortc (which has none).

        restart = await IceRestart.prepare(pc)  # fresh agent gathered; SDP now carries its ufrag/pwd
        ...                                     # offer or answer as usual, candidates trickle to it
        restart.start(remote_ice_parameters)    # checks start; on success the agent takes over
        await restart.close()                   # before closing the PC: stops a restart under way

    Every ICE transport of the PC (one with BUNDLE) gets a fresh aioice ``Connection`` with new
    credentials and sockets. Until its checks succeed the old one still carries the traffic;
    both put what they receive into the queue the DTLS transport is reading, so nothing is
    lost in the switch, and the DTLS association, its SRTP keys and the SCTP association over it
    go on unchanged. If the checks fail (or take longer than ``ICE_RESTART_TIMEOUT``), the old
    agent is put back and the ICE transport is set to failed, which aiortc reports as the PC
    failing: the leg's "ICE failed".
    """

    def __init__(self, swaps: list[tuple[Any, Any, Any]]) -> None:
        self._swaps = swaps  # (RTCIceTransport, old Connection, new Connection)
        self._task: asyncio.Task[None] | None = None
        self._undone = False
        #: Called once the new agent carries the traffic (the forwarder re-reads its pair then).
        self.on_switched: Callable[[], None] | None = None
        self.done = False

    @classmethod
    async def prepare(cls, pc: RTCPeerConnection) -> IceRestart:
        transports = [t.receiver.transport.transport for t in pc.getTransceivers()]
        if pc.sctp is not None:
            transports.append(pc.sctp.transport.transport)
        unique = [t for i, t in enumerate(transports) if t not in transports[:i] and t.state != "closed"]
        swaps = []
        for transport in unique:
            old = transport._connection
            new = aioice.ice.Connection(
                ice_controlling=old.ice_controlling, components=len(old._components),
                stun_server=old.stun_server, turn_server=old.turn_server, turn_username=old.turn_username,
                turn_password=old.turn_password, turn_ssl=old.turn_ssl, turn_transport=old.turn_transport,
                transport_policy=old._transport_policy)
            new._queue = old._queue  # what DTLS reads: fed by both agents during the switch
            swaps.append((transport, old, new))
        await asyncio.gather(*(new.gather_candidates() for _, _, new in swaps))
        for transport, _, new in swaps:
            transport._connection = new  # trickled candidates go to the new agent
            transport.iceGatherer._connection = new  # SDP carries its credentials and candidates
            transport.iceGatherer._remote_candidates_end = False
        return cls(swaps)

    def start(self, remote: RTCIceParameters) -> None:
        """Start the checks against the peer's new credentials (from its offer or answer)."""
        if self._task is None and not self._undone:
            self._task = asyncio.ensure_future(self._connect(remote))

    async def _connect(self, remote: RTCIceParameters) -> None:
        async def connect(new: aioice.ice.Connection) -> None:
            new.remote_is_lite = bool(remote.iceLite)
            new.remote_username = remote.usernameFragment
            new.remote_password = remote.password
            await new.connect()

        try:
            await asyncio.wait_for(asyncio.gather(*(connect(new) for _, _, new in self._swaps)), ICE_RESTART_TIMEOUT)
        except (TimeoutError, ConnectionError) as exc:
            log.info("ICE restart failed: %r", exc)
            await self.abort()
            for transport, _, _ in self._swaps:
                if transport.state != "closed":
                    transport._RTCIceTransport__setState("failed")
            return
        for transport, old, new in self._swaps:
            if transport.state == "closed":
                continue
            transport._recv = new.recv
            transport._send = new.send
            monitor = transport._RTCIceTransport__monitor_task
            if monitor is not None:
                monitor.cancel()
            transport._RTCIceTransport__monitor_task = asyncio.ensure_future(transport._monitor())
            old._queue = asyncio.Queue()  # closing it must not wake the DTLS reader
            await old.close()
        self.done = True
        if self.on_switched is not None:
            self.on_switched()

    async def abort(self) -> None:
        """Undo ``prepare``: the old agent is back behind the transport, the new one closed."""
        if self._undone or self.done:
            return
        self._undone = True
        for transport, old, new in self._swaps:
            transport._connection = old
            transport.iceGatherer._connection = old
            transport.iceGatherer._remote_candidates_end = old._remote_candidates_end
            new._queue = asyncio.Queue()
            await new.close()

    async def close(self) -> None:
        """Stop a restart under way (before the PC closes, which then closes the old agent)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.abort()
        for transport, old, _ in self._swaps:
            if transport.state == "closed" and not self.done:
                await old.close()  # the PC is closing and waits for the old agent's end


# --- SRTP fast path ---------------------------------------------------------------------------
#
# Media never goes through aiortc's RTCRtpReceiver/RTCRtpSender: ``forwarder.py`` takes SRTP
# and SRTCP at the leg's ICE sockets and sends on the other leg's nominated pair. These
# functions are everything it needs from aiortc/aioice/pylibsrtp for that.


#: A codec aiortc cannot encode or decode but the relay forwards: negotiated, never decoded.
RELAY_ONLY_CODECS = [
    RTCRtpCodecParameters(mimeType="video/VP9", clockRate=90000, payloadType=103, rtcpFeedback=[
        RTCRtcpFeedback(type="nack"), RTCRtcpFeedback(type="nack", parameter="pli"),
        RTCRtcpFeedback(type="goog-remb")]),
    RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=104, parameters={"apt": 103}),
]


def add_relay_codecs() -> None:
    """Let aiortc negotiate the codecs it only has to forward (VP9), after its own.

    ``aiortc.codecs.CODECS`` is what aiortc offers and accepts; the relay never asks aiortc
    to encode or decode (``idle_sender``, ``tap_rtp``), so a codec aiortc lacks is fine there.
    Idempotent.
    """
    video = CODECS["video"]
    for codec in RELAY_ONLY_CODECS:
        if not any(c.mimeType == codec.mimeType and c.payloadType == codec.payloadType for c in video):
            video.append(codec)


add_relay_codecs()


class FastSrtp:
    """``protect``/``unprotect`` (and the RTCP ones) of a pylibsrtp ``Session``, calling libsrtp
    straight from cffi with a buffer and length pointer made once: pylibsrtp's own methods
    check the type, allocate the length and go through two more Python calls per packet
    (2.4 -> 1.6 us each here). Same results and errors (``pylibsrtp.Error``, ValueError for a
    packet too long). Falls back to the session's methods if its internals are not there."""

    __slots__ = ("_cdata", "_length", "protect", "protect_rtcp", "session", "unprotect", "unprotect_rtcp")
    protect: Callable[[bytes], bytes]
    unprotect: Callable[[bytes], bytes]
    protect_rtcp: Callable[[bytes], bytes]
    unprotect_rtcp: Callable[[bytes], bytes]

    def __init__(self, session: Session) -> None:
        self.session = session  # keeps the libsrtp session alive
        srtp = getattr(session, "_srtp", None)
        if srtp is None:  # pragma: no cover - another pylibsrtp
            self.protect, self.unprotect = session.protect, session.unprotect
            self.protect_rtcp, self.unprotect_rtcp = session.protect_rtcp, session.unprotect_rtcp
            return
        self._cdata = _srtp_ffi.new("char[]", _SRTP_BUFFER)
        self._length = _srtp_ffi.new("int *")
        self.protect = self._lean(srtp[0], _srtp_lib.srtp_protect, SRTP_MAX_TRAILER_LEN)
        self.unprotect = self._lean(srtp[0], _srtp_lib.srtp_unprotect, 0)
        self.protect_rtcp = self._lean(srtp[0], _srtp_lib.srtp_protect_rtcp, SRTP_MAX_SRTCP_TRAILER_LEN)
        self.unprotect_rtcp = self._lean(srtp[0], _srtp_lib.srtp_unprotect_rtcp, 0)

    def _lean(self, srtp: Any, call: Callable[[Any, Any, Any], int], trailer: int) -> Callable[[bytes], bytes]:
        cdata, length = self._cdata, self._length
        buffer = _srtp_ffi.buffer(cdata)
        limit = _SRTP_BUFFER - trailer

        def process(data: bytes) -> bytes:
            size = len(data)
            if size > limit:
                raise ValueError("packet is too long")
            buffer[0:size] = data
            length[0] = size
            status = call(srtp, cdata, length)
            if status:
                raise SrtpError(_SRTP_ERRORS[status] if status < len(_SRTP_ERRORS) else f"libsrtp error {status}")
            return buffer[0:length[0]]

        return process


_SRTP_BUFFER = 1500  # as pylibsrtp's own buffer


@dataclass
class MediaSocket:
    """What the fast path uses of a leg's connected DTLS transport."""

    #: aiortc's SRTP sessions (pylibsrtp), shared with aiortc's own RTCP: use on the loop only.
    srtp_rx: FastSrtp
    srtp_tx: FastSrtp
    #: The nominated pair's socket and the client's address on it.
    sendto: Callable[[bytes, tuple[Any, ...]], None]
    remote: tuple[Any, ...]


def media_socket(dtls: RTCDtlsTransport) -> MediaSocket:
    """The SRTP sessions and nominated pair of a connected DTLS transport (ValueError if not).

    Keys exist once ``RTCDtlsTransport.start`` has returned (the "connected" state); the pair
    is aioice's ``Connection._nominated[1]``, which aioice never changes afterwards (an ICE
    restart replaces the Connection: read it again then).
    """
    pair = dtls.transport._connection._nominated.get(1)
    # aiortc annotates _rx_srtp/_tx_srtp as Session, but they are None until the handshake ends.
    if dtls._rx_srtp is None or dtls._tx_srtp is None or pair is None:  # type: ignore[redundant-expr]
        raise ValueError("the DTLS transport is not connected")
    return MediaSocket(FastSrtp(dtls._rx_srtp), FastSrtp(dtls._tx_srtp), pair.protocol.transport.sendto,
                       pair.remote_addr)


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


def idle_sender(sender: RTCRtpSender, on_stop: Callable[[int], None] | None = None) -> None:
    """The relay sends this sender's RTP and RTCP itself: aiortc's loops for it do nothing.

    When the sender starts, aiortc runs ``_run_rtp`` (encode a track; without one, wake every
    20 ms) and ``_run_rtcp`` (SR and SDES with its own counters, which would contradict the
    relay's). Both are replaced per instance by coroutines that only set the events
    ``RTCRtpSender.stop`` waits for. ``on_stop(ssrc)`` runs as the sender stops, while its
    transport is still up (the relay's BYE). Call before the sender starts (before aiortc's
    connect task runs after an SDP is set).
    """
    rtp_started: asyncio.Event = sender._RTCRtpSender__rtp_started  # type: ignore[attr-defined]
    rtp_exited: asyncio.Event = sender._RTCRtpSender__rtp_exited  # type: ignore[attr-defined]
    rtcp_started: asyncio.Event = sender._RTCRtpSender__rtcp_started  # type: ignore[attr-defined]
    rtcp_exited: asyncio.Event = sender._RTCRtpSender__rtcp_exited  # type: ignore[attr-defined]

    async def idle(started: asyncio.Event, exited: asyncio.Event, stopping: Callable[[int], None] | None) -> None:
        started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if stopping is not None:
                stopping(sender._ssrc)
        finally:
            exited.set()

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        await idle(rtp_started, rtp_exited, None)

    async def run_rtcp() -> None:
        await idle(rtcp_started, rtcp_exited, on_stop)

    sender._run_rtp = run_rtp  # type: ignore[method-assign]
    sender._run_rtcp = run_rtcp  # type: ignore[method-assign]


# --- a relay process ----------------------------------------------------------------------------


class SharedCertificate(RTCCertificate):
    """The DTLS certificate of every PeerConnection of a relay process (renewed daily; aiortc's
    are valid 30 days). aiortc makes a key pair and certificate per PeerConnection, digests
    three fingerprints each time an SDP is made and an OpenSSL context per DTLS transport:
    here each is made once."""

    RENEW_AFTER = datetime.timedelta(days=1)
    _current: SharedCertificate | None = None

    def __init__(self, key: Any, cert: Any) -> None:
        super().__init__(key, cert)
        self.made = datetime.datetime.now(datetime.UTC)
        self._fingerprints = super().getFingerprints()
        self._contexts: dict[bytes, Any] = {}

    @classmethod
    def current(cls) -> SharedCertificate:
        shared = cls._current
        if shared is None or datetime.datetime.now(datetime.UTC) - shared.made > cls.RENEW_AFTER:
            key = ec.generate_private_key(ec.SECP256R1())
            shared = cls._current = cls(key, aiortc.rtcdtlstransport.generate_certificate(key))
        return shared

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> Any:
        key = b":".join(profile.openssl_profile for profile in srtp_profiles)
        context = self._contexts.get(key)
        if context is None:  # an OpenSSL context is made to be shared by many connections
            context = self._contexts[key] = super()._create_ssl_context(srtp_profiles)
            # After the handshake DTLS carries only SCTP and alerts: no idle record buffers per
            # connection (RSS per call -16 kB at 16 calls, as nginx does for idle TLS).
            context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        return context


def relay_process() -> None:
    """This process only relays (``videocall relay``, ``python -m mediarelay.worker``): every
    PeerConnection gets the ``SharedCertificate``, and receivers no bitrate estimator (only
    aiortc's own RTP path, which ``tap_rtp`` replaces, fed it). Not for a process that also
    runs aiortc clients (tests): they keep aiortc's defaults."""
    RTCCertificate.generateCertificate = classmethod(  # type: ignore[method-assign,assignment]
        lambda cls: SharedCertificate.current())
    aiortc.rtcrtpreceiver.RemoteBitrateEstimator = lambda: None  # type: ignore[assignment,misc,return-value]


# --- probe ------------------------------------------------------------------------------------


async def probe() -> list[str]:
    """Check every entry of ``PRIVATE_API`` on real objects; return the missing ones."""
    from aiortc import RTCConfiguration

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("audio")
        connection = transceiver.receiver.transport.transport.iceGatherer._connection
        owners: dict[str, object] = {
            "aioice.ice": aioice.ice,
            "aioice.ice.Connection": connection,
            "RTCRtpReceiver": transceiver.receiver,
            "RTCRtpTransceiver": transceiver,
            "RTCPeerConnection": pc,
            "RTCRtpSender": transceiver.sender,
            "RTCDtlsTransport": transceiver.sender.transport,
            "aioice.ice.StunProtocol": aioice.ice.StunProtocol,
            "RTCIceGatherer": transceiver.receiver.transport.transport.iceGatherer,
            "RTCIceTransport": transceiver.receiver.transport.transport,
            "aiortc.rtcpeerconnection": aiortc.rtcpeerconnection,
            "aiortc.codecs": aiortc.codecs,
            "aiortc.rtcrtpreceiver": aiortc.rtcrtpreceiver,
            "aiortc.rtcdtlstransport": aiortc.rtcdtlstransport,
            "RTCCertificate": RTCCertificate,
            "pylibsrtp.Session": Session(),
        }
        owners.setdefault("RTCIceTransport", transceiver.receiver.transport.transport)
        missing = [f"{owner}.{name}" for owner, name, _ in PRIVATE_API if not hasattr(owners[owner], name)]
        # The gathering replacement sets this the way aioice's own code does.
        if "local_candidate" not in getattr(aioice.ice.StunProtocol, "__annotations__", {}):
            missing.append("aioice.ice.StunProtocol.local_candidate")
        # The fast path sends on the nominated pair's socket, set in connection_made.
        if "transport" not in getattr(aioice.ice.StunProtocol, "__annotations__", {}):
            missing.append("aioice.ice.StunProtocol.transport")
        if not any(c.mimeType == "video/VP9" for c in CODECS["video"]):
            missing.append("aiortc.codecs.CODECS[video] VP9 (add_relay_codecs)")
        return missing
    finally:
        await pc.close()
