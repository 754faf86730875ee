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
  continuous across substream switches, and for VP8 across dropped temporal pictures too
  (``PictureRewriter``; VP9 names its references by picture id differences, so there the
  dropped pictures stay gaps).
- **Fallback** (``set fallback``, µs, default 250000): when the current substream stops arriving
  for that long *while others keep arriving*, the selector aims at the next lower substream
  that still arrives; when the target comes back, it is taken again (at its keyframe). Silence
  is timed on a clock that runs only while packets keep coming (``STALL_GAP``): when the
  relay's own loop stalls, every substream resumes together and none looks silent. A
  pinned target is never left for a higher substream (Janus only falls lower too).
- **Events**: ``on_change("substream", n)`` / ``on_change("temporal", n)`` when the forwarded
  substream / temporal layer changes, and at once when ``set_target`` asks for the one already
  forwarded, as Janus's VideoCall sends its ``simulcast`` event.
- **Automatic choice** (beyond Janus): unless a substream was pinned with ``set_target``,
  ``set_auto(True)`` lets ``choose_substream`` (the ``layer_policy`` module) move the target.

Who calls what: ``media.py`` builds a selector per simulcast route and links the substreams'
``RecvStream``s to it; ``forwarder.RecvStream.forward`` calls ``packet`` (the verdict says
forward / drop-and-close-the-gap / not-this-substream / switched) and, for a packet it sends,
``rewrite`` (descriptor numbers); ``media.py`` turns ``request_keyframe`` into PLIs on the substream's SSRC and
``on_change`` into the worker's notification.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mediarelay.rtp_header import Descriptor, is_keyframe, vp8_descriptor, vp9_descriptor
from mediarelay.simulcast_sdp import Simulcast

#: Janus's default ``fallback``: µs without a packet of the current substream before going lower.
DEFAULT_FALLBACK_US = 250_000
#: Substreams and temporal layers are numbered 0..2, as in Janus.
MAX_LAYER = 2
#: A wanted substream's keyframe that does not come is asked for again after this many
#: seconds (each request also repeats on its own: ``feedback.KeyframeRequester``), at most
#: ``KEYFRAME_REQUESTS`` times per switch.
KEYFRAME_RETRY = 1.0
KEYFRAME_REQUESTS = 4
#: Between two packets (of any substream) the fallback clock advances by the time that
#: passed, at most this much (s): a longer gap is the relay (or the whole path) stalling, not
#: one substream going silent, and counts no more. Three substreams of video send a packet
#: every few ms; one alone at 15 fps every 67 ms (its silence then counts a little slower).
STALL_GAP = 0.05

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


def layer_sources(simulcast: Simulcast) -> tuple[LayerSource, ...]:
    """The substreams of a negotiated simulcast m-line (``simulcast_sdp.Simulcast``, lowest
    first): rids for the rid form (SSRCs learned later), SSRCs and RTX SSRCs for the SSRC form."""
    if simulcast.form == "rid":
        return tuple(LayerSource(i, rid, None, None) for i, rid in enumerate(simulcast.rids))
    return tuple(LayerSource(i, None, ssrc, simulcast.rtx.get(ssrc)) for i, ssrc in enumerate(simulcast.ssrcs))


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


