"""The Janus API envelope: frames in, typed requests or one JanusError out, replies built.

The real Janus 1.1.2 trace is the truth for every code and text it shows; the rest follows
janus.c (janus_process_incoming_request) and is checked here code by code. No sockets.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from shared.messages import IceCandidate
from signaling import janus_api as api
from signaling import janus_replies as replies
from signaling.janus_api import JanusError, parse_envelope, parse_request
from signaling.janus_errors import ErrorCode, quote
from signaling.strict_json import JsonError, loads

TRACE = Path(__file__).resolve().parents[3] / "shared" / "janus" / "traces" / "videocall-session.jsonl"
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
S, H = 2492766517973988, 6621868218705775  # a session and a handle of the trace


def frame(**fields: Any) -> str:
    return json.dumps({"transaction": "t1", **fields})


def request(**fields: Any) -> api.Request:
    """Both stages, as the server runs them once the session/handle exist."""
    return parse_request(parse_envelope(frame(**fields)))


def refusal(text: str | bytes, **kwargs: Any) -> dict[str, Any]:
    """The error reply for a frame refused at either stage."""
    with pytest.raises(JanusError) as caught:
        parse_request(parse_envelope(text, **kwargs))
    return caught.value.reply()


def reason(text: str | bytes, **kwargs: Any) -> tuple[int, str]:
    error = refusal(text, **kwargs)["error"]
    return error["code"], error["reason"]


def message(**fields: Any) -> str:
    return frame(janus="message", session_id=S, handle_id=H, body={"request": "call"}, **fields)


def trickle(**fields: Any) -> str:
    return frame(janus="trickle", session_id=S, handle_id=H, **fields)


# --- the trace replayed: every core reply it shows ----------------------------------------------


def trace_exchanges() -> list[tuple[str, dict[str, Any] | None]]:
    """(frame sent, the core's reply to it) for every request in the trace."""
    lines = [json.loads(line) for line in TRACE.read_text().splitlines() if line.strip()]
    exchanges = []
    for i, line in enumerate(lines):
        if line["dir"] != "send":
            continue
        sent = line.get("raw") if "raw" in line else json.dumps(line["msg"])
        tx = line.get("msg", {}).get("transaction")
        reply = next(
            (
                {k: v for k, v in later["msg"].items() if k != "_used"}
                for later in lines[i + 1 :]
                if later["dir"] == "recv" and later["who"] == line["who"]
                and later["msg"]["janus"] in ("error", "success", "ack", "pong", "server_info")
                and (tx is None or later["msg"].get("transaction") == tx)
            ),
            None,
        )  # fmt: skip
        exchanges.append((sent, reply))
    return exchanges


needs_trace = pytest.mark.skipif(not TRACE.exists(), reason=f"the Janus trace is not at {TRACE}")


@needs_trace
def test_every_core_reply_of_the_trace_is_reproduced() -> None:
    sessions: set[int] = set()
    handles: set[int] = set()
    checked = 0
    for sent, reply in trace_exchanges():
        assert reply is not None, sent
        try:
            env = parse_envelope(sent)
            if env.session_id is not None and env.session_id not in sessions:
                raise JanusError.session_not_found(env)
            if env.handle_id is not None and env.handle_id not in handles:
                raise JanusError.handle_not_found(env)
            req = parse_request(env)
        except JanusError as exc:
            ours = exc.reply()
            if reply["error"]["code"] == 454:  # jansson's own words cannot be matched
                assert ours["error"]["reason"].startswith("Invalid Janus API request - <string>(1,")
                ours["error"]["reason"] = reply["error"]["reason"]
            assert ours == reply
            checked += 1
            continue
        assert reply["janus"] != "error", sent
        if reply["janus"] == "success" and "data" in reply:
            (sessions if isinstance(req, api.CreateRequest) else handles).add(reply["data"]["id"])
        if isinstance(req, api.DestroyRequest):
            sessions.discard(req.session_id or 0)
        if isinstance(req, api.DetachRequest):
            handles.discard(req.handle_id or 0)
    assert checked == 15  # every core error the trace holds


# --- 454: strict JSON --------------------------------------------------------------------------


def test_not_json_is_454_without_transaction_or_session() -> None:
    reply = refusal("{not json")
    assert reply == {"janus": "error", "error": {"code": 454, "reason": reply["error"]["reason"]}}
    assert reply["error"]["reason"].startswith("Invalid Janus API request - <string>(1,2): ")


@pytest.mark.parametrize(
    "value, what",
    [
        ("NaN", "invalid token near 'NaN'"),
        ("Infinity", "invalid token near 'Infinity'"),
        ("-Infinity", "invalid token near '-Infinity'"),
        ("1e400", "real number overflow near '1e400'"),
        ("-1e400", "real number overflow near '-1e400'"),
        (str(2**63), "too big integer near '9223372036854775808'"),
        (str(2**64), "too big integer near '18446744073709551616'"),
        (str(-(2**63) - 1), "too big negative integer near '-9223372036854775809'"),
        ("1" * 5000, "too big integer near '111111111111111111111111...'"),
        ('"\\ud800"', "invalid Unicode '\\uD800'"),
        ('"\\udc00x"', "invalid Unicode '\\uDC00'"),
        ('"a\\u0000b"', "\\u0000 is not allowed"),
    ],
)
def test_values_jansson_refuses_are_454(value: str, what: str) -> None:
    text = '{"janus": "ping", "transaction": "t", "x": [VALUE]}'.replace("VALUE", value)
    assert reason(text) == (454, f"Invalid Janus API request - <string>: {what}")


def test_int64_bounds_and_tiny_reals_are_accepted() -> None:
    text = frame(janus="message", session_id=S, handle_id=H, body={"hi": 2**63 - 1, "lo": -(2**63), "emoji": "😀"})
    req = parse_request(parse_envelope(text.replace('"emoji"', '"tiny": 1e-400, "emoji"')))
    assert isinstance(req, api.MessageRequest)
    assert req.body == {"hi": 2**63 - 1, "lo": -(2**63), "tiny": 0.0, "emoji": "😀"}


def test_strict_loads_returns_arrays_and_says_where() -> None:
    assert loads("[1, 2]") == [1, 2]
    with pytest.raises(JsonError) as caught:
        loads('{"a":\n  [1,, 2]}')
    assert (caught.value.where, caught.value.what) == ("<string>(2,6)", "Expecting value")


def test_escaped_surrogate_pair_is_one_character() -> None:
    text = '{"janus": "ping", "transaction": "\\ud83d\\ude00"}'
    assert parse_envelope(text).transaction == "\U0001f600"


@pytest.mark.parametrize(
    "data, where",
    [(b'{"janus": "\xff"}', "(1,12)"), (b'{"a": "\xc0\xaf"}', "(1,8)"), (b'{"a": "\xed\xa0\x80"}', "(1,8)")],
)
def test_bytes_that_are_not_utf8_are_454(data: bytes, where: str) -> None:
    code, text = reason(data)
    assert code == 454 and text.startswith(f"Invalid Janus API request - <string>{where}: unable to decode byte 0x")


def test_a_str_frame_holding_a_lone_surrogate_is_454() -> None:
    assert reason('{"janus": "ping", "transaction": "\ud800"}') == (
        454,
        "Invalid Janus API request - <string>(1,35): invalid Unicode U+D800",
    )


def test_utf8_bytes_frame_is_accepted() -> None:
    env = parse_envelope('{"janus": "ping", "transaction": "é€😀"}'.encode())
    assert env.transaction == "é€😀"


@pytest.mark.parametrize(
    "text, what",
    [
        ("", "<string>(1,1): '[' or '{' expected near end of file"),
        ("  42", "<string>(1,3): '[' or '{' expected near '42'"),
        ('"ping"', "<string>(1,1): '[' or '{' expected near '\"ping\"'"),
        ("\ufeff{}", "<string>(1,1): '[' or '{' expected near '\ufeff{}'"),
        ('{"janus": "ping"} {}', "<string>(1,19): Extra data"),
    ],
)
def test_a_frame_that_is_not_one_object_or_array_is_454(text: str, what: str) -> None:
    assert reason(text) == (454, f"Invalid Janus API request - {what}")


def test_duplicate_keys_last_one_wins_as_in_jansson() -> None:
    env = parse_envelope('{"janus": "info", "janus": "ping", "transaction": "a", "transaction": "b"}')
    assert isinstance(parse_request(env), api.PingRequest) and env.transaction == "b"


def test_nesting_at_the_bound_is_accepted_one_deeper_is_454() -> None:
    def nested(depth: int) -> str:
        return '{"janus": "ping", "transaction": "t", "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"

    assert isinstance(parse_envelope(nested(32)), api.Envelope)
    assert reason(nested(33)) == (454, "Invalid Janus API request - <string>(1,75): maximum nesting depth 32 exceeded")
    assert isinstance(parse_envelope(nested(40), max_depth=40), api.Envelope)


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_100k_deep_nesting_is_refused_fast_without_recursion(opener: str) -> None:
    start = time.perf_counter()
    code, text = reason(opener * 100_000)
    assert time.perf_counter() - start < 0.5
    column = 32 * len(opener) + 1  # the 33rd opener
    assert (code, text) == (454, f"Invalid Janus API request - <string>(1,{column}): maximum nesting depth 32 exceeded")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    tx = '[{"\\"' * 10_000
    assert parse_envelope(json.dumps({"janus": "ping", "transaction": tx})).transaction == tx


def test_unterminated_string_after_deep_brackets_is_still_bounded() -> None:
    assert reason('"' + "[" * 50)[0] == 454
    assert reason("[" * 20 + '"\\"' * 50_000)[0] == 454


def test_huge_strings_parse_and_quoted_texts_stay_bounded() -> None:
    verb = "x" * 1_000_000
    start = time.perf_counter()
    code, text = reason(frame(janus=verb, session_id=S))
    assert time.perf_counter() - start < 0.5
    assert (code, text) == (453, f"Unknown request '{'x' * 64}...'")


# --- 456 / 467: transaction, janus, id -----------------------------------------------------------


@pytest.mark.parametrize(
    "text, code, why",
    [
        ("[1, 2]", 456, "Missing mandatory element (transaction)"),
        ("{}", 456, "Missing mandatory element (transaction)"),
        ('{"janus": "ping"}', 456, "Missing mandatory element (transaction)"),
        ('{"transaction": "x1"}', 456, "Missing mandatory element (janus)"),
        ('{"transaction": 5, "janus": "ping"}', 467, "Invalid element type (transaction should be a string)"),
        ('{"transaction": null, "janus": "ping"}', 467, "Invalid element type (transaction should be a string)"),
        ('{"transaction": "x", "janus": ["ping"]}', 467, "Invalid element type (janus should be a string)"),
        (
            '{"transaction": "x", "janus": "create", "id": -1}',
            467,
            "Invalid element type (id should be a positive integer)",
        ),
        (
            '{"transaction": "x", "janus": "create", "id": 1.0}',
            467,
            "Invalid element type (id should be a positive integer)",
        ),
        (
            '{"transaction": "x", "janus": "create", "id": "7"}',
            467,
            "Invalid element type (id should be a positive integer)",
        ),
    ],
)
def test_envelope_fields_refused_without_transaction_as_janus(text: str, code: int, why: str) -> None:
    assert refusal(text) == {"janus": "error", "error": {"code": code, "reason": why}}


def test_envelope_field_errors_echo_an_integer_session_id() -> None:
    assert refusal('{"transaction": "x", "session_id": 12}') == {
        "janus": "error", "session_id": 12, "error": {"code": 456, "reason": "Missing mandatory element (janus)"},
    }  # fmt: skip


@pytest.mark.parametrize(
    "field, value",
    [("session_id", "12"), ("session_id", -3), ("session_id", 1.5), ("handle_id", "7"), ("handle_id", True)],
)
def test_ids_that_are_not_positive_integers_are_467(field: str, value: Any) -> None:
    fields = {"session_id": S, field: value}
    assert refusal(frame(janus="keepalive", **fields)) == {
        "janus": "error", "transaction": "t1",
        "error": {"code": 467, "reason": f"Invalid element type ({field} should be a positive integer)"},
    }  # fmt: skip


def test_null_or_zero_session_means_no_session_as_janus() -> None:
    assert isinstance(request(janus="create", session_id=None), api.CreateRequest)
    assert isinstance(request(janus="create", session_id=0, handle_id=0), api.CreateRequest)


def test_handle_without_session_is_458_session_not_found() -> None:
    assert refusal(frame(janus="message", handle_id=H)) == {
        "janus": "error", "transaction": "t1", "error": {"code": 458, "reason": "Session not found"},
    }  # fmt: skip


def test_handle_id_zero_is_459_handle_not_found() -> None:
    assert reason(frame(janus="detach", session_id=S, handle_id=0)) == (459, "Handle not found")


# --- 457 / 453: path and verb -------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["keepalive", "attach", "message", "bogus", "claim", "Destroy"])
def test_only_info_ping_create_without_session(verb: str) -> None:
    assert refusal(frame(janus=verb)) == {
        "janus": "error", "transaction": "t1",
        "error": {"code": 457, "reason": f"Unhandled request '{verb}' at this path"},
    }  # fmt: skip


@pytest.mark.parametrize(
    "verb, handle",
    [("attach", H), ("destroy", H), ("message", None), ("trickle", None), ("detach", None), ("hangup", None)],
)
def test_verb_at_the_wrong_level_is_457(verb: str, handle: int | None) -> None:
    text = frame(janus=verb, session_id=S, handle_id=handle, plugin=replies.PLUGIN_VIDEOCALL, body={}, candidate=None)
    assert refusal(text) == {
        "janus": "error", "session_id": S, "transaction": "t1",
        "error": {"code": 457, "reason": f"Unhandled request '{verb}' at this path"},
    }  # fmt: skip


@pytest.mark.parametrize("verb", ["bogus", "info", "ping", "create", ""])
def test_unknown_verb_with_a_session_is_453(verb: str) -> None:
    assert reason(frame(janus=verb, session_id=S)) == (453, f"Unknown request '{verb}'")


def test_verbs_match_case_insensitively_and_texts_keep_the_spelling() -> None:
    assert isinstance(request(janus="PiNg"), api.PingRequest)
    assert parse_envelope(frame(janus="KeepAlive", session_id=S)).verb == "keepalive"
    assert reason(frame(janus="KEEPALIVE")) == (457, "Unhandled request 'KEEPALIVE' at this path")
    assert reason(frame(janus="\u212aeepalive", session_id=S))[0] == 453  # KELVIN SIGN is not ASCII "K"


def test_parse_request_refuses_a_hand_built_sessionless_envelope_it_cannot_serve() -> None:
    env = api.Envelope("message", "t", None, None, {"janus": "message", "transaction": "t"})
    with pytest.raises(JanusError) as caught:
        parse_request(env)
    assert caught.value.code == 457


# --- happy paths, one per verb --------------------------------------------------------------------


def test_info_ping_create() -> None:
    assert request(janus="info") == api.InfoRequest(transaction="t1")
    assert request(janus="ping") == api.PingRequest(transaction="t1")
    assert request(janus="create") == api.CreateRequest(transaction="t1", id=None)
    assert request(janus="create", id=0) == api.CreateRequest(transaction="t1", id=None)
    assert request(janus="create", id=42, apisecret="s", token="x") == api.CreateRequest(transaction="t1", id=42)


def test_attach() -> None:
    req = request(janus="attach", session_id=S, plugin="janus.plugin.videocall", opaque_id="conf-alice", token=7)
    assert req == api.AttachRequest(transaction="t1", session_id=S, plugin=replies.PLUGIN_VIDEOCALL, opaque_id="conf-alice")


def test_message_with_offer() -> None:
    req = request(
        janus="message",
        session_id=S,
        handle_id=H,
        body={"request": "call", "username": "bob"},
        jsep={"type": "OFFER", "sdp": SDP, "trickle": False, "simulcast": True},
    )
    assert isinstance(req, api.MessageRequest)
    assert req.body == {"request": "call", "username": "bob"}
    assert req.jsep == api.Jsep(type="offer", sdp=SDP, trickle=False)
    assert (req.session_id, req.handle_id, req.transaction) == (S, H, "t1")


def test_message_jsep_options() -> None:
    jsep = {"type": "answer", "sdp": SDP, "e2ee": True, "force_relay": False, "rid_order": "LMH"}
    req = request(janus="message", session_id=S, handle_id=H, body={}, jsep=jsep)
    assert isinstance(req, api.MessageRequest) and req.jsep == api.Jsep(
        type="answer", sdp=SDP, e2ee=True, force_relay=False, rid_order="lmh"
    )
    jsep["rid_order"] = "sideways"  # Janus falls back to hml
    req = request(janus="message", session_id=S, handle_id=H, body={}, jsep=jsep)
    assert isinstance(req, api.MessageRequest) and req.jsep is not None and req.jsep.rid_order == "hml"


CANDIDATE = {"candidate": "candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}


@pytest.mark.parametrize(
    "fields, candidates, completed",
    [
        ({"candidate": CANDIDATE}, [CANDIDATE], False),
        ({"candidate": {**CANDIDATE, "foo": 1}}, [CANDIDATE], False),
        ({"candidate": {"candidate": "c", "sdpMLineIndex": 1}}, [{"candidate": "c", "sdpMLineIndex": 1}], False),
        ({"candidate": {"completed": True}}, [], True),
        ({"candidate": None}, [], True),  # janus-client's end of candidates
        ({"candidates": []}, [], False),
        ({"candidates": [CANDIDATE, CANDIDATE, {"completed": True}]}, [CANDIDATE, CANDIDATE], True),
    ],
)
def test_trickle_forms(fields: dict[str, Any], candidates: list[dict[str, Any]], completed: bool) -> None:
    req = parse_request(parse_envelope(trickle(**fields)))
    assert req == api.TrickleRequest(
        transaction="t1", session_id=S, handle_id=H, completed=completed,
        candidates=[IceCandidate.model_validate(c) for c in candidates],
    )


@pytest.mark.parametrize(
    "verb, handle, kind",
    [
        ("keepalive", None, api.KeepaliveRequest),
        ("keepalive", H, api.KeepaliveRequest),  # Janus acks a keepalive on a handle too
        ("claim", None, api.ClaimRequest),
        ("destroy", None, api.DestroyRequest),
        ("detach", H, api.DetachRequest),
        ("hangup", H, api.HangupRequest),
    ],
)
def test_bare_verbs(verb: str, handle: int | None, kind: Any) -> None:
    assert request(janus=verb, session_id=S, handle_id=handle) == kind(transaction="t1", session_id=S, handle_id=handle)


# --- verb fields: attach, message, jsep, trickle ------------------------------------------------


@pytest.mark.parametrize(
    "fields, code, why",
    [
        ({}, 456, "Missing mandatory element (plugin)"),
        ({"plugin": 5}, 467, "Invalid element type (plugin should be a string)"),
        ({"plugin": replies.PLUGIN_VIDEOCALL, "opaque_id": 5}, 467, "Invalid element type (opaque_id should be a string)"),
        (
            {"plugin": replies.PLUGIN_VIDEOCALL, "loop_index": -1},
            467,
            "Invalid element type (loop_index should be a positive integer)",
        ),
        ({"plugin": "janus.plugin.nope"}, 460, "No such plugin 'janus.plugin.nope'"),
        ({"plugin": "JANUS.PLUGIN.VIDEOCALL"}, 460, "No such plugin 'JANUS.PLUGIN.VIDEOCALL'"),
        ({"plugin": "€" * 200}, 460, f"No such plugin '{'€' * 64}...'"),
    ],
)
def test_attach_refusals(fields: dict[str, Any], code: int, why: str) -> None:
    assert reason(frame(janus="attach", session_id=S, **fields)) == (code, why)


@pytest.mark.parametrize(
    "fields, code, why",
    [
        ({"body": None}, 467, "Invalid element type (body should be an object)"),
        ({"body": [], "jsep": "x"}, 467, "Invalid element type (body should be an object)"),  # body first
        ({"jsep": None}, 455, "Invalid jsep object"),
        ({"jsep": [SDP]}, 455, "Invalid jsep object"),
        ({"jsep": {"sdp": SDP}}, 456, "JSEP error: missing mandatory element (type)"),
        ({"jsep": {"type": "offer"}}, 456, "JSEP error: missing mandatory element (sdp)"),
        ({"jsep": {"type": 1, "sdp": SDP}}, 467, "JSEP error: invalid element type (type should be a string)"),
        (
            {"jsep": {"type": "offer", "sdp": SDP, "trickle": "yes"}},
            467,
            "JSEP error: invalid element type (trickle should be a boolean)",
        ),
        (
            {"jsep": {"type": "offer", "sdp": SDP, "rid_order": 1}},
            467,
            "JSEP error: invalid element type (rid_order should be a string)",
        ),
        (
            {"jsep": {"type": "offer", "sdp": SDP, "e2ee": 1}},
            467,
            "JSEP error: invalid element type (e2ee should be a boolean)",
        ),
        (
            {"jsep": {"type": "pranswer", "sdp": "garbage"}},
            464,
            "JSEP error: unknown message type 'pranswer'",
        ),  # type before SDP
        ({"jsep": {"type": "offer", "sdp": ""}}, 465, "Invalid SDP (doesn't start with v=)"),
        ({"jsep": {"type": "offer", "sdp": "v=0\r\nx\r\n"}}, 465, "Invalid line (1 bytes): x"),
        ({"jsep": {"type": "offer", "sdp": "v=0\r\nhello\r\n"}}, 465, "Invalid line (2nd char is not '='): hello"),
        (
            {"jsep": {"type": "offer", "sdp": "v=0\r\ns=-\r\nm=audio 9 RTP/AVP 0\r\n"}},
            465,
            "Missing mandatory lines (o=, s= or m=)",
        ),
        ({"jsep": {"type": "offer", "sdp": SDP + "a=x\r\n" * 20_000}}, 465, "Invalid SDP (larger than 65536 bytes)"),
    ],
)
def test_message_refusals_in_janus_order(fields: dict[str, Any], code: int, why: str) -> None:
    text = frame(janus="message", session_id=S, handle_id=H, **{"body": {}, **fields})
    assert refusal(text) == {
        "janus": "error",
        "session_id": S,
        "transaction": "t1",
        "error": {"code": code, "reason": why},
    }


def test_message_without_body_is_456() -> None:
    assert reason(frame(janus="message", session_id=S, handle_id=H)) == (456, "Missing mandatory element (body)")


@pytest.mark.parametrize(
    "fields, code, why",
    [
        ({}, 456, "Missing mandatory element (candidate|candidates)"),
        ({"candidate": CANDIDATE, "candidates": []}, 454, "Can't have both candidate and candidates"),
        ({"candidates": CANDIDATE}, 467, "candidates is not an array"),
        (
            {"candidates": [CANDIDATE] * 65},
            467,
            "Invalid element type (candidates should be an array of at most 64 candidates)",
        ),
        (
            {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"},
            467,
            "Invalid element type (candidate should be an object)",
        ),
        ({"candidates": [CANDIDATE, 5]}, 467, "Invalid element type (candidate should be an object)"),
        ({"candidate": {"candidate": "c"}}, 456, "Trickle error: missing mandatory element (sdpMid or sdpMLineIndex)"),
        ({"candidate": {"sdpMid": "0"}}, 456, "Trickle error: missing mandatory element (candidate)"),
        (
            {"candidate": {**CANDIDATE, "sdpMid": 0}},
            467,
            "Trickle error: invalid element type (sdpMid should be a string)",
        ),
        (
            {"candidate": {**CANDIDATE, "sdpMid": None}},
            467,
            "Trickle error: invalid element type (sdpMid should be a string)",
        ),
        (
            {"candidate": {**CANDIDATE, "sdpMLineIndex": -1}},
            467,
            "Trickle error: invalid element type (sdpMLineIndex should be a positive integer)",
        ),
        (
            {"candidate": {**CANDIDATE, "candidate": 5}},
            467,
            "Trickle error: invalid element type (candidate should be a string)",
        ),
        (
            {"candidates": [{**CANDIDATE, "candidate": "c" * 5000}]},
            467,
            "Trickle error: invalid element (candidate is out of bounds)",
        ),
        (
            {"candidate": {**CANDIDATE, "sdpMLineIndex": 300}},
            467,
            "Trickle error: invalid element (sdpMLineIndex is out of bounds)",
        ),
    ],
)
def test_trickle_refusals(fields: dict[str, Any], code: int, why: str) -> None:
    assert reason(trickle(**fields)) == (code, why)


# --- JanusError and the builders ------------------------------------------------------------------


def test_janus_error_reply_shapes_and_default_reasons() -> None:
    assert JanusError(ErrorCode.UNKNOWN).reply() == {
        "janus": "error",
        "error": {"code": 490, "reason": "Unknown error"},
    }
    assert JanusError(472, transaction="t", session_id=5).reply() == {
        "janus": "error", "session_id": 5, "transaction": "t",
        "error": {"code": 472, "reason": "Currently not accepting new sessions"},
    }  # fmt: skip
    assert JanusError(499).reason == "Unknown error"
    env = parse_envelope(frame(janus="message", session_id=S, handle_id=987654321))
    assert JanusError.session_not_found(env).reason == f"No such session {S}"
    assert JanusError.handle_not_found(env).reply() == {
        "janus": "error", "session_id": S, "transaction": "t1",
        "error": {"code": 459, "reason": f"No such handle 987654321 in session {S}"},
    }  # fmt: skip
    assert JanusError.answering(env, ErrorCode.PLUGIN_MESSAGE).reason == "Error sending message to plugin"


def test_error_codes_are_named_as_janus() -> None:
    assert ErrorCode(454).name == "INVALID_JSON" and int(ErrorCode.SESSION_CONFLICT) == 468
    assert ErrorCode.SESSION_CONFLICT.reason == "Session ID already in use"
    assert [c.value for c in ErrorCode] == [403, 405, 450, *range(452, 473), 490]


def trace_message(predicate: Any) -> dict[str, Any]:
    for line in TRACE.read_text().splitlines():
        msg = json.loads(line).get("msg", {"janus": None})
        if predicate(msg):
            return {k: v for k, v in msg.items() if k != "_used"}
    raise AssertionError("not in the trace")


@needs_trace
def test_builders_match_the_trace_byte_for_byte() -> None:
    a, b = 2492766517973988, 6036962362153311
    assert replies.success("f3c6dc48763d", data={"id": a}) == trace_message(
        lambda m: m.get("transaction") == "f3c6dc48763d" and m["janus"] == "success"
    )
    assert replies.success("f0d33336ec2f", a, {"id": H}) == trace_message(
        lambda m: m.get("transaction") == "f0d33336ec2f" and m["janus"] == "success"
    )
    assert replies.success("bbb44f2702e6", b) == trace_message(
        lambda m: m.get("transaction") == "bbb44f2702e6" and m["janus"] == "success"
    )
    assert replies.ack("55d234031670", a) == trace_message(
        lambda m: m.get("transaction") == "55d234031670" and m["janus"] == "ack"
    )
    assert replies.pong("88483ed5a190") == trace_message(lambda m: m["janus"] == "pong")
    data = {"videocall": "event", "result": {"list": []}}
    assert replies.plugin_event(a, H, data, "55d234031670") == trace_message(
        lambda m: m.get("transaction") == "55d234031670" and m["janus"] == "event"
    )
    update = trace_message(lambda m: m["janus"] == "event" and "jsep" in m and "transaction" not in m)
    assert (
        replies.plugin_event(update["session_id"], update["sender"], update["plugindata"]["data"], jsep=update["jsep"])
        == update
    )
    assert replies.webrtcup(a, H) == trace_message(lambda m: m["janus"] == "webrtcup")
    assert replies.media(a, H, "1", "video", True) == trace_message(lambda m: m["janus"] == "media")
    assert replies.hangup(b, 5305596457758461, "Close PC") == trace_message(
        lambda m: m["janus"] == "hangup" and m["session_id"] == b
    )
    assert replies.detached(b, 5305596457758461) == trace_message(lambda m: m["janus"] == "detached")


def test_other_notifications() -> None:
    assert replies.timeout(7) == {"janus": "timeout", "session_id": 7}
    assert replies.trickle(7, 8, {"completed": True}) == {
        "janus": "trickle",
        "session_id": 7,
        "sender": 8,
        "candidate": {"completed": True},
    }
    assert replies.media(7, 8, "0", "audio", False, seconds=1) == {
        "janus": "media", "session_id": 7, "sender": 8, "mid": "0", "type": "audio", "receiving": False, "seconds": 1,
    }  # fmt: skip
    assert replies.slowlink(7, 8, "1", "video", True, 12) == {
        "janus": "slowlink", "session_id": 7, "sender": 8, "mid": "1", "media": "video", "uplink": True, "lost": 12,
    }  # fmt: skip


@needs_trace
def test_server_info_has_janus_shape_and_only_videocall() -> None:
    info = replies.server_info("7c3d42403090", session_timeout=60.0)
    real = trace_message(lambda m: m["janus"] == "server_info")
    assert list(info)[:2] == ["janus", "transaction"] and info["transaction"] == "7c3d42403090"
    assert set(info) <= set(real)  # nothing Janus would not send
    for key in (
        "name",
        "version",
        "version_string",
        "session-timeout",
        "accepting-new-sessions",
        "plugins",
        "transports",
    ):
        assert key in info
    assert info["session-timeout"] == 60 and info["version"] == 100 and info["version_string"] == replies.SERVER_VERSION
    assert list(info["plugins"]) == ["janus.plugin.videocall"]
    assert set(info["plugins"]["janus.plugin.videocall"]) == set(real["plugins"]["janus.plugin.videocall"])


def test_dumps_is_compact_utf8_json() -> None:
    assert replies.dumps(replies.pong("é")) == '{"janus":"pong","transaction":"é"}'


# --- quote ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, quoted",
    [
        ("janus.plugin.nope", "janus.plugin.nope"),
        ("a" * 64, "a" * 64),
        ("a" * 65, "a" * 64 + "..."),
        ("é" * 100, "é" * 64 + "..."),
        ("😀" * 70, "😀" * 64 + "..."),
        ("a\ud800b", "a?b"),
        ("line\nbreak\x00", "line\\nbreak\\x00"),
    ],
)
def test_quote_cuts_between_characters_and_stays_utf8(text: str, quoted: str) -> None:
    assert quote(text) == quoted
    assert quote(text).encode("utf-8")


def test_quote_is_bounded_for_any_text() -> None:
    rng = random.Random(7)
    for _ in range(500):
        text = "".join(
            chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0, 0x110000)])) for _ in range(rng.randrange(200))
        )
        out = quote(text, limit=16)
        out.encode("utf-8")
        assert len(out) <= 16 * 10 + 3  # each character at most "\U0010ffff"


