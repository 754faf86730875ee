"""What the VideoCall state machine asks for: the effects it returns.

Plain frozen dataclasses, no behaviour. Events and notifications go to a handle's
WebSocket; ``Claim``/``Lookup``/``Relay*`` are I/O whose outcome the adapter feeds back
into the machine (``signaling/node.py`` carries them all out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LegName = Literal["caller", "callee"]
Jsep = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """A plugin event to a handle: ``{"videocall":"event", ...data}`` (+ jsep)."""

    handle: int
    data: dict[str, Any]
    transaction: str | None = None
    jsep: Jsep | None = None


@dataclass(frozen=True)
class CoreHangup:
    """The core ``hangup`` notification: this handle's PeerConnection is closed."""

    handle: int
    reason: str = "Close PC"


@dataclass(frozen=True)
class Webrtcup:
    handle: int


@dataclass(frozen=True)
class Media:
    handle: int
    mid: str
    kind: str
    receiving: bool


@dataclass(frozen=True)
class Claim:
    """Claim ``name`` in the registry; answer with ``VideoCall.claimed``."""

    handle: int
    name: str
    transaction: str | None


@dataclass(frozen=True)
class Release:
    name: str
    handle: int


@dataclass(frozen=True)
class Lookup:
    """Find the handle registered as ``name``; answer with ``VideoCall.looked_up``."""

    handle: int
    name: str
    transaction: str | None
    jsep: Jsep | None


@dataclass(frozen=True)
class RelayCreate:
    """Ask a worker to prepare a call; answer with ``VideoCall.call_created``."""

    call_id: str
    caller_offer: str


@dataclass(frozen=True)
class RelayAccept:
    """Give the worker the callee's answer; answer with ``VideoCall.call_accepted``."""

    call_id: str
    callee_answer: str


@dataclass(frozen=True)
class RelayTrickle:
    call_id: str
    leg: LegName
    candidates: tuple[dict[str, Any], ...]
    completed: bool


@dataclass(frozen=True)
class RelayConfigure:
    call_id: str
    leg: LegName
    audio: bool | None = None
    video: bool | None = None
    bitrate: int | None = None


@dataclass(frozen=True)
class RelayRenegotiate:
    """A new offer/answer from ``leg``; answer with ``VideoCall.renegotiated``."""

    call_id: str
    leg: LegName
    sdp_type: str
    sdp: str
    restart: bool
    transaction: str | None


@dataclass(frozen=True)
class RelayHangup:
    call_id: str
    reason: str


Effect = (
    Event | CoreHangup | Webrtcup | Media | Claim | Release | Lookup | RelayCreate
    | RelayAccept | RelayTrickle | RelayConfigure | RelayRenegotiate | RelayHangup
)
