"""Every reply and notification envelope of the Janus API, built in one place.

Plain dict factories; key order follows Janus's (``janus_create_message``): janus,
session_id, transaction, then the rest. ``dumps`` is the one place they become text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

#: The plugin we are, in every event's ``plugindata``.
PLUGIN_VIDEOCALL = "janus.plugin.videocall"
SERVER_NAME = "VideoCall server (Janus API)"
SERVER_VERSION = "0.1.0"  # keep in step with pyproject.toml


def dumps(message: Mapping[str, Any]) -> str:
    """One reply or notification as the text of a WebSocket frame."""
    return dumps_bytes(message).decode()


def dumps_bytes(message: Mapping[str, Any]) -> bytes:
    """:func:`dumps`, UTF-8 encoded: what a WebSocket text frame carries, without a round
    trip through ``str``.

    ``orjson`` (C, several times cheaper than ``json.dumps``) writes what ``json.dumps`` with
    these options would, except a NaN or infinity, which it writes as ``null`` (jansson holds
    neither); what it cannot write (an integer key, an integer beyond 64 bits) goes through
    ``json.dumps``."""
    try:
        return orjson.dumps(message)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# Key order follows Janus's (janus_create_message): janus, session_id, transaction, then the rest.


def _envelope(kind: str, session_id: int | None = None, transaction: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"janus": kind}
    if session_id:
        message["session_id"] = session_id
    if transaction is not None:
        message["transaction"] = transaction
    return message


def error(code: int, reason: str, *, transaction: str | None = None, session_id: int | None = None) -> dict[str, Any]:
    return {**_envelope("error", session_id, transaction), "error": {"code": int(code), "reason": reason}}


def success(transaction: str, session_id: int | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    message = _envelope("success", session_id, transaction)
    if data is not None:
        message["data"] = data
    return message


def ack(transaction: str, session_id: int) -> dict[str, Any]:
    return _envelope("ack", session_id, transaction)


def pong(transaction: str) -> dict[str, Any]:
    return _envelope("pong", None, transaction)


def server_info(
    transaction: str,
    *,
    session_timeout: float,
    name: str = SERVER_NAME,
    version_string: str = SERVER_VERSION,
    server_name: str = "videocall",
    accepting_new_sessions: bool = True,
    reclaim_session_timeout: int = 0,
    candidates_timeout: int = 45,
    api_secret: bool = False,
    auth_token: bool = False,
) -> dict[str, Any]:
    """The ``server_info`` reply, shaped as Janus 1.1.2's (trace), VideoCall the only plugin."""
    numbers = re.match(r"(\d+)\.(\d+)\.(\d+)", version_string)
    major, minor, patch = (int(part) for part in numbers.groups()) if numbers else (0, 0, 0)
    return {
        **_envelope("server_info", None, transaction),
        "name": name,
        "version": major * 1000 + minor * 100 + patch,  # Janus's numbering: 1.1.2 is 1102
        "version_string": version_string,
        "author": "the videocall authors",
        "data_channels": True,
        "accepting-new-sessions": accepting_new_sessions,
        "session-timeout": int(session_timeout),
        "reclaim-session-timeout": reclaim_session_timeout,
        "candidates-timeout": candidates_timeout,
        "server-name": server_name,
        "api_secret": api_secret,
        "auth_token": auth_token,
        "event_handlers": False,
        "opaqueid_in_api": False,
        "transports": {
            "janus.transport.websockets": {"name": "WebSockets transport", "version_string": version_string},
            "janus.transport.http": {"name": "REST (HTTP/HTTPS) transport", "version_string": version_string},
        },
        "events": {},
        "loggers": {},
        "plugins": {
            PLUGIN_VIDEOCALL: {
                "name": "VideoCall plugin", "author": "the videocall authors",
                "description": "1:1 calls relayed through the server, the API of Janus's VideoCall plugin.",
                "version_string": "0.0.6", "version": 6,  # the Janus 1.1.2 plugin API we implement
            },
        },
    }  # fmt: skip


def plugin_event(
    session_id: int,
    sender: int,
    data: dict[str, Any],
    transaction: str | None = None,
    jsep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message = _envelope("event", session_id, transaction)
    message["sender"] = sender
    message["plugindata"] = {"plugin": PLUGIN_VIDEOCALL, "data": data}
    if jsep is not None:
        message["jsep"] = jsep
    return message


def _notice(kind: str, session_id: int, sender: int, **fields: Any) -> dict[str, Any]:
    return {**_envelope(kind, session_id), "sender": sender, **fields}


def webrtcup(session_id: int, sender: int) -> dict[str, Any]:
    return _notice("webrtcup", session_id, sender)


def media(
    session_id: int, sender: int, mid: str, kind: str, receiving: bool, seconds: int | None = None
) -> dict[str, Any]:
    extra = {} if seconds is None else {"seconds": seconds}
    return _notice("media", session_id, sender, mid=mid, type=kind, receiving=receiving, **extra)


def slowlink(session_id: int, sender: int, mid: str, kind: str, uplink: bool, lost: int) -> dict[str, Any]:
    return _notice("slowlink", session_id, sender, mid=mid, media=kind, uplink=uplink, lost=lost)


def hangup(session_id: int, sender: int, reason: str) -> dict[str, Any]:
    return _notice("hangup", session_id, sender, reason=reason)


def detached(session_id: int, sender: int) -> dict[str, Any]:
    return _notice("detached", session_id, sender)


def timeout(session_id: int) -> dict[str, Any]:
    return _envelope("timeout", session_id)


def trickle(session_id: int, sender: int, candidate: dict[str, Any]) -> dict[str, Any]:
    """A server candidate for the client (``{"completed": true}`` ends them)."""
    return _notice("trickle", session_id, sender, candidate=candidate)
