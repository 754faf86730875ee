"""What the relay receives on one m-line of one leg: counters and "is media flowing?".

Pure: no aiortc, no clock; the caller passes ``now`` (seconds, monotonic). The leg feeds it
from the RTP tap and polls it on a timer; its answers become ``leg.media`` notifications,
as Janus's ``media`` event does (``receiving`` true on the first packet, false after
``no_media_timer`` = 1 s without any, true again when packets resume).

Before a call's legs are linked, aiortc's tap counts packets here; once linked, the fast path
(``forwarder.py``) takes packets at the leg's sockets and calls ``on_packet`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Janus's default ``no_media_timer``: seconds without a packet before "not receiving".
NO_MEDIA_TIMEOUT = 1.0


@dataclass
class InboundStream:
    """One m-line (``mid``) of a leg, as packets arrive from that leg's client."""

    kind: str
    mid: str
    timeout: float = NO_MEDIA_TIMEOUT
    packets: int = 0
    octets: int = 0
    receiving: bool = False
    last_packet: float | None = None
    #: Set by the forwarder (next issue): called with each packet after it is counted.
    sink: Callable[[Any], None] | None = field(default=None, repr=False)

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