class PictureRewriter:
    """VP8/VP9 picture id and TL0PICIDX of one outgoing stream, continuous across substream
    switches (Janus's ``janus_vp8_simulcast_descriptor_update``) and across pictures of a
    dropped temporal layer (mediasoup's picture id manager): the receiver sees consecutive
    pictures, never a jump it would wait on."""

    __slots__ = ("_pid_offset", "_tl0_offset", "_max_pid", "last_pid", "last_tl0")

    def __init__(self) -> None:
        self._pid_offset = 0
        self._tl0_offset = 0
        #: Newest source picture id seen since the last switch (None: switched, not seen yet).
        self._max_pid: int | None = None
        #: The newest outgoing picture id and TL0PICIDX (None: none sent yet).
        self.last_pid: int | None = None
        self.last_tl0: int | None = None

    def switch(self, d: Descriptor) -> None:
        """``d`` starts a new substream: its picture follows the last one sent."""
        if self.last_pid is not None and d.pid_pos >= 0:
            self._pid_offset = (self.last_pid + 1 - d.pid) % 0x8000
        if self.last_tl0 is not None and d.tl0_pos >= 0:
            self._tl0_offset = (self.last_tl0 + 1 - d.tl0) % 0x100
        self._max_pid = None

    def drop(self, d: Descriptor) -> None:
        """A packet of a picture not forwarded: the pictures after it close up (once per picture)."""
        if d.pid_pos < 0:
            return
        mod = 0x8000 if d.wide else 0x80
        if self._max_pid is None or 0 < (d.pid - self._max_pid) % mod < mod // 2:
            self._max_pid = d.pid
            self._pid_offset = (self._pid_offset - 1) % 0x8000

    def rewrite(self, packet: bytes, d: Descriptor) -> bytes:
        """The packet with its picture id and TL0PICIDX mapped (same widths as it came)."""
        if d.pid_pos < 0 and d.tl0_pos < 0:
            return packet
        out = bytearray(packet)
        if d.pid_pos >= 0:
            mod = 0x8000 if d.wide else 0x80
            if self._max_pid is None or 0 < (d.pid - self._max_pid) % mod < mod // 2:
                self._max_pid = d.pid
            pid = (d.pid + self._pid_offset) % mod
            if d.wide:
                out[d.pid_pos] = 0x80 | (pid >> 8)
                out[d.pid_pos + 1] = pid & 0xFF
            else:
                out[d.pid_pos] = pid
            if self.last_pid is None or 0 < (pid - self.last_pid) % mod < mod // 2:
                self.last_pid = pid
        if d.tl0_pos >= 0:
            tl0 = (d.tl0 + self._tl0_offset) & 0xFF
            out[d.tl0_pos] = tl0
            if self.last_tl0 is None or 0 < (tl0 - self.last_tl0) & 0xFF < 0x80:
                self.last_tl0 = tl0
        return bytes(out)


