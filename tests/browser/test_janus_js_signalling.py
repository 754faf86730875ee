"""What janus.js expects of the server's signalling, read off the WebSocket frames it exchanged
(recorded by Playwright): replies matched by transaction, ``ack`` then ``event`` for plugin
messages, trickled candidates ending with ``{"completed": true}`` acked, keepalives acked.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser.browser_support import Peer, start_call, wait_webrtcup

pytestmark = pytest.mark.timeout(60)

KEEPALIVE_PERIOD = 25.0  # janus.js's default (keepAlivePeriod)


def sent(peer: Peer, verb: str) -> list[dict[str, Any]]:
    return [m for _, d, m in peer.frames if d == "sent" and m.get("janus") == verb]


def replies(peer: Peer, transaction: str) -> list[dict[str, Any]]:
    return [m for _, d, m in peer.frames if d == "received" and m.get("transaction") == transaction]


def test_ack_then_event_and_trickle_with_completed(new_peer) -> None:
    alice, bob = new_peer("alice"), new_peer("bob")
    start_call(alice, bob)
    wait_webrtcup(alice, bob)
    alice.sleep(0.5)  # let the last acks arrive
    bob.sleep(0.1)
    for peer in (alice, bob):
        session = peer.js("() => vc.janus.getSessionId()")
        handle = peer.js("() => vc.handle.getId()")

        # Every plugin message: first an ack with its transaction, then the plugin's event.
        messages = sent(peer, "message")
        assert [m["body"]["request"] for m in messages] == \
            (["register", "call"] if peer is alice else ["register", "accept"])
        for message in messages:
            answer = replies(peer, message["transaction"])
            assert [r["janus"] for r in answer] == ["ack", "event"], answer
            ack, event = answer
            assert ack == {"janus": "ack", "session_id": session, "transaction": message["transaction"]}
            assert event["sender"] == handle and event["session_id"] == session
            assert event["plugindata"]["plugin"] == "janus.plugin.videocall"
            assert event["plugindata"]["data"]["videocall"] == "event"

        # Trickle: janus.js sends each local candidate, then {"completed": true}; all acked.
        trickles = sent(peer, "trickle")
        candidates = [t["candidate"] for t in trickles if not t["candidate"].get("completed")]
        assert candidates, f"{peer.name} trickled no candidate"
        for candidate in candidates:
            assert candidate["candidate"].startswith("candidate:") and "sdpMid" in candidate, candidate
        assert trickles[-1]["candidate"] == {"completed": True}, trickles[-1]
        assert sum(1 for t in trickles if t["candidate"].get("completed")) == 1
        for trickle in trickles:
            assert trickle["session_id"] == session and trickle["handle_id"] == handle
            assert replies(peer, trickle["transaction"]) == \
                [{"janus": "ack", "session_id": session, "transaction": trickle["transaction"]}]

        # Notifications carry the sender janus.js routes them by.
        notes = [m for _, d, m in peer.frames if d == "received" and m["janus"] in ("webrtcup", "media", "hangup")]
        assert {"janus": "webrtcup", "session_id": session, "sender": handle} in notes
        assert all(n["sender"] == handle for n in notes), notes

        # No request went unanswered, none got an error.
        for _, direction, message in peer.frames:
            if direction == "sent" and message.get("janus") != "keepalive":
                assert replies(peer, message["transaction"]), f"{peer.name}: no reply to {message}"
        errors = [m for _, d, m in peer.frames if d == "received" and m.get("janus") == "error"]
        assert errors == []
        assert peer.log("error") == []
        # janus.js logs anything it did not expect ("Unknown message/event", "Missing sender"...)
        # at warn/error level, the levels the harness enables.
        assert [c for c in peer.console if c.startswith(("warning", "error"))] == [], peer.console


def test_keepalives_every_25s_are_acked(idle_peer: Peer) -> None:
    """janus.js's own keepalive timer (25 s by default) on a page opened when the browser
    tests started; the session survives it (the server's timeout is 60 s)."""
    wait = idle_peer.connected_at + KEEPALIVE_PERIOD + 2.0 - time.monotonic()
    if wait > 0:
        idle_peer.sleep(wait)
    keepalives = [(t, m) for t, d, m in idle_peer.frames if d == "sent" and m.get("janus") == "keepalive"]
    assert keepalives, f"janus.js sent no keepalive in {time.monotonic() - idle_peer.connected_at:.0f} s"
    session = idle_peer.js("() => vc.janus.getSessionId()")
    first_at = keepalives[0][0] - idle_peer.connected_at
    assert KEEPALIVE_PERIOD - 2 < first_at < KEEPALIVE_PERIOD + 2, first_at
    for _, keepalive in keepalives:
        assert keepalive["session_id"] == session
        assert replies(idle_peer, keepalive["transaction"]) == \
            [{"janus": "ack", "session_id": session, "transaction": keepalive["transaction"]}]
    # Still a live session and handle: a plugin request is answered.
    idle_peer.js("() => vc.list()")
    idle_peer.wait("() => vc.events('message').some((e) => e.msg.result && Array.isArray(e.msg.result.list))",
                   what="the answer to `list`")
    assert idle_peer.js("() => vc.janus.isConnected()") is True
