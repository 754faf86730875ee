"""The Janus Admin API, pure: a frame becomes ONE typed admin command or ONE :class:`JanusError`,
and every answer's envelope is built here.

Mirrors ``janus_process_incoming_admin_request`` (janus.c), its checks in its order:

1. 454 not JSON; 455 not an object; 456/467 ``transaction``, ``janus`` (no transaction echoed);
2. no session and no handle: ``info`` and ``ping`` need no secret; then ``admin_secret``
   (403, compared in constant time); then the server-wide verbs (``get_status``,
   ``set_session_timeout``, ``accept_new_sessions``, ``list_sessions``, the token verbs),
   anything else 457 "Unhandled request '<verb>' at this path";
3. a handle without a session, or a handle id 0: 458 (Janus's code for both);
4. ``admin_secret`` (403); 458 "No such session <id>"; 459 "No such handle <h> in session <s>";
5. on a session: ``destroy_session``, ``set_session_timeout`` (that session's own),
   ``list_handles``; on a handle: ``detach_handle``, ``hangup_webrtc``, ``handle_info``;
   anything else 457.

The secret is never echoed, logged or put in an error. Which sessions and handles exist is
asked through two functions the adapter passes in, so parsing stays free of state.

Differs from Janus, on purpose: a ``session_id``/``handle_id`` that is not a non-negative
integer is refused (467) where Janus silently reads it as 0; a token is at most
``MAX_TOKEN`` characters and ``add_token`` names at most ``MAX_PLUGINS`` plugins. The verbs
that tune Janus's own machinery (log levels, lock and refcount debugging, NACK queues,
packet captures, event handlers, loggers, STUN tests) have no counterpart here and are
answered 457, like any verb Janus does not know, rather than accepted and ignored.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.messages import CallStatsResult, LegStats
from signaling.janus_api import JanusError
from signaling.janus_errors import STORED_TOKENS_DISABLED, ErrorCode, quote
from signaling.strict_json import JsonError, loads

__all__ = [
    "ADMIN_PROTOCOL", "MAX_TOKEN", "MAX_PLUGINS", "Info", "Ping", "GetStatus",
    "ListSessions", "AcceptNewSessions", "SetSessionTimeout", "AddToken", "ListTokens", "RemoveToken",
    "ListHandles", "DestroySession", "DetachHandle", "HangupWebrtc", "HandleInfo", "AdminCommand",
    "parse_admin", "success", "status", "handle_info", "webrtc_summary", "legs_summary", "janus_log_level",
]

#: The WebSocket subprotocol of Janus's admin transport.
ADMIN_PROTOCOL = "janus-admin-protocol"
#: Characters of a stored token (ours: Janus takes any length).
MAX_TOKEN = 1024
#: Plugins one ``add_token`` may name (ours: Janus takes any number).
MAX_PLUGINS = 16


# --- the commands ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Command:
    transaction: str


@dataclass(frozen=True, slots=True)
class Info(_Command):
    """``info``: the server's description, as the Janus API's ``info``."""


@dataclass(frozen=True, slots=True)
class Ping(_Command):
    """``ping``: answered ``pong``."""


@dataclass(frozen=True, slots=True)
class GetStatus(_Command):
    """``get_status``: the settings an operator may look at (and some change)."""


@dataclass(frozen=True, slots=True)
class ListSessions(_Command):
    """``list_sessions``: every session id of this node."""


@dataclass(frozen=True, slots=True)
class AcceptNewSessions(_Command):
    """``accept_new_sessions``: whether ``create`` is answered (else 472)."""

    accept: bool


@dataclass(frozen=True, slots=True)
class SetSessionTimeout(_Command):
    """``set_session_timeout``: the default for every session (``session_id`` None, seconds,
    0 = never), or one session's own (-1 = back to the default)."""

    timeout: int
    session_id: int | None = None


@dataclass(frozen=True, slots=True)
class AddToken(_Command):
    """``add_token``: store ``token``, allowed ``plugins`` (None: every plugin we have)."""

    token: str
    plugins: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class ListTokens(_Command):
    """``list_tokens``: every stored token and its plugins."""


@dataclass(frozen=True, slots=True)
class RemoveToken(_Command):
    """``remove_token``: forget ``token``."""

    token: str


@dataclass(frozen=True, slots=True)
class ListHandles(_Command):
    session_id: int


