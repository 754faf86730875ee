"""Outgoing sequence numbers and timestamps of one forwarded stream (pure, like mediasoup's SeqManager).

The relay sends each receiver one stream per m-line, with its own SSRC, whatever the sender
does (mutes, unmutes, restarts with a new SSRC). Numbers are rewritten by *offset*, never
renumbered, so that:

- a packet lost before the relay leaves a hole the receiver sees and NACKs, and a late
  retransmission fills exactly that hole;
- across a ``sync`` (unmute, new source SSRC) the output continues at the next number and
  the timestamp advances by the time that passed, so the receiver sees no loss and no jump
  back in time;
- a packet the relay chooses not to forward (``drop``) leaves no hole.

Verbs, as in mediasoup: ``sync`` (the next input continues the output), ``drop`` (this input
is not forwarded), ``input`` (the output number, or None for a packet older than the last
sync). Time is passed in (seconds); nothing here reads a clock.
"""

from __future__ import annotations

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
#: Offset changes remembered, so a late packet from before a ``drop`` keeps its old offset.
MAX_EPOCHS = 32


class SeqRewriter:
    """Maps a source's 16-bit sequence numbers to the outgoing ones."""

    __slots__ = ("_start", "_pending", "_max_ext", "_base", "_epochs", "_offset", "max_out", "_sent")

    def __init__(self, start: int) -> None:
        self._start = start % SEQ_MOD
        self._pending = True
        self._sent = False
        self.max_out = (self._start - 1) % SEQ_MOD
        self._max_ext = 0
        self._base = 0
        #: (first extended input number, offset): newest last; inputs map with the epoch they fall in.
        self._epochs: list[tuple[int, int]] = []
        self._offset = 0

    def sync(self) -> None:
        """The next ``input`` continues the output right after the highest number sent."""
        self._pending = True

    def _extend(self, seq: int) -> int:
        """``seq`` as an extended (rollover-counting) number, nearest to the highest input."""
        delta = (seq - self._max_ext) % SEQ_MOD
        if delta >= 0x8000:
            delta -= SEQ_MOD
        return self._max_ext + delta

    def _resync(self, seq: int) -> None:
        self._pending = False
        nxt = (self.max_out + 1) % SEQ_MOD
        self._base = SEQ_MOD + seq  # extended numbers start one cycle up, so none is negative
        self._max_ext = self._base - 1
        self._offset = (nxt - self._base) % SEQ_MOD
        self._epochs = [(self._base, self._offset)]

    def input(self, seq: int) -> int | None:
        """The outgoing number for source number ``seq``; None if it is older than the last sync."""
        if self._pending:
            self._resync(seq)
        max_ext = self._max_ext
        delta = (seq - max_ext) & 0xFFFF  # self._extend, inlined: this runs per packet
        ext = max_ext + (delta - SEQ_MOD if delta >= 0x8000 else delta)
        if ext > max_ext:  # the usual case: the next packet
            self._max_ext = ext
            offset = self._offset
        elif ext < self._base:
            return None
        elif ext >= self._epochs[-1][0]:
            offset = self._offset
        else:
            older = self._offset_of(ext)
            if older is None:
                return None
            offset = older
        out = (ext + offset) & 0xFFFF
        if 0 < (out - self.max_out) & 0xFFFF < 0x8000 or not self._sent:
            self.max_out = out
            self._sent = True
        return out

    def drop(self, seq: int) -> None:
        """Source number ``seq`` is not forwarded: the packets after it close the hole."""
        if self._pending:
            self._resync(seq)
        ext = self._extend(seq)
        if ext <= self._max_ext:
            return  # already past it: the receiver will see a hole, as for a loss
        self._max_ext = ext
        self._offset = (self._offset - 1) % SEQ_MOD
        self._epochs.append((ext + 1, self._offset))
        if len(self._epochs) > MAX_EPOCHS:
            del self._epochs[0]
            self._base = self._epochs[0][0]

    def source(self, out: int) -> int | None:
        """The source number that became outgoing number ``out`` (a NACK passed upstream),
        if it is within the current sync; None otherwise."""
        if self._pending or not self._sent:
            return None
        behind = (self.max_out - out) % SEQ_MOD
        if behind >= 0x8000:
            return None
        end = self._max_ext + 1
        for start, offset in reversed(self._epochs):
            ext = (out - offset) % SEQ_MOD
            ext = self._max_ext - ((self._max_ext - ext) % SEQ_MOD)
            if start <= ext < end:
                return ext % SEQ_MOD
            end = start
        return None

    def _offset_of(self, ext: int) -> int | None:
        for start, offset in reversed(self._epochs):
            if ext >= start:
                return offset
        return None


class TimestampRewriter:
    """Maps a source's 32-bit RTP timestamps to the outgoing ones, continuous across syncs."""

    __slots__ = ("clock_rate", "_start", "_pending", "_offset", "last_out", "last_time", "_sent")

    def __init__(self, clock_rate: int, start: int) -> None:
        self.clock_rate = clock_rate
        self._start = start % TS_MOD
        self._pending = True
        self._sent = False
        self._offset = 0
        #: The newest outgoing timestamp and when (seconds) it was first seen: the SR's anchor.
        self.last_out = self._start
        self.last_time = 0.0

    def sync(self) -> None:
        """The next ``input`` continues from the newest timestamp sent, plus the time elapsed."""
        self._pending = True

    def input(self, ts: int, now: float) -> int:
        """The outgoing timestamp for source timestamp ``ts`` arriving at ``now``."""
        if self._pending:
            self._pending = False
            if self._sent:
                elapsed = max(1, int((now - self.last_time) * self.clock_rate))
                target = (self.last_out + elapsed) % TS_MOD
            else:
                target = self._start
            self._offset = (target - ts) % TS_MOD
        out = (ts + self._offset) & 0xFFFFFFFF  # % TS_MOD: this runs per packet
        if 0 < (out - self.last_out) & 0xFFFFFFFF < 0x80000000 or not self._sent:
            self.last_out = out
            self.last_time = now
            self._sent = True
        return out

    def at(self, now: float) -> int:
        """The outgoing timestamp that corresponds to ``now`` (for a sender report)."""
        return (self.last_out + int((now - self.last_time) * self.clock_rate)) % TS_MOD
