"""What aiortc negotiated, read and written where its public API has no door.

- ``CODECS``, ``find_common_codecs``, ``is_codec_compatible``: aiortc's codec table and its own
  matching rules (not exported), so the relay pairs legs' codecs exactly as aiortc does.
- ``negotiated_codecs`` / ``set_negotiated_codecs``: a transceiver's codecs, read to pair legs
  and written to restrict the caller's answer to the codecs the callee chose (aiortc applies
  preferences only when an offer is set).
- ``session_descriptions``: the parsed descriptions aiortc keeps (no SDP printed and parsed again).
- ``set_remote_description``: a client's SDP that the relay has parsed (to check it) is not
  parsed again by ``setRemoteDescription`` (``reuse_parsed_sdp``, installed by ``prepare_relay_legs``).
- ``add_sctp_transport``: an SCTP transport without opening a data channel (a mirrored
  ``m=application`` line).
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import find_common_codecs, is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import SessionDescription

__all__ = ["CODECS", "add_sctp_transport", "find_common_codecs", "is_codec_compatible", "negotiated_codecs",
           "reuse_parsed_sdp", "session_descriptions", "set_negotiated_codecs", "set_remote_description"]


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


# --- one parse per client SDP -------------------------------------------------------------------

_ORIGINAL_PARSE = SessionDescription.parse.__func__  # type: ignore[attr-defined]
#: (text, its parse): what ``set_remote_description`` hands to the parse aiortc is about to make.
_handed: list[tuple[str, SessionDescription]] = []


def _parse(cls: Any, sdp: str) -> SessionDescription:
    """``SessionDescription.parse``, which returns the handed-over parse of this very string
    (by identity: the same text object, so the same result) once, and parses anything else."""
    if _handed and _handed[0][0] is sdp:
        return _handed.pop()[1]
    return _ORIGINAL_PARSE(cls, sdp)


def reuse_parsed_sdp() -> None:
    """Let ``set_remote_description`` hand the relay's parse to aiortc. Idempotent; changes
    nothing for any other parse (aiortc clients in the same process parse as before)."""
    SessionDescription.parse = classmethod(_parse)  # type: ignore[method-assign,assignment]


async def set_remote_description(pc: RTCPeerConnection, description: RTCSessionDescription,
                                 parsed: SessionDescription | None) -> None:
    """``pc.setRemoteDescription(description)``, aiortc taking ``parsed`` (``SessionDescription.parse``
    of ``description.sdp``, made by the relay to check the client's SDP and no longer used by it)
    instead of parsing the text a second time (a tenth of a call's negotiation in the worker).

    aiortc parses first thing in ``setRemoteDescription``, before it awaits anything, so the
    parse it makes is this one; were that to change, it would parse as before (the hand-over is
    dropped when the call returns) and ``tests/mediarelay/test_sdp.py`` says so.
    """
    if parsed is None or getattr(SessionDescription.parse, "__func__", None) is not _parse:
        await pc.setRemoteDescription(description)
        return
    _handed[:] = [(description.sdp, parsed)]
    try:
        await pc.setRemoteDescription(description)
    finally:
        _handed.clear()