@dataclass(frozen=True, slots=True)
class DestroySession(_Command):
    """``destroy_session``: the session and its handles go, as if its client destroyed it."""

    session_id: int


@dataclass(frozen=True, slots=True)
class DetachHandle(_Command):
    """``detach_handle``: the handle goes, as if its client detached it."""

    session_id: int
    handle_id: int


@dataclass(frozen=True, slots=True)
class HangupWebrtc(_Command):
    """``hangup_webrtc``: the handle's PeerConnection closes (its call ends)."""

    session_id: int
    handle_id: int


@dataclass(frozen=True, slots=True)
class HandleInfo(_Command):
    """``handle_info``: what the core and the plugin know of one handle."""

    session_id: int
    handle_id: int
    plugin_only: bool = False


AdminCommand = (
    Info | Ping | GetStatus | ListSessions | AcceptNewSessions | SetSessionTimeout | AddToken | ListTokens
    | RemoveToken | ListHandles | DestroySession | DetachHandle | HangupWebrtc | HandleInfo
)  # fmt: skip


# --- parsing -----------------------------------------------------------------------------------

_MISSING, _TYPE = ErrorCode.MISSING_MANDATORY_ELEMENT, ErrorCode.INVALID_ELEMENT_TYPE
_KINDS: dict[str, Callable[[Any], bool]] = {
    "a string": lambda value: isinstance(value, str),
    "a boolean": lambda value: isinstance(value, bool),
    "an array": lambda value: isinstance(value, list),
    "an integer": lambda value: type(value) is int,
    "a positive integer": lambda value: type(value) is int and value >= 0,
}


def _field(raw: Mapping[str, Any], name: str, kind: str, *, required: bool, transaction: str | None,
           session_id: int | None) -> Any:
    """JANUS_VALIDATE_JSON_OBJECT for one field: 456 when missing and required, 467 when of
    another kind (a JSON null is present, of the wrong kind); the value or None."""
    if name not in raw:
        if required:
            raise JanusError(_MISSING, f"Missing mandatory element ({name})", transaction=transaction,
                             session_id=session_id)
        return None
    value = raw[name]
    if not _KINDS[kind](value):
        raise JanusError(_TYPE, f"Invalid element type ({name} should be {kind})", transaction=transaction,
                         session_id=session_id)
    return value


def _id(raw: Mapping[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise JanusError(_TYPE, f"Invalid element type ({name} should be a positive integer)")
    return value


def _secret_ok(raw: Mapping[str, Any], secret: str) -> bool:
    """``janus_strcmp_const_time``: the request's ``admin_secret`` against ours."""
    given = raw.get("admin_secret")
    return isinstance(given, str) and hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))


def _unhandled(verb: str, transaction: str, session_id: int | None) -> JanusError:
    return JanusError(ErrorCode.INVALID_REQUEST_PATH, f"Unhandled request '{quote(verb)}' at this path",
                      transaction=transaction, session_id=session_id)


def parse_admin(
    frame: str | bytes,
    *,
    secret: str,
    has_session: Callable[[int], bool],
    has_handle: Callable[[int, int], bool],
    stored_tokens: bool,
    max_depth: int = 32,
) -> AdminCommand:
    """One admin request, checked as Janus checks it (module docstring), or a JanusError.
    ``stored_tokens``: whether token auth with stored tokens is on (the token verbs' 490)."""
    try:
        loaded = loads(frame, max_depth=max_depth)
    except JsonError as exc:
        raise JanusError(ErrorCode.INVALID_JSON, f"Invalid Janus API request - {exc}") from None
    if not isinstance(loaded, dict):
        raise JanusError(ErrorCode.INVALID_JSON_OBJECT, "JSON error: not an object")
    raw: dict[str, Any] = loaded
    session_id, handle_id = _id(raw, "session_id"), _id(raw, "handle_id")
    echoed = session_id or None
    transaction = _field(raw, "transaction", "a string", required=True, transaction=None, session_id=echoed)
    verb_text = _field(raw, "janus", "a string", required=True, transaction=None, session_id=echoed)
    verb = verb_text.lower() if verb_text.isascii() else verb_text  # Janus: strcasecmp

    if not session_id and not handle_id:
        if verb == "info":
            return Info(transaction)
        if verb == "ping":
            return Ping(transaction)
        if not _secret_ok(raw, secret):
            raise JanusError(ErrorCode.UNAUTHORIZED, transaction=transaction)
        return _server_wide(raw, verb, verb_text, transaction, stored_tokens)

    if not session_id or (handle_id is not None and handle_id < 1):
        raise JanusError(ErrorCode.SESSION_NOT_FOUND, transaction=transaction, session_id=echoed)
    if not _secret_ok(raw, secret):
        raise JanusError(ErrorCode.UNAUTHORIZED, transaction=transaction, session_id=session_id)
    if not has_session(session_id):
        raise JanusError(ErrorCode.SESSION_NOT_FOUND, f"No such session {session_id}", transaction=transaction,
                         session_id=session_id)
    if handle_id is None:
        return _on_session(raw, verb, verb_text, transaction, session_id)
    if not has_handle(session_id, handle_id):
        raise JanusError(ErrorCode.HANDLE_NOT_FOUND, f"No such handle {handle_id} in session {session_id}",
                         transaction=transaction, session_id=session_id)
    return _on_handle(raw, verb, verb_text, transaction, session_id, handle_id)


