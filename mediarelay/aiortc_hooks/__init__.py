"""The one package that reaches into aiortc's, aioice's and pylibsrtp's private internals.

Everything the relay needs that aiortc does not offer publicly is done here, and only here, one
concern per module:

- ``versions``: the pinned releases (``check_versions``), every private name used
  (``PRIVATE_API``, each once) and ``probe``, which looks each up on real objects (tests run it).
- ``ice_sockets``: aioice gathers and binds host sockets as ``mediarelay.ice`` decides
  (``install_host_sockets``: ``ice_enforce_list`` with loopback, ``rtp_port_range``).
- ``rtp_tap``: media taken away from aiortc: RTP at relay receivers (``tap_rtp``), no loops in
  relay senders (``idle_sender``), SRTP at the ICE sockets for the fast path (``tap_datagrams``,
  ``media_socket``), what an aiortc client sees (``intercept_rtp``, ``intercept_rtcp``...).
- ``srtp``: ``FastSrtp``, aiortc's libsrtp sessions called straight from cffi.
- ``srtp_batch``: ``SrtpSendBatch``, a leg's RTP protected into a ``sendmmsg`` array on its
  socket, sent once per loop iteration (``mediarelay.outbox``).
- ``negotiation``: aiortc's codec table and matching, a transceiver's negotiated codecs, its
  parsed descriptions, a client's SDP parsed once, an SCTP transport without a data channel.
- ``ice_restart``: ``IceRestart`` (aiortc 1.16 has none), an ICE agent that gave up, consent.
- ``process``: what changes for a whole process, only when asked: ``prepare_relay_legs``
  (versions, VP9 in the codec table, a client's SDP parsed once) and ``prepare_relay_process``
  (also one DTLS certificate and no receiver bitrate estimators); ``watch_codecs``.

Importing this package changes nothing in aiortc or aioice (a test checks it): a process that
runs relay legs calls ``prepare_relay_legs()`` or ``prepare_relay_process()`` first, and the
per-object hooks change only the object they are given.
"""

from __future__ import annotations

from mediarelay.aiortc_hooks.ice_restart import (
    IceRestart,
    consent_interval,
    ice_agent_closed,
)
from mediarelay.aiortc_hooks.ice_sockets import HostSockets, install_host_sockets
from mediarelay.aiortc_hooks.negotiation import (
    CODECS,
    add_sctp_transport,
    find_common_codecs,
    is_codec_compatible,
    negotiated_codecs,
    reuse_parsed_sdp,
    session_descriptions,
    set_negotiated_codecs,
    set_remote_description,
)
from mediarelay.aiortc_hooks.process import (
    RELAY_ONLY_CODECS,
    SharedCertificate,
    add_relay_codecs,
    prepare_relay_legs,
    prepare_relay_process,
    watch_codecs,
)
from mediarelay.aiortc_hooks.rtp_tap import (
    DatagramHandler,
    MediaSocket,
    idle_sender,
    intercept_rtcp,
    intercept_rtp,
    media_socket,
    packets_sent,
    tap_datagrams,
    tap_rtp,
    watch_decoder_input,
    without_remb,
)
from mediarelay.aiortc_hooks.srtp import FastSrtp
from mediarelay.aiortc_hooks.srtp_batch import SrtpSendBatch, srtp_send_batch
from mediarelay.aiortc_hooks.versions import (
    PRIVATE_API,
    TESTED_VERSIONS,
    check_versions,
    probe,
)

__all__ = [
    "CODECS", "PRIVATE_API", "RELAY_ONLY_CODECS", "TESTED_VERSIONS",
    "DatagramHandler", "FastSrtp", "HostSockets", "SrtpSendBatch", "IceRestart", "MediaSocket", "SharedCertificate",
    "add_relay_codecs", "add_sctp_transport", "check_versions", "consent_interval", "find_common_codecs",
    "ice_agent_closed", "idle_sender", "install_host_sockets", "intercept_rtcp", "intercept_rtp",
    "is_codec_compatible", "media_socket", "negotiated_codecs", "packets_sent", "prepare_relay_legs",
    "prepare_relay_process", "probe", "reuse_parsed_sdp", "session_descriptions", "set_negotiated_codecs",
    "set_remote_description", "srtp_send_batch", "tap_datagrams",
    "tap_rtp", "watch_codecs", "watch_decoder_input", "without_remb",
]
