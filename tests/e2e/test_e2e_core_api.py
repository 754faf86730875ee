"""The Janus core API over WebSocket: sessions, handles, keepalives and every core error.

Expected messages are those of the recorded trace and of real Janus 1.1.2 (see the report in
tests/e2e/README.md where Janus differs from shared/protocol/README.md).
"""

from __future__ import annotations

import secrets

import pytest

from tests.e2e.e2e_support import Clients, expected_core_error
from tests.support.janus_ws import VIDEOCALL, Session, matching, new_transaction

pytestmark = pytest.mark.timeout(30)


async def test_websocket_answers_with_janus_protocol_subprotocol(api: Clients) -> None:
    conn = await api.connect()
    assert conn.subprotocol == "janus-protocol"


async def test_info_describes_server_and_videocall_plugin(api: Clients) -> None:
    conn = await api.connect()
    tx = new_transaction()
    reply = await conn.request({"janus": "info", "transaction": tx})
    assert reply["janus"] == "server_info"
    assert reply["transaction"] == tx
    assert isinstance(reply["name"], str) and reply["name"]
    assert isinstance(reply["version"], int)
    assert isinstance(reply["version_string"], str)
    plugin = reply["plugins"][VIDEOCALL]
    assert set(plugin) == {"name", "version", "version_string", "description", "author"}
    assert "session_id" not in reply


async def test_ping_answers_pong(api: Clients) -> None:
    conn = await api.connect()
    assert await conn.request({"janus": "ping", "transaction": "p1"}) == {"janus": "pong", "transaction": "p1"}


async def test_request_verbs_are_case_insensitive(api: Clients) -> None:
    # Janus lower-cases the verb before dispatching it.
    conn = await api.connect()
    assert await conn.request({"janus": "PING", "transaction": "p2"}) == {"janus": "pong", "transaction": "p2"}
    session = await Session.create(conn)
    reply = await conn.request({"janus": "KeepAlive", "session_id": session.id, "transaction": "k1"})
    assert reply == {"janus": "ack", "session_id": session.id, "transaction": "k1"}


async def test_create_returns_a_new_session_id_each_time(api: Clients) -> None:
    conn = await api.connect()
    ids = []
    for _ in range(2):
        tx = new_transaction()
        reply = await conn.request({"janus": "create", "transaction": tx})
        assert reply == {"janus": "success", "transaction": tx, "data": {"id": reply["data"]["id"]}}
        assert isinstance(reply["data"]["id"], int) and reply["data"]["id"] > 0
        ids.append(reply["data"]["id"])
    assert ids[0] != ids[1]


async def test_create_with_own_id_then_same_id_is_468(api: Clients) -> None:
    conn = await api.connect()
    wanted = secrets.randbelow(2**40) + 1
    tx = new_transaction()
    assert await conn.request({"janus": "create", "id": wanted, "transaction": tx}) == {
        "janus": "success", "transaction": tx, "data": {"id": wanted}}
    tx = new_transaction()
    assert await conn.request({"janus": "create", "id": wanted, "transaction": tx}) == \
        expected_core_error(tx, 468, "Session ID already in use", session_id=wanted)


async def test_keepalive_is_acked_and_destroy_ends_the_session(api: Clients) -> None:
    session = await api.session()
    tx = new_transaction()
    assert await session.request("keepalive", transaction=tx) == {
        "janus": "ack", "session_id": session.id, "transaction": tx}
    tx = new_transaction()
    assert await session.request("destroy", transaction=tx) == {
        "janus": "success", "session_id": session.id, "transaction": tx}
    tx = new_transaction()
    assert await session.request("keepalive", transaction=tx) == expected_core_error(
        tx, 458, f"No such session {session.id}", session_id=session.id)


async def test_attach_videocall_returns_a_handle_id(api: Clients) -> None:
    session = await api.session()
    tx = new_transaction()
    reply = await session.request("attach", plugin=VIDEOCALL, opaque_id="e2e", transaction=tx)
    handle_id = reply.get("data", {}).get("id")
    assert reply == {"janus": "success", "session_id": session.id, "transaction": tx,
                     "data": {"id": handle_id}}
    assert isinstance(handle_id, int) and handle_id > 0


async def test_attach_unknown_plugin_is_460(api: Clients) -> None:
    session = await api.session()
    tx = new_transaction()
    assert await session.request("attach", plugin="janus.plugin.nope", transaction=tx) == \
        expected_core_error(tx, 460, "No such plugin 'janus.plugin.nope'", session_id=session.id)


