"""What aiortc negotiated, read and written where its public API has no door.

- ``CODECS``, ``find_common_codecs``, ``is_codec_compatible``: aiortc's codec table and its own
  matching rules (not exported), so the relay pairs legs' codecs exactly as aiortc does.
- ``negotiated_codecs`` / ``set_negotiated_codecs``: a transceiver's codecs, read to pair legs
  and written to restrict the caller's answer to the codecs the callee chose (aiortc applies
  preferences only when an offer is set).
- ``session_descriptions``: the parsed descriptions aiortc keeps (no SDP printed and parsed again).
- ``add_sctp_transport``: an SCTP transport without opening a data channel (a mirrored
  ``m=application`` line).
"""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import find_common_codecs, is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import SessionDescription

__all__ = ["CODECS", "add_sctp_transport", "find_common_codecs", "is_codec_compatible", "negotiated_codecs",
           "session_descriptions", "set_negotiated_codecs"]


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
