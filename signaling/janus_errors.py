"""Every error code and reason text a Janus client can receive from us, declared once.

Core API codes and their default texts (Janus's ``apierror.h`` / ``apierror.c``), the
VideoCall plugin's codes (``janus_videocall.c``), the ``hangup`` reasons Janus uses, and
``quote``, which makes a client's string safe to echo inside any of these texts. The
parsers (``janus_api``, ``videocall_body``), the sessions table and the state machine raise
and send these; nothing here does I/O.

The reasons a relay worker reports for a leg it closed travel over the IPC channel and are
declared with that protocol (``shared.messages``); they are re-exported here so the
signalling side has one place to look.
"""

from __future__ import annotations

from enum import IntEnum

from shared.messages import CLOSE_PC, DTLS_ALERT, ICE_FAILED

__all__ = [
    "QUOTE_LIMIT", "ErrorCode", "DEFAULT_REASONS", "quote", "PluginCode", "PluginError",
    "CLOSE_PC", "DTLS_ALERT", "ICE_FAILED", "DETACH", "JANUS_API", "ADMIN_API", "EXPLICIT_HANGUP",
    "REMOTE_HANGUP", "PEER_HANGUP_DEFAULT", "USER_BUSY", "NO_ANSWER", "SHUTTING_DOWN", "REASON_LIMIT",
    "STORED_TOKENS_DISABLED", "TOKEN_NOT_REMOVED", "PAYLOAD_MISSING", "ADMIN_GUESSES_LIMITED",
]

#: Characters of a client's string quoted in an error text.
QUOTE_LIMIT = 64


class ErrorCode(IntEnum):
    """Janus core API error codes (apierror.h, ``JANUS_ERROR_*``)."""

    UNAUTHORIZED = 403
    UNAUTHORIZED_PLUGIN = 405
    TRANSPORT_SPECIFIC = 450
    MISSING_REQUEST = 452
    UNKNOWN_REQUEST = 453
    INVALID_JSON = 454
    INVALID_JSON_OBJECT = 455
    MISSING_MANDATORY_ELEMENT = 456
    INVALID_REQUEST_PATH = 457
    SESSION_NOT_FOUND = 458
    HANDLE_NOT_FOUND = 459
    PLUGIN_NOT_FOUND = 460
    PLUGIN_ATTACH = 461
    PLUGIN_MESSAGE = 462
    PLUGIN_DETACH = 463
    JSEP_UNKNOWN_TYPE = 464
    JSEP_INVALID_SDP = 465
    TRICKLE_INVALID_STREAM = 466
    INVALID_ELEMENT_TYPE = 467
    SESSION_CONFLICT = 468
    UNEXPECTED_ANSWER = 469
    TOKEN_NOT_FOUND = 470
    WEBRTC_STATE = 471
    NOT_ACCEPTING_SESSIONS = 472
    UNKNOWN = 490

    @property
    def reason(self) -> str:
        """The text Janus gives when it raises this code without one of its own."""
        return DEFAULT_REASONS[self]