async def test_attach_without_plugin_is_456_and_wrong_type_is_467(api: Clients) -> None:
    session = await api.session()
    tx = new_transaction()
    assert await session.request("attach", transaction=tx) == \
        expected_core_error(tx, 456, "Missing mandatory element (plugin)", session_id=session.id)
    tx = new_transaction()
    assert await session.request("attach", plugin=5, transaction=tx) == \
        expected_core_error(tx, 467, "Invalid element type (plugin should be a string)", session_id=session.id)


async def test_frame_that_is_not_json_is_454(api: Clients) -> None:
    conn = await api.connect()
    for frame in ("{not json", '"hello"', "42"):
        await conn.send(frame)
        reply = await conn.wait_for(matching(janus="error"), what=f"error for {frame!r}")
        # Janus quotes its JSON parser's message (jansson's): only the prefix is compared.
        assert set(reply) == {"janus", "error"}
        assert reply["error"]["code"] == 454
        assert reply["error"]["reason"].startswith("Invalid Janus API request - ")


async def test_json_array_is_456_missing_transaction(api: Clients) -> None:
    # Recorded trace: an array is not refused as "not an object" but lacks a transaction.
    conn = await api.connect()
    await conn.send("[1, 2]")
    reply = await conn.wait_for(matching(janus="error"))
    assert reply == expected_core_error(None, 456, "Missing mandatory element (transaction)")


async def test_missing_transaction_or_verb_is_456(api: Clients) -> None:
    conn = await api.connect()
    await conn.send({"janus": "ping"})
    assert await conn.wait_for(matching(janus="error")) == \
        expected_core_error(None, 456, "Missing mandatory element (transaction)")
    # No `janus`: the error does not echo the transaction (trace).
    await conn.send({"transaction": "x1"})
    assert await conn.wait_for(matching(janus="error")) == \
        expected_core_error(None, 456, "Missing mandatory element (janus)")


async def test_verb_or_transaction_of_wrong_type_is_467(api: Clients) -> None:
    conn = await api.connect()
    await conn.send({"janus": 5, "transaction": "t5"})
    assert await conn.wait_for(matching(janus="error")) == \
        expected_core_error(None, 467, "Invalid element type (janus should be a string)")
    await conn.send({"janus": "ping", "transaction": 5})
    assert await conn.wait_for(matching(janus="error")) == \
        expected_core_error(None, 467, "Invalid element type (transaction should be a string)")


async def test_unknown_verb_is_453_in_a_session(api: Clients) -> None:
    session = await api.session()
    for verb in ("bogus", "ping", "info"):  # ping and info are sessionless only
        tx = new_transaction()
        assert await session.request(verb, transaction=tx) == \
            expected_core_error(tx, 453, f"Unknown request '{verb}'", session_id=session.id)
    user = await api.user("h", register=False)
    tx = new_transaction()
    assert await user.handle.request("bogus", transaction=tx) == \
        expected_core_error(tx, 453, "Unknown request 'bogus'", session_id=user.session.id)


async def test_requests_at_the_wrong_path_are_457(api: Clients) -> None:
    conn = await api.connect()
    for verb in ("attach", "keepalive", "bogus", "message"):  # anything but info/ping/create
        tx = new_transaction()
        assert await conn.request({"janus": verb, "transaction": tx, "plugin": VIDEOCALL}) == \
            expected_core_error(tx, 457, f"Unhandled request '{verb}' at this path")
    user = await api.user("p", register=False)
    sid = user.session.id
    for verb in ("message", "detach", "hangup", "trickle"):  # handle requests without a handle
        tx = new_transaction()
        assert await user.session.request(verb, transaction=tx, body={"request": "list"},
                                          candidate={"completed": True}) == \
            expected_core_error(tx, 457, f"Unhandled request '{verb}' at this path", session_id=sid)
    for verb in ("attach", "destroy"):  # session requests with a handle
        tx = new_transaction()
        assert await user.handle.request(verb, transaction=tx, plugin=VIDEOCALL) == \
            expected_core_error(tx, 457, f"Unhandled request '{verb}' at this path", session_id=sid)


