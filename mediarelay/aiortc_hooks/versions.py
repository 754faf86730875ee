"""The aiortc/aioice/pylibsrtp releases the hooks were written for, and every private name they use.

``check_versions`` refuses any other release (``prepare_relay_legs`` and ``install_host_sockets``
run it before they change anything); ``PRIVATE_API`` lists each private or unexported name the
package touches, once, with why; ``probe`` looks each one up on real objects (a test runs it), so
an aiortc upgrade fails loudly in one test rather than in a call.
"""

from __future__ import annotations

from importlib.metadata import version

import aioice.ice
import aiortc.codecs
import aiortc.rtcdtlstransport
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcdtlstransport import RTCCertificate
from pylibsrtp import Session

#: The only versions these hooks were written and tested against (pyproject pins them exactly).
TESTED_VERSIONS = {"aiortc": "1.16.0", "aioice": "0.13.0", "pylibsrtp": "1.0.0"}

#: (owner, name, why we touch it): every private or unexported name the hooks use, each once.
PRIVATE_API: list[tuple[str, str, str]] = [
    # ice_sockets
    ("aioice.ice", "get_host_addresses", "replaced: host addresses from ice_enforce_list (loopback allowed)"),
    ("aioice.ice.Connection", "get_component_candidates", "replaced: host sockets bound within rtp_port_range"),
    ("aioice.ice.Connection", "_protocols",
     "host sockets we bind are registered there, as aioice does; the fast path taps each one"),
    ("aioice.ice", "server_reflexive_candidate", "STUN candidates for the sockets we bind"),
    ("aioice.ice", "StunProtocol", "protocol of the sockets we bind"),
    # rtp_tap: the relay's receivers
    ("RTCRtpReceiver", "_handle_rtp_packet", "replaced per receiver: count and drop RTP, never decode"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__remote_bitrate_estimator",
     "freed per receiver: memory (tap_rtp); a test client's REMBs sent by hand (without_remb)"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__decoder_queue",
     "watch_decoder_input: a test sees keyframes decoded; freed per relay receiver: memory (tap_rtp)"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__decoder_error", "freed per receiver: memory (tap_rtp)"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__jitter_buffer", "freed per receiver: memory (tap_rtp)"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__nack_generator", "freed per receiver: memory (tap_rtp)"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__decoder_thread", "tap_rtp: receive() starts none"),
    ("RTCRtpReceiver", "_run_rtcp", "replaced per receiver: no RR loop for streams aiortc never sees"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__rtcp_started", "one event set for good (stop() waits for it; tap_rtp)"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__rtcp_exited", "one event set for good (stop() waits for it; tap_rtp)"),
    ("aiortc.rtcrtpreceiver", "threading", "tap_rtp: swapped while receive() runs (it never awaits): no thread"),
    # rtp_tap: the relay's senders, the fast path's sockets, an aiortc client's media
    ("RTCRtpSender", "_run_rtp", "replaced per sender: no encoder, no 20 ms polling, no RTP of aiortc's"),
    ("RTCRtpSender", "_run_rtcp", "replaced per sender: the relay sends SR/SDES/BYE itself"),
    ("RTCRtpSender", "_RTCRtpSender__rtp_started", "one event set for good (stop() waits for it; idle_sender)"),
    ("RTCRtpSender", "_RTCRtpSender__rtp_exited", "one event set for good (stop() waits for it; idle_sender)"),
    ("RTCRtpSender", "_RTCRtpSender__rtcp_started", "one event set for good (stop() waits for it; idle_sender)"),
    ("RTCRtpSender", "_RTCRtpSender__rtcp_exited", "one event set for good (stop() waits for it; idle_sender)"),
    ("RTCRtpSender", "_handle_rtcp_packet", "intercept_rtcp: a load client's PLI/FIR reach its clip track"),
    ("RTCRtpReceiver", "_handle_rtcp_packet", "intercept_rtcp: a test client sees the relay's SR"),
    ("RTCRtpSender", "_RTCRtpSender__packet_count", "load client: RTP packets sent (packets_sent)"),
    ("aioice.ice.StunProtocol", "datagram_received", "fast path: shadowed per socket, sees SRTP before STUN parsing"),
    ("aioice.ice.Connection", "_nominated", "fast path: the selected pair's socket and remote address"),
    ("RTCDtlsTransport", "_rx_srtp", "fast path: SRTP/SRTCP unprotect (aiortc's session)"),
    ("RTCDtlsTransport", "_tx_srtp", "fast path: SRTP/SRTCP protect (aiortc's session)"),
    # srtp
    ("pylibsrtp.Session", "_srtp", "fast path: libsrtp called straight from cffi (FastSrtp, SrtpSendBatch)"),
    # negotiation
    ("RTCRtpTransceiver", "_codecs", "negotiated codecs: read to pair legs, written to answer the caller"),
    ("RTCPeerConnection", "_RTCPeerConnection__localDescription", "link: the parsed local SDP, not printed again"),
    ("RTCPeerConnection", "_RTCPeerConnection__remoteDescription", "link: the parsed remote SDP, not printed again"),
    ("RTCPeerConnection", "_RTCPeerConnection__createSctpTransport", "m=application without a data channel"),
    ("aiortc.rtcpeerconnection", "find_common_codecs", "aiortc's own codec matching (not exported)"),
    ("aiortc.rtcpeerconnection", "is_codec_compatible", "aiortc's own codec matching (not exported)"),
    # process
    ("aiortc.codecs", "CODECS", "the codecs aiortc supports; VP9 added, negotiated and forwarded, never decoded"),
    ("aiortc.rtcrtpreceiver", "RemoteBitrateEstimator", "prepare_relay_process: receivers get none (1,000 buckets)"),
    ("aiortc.rtcdtlstransport", "generate_certificate", "prepare_relay_process: one certificate per process"),
    ("RTCCertificate", "_create_ssl_context", "prepare_relay_process: one OpenSSL context per SRTP profile list"),
    ("aiortc.rtcrtpreceiver", "get_decoder", "watch_codecs: every decoder aiortc makes is seen"),
    ("aiortc.rtcrtpsender", "get_encoder", "watch_codecs: every encoder aiortc makes is seen"),
    # ice_restart
    ("RTCIceGatherer", "_connection", "ICE restart: the fresh Connection's ufrag/pwd/candidates go in SDP"),
    ("RTCIceGatherer", "_remote_candidates_end", "ICE restart: the client's new candidates are taken again"),
    ("RTCIceTransport", "_connection",
     "fast path: the Connection whose sockets are tapped; ICE restart: trickled candidates go to the fresh one"),
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
    ("aioice.ice", "CONSENT_INTERVAL", "consent_interval: tests let consent expire in seconds, not 30"),
]