class SimulcastSelector:
    """Which substream and temporal layers of one simulcast m-line go to the receiver.

    ``codec`` is "vp8", "vp9" or "h264"; ``layers`` the negotiated substreams; ``ssrc`` the
    relay's SSRC towards the receiver (one, whatever substream is forwarded). ``on_change`` is
    told every change of the forwarded substream or temporal layer; ``request_keyframe(index,
    now)`` is asked to send a PLI on substream ``index``'s SSRC.

    Per packet the forwarder calls ``packet`` (the ``Verdict``), then for a forwarded one
    ``rewrite``; nothing else runs per packet.
    """

    def __init__(self, codec: str, layers: Sequence[LayerSource], ssrc: int, *,
                 on_change: OnChange | None = None,
                 request_keyframe: Callable[[int, float], None] | None = None) -> None:
        self.codec = codec.lower()
        if self.codec not in ("vp8", "vp9", "h264"):
            raise ValueError(f"simulcast of {codec} is not supported (VP8, VP9 or H.264)")
        if not layers or any(not 0 <= layer.index <= MAX_LAYER for layer in layers):
            raise ValueError("simulcast needs 1 to 3 substreams numbered 0..2")
        self.layers = {layer.index: layer for layer in layers}
        self.ssrc = ssrc
        self.on_change = on_change
        self.request_keyframe = request_keyframe
        self._parse: Callable[[bytes, int], Descriptor | None] | None = (
            vp8_descriptor if self.codec == "vp8" else vp9_descriptor if self.codec == "vp9" else None)
        #: What the receiver asked for (Janus's ``substream_target`` / ``templayer_target``).
        self.target_substream = MAX_LAYER
        self.target_temporal = MAX_LAYER
        #: While ``auto``: the substream the automatic choice wants (``set_auto_target``).
        self.auto = True
        self.auto_substream = MAX_LAYER
        self.fallback = DEFAULT_FALLBACK_US / 1e6
        #: What is forwarded now (None: nothing yet; temporal None: no temporal info seen).
        self.substream: int | None = None
        self.temporal: int | None = None
        #: The substream aimed at now: the target, or lower while it does not arrive (fallback).
        self.want: int = MAX_LAYER
        self.pictures = PictureRewriter()
        #: The descriptor ``packet`` read from the forwarded packet, for ``rewrite`` (read once).
        self._descriptor: Descriptor | None = None
        #: Last arrival of each substream's packets (fallback, revival), on the fallback clock:
        #: ``_clock`` s of time in which packets kept coming, as of the packet at ``_clock_at``.
        self._last = [float("-inf")] * (MAX_LAYER + 1)
        self._clock = 0.0
        self._clock_at: float | None = None
        self._asked_at = float("-inf")
        self._asked = 0
        #: Counters (tests, stats): switches made, keyframe requests sent.
        self.switches = 0
        self.keyframe_requests = 0

    # --- what the receiver asks for ------------------------------------------------------------

    @property
    def target(self) -> int:
        """The substream the receiver (or the automatic choice) wants."""
        return self.auto_substream if self.auto else self.target_substream

    def set_target(self, substream: int | None, temporal: int | None, now: float = 0.0) -> None:
        """``set substream`` / ``set temporal`` (values 0..2, checked by the caller). As in Janus,
        asking for what is forwarded already is answered at once with the event; otherwise
        the switch waits for the sender's keyframe, asked for now."""
        if substream is not None:
            self.target_substream = substream
            if not self.auto and substream == self.substream:
                self._changed("substream", substream)
            self._aim(now)
        if temporal is not None:
            self.target_temporal = temporal
            if temporal == self.temporal:
                self._changed("temporal", temporal)
            elif self.temporal is not None and temporal > self.temporal and self.substream is not None:
                self._ask(self.substream, now, switch=False)  # up is quickest at a keyframe (Janus: a PLI)

    def set_auto(self, on: bool, now: float = 0.0) -> None:
        """Let the automatic choice move the substream (True), or keep the pinned target."""
        self.auto = on
        self._aim(now)

    def set_auto_target(self, substream: int, now: float) -> None:
        """The automatic choice (``layer_policy``) wants ``substream``; used while ``auto``."""
        self.auto_substream = max(0, min(MAX_LAYER, substream))
        if self.auto:
            self._aim(now)

    def set_fallback(self, microseconds: int) -> None:
        """``set fallback``: µs without the current substream before aiming lower (0: Janus's
        default, 250000)."""
        self.fallback = (microseconds or DEFAULT_FALLBACK_US) / 1e6

    def learn_ssrc(self, index: int, ssrc: int, rtx: bool = False) -> None:
        """Substream ``index``'s SSRC (or RTX SSRC) became known from its rid extension."""
        layer = self.layers.get(index)
        if layer is not None:
            self.layers[index] = LayerSource(layer.index, layer.rid, layer.ssrc if rtx else ssrc,
                                             ssrc if rtx else layer.rtx_ssrc)

    # --- per packet -----------------------------------------------------------------------------

    def packet(self, index: int, plain: bytes, header: int, now: float) -> int:
        """A packet of substream ``index`` (plain RTP, its payload from ``header``): a ``Verdict``."""
        at = self._clock_at
        self._clock_at = now
        if at is not None and now > at:
            self._clock += min(STALL_GAP, now - at)
        clock = self._clock
        last = self._last
        before = last[index]
        last[index] = clock
        current = self.substream
        fallback = self.fallback
        if clock - before > fallback:  # this substream (re)appears: maybe it is the one we want
            self._aim(now)
        elif current is not None and index != current and clock - last[current] > fallback:
            self._aim(now)  # the forwarded substream went silent while this one came: aim lower
        want = self.want
        self._descriptor = None
        if index != current:
            towards = current is None or current < index <= want or want <= index < current
            if towards and is_keyframe(self.codec, plain[header:]):
                return self._switch(index, plain, header, now)
            if index == want and self._asked and now - self._asked_at >= KEYFRAME_RETRY:
                self._ask(index, now)  # the keyframe did not come (yet): ask again, a few times
            return Verdict.OTHER
        parse = self._parse
        if parse is None:
            return Verdict.FORWARD
        d = self._descriptor = parse(plain, header)
        if d is None or d.tid < 0:
            return Verdict.FORWARD
        return self._temporal(d)

    def _switch(self, index: int, plain: bytes, header: int, now: float) -> int:
        self.substream = index
        self.switches += 1
        if index == self.want:
            self._asked = 0
        parse = self._parse
        d = self._descriptor = parse(plain, header) if parse is not None else None
        if d is not None:
            self.pictures.switch(d)
        self._changed("substream", index)
        if d is not None and d.tid >= 0 and self.temporal != self.target_temporal:
            self.temporal = self.target_temporal  # a keyframe: every temporal layer decodes from here
            self._changed("temporal", self.temporal)
        return Verdict.SWITCHED

    def _temporal(self, d: Descriptor) -> int:
        """Temporal layers of the forwarded substream: down at a picture's start, up at a
        layer-sync picture or a keyframe, packets above the current layer dropped."""
        current = self.temporal
        target = self.target_temporal
        if current != target and d.start:
            if d.keyframe or (current is None and d.tid == target):
                self.temporal = target
            elif current is not None and target < current:
                self.temporal = target
            elif current is not None and d.sync and current < d.tid <= target:
                self.temporal = d.tid
            if self.temporal != current:
                self._changed("temporal", self.temporal)  # type: ignore[arg-type]
        if self.temporal is not None and d.tid > self.temporal:
            if self.codec == "vp8":
                # VP8's references are implicit: the decoder must see consecutive pictures. VP9's
                # are picture id differences (flexible mode): closing up would break them.
                self.pictures.drop(d)
            return Verdict.DROP
        return Verdict.FORWARD

    def rewrite(self, plain: bytes) -> bytes:
        """The packet ``packet`` just let through, with its VP8/VP9 picture id and TL0PICIDX
        made continuous (the descriptor ``packet`` read is used: no second parse)."""
        d = self._descriptor
        return plain if d is None else self.pictures.rewrite(plain, d)

    # --- choosing -------------------------------------------------------------------------------

    def _clock_now(self, now: float) -> float:
        """The fallback clock at ``now`` (time since the last packet counts up to ``STALL_GAP``)."""
        if self._clock_at is None:
            return self._clock
        return self._clock + min(max(0.0, now - self._clock_at), STALL_GAP)

    def _aim(self, now: float) -> None:
        """Aim at the target, or the highest lower substream that arrives while the target does
        not (fallback); while the choice is automatic, the lowest higher one when none below
        does (a pinned target is waited for). A new aim asks for its keyframe."""
        target = self.target
        fallback = self.fallback
        last = self._last
        clock = self._clock_now(now)
        alive = [i for i in self.layers if clock - last[i] <= fallback]
        below = [i for i in alive if i <= target]
        if below:
            want = max(below)
        elif self.auto:
            want = min((i for i in alive if i > target), default=target)
        else:
            want = target
        if want not in self.layers:
            want = min(self.layers, key=lambda i: abs(i - want))
        if want != self.want or (want != self.substream and not self._asked):
            self.want = want
            self._asked = 0
            if want != self.substream and want in alive:
                self._ask(want, now)

    def _ask(self, index: int, now: float, switch: bool = True) -> None:
        """A PLI on substream ``index``; ``switch``: for a switch to it (counted, bounded)."""
        if switch:
            if self._asked >= KEYFRAME_REQUESTS:
                return
            self._asked += 1
            self._asked_at = now
        self.keyframe_requests += 1
        if self.request_keyframe is not None:
            self.request_keyframe(index, now)

    def _changed(self, kind: ChangeKind, value: int) -> None:
        if self.on_change is not None:
            self.on_change(kind, value)