async def test_unknown_session_is_458_and_unknown_handle_is_459(api: Clients) -> None:
    user = await api.user("u", register=False)
    conn, sid = user.conn, user.session.id
    tx = new_transaction()
    assert await conn.request({"janus": "message", "transaction": tx, "session_id": 123456789,
                               "handle_id": user.handle.id, "body": {"request": "list"}}) == \
        expected_core_error(tx, 458, "No such session 123456789", session_id=123456789)
    tx = new_transaction()
    assert await conn.request({"janus": "attach", "transaction": tx, "session_id": 123456789,
                               "plugin": VIDEOCALL}) == \
        expected_core_error(tx, 458, "No such session 123456789", session_id=123456789)
    tx = new_transaction()
    assert await conn.request({"janus": "message", "transaction": tx, "session_id": sid,
                               "handle_id": 987654321, "body": {"request": "list"}}) == \
        expected_core_error(tx, 459, f"No such handle 987654321 in session {sid}", session_id=sid)


async def test_message_without_body_is_456_and_body_not_object_is_467(api: Clients) -> None:
    user = await api.user("b", register=False)
    sid = user.session.id
    tx = new_transaction()
    assert await user.handle.request("message", transaction=tx) == \
        expected_core_error(tx, 456, "Missing mandatory element (body)", session_id=sid)
    tx = new_transaction()
    assert await user.handle.request("message", body="x", transaction=tx) == \
        expected_core_error(tx, 467, "Invalid element type (body should be an object)", session_id=sid)


@pytest.mark.parametrize(("jsep", "code", "reason"), [
    ("x", 455, "Invalid jsep object"),
    ({"type": "pranswer", "sdp": "v=0"}, 464, "JSEP error: unknown message type 'pranswer'"),
    ({"type": "offer", "sdp": "garbage"}, 465, "Invalid SDP (doesn't start with v=)"),
    ({"type": "offer"}, 456, "JSEP error: missing mandatory element (sdp)"),
    ({"sdp": "v=0"}, 456, "JSEP error: missing mandatory element (type)"),
], ids=["not-object-455", "unknown-type-464", "invalid-sdp-465", "no-sdp-456", "no-type-456"])
async def test_bad_jsep_is_refused_before_the_plugin(api: Clients, jsep: object, code: int,
                                                     reason: str) -> None:
    user = await api.user("j")
    tx = new_transaction()
    reply = await user.handle.request("message", transaction=tx, jsep=jsep,
                                      body={"request": "call", "username": "nobody"})
    assert reply == expected_core_error(tx, code, reason, session_id=user.session.id)
    # The plugin never saw it: no event for that transaction.
    await user.conn.expect_none(matching(transaction=tx), within=0.2, what="second reply")


async def test_trickle_is_acked_and_needs_a_candidate(api: Clients) -> None:
    user = await api.user("t", register=False)
    sid = user.session.id
    tx = new_transaction()
    assert await user.handle.request("trickle", candidate={"completed": True}, transaction=tx) == {
        "janus": "ack", "session_id": sid, "transaction": tx}
    tx = new_transaction()
    assert await user.handle.request("trickle", transaction=tx) == \
        expected_core_error(tx, 456, "Missing mandatory element (candidate|candidates)", session_id=sid)


async def test_core_hangup_without_peerconnection_succeeds(api: Clients) -> None:
    user = await api.user("c", register=False)
    tx = new_transaction()
    assert await user.handle.request("hangup", transaction=tx) == {
        "janus": "success", "session_id": user.session.id, "transaction": tx}


async def test_detach_answers_success_then_detached_and_the_handle_is_gone(api: Clients) -> None:
    user = await api.user("d")
    sid, hid = user.session.id, user.handle.id
    tx = new_transaction()
    assert await user.handle.request("detach", transaction=tx) == {
        "janus": "success", "session_id": sid, "transaction": tx}
    assert await user.handle.notification("detached") == {"janus": "detached", "session_id": sid, "sender": hid}
    tx = new_transaction()
    assert await user.handle.request("message", body={"request": "list"}, transaction=tx) == \
        expected_core_error(tx, 459, f"No such handle {hid} in session {sid}", session_id=sid)
    other = await api.user("o")
    assert await other.list() == [other.name]  # the detached handle's name is free


async def test_closing_the_socket_destroys_its_sessions_and_frees_names(api: Clients) -> None:
    gone = await api.user("gone")
    stays = await api.user("stays")
    assert await stays.list() == sorted([gone.name, stays.name])
    await gone.conn.close()
    tx = new_transaction()
    reply = await stays.conn.request({"janus": "keepalive", "session_id": gone.session.id, "transaction": tx})
    assert reply == expected_core_error(tx, 458, f"No such session {gone.session.id}",
                                        session_id=gone.session.id)
    assert await stays.list() == [stays.name]
