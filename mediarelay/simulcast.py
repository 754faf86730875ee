"""Simulcast on the fast path: one substream and its chosen temporal layers of a simulcasting
sender, forwarded to the receiver as one continuous stream (pure: no I/O, time passed in).

A simulcasting sender (issue 13) sends up to three *substreams* of one video m-line, each its
own SSRC (and RTX SSRC), lowest resolution first (Janus's substream 0..2). The relay keeps a
``RecvStream`` per substream (statistics, NACKs, keyframe requests per SSRC) and one
``SendStream`` to the receiver; a ``SimulcastSelector`` per forwarded m-line decides, packet
by packet, what of it goes through. It mirrors Janus's
``janus_rtp_simulcasting_context_process_rtp`` and ``janus_vp8_simulcast_descriptor_update``
(src/rtp.c, src/utils.c), with mediasoup's ``SimulcastConsumer`` ideas where they are better:

- **Substream**: only packets of the *current* substream are forwarded. A switch to another
  substream (``set substream``, fallback, automatic choice) happens only at a keyframe of that
  substream; the selector asks for one at once and again, a bounded number of times, while it
  does not come. The forwarder then re-syncs the sequence numbers and timestamps (``rewriter``)
  so the receiver sees one stream with no gap and no jump back.
- **Temporal layers** (VP8 TID, VP9 TID; H.264 has none we can read): packets above the current
  temporal layer are dropped and their sequence numbers closed up (``SeqRewriter.drop``); going
  down happens at the start of a picture, going up only at a layer-sync picture (VP8 Y bit, VP9
  U bit) or a keyframe.
- **VP8/VP9 descriptors**: picture id (7/15 bit) and TL0PICIDX are rewritten so they stay
  continuous across substream switches and dropped temporal pictures (``PictureRewriter``).
- **Fallback** (``set fallback``, µs, default 250000): when the current substream stops arriving
  for that long, the selector aims at the next lower substream that still arrives; when the
  target comes back, it is taken again (at its keyframe).
- **Events**: ``on_change("substream", n)`` / ``on_change("temporal", n)`` when the forwarded
  substream / temporal layer changes, and at once when ``set_target`` asks for the one already
  forwarded, as Janus's VideoCall sends its ``simulcast`` event.
- **Automatic choice** (beyond Janus): unless a substream was pinned with ``set_target``,
  ``set_auto(True)`` lets ``choose_substream`` (the ``layer_policy`` module) move the target.

Who calls what: ``media.py`` builds a selector per simulcast route and links the substreams'
``RecvStream``s to it; ``forwarder.RecvStream.forward`` calls ``packet`` (the verdict says
forward / drop-and-close-the-gap / not-this-substream / switched) and ``rewrite`` (descriptor
numbers); ``media.py`` turns ``request_keyframe`` into PLIs on the substream's SSRC and
``on_change`` into the worker's notification.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

#: Janus's default ``fallback``: µs without a packet of the current substream before going lower.
DEFAULT_FALLBACK_US = 250_000
#: Substreams and temporal layers are numbered 0..2, as in Janus.
MAX_LAYER = 2

ChangeKind = Literal["substream", "temporal"]
OnChange = Callable[[ChangeKind, int], None]


@dataclass(frozen=True)
class LayerSource:
    """One substream of a simulcasting sender, as negotiated."""

    #: 0 lowest .. 2 highest (Janus's substream numbers).
    index: int
    #: rid simulcast: the rid (``a=rid``); None for SSRC simulcast (``a=ssrc-group:SIM``).
    rid: str | None
    #: Known from the SDP (SSRC simulcast) or learned from the rid extension of its first packets.
    ssrc: int | None
    rtx_ssrc: int | None


@dataclass(frozen=True)
class SimulcastOffer:
    """What negotiation learned of one simulcast m-line of a sender (filled by the SDP side,
    read by ``media.py`` when it links): its mid, the substreams, and the header extension ids
    (as negotiated) that name a packet's substream when its SSRC is not known yet."""

    mid: str
    layers: tuple[LayerSource, ...]
    #: ``urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id``'s id (rid simulcast), or None.
    rid_extension: int | None = None
    #: ``urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id``'s id (RTX of a rid), or None.
    repaired_rid_extension: int | None = None