def _server_wide(raw: dict[str, Any], verb: str, verb_text: str, tx: str, stored_tokens: bool) -> AdminCommand:
    ids: dict[str, Any] = {"transaction": tx, "session_id": None}
    if verb == "get_status":
        return GetStatus(tx)
    if verb == "list_sessions":
        return ListSessions(tx)
    if verb == "set_session_timeout":
        return SetSessionTimeout(tx, _field(raw, "timeout", "a positive integer", required=True, **ids))
    if verb == "accept_new_sessions":
        return AcceptNewSessions(tx, _field(raw, "accept", "a boolean", required=True, **ids))
    if verb in ("add_token", "list_tokens", "remove_token"):
        if not stored_tokens:
            raise JanusError(ErrorCode.UNKNOWN, STORED_TOKENS_DISABLED, transaction=tx)
        if verb == "list_tokens":
            return ListTokens(tx)
        token = _field(raw, "token", "a string", required=True, **ids)
        if len(token) > MAX_TOKEN:
            raise JanusError(_TYPE, f"Invalid element type (token should be at most {MAX_TOKEN} characters)",
                             transaction=tx)
        if verb == "remove_token":
            return RemoveToken(tx, token)
        plugins = _field(raw, "plugins", "an array", required=False, **ids)
        if plugins is not None and len(plugins) > MAX_PLUGINS:
            raise JanusError(_TYPE, f"Invalid element type (plugins should be an array of at most {MAX_PLUGINS})",
                             transaction=tx)
        # Janus skips the entries that are not strings (janus_request_allow_token).
        named = tuple(name for name in plugins if isinstance(name, str)) if plugins else None
        return AddToken(tx, token, named)
    raise _unhandled(verb_text, tx, None)


def _on_session(raw: dict[str, Any], verb: str, verb_text: str, tx: str, session_id: int) -> AdminCommand:
    if verb == "destroy_session":
        return DestroySession(tx, session_id)
    if verb == "list_handles":
        return ListHandles(tx, session_id)
    if verb == "set_session_timeout":
        timeout = _field(raw, "timeout", "an integer", required=True, transaction=tx, session_id=session_id)
        if timeout < -1:
            raise JanusError(_TYPE, "Invalid element type (timeout should be a non-negative integer or -1)",
                             transaction=tx, session_id=session_id)
        return SetSessionTimeout(tx, timeout, session_id)
    raise _unhandled(verb_text, tx, session_id)


def _on_handle(raw: dict[str, Any], verb: str, verb_text: str, tx: str, session_id: int,
               handle_id: int) -> AdminCommand:
    if verb == "detach_handle":
        return DetachHandle(tx, session_id, handle_id)
    if verb == "hangup_webrtc":
        return HangupWebrtc(tx, session_id, handle_id)
    if verb == "handle_info":
        plugin_only = _field(raw, "plugin_only", "a boolean", required=False, transaction=tx, session_id=session_id)
        return HandleInfo(tx, session_id, handle_id, bool(plugin_only))
    raise _unhandled(verb_text, tx, session_id)


# --- answers -----------------------------------------------------------------------------------


