"""The Janus API envelope: a text frame becomes a typed request or ONE :class:`JanusError`;
every reply and notification envelope is built here, once.

Our sans-I/O ``frames.py``. Owns the order of checks of ``janus_process_incoming_request``
(janus.c); the codes and texts it raises are declared in ``janus_errors.py``. Must not touch
sockets, asyncio, clocks, session/handle state (the server holds it) or plugin bodies
(``videocall_body.py``); strict JSON decoding lives in ``strict_json.py``.

Janus answers in this order, so parsing has two stages with the server's lookup between:

1. :func:`parse_envelope`, stateless: 454 not JSON; 456/467 ``transaction``, ``janus``,
   ``id`` (these replies carry NO transaction, as Janus's); 467 a session/handle id that
   is not a positive integer; 458/459 a handle id without a session / a handle id of 0;
   457 a verb other than info/ping/create without a session.
2. The server: 458 "No such session <id>", 459 "No such handle <id> in session <id>"
   (:meth:`JanusError.session_not_found`, :meth:`JanusError.handle_not_found`).
3. :func:`parse_request`: 457 a verb at the wrong level, 453 an unknown verb, then the
   verb's own fields (attach 456/467/460, message 456/467/455/464/465, trickle 456/454/467).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.messages import MAX_SDP, IceCandidate
from signaling.janus_errors import DEFAULT_REASONS, ErrorCode, quote
from signaling.janus_replies import PLUGIN_VIDEOCALL, error
from signaling.strict_json import JsonError, loads

#: Candidates one ``trickle`` may carry (``shared.messages.LegTrickle`` takes 64).
MAX_TRICKLE_CANDIDATES = 64
_MISSING, _TYPE = ErrorCode.MISSING_MANDATORY_ELEMENT, ErrorCode.INVALID_ELEMENT_TYPE


class JanusError(Exception):
    """One refusal: the Janus code, its reason, and the ids the error reply echoes."""

    def __init__(
        self,
        code: int,
        reason: str | None = None,
        *,
        transaction: str | None = None,
        session_id: int | None = None,
    ) -> None:
        self.code = int(code)
        self.reason = reason if reason is not None else DEFAULT_REASONS.get(self.code, ErrorCode.UNKNOWN.reason)
        self.transaction = transaction
        self.session_id = session_id
        super().__init__(f"{self.code}: {self.reason}")

    def reply(self) -> dict[str, Any]:
        """The ``{"janus": "error", ...}`` envelope to send back."""
        return error(self.code, self.reason, transaction=self.transaction, session_id=self.session_id)

    @classmethod
    def answering(cls, env: Envelope, code: int, reason: str | None = None) -> JanusError:
        """An error in reply to ``env`` (its transaction and session echoed)."""
        return cls(code, reason, transaction=env.transaction, session_id=env.session_id)

    @classmethod
    def session_not_found(cls, env: Envelope) -> JanusError:
        return cls.answering(env, ErrorCode.SESSION_NOT_FOUND, f"No such session {env.session_id}")

    @classmethod
    def handle_not_found(cls, env: Envelope) -> JanusError:
        reason = f"No such handle {env.handle_id} in session {env.session_id}"
        return cls.answering(env, ErrorCode.HANDLE_NOT_FOUND, reason)


# --- stage 1: the envelope ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """A frame that names a verb and a transaction; ids are positive or ``None``."""

    verb: str  # ASCII-lowercased: Janus compares verbs with strcasecmp
    transaction: str
    session_id: int | None
    handle_id: int | None
    raw: dict[str, Any]

    @property
    def verb_text(self) -> str:
        """The verb as the client spelled it (Janus quotes it so in error texts)."""
        return str(self.raw["janus"])


def _is_int(value: Any) -> TypeGuard[int]:
    return type(value) is int  # not bool, not float: json_is_integer


_KINDS: dict[str, Callable[[Any], bool]] = {
    "a string": lambda value: isinstance(value, str),
    "a boolean": lambda value: isinstance(value, bool),
    "an object": lambda value: isinstance(value, dict),
    "a positive integer": lambda value: _is_int(value) and value >= 0,
}
_Fields = tuple[tuple[str, str, bool], ...]  # (name, kind, required), in Janus's table order
_ENVELOPE_FIELDS: _Fields = (
    ("transaction", "a string", True),
    ("janus", "a string", True),
    ("id", "a positive integer", False),
)
_ATTACH_FIELDS: _Fields = (
    ("plugin", "a string", True),
    ("opaque_id", "a string", False),
    ("loop_index", "a positive integer", False),
)
_BODY_FIELDS: _Fields = (("body", "an object", True),)
_JSEP_FIELDS: _Fields = (
    ("type", "a string", True),
    ("sdp", "a string", True),
    ("trickle", "a boolean", False),
    ("rid_order", "a string", False),
    ("force_relay", "a boolean", False),
    ("e2ee", "a boolean", False),
)


def _validate(
    obj: Mapping[str, Any],
    fields: _Fields,
    *,
    transaction: str | None,
    session_id: int | None,
    missing: str = "Missing mandatory element ({})",
    invalid: str = "Invalid element type ({} should be {})",
) -> None:
    """JANUS_VALIDATE_JSON_OBJECT (utils.h): the first failing field, in table order, as
    456 ``missing`` or 467 ``invalid``. A JSON ``null`` is present, of the wrong type."""
    context: dict[str, Any] = {"transaction": transaction, "session_id": session_id}
    for name, kind, required in fields:
        if name not in obj:
            if required:
                raise JanusError(_MISSING, missing.format(name), **context)
        elif not _KINDS[kind](obj[name]):
            raise JanusError(_TYPE, invalid.format(name, kind), **context)


def _unhandled(env: Envelope) -> str:
    return f"Unhandled request '{quote(env.verb_text)}' at this path"


def _ascii_lower(text: str) -> str:
    return text.lower() if text.isascii() else text  # strcasecmp folds ASCII only


def _id(obj: Mapping[str, Any], name: str, transaction: str) -> int | None:
    """``session_id``/``handle_id``: absent or null is None; 0 stays 0 (Janus's "none")."""
    value = obj.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        # Janus silently ignores a non-integer id; we say what is wrong instead.
        raise JanusError(_TYPE, f"Invalid element type ({name} should be a positive integer)", transaction=transaction)
    return value


def _id_fits(value: Any) -> TypeGuard[int | None]:
    """What ``_id`` takes without a word: absent or null, or a positive integer (or 0)."""
    return value is None or (type(value) is int and value >= 0)


def _id_ok(obj: Mapping[str, Any]) -> bool:
    """The envelope's optional ``id`` passes ``_ENVELOPE_FIELDS`` (absent, or a positive integer)."""
    if "id" not in obj:
        return True
    value = obj["id"]
    return _is_int(value) and value >= 0


def parse_envelope(frame: str | bytes, *, max_depth: int = 32) -> Envelope:
    """Stage 1: everything Janus checks before it looks the session up."""
    try:
        raw = loads(frame, max_depth=max_depth)
    except JsonError as exc:
        raise JanusError(ErrorCode.INVALID_JSON, f"Invalid Janus API request - {exc}") from None
    obj: dict[str, Any] = raw if isinstance(raw, dict) else {}  # an array has no fields
    if type(obj.get("transaction")) is not str or type(obj.get("janus")) is not str or not _id_ok(obj):
        echoed = obj.get("session_id")  # only an error needs it: the first one found, worded
        _validate(obj, _ENVELOPE_FIELDS, transaction=None, session_id=echoed if _is_int(echoed) and echoed > 0 else None)
    transaction: str = obj["transaction"]
    session_id, handle_id = obj.get("session_id"), obj.get("handle_id")
    if not (_id_fits(session_id) and _id_fits(handle_id)):  # worded, the first one wrong
        session_id, handle_id = _id(obj, "session_id", transaction), _id(obj, "handle_id", transaction)
    if not session_id:  # Janus reads session 0 as none: only info/ping/create, or 458 with a handle
        if handle_id:
            raise JanusError(ErrorCode.SESSION_NOT_FOUND, transaction=transaction)
        session_id = handle_id = None
    elif handle_id == 0:  # Janus: "h && handle_id < 1", before it looks the session up
        raise JanusError(ErrorCode.HANDLE_NOT_FOUND, transaction=transaction, session_id=session_id)
    env = Envelope(_ascii_lower(obj["janus"]), transaction, session_id, handle_id, obj)
    if session_id is None and env.verb not in _SESSIONLESS:
        raise JanusError.answering(env, ErrorCode.INVALID_REQUEST_PATH, _unhandled(env))
    return env


# --- stage 2: the typed requests ------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class _Request(_Model):
    transaction: str
    session_id: int | None = None
    handle_id: int | None = None


class InfoRequest(_Request):
    """``info``: describe the server (no session)."""


class PingRequest(_Request):
    """``ping``: answered with ``pong`` (no session)."""


class CreateRequest(_Request):
    """``create``: a new session; ``id`` asks for that session id (468 if taken)."""

    id: int | None = None


class AttachRequest(_Request):
    """``attach``: a new handle on the session, bound to ``plugin``."""

    plugin: str
    opaque_id: str | None = None


class Jsep(_Model):
    """An offer or answer as Janus accepts it (``type`` lowercased; SDP pre-checked)."""

    type: Literal["offer", "answer"]
    sdp: str
    trickle: bool | None = None
    e2ee: bool | None = None
    force_relay: bool | None = None
    rid_order: Literal["hml", "lmh"] = "hml"  # an unknown value falls back to hml, as Janus


class MessageRequest(_Request):
    """``message``: a plugin ``body``, perhaps with a ``jsep``; acked, answered by an event."""

    body: dict[str, Any]
    jsep: Jsep | None = None


class TrickleRequest(_Request):
    """``trickle``: candidates (checked as the relay will take them), or end of gathering."""

    candidates: list[IceCandidate]
    completed: bool = False


class KeepaliveRequest(_Request):
    """``keepalive``: refreshes the session; acked."""


class HangupRequest(_Request):
    """``hangup``: close the handle's PeerConnection."""


class DetachRequest(_Request):
    """``detach``: remove the handle."""


class DestroyRequest(_Request):
    """``destroy``: remove the session and all its handles."""


class ClaimRequest(_Request):
    """``claim``: move the session to this connection."""


Request = (
    InfoRequest | PingRequest | CreateRequest | AttachRequest | MessageRequest | TrickleRequest
    | KeepaliveRequest | HangupRequest | DetachRequest | DestroyRequest | ClaimRequest
)  # fmt: skip


def parse_request(env: Envelope) -> Request:
    """Stage 2, once the server has found ``env``'s session and handle (if it names them)."""
    if env.session_id is None:
        level = "sessionless" if env.verb in _SESSIONLESS else "nowhere"
    elif env.verb in _LEVEL:
        level = _LEVEL[env.verb]
    else:
        raise JanusError.answering(env, ErrorCode.UNKNOWN_REQUEST, f"Unknown request '{quote(env.verb_text)}'")
    if level == "nowhere" or (level == "session" and env.handle_id) or (level == "handle" and not env.handle_id):
        raise JanusError.answering(env, ErrorCode.INVALID_REQUEST_PATH, _unhandled(env))
    ids = {"transaction": env.transaction, "session_id": env.session_id, "handle_id": env.handle_id}
    return _PARSERS[env.verb](env, ids)


def _attach(env: Envelope, ids: dict[str, Any]) -> AttachRequest:
    _validate(env.raw, _ATTACH_FIELDS, transaction=env.transaction, session_id=env.session_id)
    plugin = env.raw["plugin"]
    if plugin != PLUGIN_VIDEOCALL:  # janus_plugin_find: exact, case-sensitive
        raise JanusError.answering(env, ErrorCode.PLUGIN_NOT_FOUND, f"No such plugin '{quote(plugin)}'")
    return AttachRequest(**ids, plugin=plugin, opaque_id=env.raw.get("opaque_id"))


def _message(env: Envelope, ids: dict[str, Any]) -> MessageRequest:
    _validate(env.raw, _BODY_FIELDS, transaction=env.transaction, session_id=env.session_id)
    jsep = _jsep(env, env.raw["jsep"]) if "jsep" in env.raw else None
    return MessageRequest(**ids, body=env.raw["body"], jsep=jsep)


def _jsep(env: Envelope, value: Any) -> Jsep:
    """The jsep checks of janus_process_incoming_request, in its order: 455, 456/467, 464, 465."""
    refuse = partial(JanusError.answering, env)
    if not isinstance(value, dict):
        raise refuse(ErrorCode.INVALID_JSON_OBJECT, "Invalid jsep object")
    _validate(
        value, _JSEP_FIELDS, transaction=env.transaction, session_id=env.session_id,
        missing="JSEP error: missing mandatory element ({})",
        invalid="JSEP error: invalid element type ({} should be {})",
    )  # fmt: skip
    kind = _ascii_lower(value["type"])
    if kind not in ("offer", "answer"):
        raise refuse(ErrorCode.JSEP_UNKNOWN_TYPE, f"JSEP error: unknown message type '{quote(value['type'])}'")
    problem = _sdp_problem(value["sdp"])
    if problem:
        raise refuse(ErrorCode.JSEP_INVALID_SDP, problem)
    rid_order: Literal["hml", "lmh"] = "lmh" if _ascii_lower(value.get("rid_order") or "") == "lmh" else "hml"
    return Jsep(
        type="offer" if kind == "offer" else "answer", sdp=value["sdp"], trickle=value.get("trickle"),
        e2ee=value.get("e2ee"), force_relay=value.get("force_relay"), rid_order=rid_order,
    )  # fmt: skip


def _sdp_problem(sdp: str) -> str | None:
    """The line-level checks of janus_sdp_parse (sdp-utils.c), with its texts; the full
    parse is the relay's. Plus our size bound, what one IPC message carries."""
    if len(sdp.encode("utf-8")) > MAX_SDP:
        return f"Invalid SDP (larger than {MAX_SDP} bytes)"
    if not sdp.startswith("v="):
        return "Invalid SDP (doesn't start with v=)"
    kinds = set()
    for raw_line in sdp.split("\n"):
        line = raw_line.split("\r", 1)[0]
        data = line.encode("utf-8")
        if not data:
            continue
        if len(data) < 3:
            return f"Invalid line ({len(data)} bytes): {quote(line)}"
        if data[1:2] != b"=":
            return f"Invalid line (2nd char is not '='): {quote(line)}"
        kinds.add(line[0])
    if not {"o", "s", "m"} <= kinds:
        return "Missing mandatory lines (o=, s= or m=)"
    return None


def _trickle(env: Envelope, ids: dict[str, Any]) -> TrickleRequest:
    """janus_process_incoming_request's trickle checks, then janus_ice_trickle_parse's on
    each candidate. Janus skips the latter while no SDP has arrived; we always check."""
    raw, refuse = env.raw, partial(JanusError.answering, env)
    if "candidate" not in raw and "candidates" not in raw:
        raise refuse(_MISSING, "Missing mandatory element (candidate|candidates)")
    if "candidate" in raw and "candidates" in raw:
        raise refuse(ErrorCode.INVALID_JSON, "Can't have both candidate and candidates")
    items = [raw["candidate"]] if "candidate" in raw else raw["candidates"]
    if not isinstance(items, list):
        raise refuse(_TYPE, "candidates is not an array")
    if len(items) > MAX_TRICKLE_CANDIDATES:
        most = MAX_TRICKLE_CANDIDATES
        raise refuse(_TYPE, f"Invalid element type (candidates should be an array of at most {most} candidates)")
    candidates: list[IceCandidate] = []
    completed = False
    for item in items:
        if item is None or (isinstance(item, dict) and "completed" in item):
            completed = True  # Janus: a null candidate, or any "completed" key, ends gathering
            continue
        if not isinstance(item, dict):
            raise refuse(_TYPE, "Invalid element type (candidate should be an object)")
        problem = _candidate_problem(item)
        if problem:
            raise refuse(*problem)
        try:  # the relay takes what IceCandidate takes: bound it here, with a readable error
            known = {key: item[key] for key in IceCandidate.model_fields if key in item}
            candidates.append(IceCandidate.model_validate(known))
        except ValidationError as exc:
            field = ".".join(str(part) for part in exc.errors()[0]["loc"])
            raise refuse(_TYPE, f"Trickle error: invalid element ({field} is out of bounds)") from None
    return TrickleRequest(**ids, candidates=candidates, completed=completed)


def _candidate_problem(item: dict[str, Any]) -> tuple[ErrorCode, str] | None:
    """janus_ice_trickle_parse (ice.c): its checks, order and words."""
    mid, mline = item.get("sdpMid"), item.get("sdpMLineIndex")
    if "sdpMid" in item and not isinstance(mid, str):
        return _TYPE, "Trickle error: invalid element type (sdpMid should be a string)"
    if "sdpMLineIndex" in item and not (_is_int(mline) and mline >= 0):
        return _TYPE, "Trickle error: invalid element type (sdpMLineIndex should be a positive integer)"
    if "sdpMid" not in item and "sdpMLineIndex" not in item:
        return _MISSING, "Trickle error: missing mandatory element (sdpMid or sdpMLineIndex)"
    if "candidate" not in item:
        return _MISSING, "Trickle error: missing mandatory element (candidate)"
    if not isinstance(item["candidate"], str):
        return _TYPE, "Trickle error: invalid element type (candidate should be a string)"
    return None


_SESSIONLESS = frozenset({"info", "ping", "create"})
#: Where each session-level verb may be used: "session" (no handle), "handle", or "any".
_LEVEL: dict[str, str] = {
    "keepalive": "any", "claim": "any", "attach": "session", "destroy": "session",
    "detach": "handle", "hangup": "handle", "message": "handle", "trickle": "handle",
}  # fmt: skip
_PARSERS: dict[str, Callable[[Envelope, dict[str, Any]], Request]] = {
    "info": lambda env, ids: InfoRequest(**ids),
    "ping": lambda env, ids: PingRequest(**ids),
    "create": lambda env, ids: CreateRequest(**ids, id=env.raw.get("id") or None),  # id 0: "pick one"
    "keepalive": lambda env, ids: KeepaliveRequest(**ids),
    "claim": lambda env, ids: ClaimRequest(**ids),
    "attach": _attach,
    "destroy": lambda env, ids: DestroyRequest(**ids),
    "detach": lambda env, ids: DetachRequest(**ids),
    "hangup": lambda env, ids: HangupRequest(**ids),
    "message": _message,
    "trickle": _trickle,
}
