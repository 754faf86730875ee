"""The Admin API's pure core: Janus's checks in Janus's order, each verb's command, the answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.messages import CallStatsResult, LegStats, MediumStats
from signaling import admin_api as admin
from signaling.janus_api import JanusError
from signaling.videocall import Call, HandleState, VideoCall
from signaling.videocall_query import query_session, recording_files

SECRET = "s3cret-admin"
SESSIONS = {11: {21, 22}}


def parse(request: dict[str, Any] | str, *, stored_tokens: bool = True) -> admin.AdminCommand:
    frame = request if isinstance(request, str) else json.dumps(request)
    return admin.parse_admin(frame, secret=SECRET, has_session=lambda s: s in SESSIONS,
                             has_handle=lambda s, h: h in SESSIONS.get(s, set()), stored_tokens=stored_tokens)


def refused(request: dict[str, Any] | str, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(JanusError) as caught:
        parse(request, **kwargs)
    return caught.value.reply()


def req(verb: str, **fields: Any) -> dict[str, Any]:
    return {"janus": verb, "transaction": "t1", "admin_secret": SECRET, **fields}


# --- the envelope ------------------------------------------------------------------------------


def test_not_json_not_an_object_and_missing_fields_carry_no_transaction() -> None:
    assert refused("{nope")["error"]["code"] == 454
    assert refused("[1]")["error"] == {"code": 455, "reason": "JSON error: not an object"}
    assert refused({"janus": "info"}) == {
        "janus": "error", "error": {"code": 456, "reason": "Missing mandatory element (transaction)"}}
    assert refused({"transaction": "t", "janus": 5})["error"] == {
        "code": 467, "reason": "Invalid element type (janus should be a string)"}
    assert refused({"transaction": "t", "janus": "list_handles", "session_id": "11"})["error"]["code"] == 467


def test_info_and_ping_need_no_secret() -> None:
    assert parse({"janus": "info", "transaction": "a"}) == admin.Info("a")
    assert parse({"janus": "PING", "transaction": "b"}) == admin.Ping("b")  # strcasecmp


@pytest.mark.parametrize("secret", [None, "wrong", 42, SECRET + "x", ""])
def test_a_wrong_or_missing_secret_is_403_everywhere(secret: Any) -> None:
    for extra in ({}, {"session_id": 11}, {"session_id": 11, "handle_id": 21}, {"session_id": 99}):
        request = {"janus": "list_sessions", "transaction": "t", **extra}
        if secret is not None:
            request["admin_secret"] = secret
        reply = refused(request)
        assert reply["error"] == {"code": 403, "reason": "Unauthorized request (wrong or missing secret/token)"}
        assert reply["transaction"] == "t" and reply.get("session_id") == extra.get("session_id")
        assert SECRET not in json.dumps(reply)


def test_the_secret_is_checked_before_the_session_is_looked_up() -> None:
    assert refused({"janus": "list_handles", "transaction": "t", "session_id": 99})["error"]["code"] == 403
    assert refused(req("list_handles", session_id=99))["error"] == {"code": 458, "reason": "No such session 99"}
    assert refused(req("handle_info", session_id=11, handle_id=99))["error"] == {
        "code": 459, "reason": "No such handle 99 in session 11"}


def test_a_handle_without_a_session_or_a_handle_zero_is_458_as_janus() -> None:
    assert refused(req("handle_info", handle_id=21))["error"] == {"code": 458, "reason": "Session not found"}
    assert refused(req("handle_info", session_id=11, handle_id=0))["error"]["code"] == 458


# --- verbs -------------------------------------------------------------------------------------


def test_server_wide_verbs() -> None:
    assert parse(req("get_status")) == admin.GetStatus("t1")
    assert parse(req("LIST_SESSIONS")) == admin.ListSessions("t1")
    assert parse(req("accept_new_sessions", accept=False)) == admin.AcceptNewSessions("t1", False)
    assert parse(req("set_session_timeout", timeout=30)) == admin.SetSessionTimeout("t1", 30)
    assert refused(req("set_session_timeout"))["error"] == {"code": 456, "reason": "Missing mandatory element (timeout)"}
    assert refused(req("set_session_timeout", timeout=-1))["error"] == {
        "code": 467, "reason": "Invalid element type (timeout should be a positive integer)"}
    assert refused(req("accept_new_sessions", accept="yes"))["error"]["code"] == 467


def test_unknown_and_janus_only_verbs_are_unhandled_at_their_path() -> None:
    for verb in ("set_log_level", "whatever", "destroy_session"):
        assert refused(req(verb))["error"] == {"code": 457, "reason": f"Unhandled request '{verb}' at this path"}
    assert refused(req("list_sessions", session_id=11))["error"]["code"] == 457
    assert refused(req("start_pcap", session_id=11, handle_id=21))["error"]["code"] == 457


def test_session_and_handle_verbs() -> None:
    assert parse(req("list_handles", session_id=11)) == admin.ListHandles("t1", 11)
    assert parse(req("destroy_session", session_id=11)) == admin.DestroySession("t1", 11)
    assert parse(req("set_session_timeout", session_id=11, timeout=-1)) == admin.SetSessionTimeout("t1", -1, 11)
    assert refused(req("set_session_timeout", session_id=11, timeout=-2))["error"] == {
        "code": 467, "reason": "Invalid element type (timeout should be a non-negative integer or -1)"}
    assert parse(req("detach_handle", session_id=11, handle_id=21)) == admin.DetachHandle("t1", 11, 21)
    assert parse(req("hangup_webrtc", session_id=11, handle_id=22)) == admin.HangupWebrtc("t1", 11, 22)
    assert parse(req("handle_info", session_id=11, handle_id=21, plugin_only=True)) == admin.HandleInfo("t1", 11, 21, True)
    assert refused(req("handle_info", session_id=11, handle_id=21, plugin_only=1))["error"]["code"] == 467


def test_token_verbs_need_stored_tokens() -> None:
    for verb in ("add_token", "list_tokens", "remove_token"):
        assert refused(req(verb, token="x"), stored_tokens=False)["error"] == {
            "code": 490, "reason": "Stored-Token based authentication disabled"}
    assert parse(req("add_token", token="abc")) == admin.AddToken("t1", "abc", None)
    assert parse(req("add_token", token="abc", plugins=["janus.plugin.videocall", 3])) == admin.AddToken(
        "t1", "abc", ("janus.plugin.videocall",))
    assert parse(req("list_tokens")) == admin.ListTokens("t1")
    assert parse(req("remove_token", token="abc")) == admin.RemoveToken("t1", "abc")
    assert refused(req("add_token"))["error"] == {"code": 456, "reason": "Missing mandatory element (token)"}
    assert refused(req("add_token", token="a", plugins="x"))["error"]["code"] == 467
    assert refused(req("add_token", token="a" * (admin.MAX_TOKEN + 1)))["error"]["code"] == 467
    assert refused(req("add_token", token="a", plugins=["p"] * (admin.MAX_PLUGINS + 1)))["error"]["code"] == 467


# --- answers -----------------------------------------------------------------------------------


def test_success_keeps_janus_key_order() -> None:
    assert list(admin.success("t", 5, handles=[1])) == ["janus", "session_id", "transaction", "handles"]
    assert admin.success("t", None, sessions=[]) == {"janus": "success", "transaction": "t", "sessions": []}


def leg(packets: int) -> LegStats:
    return LegStats(state="connected", rtt_ms=12.5, nacks_sent=2, nacks_received=3, retransmitted=1, media=[
        MediumStats(mid="0", kind="audio", packets_in=packets, bytes_in=10 * packets, packets_out=packets - 1,
                    bytes_out=9 * packets),
        MediumStats(mid="1", kind="video", packets_in=2 * packets, bytes_in=100, lost=4, jitter_ms=1.5)])


def test_handle_info_in_janus_shape_with_both_legs() -> None:
    stats = CallStatsResult(caller=leg(10), callee=leg(20))
    reply = admin.handle_info("t", 11, 21, session_last_activity=1.5, session_timeout=60, created=1.0, now=2.0,
                              plugin="janus.plugin.videocall", plugin_specific={"legs": admin.legs_summary(stats)},
                              flags={"ready": True}, webrtc=admin.webrtc_summary(stats.caller))
    info = reply["info"]
    assert (reply["janus"], reply["session_id"], reply["handle_id"]) == ("success", 11, 21)
    assert (info["created"], info["current_time"], info["session_last_activity"]) == (1_000_000, 2_000_000, 1_500_000)
    assert info["webrtc"]["media"]["1"]["rtcp"]["main"] == {"rtt": 12.5, "lost": 4, "jitter-local": 1.5}
    assert info["webrtc"]["media"]["0"]["stats"] == {"in": {"packets": 10, "bytes": 100}, "out": {"packets": 9, "bytes": 90}}
    assert info["plugin_specific"]["legs"]["callee"]["packets_in"] == 60
    assert info["plugin_specific"]["legs"]["caller"]["nacks_received"] == 3
    only = admin.handle_info("t", 11, 21, session_last_activity=1.5, session_timeout=60, created=1.0, now=2.0,
                             plugin="p", plugin_specific={}, flags={}, webrtc={}, plugin_only=True)["info"]
    assert "flags" not in only and "webrtc" not in only and only["plugin_specific"] == {}


def test_status_maps_the_log_level_to_janus_numbers() -> None:
    reply = admin.status("t", token_auth=False, session_timeout=60, log_level="DEBUG", accepting=True)
    assert reply["status"]["log_level"] == 7 and reply["status"]["session_timeout"] == 60


# --- the plugin's section ----------------------------------------------------------------------


def test_query_session_idle_and_in_call() -> None:
    plugin = VideoCall()
    plugin.handles[1] = HandleState(1, username="alice")
    plugin.handles[2] = HandleState(2, username="bob")
    assert query_session(plugin, 1) == {"state": "idle", "username": "alice", "incall": 0, "hangingup": 0, "destroyed": 0}
    assert query_session(plugin, 3) is None
    call = Call("call-1", caller=1, callee=2, phase="active")
    plugin.handles[1].call = plugin.handles[2].call = call
    plugin.handles[2].controls.video = False
    plugin.handles[1].controls.bitrate = 128000
    info = query_session(plugin, 2, {("call-1", "callee"): ["x-audio.mjr", "x-video.mjr"]})
    assert info is not None
    assert (info["state"], info["peer"], info["audio_active"], info["video_active"]) == ("incall", "alice", True, False)
    assert (info["bitrate"], info["peer-bitrate"], info["leg"], info["incall"]) == (0, 128000, "callee", 1)
    assert info["recording"] == {"audio": "x-audio.mjr", "video": "x-video.mjr"}
    assert "simulcast" not in info and "recording" not in (query_session(plugin, 1) or {})
    assert recording_files(["a-data.mjr", "other.txt"]) == {"data": "a-data.mjr"}
