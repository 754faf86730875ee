"""Who may use the API: Janus's ``api_secret`` and token auth, and tokens that name their holder.

Pure: a request's envelope, the settings' secrets, a way to look stored tokens up and the
Unix time go in; ``None`` or the :class:`JanusError` to answer comes out. No sockets, no
files (``tokens.py`` keeps the stored tokens), no clock. The server asks three questions,
each where Janus asks it in ``janus_process_incoming_request`` (janus.c):

- :meth:`RequestAuth.refusal`, before any session lookup: 403 "Unauthorized request (wrong or
  missing secret/token)" unless the request carries the ``apisecret`` or a valid ``token``
  (either suffices when both are on; ``info`` and ``ping`` without a session need nothing;
  a ``create`` while not accepting sessions gets its 472 first, as Janus's does);
- :meth:`RequestAuth.attach_refusal`, once the plugin is known: 405 "Provided token can't
  access plugin '<plugin>'" when the request's token does not allow it;
- :meth:`RequestAuth.bound_username`, for a plugin ``message``: the one username a valid
  signed token lets its holder ``register`` (our extension, below), else ``None``.

Signed tokens (``token_auth_secret`` set; ``janus_auth_check_signature`` in auth.c) read
``<expiry>,janus,<plugin>[,<plugin>...]:<signature>``: the signature is the standard base64 of
the HMAC-SHA1, keyed by the secret, of everything before the first colon; ``janus`` is the
realm; ``expiry`` a Unix time in seconds (read as ``strtoll`` does; valid up to and
including that second). Without a secret, token auth uses the stored tokens instead, each
allowed a set of plugins; never both, as in Janus.

Beyond Janus: one more field ``user=<name in URL-safe base64, no padding>`` inside the signed
text names the only username the holder may register, e.g.
``1767225600,janus,janus.plugin.videocall,user=YWxpY2U:<signature>``. The signature covers it,
so it cannot be changed; Janus reads every field after the realm as a plugin name and simply
never matches this one, so the same token works unchanged on a real Janus. URL-safe base64
has no comma or colon, so any username fits. A token with two ``user=`` fields, or one that
does not decode to UTF-8 text, is malformed (403).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from shared.settings import Settings
from signaling.janus_api import Envelope, JanusError
from signaling.janus_errors import ErrorCode, quote

__all__ = [
    "REALM", "USER_FIELD", "SignedToken", "StoredTokens", "RequestAuth", "sign", "verify_signed",
    "encode_username",
]

#: The realm every Janus signed token names (``janus_auth_check_token`` passes "janus").
REALM = "janus"
#: Our extra signed field: the username the holder may register.
USER_FIELD = "user="
#: Requests that need no credentials, without a session (Janus answers them first).
_EXEMPT = frozenset({"info", "ping"})
_STRTOLL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


class StoredTokens(Protocol):
    """What the check needs from the token store (``signaling.tokens.TokenStore``)."""

    def plugins_of(self, token: str) -> frozenset[str] | None:
        """The plugins ``token`` may attach to, or ``None`` if it is not a stored token."""
        ...


@dataclass(frozen=True, slots=True)
class SignedToken:
    """A signed token whose signature, realm and expiry were good."""

    expiry: int
    plugins: tuple[str, ...]
    username: str | None


def encode_username(name: str) -> str:
    """The ``user=`` field naming ``name``."""
    return USER_FIELD + base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii").rstrip("=")


def sign(secret: str, expiry: int, plugins: Iterable[str], username: str | None = None) -> str:
    """Mint a signed token (what a web backend does; tests use it too)."""
    fields = [str(expiry), REALM, *plugins]
    if username is not None:
        fields.append(encode_username(username))
    data = ",".join(fields)
    return f"{data}:{_signature(secret, data)}"


def _signature(secret: str, data: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _strtoll(text: str) -> int:
    """C's ``strtoll(text, NULL, 10)``: leading digits after blanks and a sign, else 0."""
    match = _STRTOLL.match(text)
    return int(match.group(1)) if match else 0


def _decode_username(field: str) -> str | None:
    text = field[len(USER_FIELD):]
    try:
        name = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return name if name and encode_username(name) == field else None