def success(transaction: str, session_id: int | None = None, **fields: Any) -> dict[str, Any]:
    """``{"janus": "success", ...}`` with the verb's own fields at the top level, as the Admin
    API answers (``janus_create_message`` order: janus, session_id, transaction)."""
    message: dict[str, Any] = {"janus": "success"}
    if session_id:
        message["session_id"] = session_id
    message["transaction"] = transaction
    message.update(fields)
    return message


#: Python's log levels as Janus numbers them (debug.h: 0 none ... 4 info ... 7 debug).
_JANUS_LOG_LEVELS = {"CRITICAL": 1, "ERROR": 2, "WARNING": 3, "INFO": 4, "DEBUG": 7}


def janus_log_level(level: str) -> int:
    return _JANUS_LOG_LEVELS.get(level.upper(), 4)


def status(transaction: str, *, token_auth: bool, session_timeout: int, log_level: str,
           accepting: bool) -> dict[str, Any]:
    """``get_status``: the subset of Janus's fields that mean something here, each true of us
    (no reclaim timeout: a session dies with its connection unless claimed first)."""
    return success(transaction, status={
        "token_auth": token_auth,
        "session_timeout": session_timeout,
        "reclaim_session_timeout": 0,
        "log_level": janus_log_level(log_level),
        "accepting_new_sessions": accepting,  # ours: Janus has only the verb that sets it
    })


def handle_info(
    transaction: str,
    session_id: int,
    handle_id: int,
    *,
    session_last_activity: float,
    session_timeout: int,
    created: float,
    now: float,
    plugin: str,
    plugin_specific: dict[str, Any] | None,
    flags: dict[str, bool],
    webrtc: dict[str, Any] | None,
    plugin_only: bool = False,
    transport: str = "janus.transport.websockets",
) -> dict[str, Any]:
    """``handle_info``'s answer, keys as Janus's. Times are the node's monotonic clock in
    microseconds, as Janus's (``janus_get_monotonic_time``)."""
    info: dict[str, Any] = {
        "session_id": session_id,
        "session_last_activity": int(session_last_activity * 1_000_000),
        "session_timeout": session_timeout,
        "session_transport": transport,
        "handle_id": handle_id,
        "created": int(created * 1_000_000),
        "current_time": int(now * 1_000_000),
        "plugin": plugin,
    }
    if plugin_specific is not None:
        info["plugin_specific"] = plugin_specific
    if not plugin_only:
        info["flags"] = flags
        if webrtc is not None:
            info["webrtc"] = webrtc
    return success(transaction, session_id, handle_id=handle_id, info=info)


def webrtc_summary(leg: LegStats) -> dict[str, Any]:
    """One leg as the relay sees it, in the shape of Janus's ``webrtc`` section
    (``janus_admin_peerconnection_summary``): ``ice.state``, and per m-line ``stats.in`` /
    ``stats.out`` and ``rtcp.main``. NACKs are counted per leg, so they sit beside ``media``."""
    media: dict[str, Any] = {}
    for index, medium in enumerate(leg.media):
        media[medium.mid] = {
            "type": medium.kind, "mindex": index, "mid": medium.mid,
            "rtcp": {"main": {"rtt": leg.rtt_ms, "lost": medium.lost, "jitter-local": medium.jitter_ms}},
            "stats": {"in": {"packets": medium.packets_in, "bytes": medium.bytes_in},
                      "out": {"packets": medium.packets_out, "bytes": medium.bytes_out}},
        }  # fmt: skip
    return {
        "ice": {"state": leg.state},
        "rtt_ms": leg.rtt_ms,
        "nacks": {"sent": leg.nacks_sent, "received": leg.nacks_received, "retransmitted": leg.retransmitted},
        "media": media,
    }


def legs_summary(stats: CallStatsResult) -> dict[str, Any]:
    """Both legs' counters, for the plugin's section: an operator sees the whole call at once."""
    def leg(one: LegStats) -> dict[str, Any]:
        summed = {key: sum(getattr(m, key) for m in one.media)
                  for key in ("packets_in", "bytes_in", "packets_out", "bytes_out", "lost")}
        return {"state": one.state, "rtt_ms": one.rtt_ms, **summed, "nacks_sent": one.nacks_sent,
                "nacks_received": one.nacks_received, "retransmitted": one.retransmitted}

    return {"caller": leg(stats.caller), "callee": leg(stats.callee)}