#: janus_get_api_error (apierror.c).
DEFAULT_REASONS: dict[int, str] = {
    ErrorCode.UNAUTHORIZED: "Unauthorized request (wrong or missing secret/token)",
    ErrorCode.UNAUTHORIZED_PLUGIN: "Unauthorized access to plugin (token is not allowed to)",
    ErrorCode.TRANSPORT_SPECIFIC: "Transport specific error",
    ErrorCode.MISSING_REQUEST: "Missing request",
    ErrorCode.UNKNOWN_REQUEST: "Unknown request",
    ErrorCode.INVALID_JSON: "Invalid JSON",
    ErrorCode.INVALID_JSON_OBJECT: "Invalid JSON Object",
    ErrorCode.MISSING_MANDATORY_ELEMENT: "Missing mandatory element",
    ErrorCode.INVALID_REQUEST_PATH: "Invalid path for this request",
    ErrorCode.SESSION_NOT_FOUND: "Session not found",
    ErrorCode.HANDLE_NOT_FOUND: "Handle not found",
    ErrorCode.PLUGIN_NOT_FOUND: "Plugin not found",
    ErrorCode.PLUGIN_ATTACH: "Error attaching plugin",
    ErrorCode.PLUGIN_MESSAGE: "Error sending message to plugin",
    ErrorCode.PLUGIN_DETACH: "Error detaching from plugin",
    ErrorCode.JSEP_UNKNOWN_TYPE: "Unsupported JSEP type",
    ErrorCode.JSEP_INVALID_SDP: "Invalid SDP",
    ErrorCode.TRICKLE_INVALID_STREAM: "Invalid stream",
    ErrorCode.INVALID_ELEMENT_TYPE: "Invalid element type",
    ErrorCode.SESSION_CONFLICT: "Session ID already in use",
    ErrorCode.UNEXPECTED_ANSWER: "Unexpected ANSWER (no OFFER)",
    ErrorCode.TOKEN_NOT_FOUND: "Token not found",
    ErrorCode.WEBRTC_STATE: "Wrong WebRTC state",
    ErrorCode.NOT_ACCEPTING_SESSIONS: "Currently not accepting new sessions",
    ErrorCode.UNKNOWN: "Unknown error",
}


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """A client's string, safe to put in an error text: at most ``limit`` characters (then
    "..."), cut between characters, lone surrogates replaced, control characters escaped.

    Janus cuts such texts at a byte count, inside a UTF-8 character, and then drops the
    whole ``reason`` field; this cut keeps the text valid UTF-8 and bounded.
    """
    cut = text if len(text) <= limit else text[:limit] + "..."
    cut = cut.encode("utf-8", "replace").decode("utf-8")
    if cut.isprintable():
        return cut
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in cut)


class PluginCode(IntEnum):
    """VideoCall plugin error codes (janus_videocall.c, ``JANUS_VIDEOCALL_ERROR_*``)."""

    NO_MESSAGE = 470
    INVALID_JSON = 471
    INVALID_REQUEST = 472
    REGISTER_FIRST = 473
    INVALID_ELEMENT = 474
    MISSING_ELEMENT = 475
    USERNAME_TAKEN = 476
    ALREADY_REGISTERED = 477
    NO_SUCH_USERNAME = 478
    USE_ECHO_TEST = 479
    ALREADY_IN_CALL = 480
    NO_CALL = 481
    MISSING_SDP = 482
    INVALID_SDP = 483
    UNKNOWN_ERROR = 499


class PluginError(Exception):
    """A refusal to send back as ``{"videocall":"event","error_code":N,"error":text}``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = int(code)
        self.text = text


# --- Admin API reasons (janus.c, janus_http.c) -----------------------------------------------

#: A token verb while token auth with stored tokens is off (490).
STORED_TOKENS_DISABLED = "Stored-Token based authentication disabled"
#: ``remove_token`` of a token that is not stored (490).
TOKEN_NOT_REMOVED = "Error removing token"
#: An admin HTTP request without a body (454).
PAYLOAD_MISSING = "Request payload missing"
#: Ours: an address that sent too many wrong ``admin_secret`` (490), for a while.
ADMIN_GUESSES_LIMITED = "Rate limit: too many wrong admin_secret from this address, try again later"


# --- hangup reasons --------------------------------------------------------------------------

#: The core ``hangup`` a detaching handle in a call gets (``janus_ice_webrtc_hangup``).
DETACH = "Detach"
#: The core ``hangup`` after the client's own ``hangup`` request.
JANUS_API = "Janus API"
#: The core ``hangup`` after the Admin API's ``hangup_webrtc`` (janus.c).
ADMIN_API = "Admin API"
#: The plugin ``hangup`` event answering a ``hangup`` request.
EXPLICIT_HANGUP = "Explicit hangup"
#: The peer's plugin ``hangup`` when the other side's PeerConnection went away.
REMOTE_HANGUP = "Remote WebRTC hangup"
#: The peer's plugin ``hangup`` when a ``hangup`` request gave no reason.
PEER_HANGUP_DEFAULT = "We did the hangup"
#: The caller's plugin ``hangup`` when the callee is in another call.
USER_BUSY = "User busy"
#: Both sides' plugin ``hangup`` when a call rang for ``ring_timeout`` unanswered (ours: Janus
#: lets a call ring for ever).
NO_ANSWER = "No answer"
#: Both sides' plugin ``hangup`` when the node stops with the call still up (ours: Janus
#: closes the sockets without a word).
SHUTTING_DOWN = "Server shutting down"
#: Characters of a client's hangup reason passed on to the peer (then "...", as ``quote`` cuts).
REASON_LIMIT = 256