# --- property: only a Request or a JanusError, whatever arrives ---------------------------------


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [
        None,
        True,
        False,
        rng.randrange(-(2**70), 2**70),
        rng.random() * 10.0 ** rng.randrange(-5, 300),
        float("inf"),
        "",
        "offer",
        "v=0\r\n",
        "\ud800",
        "x" * rng.randrange(100),
    ]
    if depth < 4:
        choices += [
            [_random_json(rng, depth + 1) for _ in range(rng.randrange(3))],
            {rng.choice(KEYS): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))},
        ]
    return rng.choice(choices)


KEYS = [
    "janus",
    "transaction",
    "session_id",
    "handle_id",
    "body",
    "jsep",
    "type",
    "sdp",
    "candidate",
    "candidates",
    "plugin",
    "id",
    "completed",
    "sdpMid",
    "sdpMLineIndex",
    "trickle",
    "opaque_id",
]


def _mutate(rng: random.Random, text: str) -> str | bytes:
    data = bytearray(text.encode())
    for _ in range(rng.randrange(1, 4)):
        if not data:
            break
        at = rng.randrange(len(data))
        op = rng.randrange(4)
        if op == 0:
            data[at] = rng.randrange(256)
        elif op == 1:
            del data[at : at + rng.randrange(1, 8)]
        elif op == 2:
            data[at:at] = rng.choice(
                [b"[", b"{", b"]", b"}", b'"', b"\\", b",", b":", b"\\ud800", b"NaN", b"1e999", b"\xff", b"null"]
            )
        else:
            del data[at:]
    return bytes(data) if rng.random() < 0.5 else data.decode("utf-8", "surrogateescape")


