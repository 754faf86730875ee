"""What a process running relay legs changes in aiortc for all of it, and only when asked.

Importing ``mediarelay.aiortc_hooks`` changes nothing. Two explicit calls prepare a process:

- ``prepare_relay_legs()``: any process with relay legs (the worker, tests that run legs next to
  aiortc clients): the pinned versions are checked, aiortc's codec table gains the codecs the
  relay only forwards (VP9), and a leg's ``setRemoteDescription`` may take the parse the relay
  made of the client's SDP (``negotiation.set_remote_description``; any other parse is as before).
- ``prepare_relay_process()``: a process that only relays (``videocall relay``,
  ``python -m mediarelay.worker``): the above, plus one DTLS certificate for all its
  PeerConnections (Janus has one per process too) with its fingerprints and OpenSSL contexts made
  once, no receiver bitrate estimators, which only aiortc's own RTP path used, and codecs
  deep-copied directly rather than by the generic walk. Not for a process that also runs
  aiortc clients: they keep aiortc's defaults.

``watch_codecs`` shows every encoder and decoder aiortc makes (tests prove the relay makes none).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
from collections.abc import Callable, Iterator
from typing import Any

import aiortc.codecs
import aiortc.rtcdtlstransport
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc.codecs import CODECS
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from mediarelay.aiortc_hooks.negotiation import reuse_parsed_sdp
from mediarelay.aiortc_hooks.versions import check_versions

# --- the codec table --------------------------------------------------------------------------


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
    Idempotent (``prepare_relay_legs`` calls it).
    """
    video = CODECS["video"]
    for codec in RELAY_ONLY_CODECS:
        if not any(c.mimeType == codec.mimeType and c.payloadType == codec.payloadType for c in video):
            video.append(codec)


# --- a relay process's certificate -------------------------------------------------------------


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
            # No session cache: OpenSSL's server cache keeps every handshake's session (with the
            # client's certificate) for two hours, up to 20,480 of them, in a context that now
            # lives as long as the process: ~0.35 MB per call that never came back (issue 17's
            # 80 MB/h). WebRTC never resumes a DTLS session (each PeerConnection has its own
            # certificate and handshake), and aiortc's per-transport contexts never kept one.
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        return context


# --- preparing a process ----------------------------------------------------------------------


def prepare_relay_legs() -> None:
    """Ready this process for relay legs: pinned versions checked (RuntimeError otherwise), the
    relay's forward-only codecs negotiable, a client's SDP parsed once (``reuse_parsed_sdp``).
    Idempotent. aiortc clients in the same process find VP9 in the codec table too (after
    aiortc's own codecs), which they could not encode."""
    check_versions()
    add_relay_codecs()
    reuse_parsed_sdp()


def prepare_relay_process() -> None:
    """Ready a process that only relays: ``prepare_relay_legs``, then every PeerConnection gets the
    ``SharedCertificate`` and receivers no bitrate estimator (only aiortc's own RTP path, which
    ``tap_rtp`` replaces, fed it). Idempotent."""
    prepare_relay_legs()
    RTCCertificate.generateCertificate = classmethod(  # type: ignore[method-assign,assignment]
        lambda cls: SharedCertificate.current())
    aiortc.rtcrtpreceiver.RemoteBitrateEstimator = _no_estimator  # type: ignore[assignment,misc]
    RTCRtpCodecParameters.__deepcopy__ = _copy_codec  # type: ignore[attr-defined]


_SCALARS = (str, int, type(None))


def _copy_codec(codec: RTCRtpCodecParameters, memo: dict[int, Any]) -> RTCRtpCodecParameters:
    """``copy.deepcopy`` of a codec, made directly: aiortc's codec matching deep-copies every
    codec it keeps, and the generic walk was about 80% of it (a third of a call's negotiation
    CPU in the worker). The same copy: new feedback entries and parameters (whose values are
    str, int or None); anything else falls back to the generic walk."""
    feedback, parameters = codec.rtcpFeedback, codec.parameters
    if (type(codec) is not RTCRtpCodecParameters or type(feedback) is not list or type(parameters) is not dict
            or any(type(f) is not RTCRtcpFeedback for f in feedback)
            or any(type(v) not in _SCALARS for v in parameters.values())):
        return copy._reconstruct(codec, memo, *codec.__reduce_ex__(4))  # type: ignore[attr-defined]
    return RTCRtpCodecParameters(
        mimeType=codec.mimeType, clockRate=codec.clockRate, channels=codec.channels, payloadType=codec.payloadType,
        rtcpFeedback=[RTCRtcpFeedback(type=f.type, parameter=f.parameter) for f in feedback],
        parameters=dict(parameters))


def _no_estimator() -> None:
    """What a relay receiver gets for aiortc's RemoteBitrateEstimator: none (1,000 rate buckets)."""


# --- watching codecs --------------------------------------------------------------------------


@contextlib.contextmanager
def watch_codecs(on_created: Callable[[str, str], None]) -> Iterator[None]:
    """Call ``on_created(kind, mimeType)`` ("decoder" or "encoder") each time aiortc makes one in
    this process while in the block.

    aiortc's receivers and senders look ``get_decoder``/``get_encoder`` up in their own modules
    when they make a codec: both names are wrapped there (and in ``aiortc.codecs``).
    """
    decoder, encoder = aiortc.rtcrtpreceiver.get_decoder, aiortc.rtcrtpsender.get_encoder

    def get_decoder(codec: RTCRtpCodecParameters) -> Any:
        on_created("decoder", codec.mimeType)
        return decoder(codec)

    def get_encoder(codec: RTCRtpCodecParameters) -> Any:
        on_created("encoder", codec.mimeType)
        return encoder(codec)

    aiortc.codecs.get_decoder = aiortc.rtcrtpreceiver.get_decoder = get_decoder
    aiortc.codecs.get_encoder = aiortc.rtcrtpsender.get_encoder = get_encoder
    try:
        yield
    finally:
        aiortc.codecs.get_decoder = aiortc.rtcrtpreceiver.get_decoder = decoder
        aiortc.codecs.get_encoder = aiortc.rtcrtpsender.get_encoder = encoder
