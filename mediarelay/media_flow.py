"""Whether media flows in on one m-line of a leg: counters and Janus's ``receiving`` (pure).

No aiortc, no clock; the caller passes ``now`` (seconds, monotonic). The leg polls each
``MediaFlow`` on a timer; its answers become ``leg.media`` notifications, as Janus's
``media`` event does (``receiving`` true on the first packet, false after
``no_media_timer`` = 1 s without any, true again when packets resume).

Who counts the packets: before a call's legs are linked, the leg's aiortc tap
(``Leg._on_rtp``); once linked, the fast path takes packets at the leg's sockets and its
``RecvStream`` (``forwarder.py``) counts them here.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Janus's default ``no_media_timer``: seconds without a packet before "not receiving".
NO_MEDIA_TIMEOUT = 1.0


@dataclass(slots=True)
class MediaFlow:
    """One m-line (``mid``) of a leg, as packets arrive from that leg's client."""

    kind: str
    mid: str
    timeout: float = NO_MEDIA_TIMEOUT
    packets: int = 0
    octets: int = 0
    receiving: bool = False
    last_packet: float | None = None

    def on_packet(self, size: int, now: float) -> bool:
        """Count one packet; True when it (re)starts media, i.e. a ``receiving: true`` is due."""
        self.packets += 1
        self.octets += size
        self.last_packet = now
        if self.receiving:
            return False
        self.receiving = True
        return True

    def poll(self, now: float) -> bool:
        """True when media just stopped (``receiving: false`` is due): nothing for ``timeout`` s."""
        if self.receiving and self.last_packet is not None and now - self.last_packet >= self.timeout:
            self.receiving = False
            return True
        return False
