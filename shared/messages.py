"""Every message that crosses the signalling <-> relay-worker channel, declared once.

Both processes import these models: the signalling side builds requests and reads
notifications, the worker does the opposite. A frame on the wire is a msgpack map
(see ``shared/framing.py``); its ``body`` is validated against the model named
by its ``method`` (requests, notifications) before anything acts on it, so a confused or
hostile peer on the socket gets a clear error response instead of a crash.

Naming follows DESIGN.md: ``call.*`` acts on a whole call, ``leg.*`` on one side of it.
A leg is ``"caller"`` or ``"callee"``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.relay_auth import NONCE_SIZE, PROOF_SIZE

#: Bumped on any incompatible change to the models below; checked by ``hello``.
PROTOCOL_VERSION = 4

#: The largest SDP we accept from a client or pass across the channel (bytes of text).
MAX_SDP = 64 * 1024

#: The m-line kinds that carry RTP (the rest, ``application``, is SCTP for data channels).
MediaKind = Literal["audio", "video"]
MEDIA_KINDS: tuple[MediaKind, ...] = ("audio", "video")
#: Which side of a call: the one who called, or the one who was called.
LegName = Literal["caller", "callee"]
CallId = Annotated[str, Field(min_length=1, max_length=64)]
Sdp = Annotated[str, Field(max_length=MAX_SDP)]
#: Characters of a short text field (names, reasons).
MAX_TEXT = 256
ShortText = Annotated[str, Field(max_length=MAX_TEXT)]
#: A random challenge, or an HMAC-SHA256 proof answering one (``shared/relay_auth.py``).
Nonce = Annotated[bytes, Field(min_length=NONCE_SIZE, max_length=NONCE_SIZE)]
Proof = Annotated[bytes, Field(min_length=PROOF_SIZE, max_length=PROOF_SIZE)]

#: Characters of a recording's base name (``set`` ``filename``); Janus's own buffer is 255
#: bytes and "-video.mjr" and a temporary suffix must still fit.
MAX_RECORDING_NAME = 200


def recording_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a recording's base name inside the recordings folder, or None.

    Stricter than Janus on purpose (Janus writes wherever ``filename`` points): a relative
    path of plain components, no ``..``, no control characters, bounded. Checked by the
    signalling side (to answer the client) and again by the worker (which also resolves
    symlinks before it writes).
    """
    if not name:
        return "filename should not be empty"
    if len(name) > MAX_RECORDING_NAME:
        return f"filename should be at most {MAX_RECORDING_NAME} characters"
    if any(not ch.isprintable() for ch in name) or "\\" in name:
        return "filename should not contain control characters or backslashes"
    if name.startswith("/"):
        return "filename should be relative to the recordings folder"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "filename should not contain '..', '.' or empty path components"
    return None


def _recording_name(name: str) -> str:
    problem = recording_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


RecordingName = Annotated[str, AfterValidator(_recording_name)]


class _Model(BaseModel):
    """Strict, closed models: unknown fields and coercions are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


ResultT = TypeVar("ResultT", bound=BaseModel)


class Request(_Model, Generic[ResultT]):
    """A request: its model names its method on the wire and the model of its result.

    ``Channel.request(body)`` reads both from here, so a method string and its pair of
    models are written once, on the class (``METHOD``, and the type parameter).
    """

    METHOD: ClassVar[str]
    RESULT: ClassVar[type[_Model]]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for base in cls.__mro__:
            args = base.__dict__.get("__pydantic_generic_metadata__", {}).get("args", ())
            if args and isinstance(args[0], type) and issubclass(args[0], _Model):
                cls.RESULT = args[0]
                break


class Notification(_Model):
    """A notification (worker -> signalling): its model names its method on the wire."""

    METHOD: ClassVar[str]


# --- ICE candidates as the Janus API carries them -----------------------------------------


class IceCandidate(_Model):
    """One trickled candidate, as janus.js sends it (``RTCIceCandidate.toJSON()``)."""

    candidate: Annotated[str, Field(max_length=1024)]
    sdpMid: Annotated[str, Field(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=255)] | None = None
    usernameFragment: Annotated[str, Field(max_length=256)] | None = None


# --- results ----------------------------------------------------------------------------------


class HelloResult(_Model):
    version: int
    worker_id: ShortText
    pid: int
    calls: int
    #: The worker's answer to the node's nonce, when both have a ``relay_secret``: a node
    #: with a secret talks only to a worker that proves it has the same one.
    proof: Proof | None = None


class HelloChallengeResult(_Model):
    version: int
    #: What the node must prove it can sign in its ``hello``; fresh for each challenge.
    nonce: Nonce


class CallCreateResult(_Model):
    callee_offer: Sdp


class CallAcceptResult(_Model):
    caller_answer: Sdp


class LegRenegotiateResult(_Model):
    """The SDP to deliver to the *other* leg's client (an offer for an offer, an answer for an answer)."""

    sdp_type: Literal["offer", "answer"]
    sdp: Sdp


