"""Janus's auth, pure: signed tokens, the order of the checks, and tokens that name a user.

The codes, texts and order are Janus 1.1.2's (janus.c ``janus_request_check_secret`` and the
``attach`` branch of ``janus_process_incoming_request``, auth.c ``janus_auth_check_signature``),
checked side by side against a live Janus with the same settings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

from signaling import janus_api as api
from signaling.auth import RequestAuth, encode_username, sign, verify_signed
from signaling.effects import Claim, Event
from signaling.janus_errors import ErrorCode
from signaling.videocall import VideoCall

SECRET = "t0ken-s3cret"
NOW = 1_800_000_000
VIDEOCALL = "janus.plugin.videocall"
UNAUTHORIZED = "Unauthorized request (wrong or missing secret/token)"
NO_PLUGIN = "Provided token can't access plugin 'janus.plugin.videocall'"


class Tokens:
    def __init__(self, table: dict[str, set[str]]) -> None:
        self.table = table

    def plugins_of(self, token: str) -> frozenset[str] | None:
        plugins = self.table.get(token)
        return frozenset(plugins) if plugins is not None else None


def env(**fields: Any) -> api.Envelope:
    return api.parse_envelope(json.dumps({"transaction": "tx", **fields}))


def janus_signed(secret: str, data: str) -> str:
    """What auth.c computes: base64(HMAC-SHA1(secret, data)), standard alphabet, padded."""
    return data + ":" + base64.b64encode(hmac.new(secret.encode(), data.encode(), hashlib.sha1).digest()).decode()


# --- signed tokens (janus_auth_check_signature) -------------------------------------------------


def test_sign_produces_janus_format() -> None:
    assert sign(SECRET, NOW, [VIDEOCALL]) == janus_signed(SECRET, f"{NOW},janus,{VIDEOCALL}")


def test_good_signed_token_is_valid_until_its_expiry_second() -> None:
    token = sign(SECRET, NOW, [VIDEOCALL, "janus.plugin.echotest"])
    signed = verify_signed(token, SECRET, NOW + 0.9)
    assert signed is not None and signed.plugins == (VIDEOCALL, "janus.plugin.echotest") and signed.username is None
    assert verify_signed(token, SECRET, NOW + 1) is None  # real_time > expiry_time


def test_expired_token_is_refused() -> None:
    assert verify_signed(sign(SECRET, NOW - 1, [VIDEOCALL]), SECRET, NOW) is None


def test_wrong_signature_is_refused() -> None:
    assert verify_signed(sign("another secret", NOW + 60, [VIDEOCALL]), SECRET, NOW) is None
    data, _, sig = sign(SECRET, NOW + 60, [VIDEOCALL]).partition(":")
    assert verify_signed(f"{data},janus.plugin.echotest:{sig}", SECRET, NOW) is None  # fields added after signing


def test_wrong_realm_is_refused() -> None:
    assert verify_signed(janus_signed(SECRET, f"{NOW + 60},other,{VIDEOCALL}"), SECRET, NOW) is None


@pytest.mark.parametrize("token", [
    "", "garbage", ":", f"{NOW + 60}:sig", janus_signed(SECRET, f"{NOW + 60}"), janus_signed(SECRET, ""),
    janus_signed(SECRET, f"{NOW + 60},janus") + ":more", janus_signed(SECRET, f"-5,janus,{VIDEOCALL}"),
    janus_signed(SECRET, f"soon,janus,{VIDEOCALL}"),  # strtoll reads 0: long expired
])  # fmt: skip
def test_malformed_token_is_refused(token: str) -> None:
    assert verify_signed(token, SECRET, NOW) is None


def test_expiry_is_read_as_strtoll_does() -> None:
    signed = verify_signed(janus_signed(SECRET, f" {NOW + 60}xyz,janus"), SECRET, NOW)
    assert signed is not None and signed.expiry == NOW + 60 and signed.plugins == ()


def test_token_without_plugins_is_valid_but_allows_none() -> None:
    signed = verify_signed(sign(SECRET, NOW + 60, []), SECRET, NOW)
    assert signed is not None and signed.plugins == ()


# --- tokens that name a user (ours) ------------------------------------------------------------


def test_user_field_is_urlsafe_base64_without_padding_inside_the_signed_text() -> None:
    token = sign(SECRET, NOW + 60, [VIDEOCALL], username="alice")
    assert token == janus_signed(SECRET, f"{NOW + 60},janus,{VIDEOCALL},user=YWxpY2U")
    signed = verify_signed(token, SECRET, NOW)
    assert signed is not None and signed.username == "alice" and signed.plugins == (VIDEOCALL,)


@pytest.mark.parametrize("name", ["bob", "Zoë 🦊", "a,b:c=d", "x" * 300])
def test_any_username_round_trips(name: str) -> None:
    assert "," not in encode_username(name)[5:] and ":" not in encode_username(name)
    signed = verify_signed(sign(SECRET, NOW + 60, [VIDEOCALL], username=name), SECRET, NOW)
    assert signed is not None and signed.username == name


def test_user_field_cannot_be_changed_without_breaking_the_signature() -> None:
    data, _, sig = sign(SECRET, NOW + 60, [VIDEOCALL], username="alice").partition(":")
    assert verify_signed(data.replace(encode_username("alice"), encode_username("bob")) + ":" + sig, SECRET, NOW) is None


@pytest.mark.parametrize("extra", ["user=YWxpY2U,user=Ym9i", "user=", "user=***", "user=YWxpY2U=", "user=_w"])
def test_bad_or_repeated_user_field_is_malformed(extra: str) -> None:
    assert verify_signed(janus_signed(SECRET, f"{NOW + 60},janus,{VIDEOCALL},{extra}"), SECRET, NOW) is None


# --- the order of checks and Janus's codes (janus_request_check_secret) ------------------------


def refused(error: api.JanusError | None, code: int, reason: str) -> bool:
    return error is not None and (error.code, error.reason) == (code, reason)


def test_auth_off_by_default_needs_nothing() -> None:
    auth = RequestAuth()
    assert auth.refusal(env(janus="create"), NOW) is None
    assert auth.attach_refusal(env(janus="attach", session_id=1, plugin=VIDEOCALL, token="x"), VIDEOCALL, NOW) is None
    assert auth.bound_username(env(janus="message", session_id=1, handle_id=2, body={}, token="x"), NOW) is None


@pytest.mark.parametrize("auth", [
    RequestAuth(api_secret="s3"), RequestAuth(token_auth=True, token_auth_secret=SECRET),
    RequestAuth(token_auth=True, tokens=Tokens({})), RequestAuth(api_secret="s3", token_auth=True, token_auth_secret=SECRET),
])  # fmt: skip
def test_info_and_ping_need_no_credentials_but_everything_else_does(auth: RequestAuth) -> None:
    assert auth.refusal(env(janus="info"), NOW) is None
    assert auth.refusal(env(janus="ping"), NOW) is None
    error = auth.refusal(env(janus="create"), NOW)
    assert refused(error, ErrorCode.UNAUTHORIZED, UNAUTHORIZED)
    assert error is not None and error.reply() == {
        "janus": "error", "transaction": "tx", "error": {"code": 403, "reason": UNAUTHORIZED},
    }
    # With a session: before the session is looked up (403, not 458), info included (Janus).
    for verb in ("keepalive", "attach", "destroy", "claim", "info"):
        error = auth.refusal(env(janus=verb, session_id=42), NOW)
        assert refused(error, 403, UNAUTHORIZED) and error is not None and error.session_id == 42
    assert refused(auth.refusal(env(janus="message", session_id=42, handle_id=7, body={}), NOW), 403, UNAUTHORIZED)


def test_draining_answers_create_with_472_before_403() -> None:
    auth = RequestAuth(api_secret="s3")
    assert auth.refusal(env(janus="create"), NOW, accepting_sessions=False) is None  # the server then says 472
    assert refused(auth.refusal(env(janus="keepalive", session_id=1), NOW, accepting_sessions=False), 403, UNAUTHORIZED)


def test_api_secret_must_match_exactly_and_be_a_string() -> None:
    auth = RequestAuth(api_secret="s3")
    assert auth.refusal(env(janus="create", apisecret="s3"), NOW) is None
    for wrong in ("s", "s3 ", "S3", "", 3, None, ["s3"]):
        assert refused(auth.refusal(env(janus="create", apisecret=wrong), NOW), 403, UNAUTHORIZED), wrong
    # A token means nothing while token_auth is off.
    assert refused(auth.refusal(env(janus="create", token=sign(SECRET, NOW + 60, [VIDEOCALL])), NOW), 403, UNAUTHORIZED)


def test_signed_token_auth() -> None:
    auth = RequestAuth(token_auth=True, token_auth_secret=SECRET)
    assert auth.refusal(env(janus="create", token=sign(SECRET, NOW + 60, [VIDEOCALL])), NOW) is None
    assert auth.refusal(env(janus="create", token=sign(SECRET, NOW + 60, [])), NOW) is None  # any valid token
    for bad in (sign(SECRET, NOW - 1, [VIDEOCALL]), sign("x", NOW + 60, [VIDEOCALL]), "garbage", 5):
        assert refused(auth.refusal(env(janus="create", token=bad), NOW), 403, UNAUTHORIZED)


def test_stored_token_auth() -> None:
    auth = RequestAuth(token_auth=True, tokens=Tokens({"good": {VIDEOCALL}, "bare": set()}))
    assert auth.refusal(env(janus="create", token="good"), NOW) is None
    assert auth.refusal(env(janus="create", token="bare"), NOW) is None
    assert refused(auth.refusal(env(janus="create", token="unknown"), NOW), 403, UNAUTHORIZED)
    # Stored mode takes no signed token, and signed mode no stored one: never both, as Janus.
    assert refused(auth.refusal(env(janus="create", token=sign(SECRET, NOW + 60, [VIDEOCALL])), NOW), 403, UNAUTHORIZED)
    signed_mode = RequestAuth(token_auth=True, token_auth_secret=SECRET, tokens=Tokens({"good": {VIDEOCALL}}))
    assert refused(signed_mode.refusal(env(janus="create", token="good"), NOW), 403, UNAUTHORIZED)


def test_with_api_secret_and_token_auth_either_suffices() -> None:
    auth = RequestAuth(api_secret="s3", token_auth=True, token_auth_secret=SECRET)
    good_token = sign(SECRET, NOW + 60, [VIDEOCALL])
    assert auth.refusal(env(janus="create", apisecret="s3"), NOW) is None
    assert auth.refusal(env(janus="create", token=good_token), NOW) is None
    assert auth.refusal(env(janus="create", apisecret="wrong", token=good_token), NOW) is None
    assert auth.refusal(env(janus="create", apisecret="s3", token="bad"), NOW) is None
    assert refused(auth.refusal(env(janus="create", apisecret="wrong", token="bad"), NOW), 403, UNAUTHORIZED)


# --- attach: 405 when the token does not allow the plugin --------------------------------------


def attach(**fields: Any) -> api.Envelope:
    return env(janus="attach", session_id=42, plugin=VIDEOCALL, **fields)


def test_signed_token_without_the_plugin_gets_405_on_attach() -> None:
    auth = RequestAuth(token_auth=True, token_auth_secret=SECRET)
    assert auth.attach_refusal(attach(token=sign(SECRET, NOW + 60, [VIDEOCALL])), VIDEOCALL, NOW) is None
    error = auth.attach_refusal(attach(token=sign(SECRET, NOW + 60, ["janus.plugin.echotest"])), VIDEOCALL, NOW)
    assert refused(error, ErrorCode.UNAUTHORIZED_PLUGIN, NO_PLUGIN)
    assert error is not None and error.reply()["session_id"] == 42
    # A user= field is no plugin: a token naming only a user may not attach.
    only_user = sign(SECRET, NOW + 60, [], username="alice")
    assert refused(auth.attach_refusal(attach(token=only_user), VIDEOCALL, NOW), 405, NO_PLUGIN)


def test_stored_token_without_the_plugin_gets_405_on_attach() -> None:
    auth = RequestAuth(token_auth=True, tokens=Tokens({"good": {VIDEOCALL}, "bare": set()}))
    assert auth.attach_refusal(attach(token="good"), VIDEOCALL, NOW) is None
    assert refused(auth.attach_refusal(attach(token="bare"), VIDEOCALL, NOW), 405, NO_PLUGIN)


def test_apisecret_does_not_excuse_a_token_without_the_plugin() -> None:
    """Janus checks the plugin for any token present, even when the apisecret let it in;
    a request with the apisecret and no token attaches."""
    auth = RequestAuth(api_secret="s3", token_auth=True, token_auth_secret=SECRET)
    assert auth.attach_refusal(attach(apisecret="s3"), VIDEOCALL, NOW) is None
    assert refused(auth.attach_refusal(attach(apisecret="s3", token="bad"), VIDEOCALL, NOW), 405, NO_PLUGIN)
    assert auth.attach_refusal(attach(apisecret="s3", token=7), VIDEOCALL, NOW) is None  # not a string: absent


# --- register: the username a signed token names ----------------------------------------------


def message(**fields: Any) -> api.Envelope:
    return env(janus="message", session_id=42, handle_id=7, body={"request": "register", "username": "x"}, **fields)


def test_bound_username_comes_only_from_a_valid_signed_token() -> None:
    auth = RequestAuth(api_secret="s3", token_auth=True, token_auth_secret=SECRET)
    assert auth.bound_username(message(token=sign(SECRET, NOW + 60, [VIDEOCALL], username="alice")), NOW) == "alice"
    assert auth.bound_username(message(token=sign(SECRET, NOW + 60, [VIDEOCALL])), NOW) is None
    assert auth.bound_username(message(apisecret="s3"), NOW) is None
    # An invalid token binds nothing (and is let in only by the apisecret, the backend's own key).
    assert auth.bound_username(message(apisecret="s3", token=sign("x", NOW + 60, [VIDEOCALL], username="a")), NOW) is None
    # Token auth off or stored: tokens bind no user.
    assert RequestAuth(api_secret="s3").bound_username(
        message(token=sign(SECRET, NOW + 60, [VIDEOCALL], username="alice")), NOW) is None


def test_videocall_register_of_another_name_than_the_bound_one_is_refused_with_474() -> None:
    plugin = VideoCall()
    plugin.attach(7)
    register = {"request": "register", "username": "bob"}
    assert plugin.message(7, register, None, "t1", "alice") == [Event(7, {
        "videocall": "event", "error_code": 474, "error": "Username 'bob' is not the one your token names",
    }, "t1")]
    assert plugin.message(7, {"request": "register", "username": "alice"}, None, "t2", "alice") == [Claim(7, "alice", "t2")]
    assert plugin.message(7, register, None, "t3") == [Claim(7, "bob", "t3")]  # no token naming a user: any name


def test_videocall_register_checks_come_in_janus_order_before_the_token() -> None:
    plugin = VideoCall()
    plugin.attach(7)
    (bad,) = plugin.message(7, {"request": "register"}, None, "t1", "alice")
    assert isinstance(bad, Event) and bad.data["error_code"] == 475  # missing username first
    plugin.claimed(7, "alice", True, "t2")
    (again,) = plugin.message(7, {"request": "register", "username": "bob"}, None, "t3", "alice")
    assert isinstance(again, Event) and again.data["error_code"] == 477  # already registered next


def test_the_readme_example_mints_tokens_we_accept() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("a token that names its holder"):]
    code = section[section.index("```python\n") + 10:section.index("```\n", section.index("```python\n") + 10)]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # our own README's example
    minted = namespace["videocall_token"](SECRET, "Zoë")
    signed = verify_signed(minted, SECRET, time.time())
    assert signed is not None and signed.username == "Zoë" and signed.plugins == (VIDEOCALL,)