def test_any_frame_yields_a_request_or_one_janus_error() -> None:
    rng = random.Random(20240611)
    seeds = [sent for sent, _ in trace_exchanges()] if TRACE.exists() else []
    seeds += [message(jsep={"type": "offer", "sdp": SDP}), trickle(candidates=[CANDIDATE, {"completed": True}])]
    seeds += [frame(janus="attach", session_id=S, plugin=replies.PLUGIN_VIDEOCALL), frame(janus="create", id=5)]
    outcomes = {"request": 0, "error": 0}
    for i in range(4000):
        if i % 3 == 0:
            fields = {rng.choice(KEYS): _random_json(rng) for _ in range(rng.randrange(6))}
            if rng.random() < 0.7:
                fields.update(
                    janus=rng.choice(["message", "trickle", "attach", "create", "keepalive", "x"]), transaction="t"
                )
            if rng.random() < 0.5:
                fields.update(session_id=S, handle_id=rng.choice([H, None]))
            try:
                candidate: str | bytes = json.dumps(fields)
            except (ValueError, UnicodeEncodeError):
                continue
        else:
            candidate = _mutate(rng, rng.choice(seeds))
        try:
            parsed = parse_request(parse_envelope(candidate))
        except JanusError as exc:
            assert exc.reply()["error"]["code"] in set(ErrorCode)  # noqa: PT017 - a fuzz run: either outcome is fine
            replies.dumps(exc.reply()).encode("utf-8")  # every reason is sendable
            outcomes["error"] += 1
        else:
            assert isinstance(parsed, api.Request)
            outcomes["request"] += 1
    assert outcomes["request"] > 100 and outcomes["error"] > 1000