class Empty(_Model):
    """Result of requests that only succeed or fail."""


class WorkerStatsResult(_Model):
    """How loaded a worker is: what placement weighs and what ``/metrics`` shows per worker.

    The counters only grow for the life of the process (calls that ended are kept in
    them), so a node derives rates from two polls. ``bytes_*`` count RTP payload bytes.
    """

    calls: int
    legs: int
    pid: int
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: Packets the fast path did not forward, by reason (``forwarder.Counters``' names).
    drops: Annotated[dict[ShortText, int], Field(max_length=32)] = {}
    #: CPU time of the worker process (user + system), from ``os.times()``.
    cpu_seconds: float = 0.0
    #: Resident memory of the worker process.
    rss_bytes: int = 0


class MediumStats(_Model):
    """One m-line of a leg as the relay sees it: what its client sent the relay (``*_in``,
    ``lost``, ``jitter_ms``, from the relay's receive statistics) and what the relay sent it
    (``*_out``). ``bytes_*`` count RTP payload bytes, as ``WorkerStatsResult``'s do."""

    mid: ShortText
    kind: MediaKind
    packets_in: int = 0
    bytes_in: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    packets_out: int = 0
    bytes_out: int = 0


class LegStats(_Model):
    """One leg of a call: its transport state, round trip, NACKs each way, its m-lines.

    ``nacks_sent``: packets the relay asked this leg's client to send again; ``nacks_received``:
    packets this leg's client asked the relay to send again; ``retransmitted``: of those, the
    ones the relay answered from its history. ``rtt_ms`` is None until the client's reports
    have shown one."""

    state: ShortText
    rtt_ms: float | None = None
    nacks_sent: int = 0
    nacks_received: int = 0
    retransmitted: int = 0
    media: Annotated[list[MediumStats], Field(max_length=16)] = []


class CallStatsResult(_Model):
    """Both legs of one call (the Admin API's ``handle_info``)."""

    caller: LegStats
    callee: LegStats


# --- requests (signalling -> worker) -------------------------------------------------------


class Hello(Request[HelloResult]):
    """First request on a channel: both sides must speak the same protocol version."""

    METHOD = "hello"
    version: int
    node_id: ShortText
    #: The node's wall clock (Unix seconds) when it sent ``hello``: how the worker reads the
    #: deadlines of the node's requests (``dl`` in the frame) on its own clock.
    clock: float | None = None
    #: Sent by a node with a ``relay_secret``: its own challenge to the worker, and its proof
    #: over the nonce the worker gave it in ``hello.challenge``.
    nonce: Nonce | None = None
    proof: Proof | None = None


class HelloChallenge(Request[HelloChallengeResult]):
    """Asked before ``hello`` by a node with a ``relay_secret``: the worker's nonce to sign.

    The only request besides ``hello`` a worker answers before a successful ``hello``; it
    carries the version too, so a mismatch is told before any secret is used.
    """

    METHOD = "hello.challenge"
    version: int


#: The order of an offer's rid simulcast layers (the jsep's ``rid_order``, as Janus reads it):
#: "hml" (the default: janus.js and Chromium list the highest first) or "lmh".
RidOrder = Literal["hml", "lmh"]


class CallCreate(Request[CallCreateResult]):
    """Prepare both legs of a new call from the caller's offer.

    The worker sets the caller's offer on the caller leg and builds the callee leg with
    the same media (kinds, order, directions; codecs both the caller and the relay
    support). It answers with the relay's offer for the callee.
    """

    METHOD = "call.create"
    call_id: CallId
    caller_offer: Sdp
    rid_order: RidOrder = "hml"


class CallAccept(Request[CallAcceptResult]):
    """The callee's answer fixes the call's codecs; the worker answers the caller with them."""

    METHOD = "call.accept"
    call_id: CallId
    callee_answer: Sdp


class LegTrickle(Request[Empty]):
    """Candidates a client trickled for its leg; ``completed`` ends its gathering."""

    METHOD = "leg.trickle"
    call_id: CallId
    leg: LegName
    candidates: Annotated[list[IceCandidate], Field(max_length=64)] = []
    completed: bool = False


#: Simulcast substreams and temporal layers, as Janus numbers them (``set substream/temporal``).
SimulcastLayer = Annotated[int, Field(ge=0, le=2)]


class LegConfigure(Request[Empty]):
    """What a user sends is relayed or not (``audio``/``video``) and capped (``bitrate``);
    what it *receives* of a simulcasting peer (``substream``, ``temporal``, ``fallback`` in µs,
    ``auto``: the relay chooses the substream; a ``substream`` pins it).

    ``None`` leaves a setting as it is. The leg named is the user who asked with ``set``.
    """

    METHOD = "leg.configure"
    call_id: CallId
    leg: LegName
    audio: bool | None = None
    video: bool | None = None
    bitrate: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    substream: SimulcastLayer | None = None
    temporal: SimulcastLayer | None = None
    fallback: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    auto: bool | None = None


class LegRenegotiate(Request[LegRenegotiateResult]):
    """A new offer or answer from one leg's client, to be mirrored to the other leg."""

    METHOD = "leg.renegotiate"
    call_id: CallId
    leg: LegName
    sdp_type: Literal["offer", "answer"]
    sdp: Sdp
    restart: bool = False
    rid_order: RidOrder = "hml"


class CallHangup(Request[Empty]):
    """Close both legs of a call (unknown call ids are fine: hangup is idempotent)."""

    METHOD = "call.hangup"
    call_id: CallId
    reason: ShortText = ""


class LegRecord(Request[Empty]):
    """Start (``record``) or stop recording what one leg's user sends, Janus's ``set``
    ``record``: one ``.mjr`` file per medium of that user, ``<base>-audio.mjr``,
    ``-video.mjr``, ``-data.mjr``, inside the worker's recordings folder.

    ``base`` None: the worker names it ``videocall-<user>-<peer>-<time>`` as Janus does.
    Recording while already recording changes nothing (Janus keeps its files too).
    """

    METHOD = "leg.record"
    call_id: CallId
    leg: LegName
    record: bool
    base: RecordingName | None = None
    user: ShortText = ""
    peer: ShortText = ""


class WorkerStats(Request[WorkerStatsResult]):
    """Ask a worker how loaded it is."""

    METHOD = "worker.stats"


class CallStats(Request[CallStatsResult]):
    """Ask the worker of a call for its legs' counters (read on demand, never pushed)."""

    METHOD = "call.stats"
    call_id: CallId


# --- notifications (worker -> signalling) ---------------------------------------------------

#: Why a leg closed, in Janus's words (``janus_ice_webrtc_hangup``): they reach the client
#: as the core ``hangup`` reason. "Close PC" is also the reason of every PeerConnection the
#: server closes itself.
ICE_FAILED = "ICE failed"
DTLS_ALERT = "DTLS alert"
CLOSE_PC = "Close PC"


class LegState(Notification):
    """A leg's transport changed: ``connected`` = ICE and DTLS up (-> ``webrtcup``);
    ``failed``/``closed`` end the call (-> ``hangup`` with ``reason``)."""

    METHOD = "leg.state"
    call_id: CallId
    leg: LegName
    state: Literal["connected", "failed", "closed"]
    reason: ShortText = ""


class LegRecording(Notification):
    """A leg's recording started (``files``: the paths inside the recordings folder),
    stopped, or failed (``reason``: a disk that filled, a folder that vanished...)."""

    METHOD = "leg.recording"
    call_id: CallId
    leg: LegName
    state: Literal["started", "stopped", "failed"]
    files: Annotated[list[ShortText], Field(max_length=3)] = []
    reason: ShortText = ""


class LegMedia(Notification):
    """Media started or stopped arriving from a leg's client on one m-line (-> ``media``)."""

    METHOD = "leg.media"
    call_id: CallId
    leg: LegName
    kind: MediaKind
    mid: ShortText
    receiving: bool


class LegSimulcast(Notification):
    """The substream or temporal layer a leg's user receives of its simulcasting peer changed
    (or a ``set`` asked for the one it already gets): -> the VideoCall ``simulcast`` event.
    ``videocodec``: the video codec's name as Janus writes it ("vp8", "vp9", "h264")."""

    METHOD = "leg.simulcast"
    call_id: CallId
    leg: LegName
    videocodec: Annotated[str, Field(max_length=16)]
    substream: SimulcastLayer | None = None
    temporal: SimulcastLayer | None = None


#: method name -> request model (its ``RESULT`` is the result's model), for the receiving side.
REQUESTS: dict[str, type[Request[Any]]] = {
    model.METHOD: model
    for model in (Hello, HelloChallenge, CallCreate, CallAccept, LegTrickle, LegConfigure, LegRenegotiate, LegRecord, CallHangup,
                  WorkerStats, CallStats)
}

#: method name -> notification model
NOTIFICATIONS: dict[str, type[Notification]] = {model.METHOD: model for model in (LegState, LegMedia, LegRecording,
                                                                                  LegSimulcast)}
