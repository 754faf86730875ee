"""The VideoCall plugin's requests and errors, without media (§5 of the protocol reference).

Each plugin message is answered by an ``ack`` and an ``event`` carrying its transaction, in
either order; both are compared exactly.
"""

from __future__ import annotations

import pytest

from tests.e2e.e2e_support import Clients, expect_plugin_error, expect_result
from tests.support.janus_ws import plugin_result

pytestmark = pytest.mark.timeout(30)


async def test_list_shows_every_registered_username(api: Clients) -> None:
    alice = await api.user("alice", register=False)
    assert await alice.list() == []
    await expect_result(alice, {"request": "register", "username": alice.name},
                        {"event": "registered", "username": alice.name})
    bob = await api.user("bob")
    assert await alice.list() == sorted([alice.name, bob.name])
    assert await bob.list() == sorted([alice.name, bob.name])


async def test_register_refuses_taken_name_476_and_second_name_477(api: Clients) -> None:
    alice = await api.user("alice")
    other = await api.user("other", register=False)
    await expect_plugin_error(other, {"request": "register", "username": alice.name},
                              476, f"Username '{alice.name}' already taken")
    await expect_plugin_error(alice, {"request": "register", "username": api.name("alice2")},
                              477, f"Already registered ({alice.name})")
    assert await alice.list() == [alice.name]


async def test_register_needs_a_username_string_475_474(api: Clients) -> None:
    user = await api.user("u", register=False)
    await expect_plugin_error(user, {"request": "register"}, 475, "Missing mandatory element (username)")
    await expect_plugin_error(user, {"request": "register", "username": 42}, 474,
                              "Invalid element type (username should be a string)")
    assert await user.list() == []


async def test_call_before_register_is_473(api: Clients) -> None:
    bob = await api.user("bob")
    alice = await api.user("alice", register=False)
    await expect_plugin_error(alice, {"request": "call", "username": bob.name}, 473, "Register a username first")


async def test_call_errors_in_janus_check_order(api: Clients) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    await expect_plugin_error(alice, {"request": "call"}, 475, "Missing mandatory element (username)")
    await expect_plugin_error(alice, {"request": "call", "username": 5}, 474,
                              "Invalid element type (username should be a string)")
    await expect_plugin_error(alice, {"request": "call", "username": alice.name}, 479,
                              "You can't call yourself... use the EchoTest for that")
    nobody = api.name("nobody")
    await expect_plugin_error(alice, {"request": "call", "username": nobody}, 478,
                              f"Username '{nobody}' doesn't exist")
    # An existing, idle callee but no offer.
    await expect_plugin_error(alice, {"request": "call", "username": bob.name}, 482, "Missing SDP")
    # None of these left anyone in a call: bob can still be called and call.
    await expect_plugin_error(bob, {"request": "call", "username": alice.name}, 482, "Missing SDP")
    assert await alice.list() == sorted([alice.name, bob.name])


async def test_accept_without_incoming_call_is_481(api: Clients) -> None:
    bob = await api.user("bob")
    await expect_plugin_error(bob, {"request": "accept"}, 481, "No incoming call to accept")
    unregistered = await api.user("u", register=False)
    await expect_plugin_error(unregistered, {"request": "accept"}, 481, "No incoming call to accept")


async def test_set_without_call_succeeds(api: Clients) -> None:
    alice = await api.user("alice")
    await expect_result(alice, {"request": "set", "bitrate": 128000}, {"event": "set"})
    await expect_result(alice, {"request": "set", "audio": True, "video": False, "bitrate": 0}, {"event": "set"})
    await expect_result(alice, {"request": "set"}, {"event": "set"})


@pytest.mark.parametrize(("field", "value", "text"), [
    ("bitrate", "x", "Invalid element type (bitrate should be a positive integer)"),
    ("bitrate", -5, "Invalid element type (bitrate should be a positive integer)"),
    ("bitrate", 1.5, "Invalid element type (bitrate should be a positive integer)"),
    ("substream", 7, "Invalid value (substream should be 0, 1 or 2)"),
    ("substream", "1", "Invalid value (substream should be 0, 1 or 2)"),
    ("temporal", 3, "Invalid value (temporal should be 0, 1 or 2)"),
    ("fallback", -1, "Invalid value (fallback should be a positive integer)"),
    ("audio", "yes", "Invalid element type (audio should be a boolean)"),
    ("video", 1, "Invalid element type (video should be a boolean)"),
    ("record", "y", "Invalid element type (record should be a boolean)"),
    ("restart", "x", "Invalid element type (restart should be a boolean)"),
    ("filename", 5, "Invalid element type (filename should be a string)"),
])
async def test_set_validates_field_types_474(api: Clients, field: str, value: object, text: str) -> None:
    alice = await api.user("alice")
    await expect_plugin_error(alice, {"request": "set", field: value}, 474, text)


async def test_unknown_request_is_472_missing_475_wrong_type_474(api: Clients) -> None:
    user = await api.user("u", register=False)
    await expect_plugin_error(user, {"request": "foo"}, 472, "Unknown request (foo)")
    await expect_plugin_error(user, {"request": ""}, 472, "Unknown request ()")
    await expect_plugin_error(user, {}, 475, "Missing mandatory element (request)")
    await expect_plugin_error(user, {"request": 5}, 474, "Invalid element type (request should be a string)")


async def test_request_names_are_case_insensitive(api: Clients) -> None:
    alice = await api.user("alice", register=False)
    await expect_result(alice, {"request": "Register", "username": alice.name},
                        {"event": "registered", "username": alice.name})
    _, event = await alice.message({"request": "LIST"})
    assert alice.name in (plugin_result(event) or {}).get("list", []), event
    await expect_result(alice, {"request": "SET", "bitrate": 1000}, {"event": "set"})
    await expect_result(alice, {"request": "HangUp"},
                        {"event": "hangup", "username": alice.name, "reason": "Explicit hangup"})


async def test_hangup_without_call_answers_explicit_hangup(api: Clients) -> None:
    alice = await api.user("alice")
    await expect_result(alice, {"request": "hangup"},
                        {"event": "hangup", "username": alice.name, "reason": "Explicit hangup"})
    # `reason` is ignored when it is not a string; the one who hangs up always gets this text.
    await expect_result(alice, {"request": "hangup", "reason": 5},
                        {"event": "hangup", "username": alice.name, "reason": "Explicit hangup"})
    assert await alice.list() == [alice.name]