@dataclass
class SimulcastSettings:
    """What a *receiver* asked for with ``set`` (kept per leg, applied to its selector when the
    media links, so a ``set`` before the call connects is not lost)."""

    substream: int = MAX_LAYER
    temporal: int = MAX_LAYER
    #: µs; 0 means Janus's default.
    fallback: int = DEFAULT_FALLBACK_US
    #: The relay chooses the substream (True until ``set substream`` pins one).
    auto: bool = True


class Verdict:
    """What the forwarder does with one packet (ints: compared per packet)."""

    #: Not the forwarded substream (or nothing forwarded yet): not sent, numbering untouched.
    OTHER = 0
    #: The forwarded substream, but a temporal layer above the chosen one: not sent, and its
    #: sequence number is closed up (``SeqRewriter.drop``) so the receiver sees no loss.
    DROP = 1
    #: Forward it.
    FORWARD = 2
    #: Forward it: the first packet (a keyframe) of a newly chosen substream; the sequence
    #: numbers and timestamps re-sync first (``SeqRewriter.sync``, ``TimestampRewriter.sync``).
    SWITCHED = 3


class SimulcastSelector:
    """Which substream and temporal layers of one simulcast m-line go to the receiver.

    ``codec`` is "vp8", "vp9" or "h264"; ``layers`` the negotiated substreams; ``ssrc`` the
    relay's SSRC towards the receiver (one, whatever substream is forwarded). ``on_change`` is
    told every change of the forwarded substream or temporal layer; ``request_keyframe(index)``
    is asked to send a PLI on substream ``index``'s SSRC.
    """

    def __init__(self, codec: str, layers: Sequence[LayerSource], ssrc: int, *,
                 on_change: OnChange | None = None,
                 request_keyframe: Callable[[int, float], None] | None = None) -> None:
        self.codec = codec.lower()
        self.layers = {layer.index: layer for layer in layers}
        self.ssrc = ssrc
        self.on_change = on_change
        self.request_keyframe = request_keyframe
        #: What the receiver asked for (Janus's ``substream_target`` / ``templayer_target``).
        self.target_substream = MAX_LAYER
        self.target_temporal = MAX_LAYER
        self.fallback = DEFAULT_FALLBACK_US / 1e6
        self.auto = True
        #: What is forwarded now (None: nothing yet).
        self.substream: int | None = None
        self.temporal: int | None = None

    def set_target(self, substream: int | None, temporal: int | None, now: float = 0.0) -> None:
        """``set substream`` / ``set temporal``: aim there (a substream pins it: ``auto`` off)."""
        raise NotImplementedError

    def set_auto(self, on: bool, now: float = 0.0) -> None:
        """Let the automatic choice move the substream (True), or keep the pinned one."""
        raise NotImplementedError

    def set_fallback(self, microseconds: int) -> None:
        """``set fallback``: µs without the current substream before dropping to a lower one
        (0: Janus's default, 250000)."""
        raise NotImplementedError

    def learn_ssrc(self, index: int, ssrc: int, rtx: bool = False) -> None:
        """Substream ``index``'s SSRC (or RTX SSRC) became known from its rid extension."""
        raise NotImplementedError

    def packet(self, index: int, payload: bytes, now: float) -> int:
        """A packet of substream ``index`` (``payload``: its RTP payload) arrived: a ``Verdict``."""
        raise NotImplementedError

    def rewrite(self, payload: bytes, switched: bool) -> bytes:
        """The payload with its VP8/VP9 picture id and TL0PICIDX made continuous."""
        raise NotImplementedError