def check_versions() -> None:
    """Refuse to run on aiortc/aioice/pylibsrtp releases these hooks were not written for."""
    found = {name: version(name) for name in TESTED_VERSIONS}
    wrong = [f"{name} {found[name]} (need {want})" for name, want in TESTED_VERSIONS.items() if found[name] != want]
    if wrong:
        raise RuntimeError(
            "mediarelay.aiortc_hooks reaches into aiortc/aioice/pylibsrtp internals and supports only "
            f"aiortc {TESTED_VERSIONS['aiortc']} / aioice {TESTED_VERSIONS['aioice']} / "
            f"pylibsrtp {TESTED_VERSIONS['pylibsrtp']}; installed: "
            + ", ".join(wrong) + ". Install the pinned versions or update the hooks and their test."
        )


async def probe() -> list[str]:
    """Look every entry of ``PRIVATE_API`` up on real objects; return the missing ones."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("audio")
        ice_transport = transceiver.receiver.transport.transport
        owners: dict[str, object] = {
            "aioice.ice": aioice.ice,
            "aioice.ice.Connection": ice_transport.iceGatherer._connection,
            "aioice.ice.StunProtocol": aioice.ice.StunProtocol,
            "RTCRtpReceiver": transceiver.receiver,
            "RTCRtpSender": transceiver.sender,
            "RTCRtpTransceiver": transceiver,
            "RTCPeerConnection": pc,
            "RTCDtlsTransport": transceiver.sender.transport,
            "RTCIceGatherer": ice_transport.iceGatherer,
            "RTCIceTransport": ice_transport,
            "RTCCertificate": RTCCertificate,
            "aiortc.codecs": aiortc.codecs,
            "aiortc.rtcpeerconnection": aiortc.rtcpeerconnection,
            "aiortc.rtcrtpreceiver": aiortc.rtcrtpreceiver,
            "aiortc.rtcrtpsender": aiortc.rtcrtpsender,
            "aiortc.rtcdtlstransport": aiortc.rtcdtlstransport,
            "pylibsrtp.Session": Session(),
        }
        missing = [f"{owner}.{name}" for owner, name, _ in PRIVATE_API if not hasattr(owners[owner], name)]
        # The gathering replacement sets this the way aioice's own code does; the fast path
        # sends on the nominated pair's socket, set in connection_made.
        annotations = getattr(aioice.ice.StunProtocol, "__annotations__", {})
        missing += [f"aioice.ice.StunProtocol.{name}" for name in ("local_candidate", "transport")
                    if name not in annotations]
        return missing
    finally:
        await pc.close()
