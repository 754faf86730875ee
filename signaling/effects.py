"""What the VideoCall state machine asks for: the effects it returns.

Plain frozen dataclasses, no behaviour. ``Event``, ``CoreHangup``, ``Webrtcup`` and
``Media`` are delivered to a handle's client; ``Claim``, ``Release``, ``ListNames``,
``Lookup`` and ``Relay`` are I/O whose outcome the plugin runner
(``signaling/plugin_runner.py``) feeds back into the machine. A ``Relay`` effect carries
the IPC request itself (``shared.messages``), so a relay command has one definition: the
model the worker receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.messages import CLOSE_PC, LegName, Request

__all__ = [
    "Jsep", "LegName", "Event", "CoreHangup", "Webrtcup", "Media", "Claim", "Release", "ListNames",
    "Lookup", "Relay", "RingTimeout", "RelayFailure", "Delivery", "Effect",
]

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
    reason: str = CLOSE_PC


@dataclass(frozen=True)
class Webrtcup:
    """The core ``webrtcup`` notification: the handle's PeerConnection is up."""

    handle: int


@dataclass(frozen=True)
class Media:
    """The core ``media`` notification: media started or stopped arriving on one m-line."""

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
    """Give ``name`` back to the registry (it was held by ``handle``)."""

    name: str
    handle: int


@dataclass(frozen=True)
class ListNames:
    """Read every registered name; answer with ``VideoCall.listed``."""

    handle: int
    transaction: str | None


@dataclass(frozen=True)
class Lookup:
    """Find the handle registered as ``name``; answer with ``VideoCall.looked_up``."""

    handle: int
    name: str
    transaction: str | None
    jsep: Jsep | None


@dataclass(frozen=True)
class Relay:
    """Send ``request`` to the worker holding its call.

    ``CallCreate``, ``CallAccept`` and ``LegRenegotiate`` are answered back into the machine
    (``call_created``, ``call_accepted``, ``renegotiated``, with ``transaction``); the
    others change nothing here when they succeed, and a failure is only logged.
    """

    request: Request[Any]
    transaction: str | None = None


@dataclass(frozen=True)
class RingTimeout:
    """In ``seconds``, tell the machine (``VideoCall.ring_expired``) if the call still rings."""

    call_id: str
    seconds: float


@dataclass(frozen=True)
class RelayFailure:
    """Why the relay could not do a request: it refused it (``detail`` says why: a bad SDP)
    or no worker could be reached (``unavailable``: not the client's fault, try again)."""

    detail: str
    unavailable: bool = False


#: Effects that are messages to a handle's client.
Delivery = Event | CoreHangup | Webrtcup | Media
Effect = Delivery | Claim | Release | ListNames | Lookup | Relay | RingTimeout