def verify_signed(token: str, secret: str, now: float) -> SignedToken | None:
    """``janus_auth_check_signature``: the token if well-formed, unexpired, of realm ``janus``
    and signed with ``secret`` (compared in constant time); ``None`` otherwise."""
    data, colon, signature = token.partition(":")
    if not colon or not data:
        return None
    fields = data.split(",")
    if len(fields) < 2:
        return None
    expiry = _strtoll(fields[0])
    if expiry < 0 or int(now) > expiry:  # Janus compares whole seconds
        return None
    if fields[1] != REALM:
        return None
    if not hmac.compare_digest(signature.encode("utf-8"), _signature(secret, data).encode("utf-8")):
        return None
    plugins = tuple(field for field in fields[2:] if not field.startswith(USER_FIELD))
    users = [field for field in fields[2:] if field.startswith(USER_FIELD)]
    if len(users) > 1:
        return None
    username = _decode_username(users[0]) if users else None
    if users and username is None:
        return None
    return SignedToken(expiry, plugins, username)


def _text(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return value if isinstance(value, str) else None  # Janus: json_is_string, else absent


class RequestAuth:
    """The auth settings of one node and the three questions the server asks."""

    def __init__(
        self, *, api_secret: str = "", token_auth: bool = False, token_auth_secret: str = "",
        tokens: StoredTokens | None = None,
    ) -> None:
        self.api_secret = api_secret
        self.token_auth = token_auth
        self.token_auth_secret = token_auth_secret
        self.tokens = tokens

    @classmethod
    def from_settings(cls, settings: Settings, tokens: StoredTokens | None) -> RequestAuth:
        return cls(
            api_secret=settings.api_secret.get_secret_value(), token_auth=settings.token_auth,
            token_auth_secret=settings.token_auth_secret.get_secret_value(), tokens=tokens,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.api_secret) or self.token_auth

    @property
    def signed_mode(self) -> bool:
        return self.token_auth and bool(self.token_auth_secret)

    def _token_valid(self, token: str, now: float) -> bool:
        """``janus_auth_check_token``."""
        if self.signed_mode:
            return verify_signed(token, self.token_auth_secret, now) is not None
        return self.tokens is not None and self.tokens.plugins_of(token) is not None

    def refusal(self, env: Envelope, now: float, *, accepting_sessions: bool = True) -> JanusError | None:
        """``janus_request_check_secret``, where Janus calls it: after the envelope checks
        (``parse_envelope``), before the session is looked up."""
        if not self.enabled:
            return None
        if env.session_id is None and (env.verb in _EXEMPT or (env.verb == "create" and not accepting_sessions)):
            return None
        raw = env.raw
        if self.api_secret:
            secret = _text(raw, "apisecret")
            if secret is not None and hmac.compare_digest(secret.encode("utf-8"), self.api_secret.encode("utf-8")):
                return None
        if self.token_auth:
            token = _text(raw, "token")
            if token is not None and self._token_valid(token, now):
                return None
        return JanusError.answering(env, ErrorCode.UNAUTHORIZED)

    def attach_refusal(self, env: Envelope, plugin: str, now: float) -> JanusError | None:
        """``attach``'s plugin check: a request whose token (if any) cannot use ``plugin``
        gets 405, even when its ``apisecret`` let it in, as Janus's ``janus_auth_check_plugin``."""
        token = _text(env.raw, "token") if self.token_auth else None
        if token is None:
            return None
        if self.signed_mode:
            signed = verify_signed(token, self.token_auth_secret, now)
            allowed = signed is not None and plugin in signed.plugins
        else:
            plugins = self.tokens.plugins_of(token) if self.tokens is not None else None
            allowed = plugins is not None and plugin in plugins
        if allowed:
            return None
        return JanusError.answering(env, ErrorCode.UNAUTHORIZED_PLUGIN, f"Provided token can't access plugin '{quote(plugin)}'")

    def bound_username(self, env: Envelope, now: float) -> str | None:
        """The username the request's valid signed token names, if it names one."""
        token = _text(env.raw, "token") if self.signed_mode else None
        signed = verify_signed(token, self.token_auth_secret, now) if token is not None else None
        return signed.username if signed is not None else None
