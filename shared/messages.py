"""Every message that crosses the signalling <-> relay-worker channel, declared once.

Both processes import these models: the signalling side builds requests and reads
notifications, the worker does the opposite. A frame on the wire is a msgpack map
(see ``shared/ipc.py`` for framing); its ``body`` is validated against the model named
by its ``method`` (requests, notifications) before anything acts on it, so a confused or
hostile peer on the socket gets a clear error response instead of a crash.

Naming follows DESIGN.md: ``call.*`` acts on a whole call, ``leg.*`` on one side of it.
A leg is ``"caller"`` or ``"callee"``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Bumped on any incompatible change to the models below; checked by ``hello``.
PROTOCOL_VERSION = 1

#: The largest SDP we accept from a client or pass across the channel (bytes of text).
MAX_SDP = 64 * 1024

Leg = Literal["caller", "callee"]
CallId = Annotated[str, Field(min_length=1, max_length=64)]
Sdp = Annotated[str, Field(max_length=MAX_SDP)]
ShortText = Annotated[str, Field(max_length=256)]


class _Model(BaseModel):
    """Strict, closed models: unknown fields and coercions are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- ICE candidates as the Janus API carries them -----------------------------------------


class IceCandidate(_Model):
    """One trickled candidate, as janus.js sends it (``RTCIceCandidate.toJSON()``)."""

    candidate: Annotated[str, Field(max_length=1024)]
    sdpMid: Annotated[str, Field(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=255)] | None = None
    usernameFragment: Annotated[str, Field(max_length=256)] | None = None


# --- requests (signalling -> worker) and their results -------------------------------------


class Hello(_Model):
    """First request on a channel: both sides must speak the same protocol version."""

    version: int
    node_id: ShortText


class HelloResult(_Model):
    version: int
    worker_id: ShortText
    pid: int
    calls: int


class CallCreate(_Model):
    """Prepare both legs of a new call from the caller's offer.

    The worker sets the caller's offer on the caller leg and builds the callee leg with
    the same media (kinds, order, directions; codecs both the caller and the relay
    support). It answers with the relay's offer for the callee.
    """

    call_id: CallId
    caller_offer: Sdp


class CallCreateResult(_Model):
    callee_offer: Sdp


class CallAccept(_Model):
    """The callee's answer fixes the call's codecs; the worker answers the caller with them."""

    call_id: CallId
    callee_answer: Sdp


class CallAcceptResult(_Model):
    caller_answer: Sdp


class LegTrickle(_Model):
    """Candidates a client trickled for its leg; ``completed`` ends its gathering."""

    call_id: CallId
    leg: Leg
    candidates: Annotated[list[IceCandidate], Field(max_length=64)] = []
    completed: bool = False


class LegConfigure(_Model):
    """What a user sends is relayed or not (``audio``/``video``) and capped (``bitrate``).

    ``None`` leaves a setting as it is. The leg named is the *sending* side.
    """

    call_id: CallId
    leg: Leg
    audio: bool | None = None
    video: bool | None = None
    bitrate: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None


class LegRenegotiate(_Model):
    """A new offer or answer from one leg's client, to be mirrored to the other leg."""

    call_id: CallId
    leg: Leg
    sdp_type: Literal["offer", "answer"]
    sdp: Sdp
    restart: bool = False


class LegRenegotiateResult(_Model):
    """The SDP to deliver to the *other* leg's client (an offer for an offer, an answer for an answer)."""

    sdp_type: Literal["offer", "answer"]
    sdp: Sdp


class CallHangup(_Model):
    """Close both legs of a call (unknown call ids are fine: hangup is idempotent)."""

    call_id: CallId
    reason: ShortText = ""


class Empty(_Model):
    """Result of requests that only succeed or fail."""


class WorkerStats(_Model):
    """Ask a worker how loaded it is."""


class WorkerStatsResult(_Model):
    calls: int
    legs: int
    pid: int


# --- notifications (worker -> signalling) ---------------------------------------------------


class LegState(_Model):
    """A leg's transport changed: ``connected`` = ICE and DTLS up (-> ``webrtcup``);
    ``failed``/``closed`` end the call (-> ``hangup`` with ``reason``)."""

    call_id: CallId
    leg: Leg
    state: Literal["connected", "failed", "closed"]
    reason: ShortText = ""


class LegMedia(_Model):
    """Media started or stopped arriving from a leg's client on one m-line (-> ``media``)."""

    call_id: CallId
    leg: Leg
    kind: Literal["audio", "video"]
    mid: ShortText
    receiving: bool


#: method name -> (request model, result model)
REQUESTS: dict[str, tuple[type[_Model], type[_Model]]] = {
    "hello": (Hello, HelloResult),
    "call.create": (CallCreate, CallCreateResult),
    "call.accept": (CallAccept, CallAcceptResult),
    "leg.trickle": (LegTrickle, Empty),
    "leg.configure": (LegConfigure, Empty),
    "leg.renegotiate": (LegRenegotiate, LegRenegotiateResult),
    "call.hangup": (CallHangup, Empty),
    "worker.stats": (WorkerStats, WorkerStatsResult),
}

#: method name -> notification model
NOTIFICATIONS: dict[str, type[_Model]] = {
    "leg.state": LegState,
    "leg.media": LegMedia,
}
