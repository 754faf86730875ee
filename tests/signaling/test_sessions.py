"""Sessions and handles: ownership, limits and expiry, with the clock passed in."""

from __future__ import annotations

import os
import random

import pytest

from signaling.janus_core import Mailbox
from signaling.registry import MemoryRegistry, owner_id, parse_owner
from signaling.sessions import MAX_ID, SessionError, Sessions


def make(**kw: int) -> Sessions:
    return Sessions(rng=random.Random(1), **kw)


def test_ids_are_unique_and_javascript_safe() -> None:
    s = make(max_sessions_per_connection=1000)
    ids = {s.create("c", 0.0).session_id for _ in range(500)}
    assert len(ids) == 500 and all(1 <= i <= MAX_ID for i in ids)


def test_ids_without_a_seeded_rng_come_from_the_system_csprng_and_are_javascript_safe() -> None:
    s = Sessions(max_sessions_per_connection=3000)  # as the server makes it: RandomIds
    ids = [s.create("c", 0.0).session_id for _ in range(1500)]  # several 4 kB reads
    ids += [s.attach(s.sessions[ids[0]]) for _ in range(10)]
    assert len(set(ids)) == len(ids) and all(1 <= i <= MAX_ID for i in ids)
    assert max(ids) > MAX_ID // 2  # 53 bits, not fewer


def test_a_forked_child_never_hands_out_its_parents_next_ids() -> None:
    """The process's pool is emptied in a forked child (``os.register_at_fork``)."""
    sessions = Sessions()
    sessions.create("c", 0.0)  # the parent holds a pool now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, b",".join(str(sessions._new_id()).encode() for _ in range(4)))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = {int(x) for x in pipe.read().split(b",")}
    os.waitpid(pid, 0)
    parent = {sessions._new_id() for _ in range(4)}
    assert len(child) == 4 and not child & parent


def test_only_the_owner_sees_a_session() -> None:
    s = make()
    sid = s.create("conn-a", 0.0).session_id
    assert s.get(sid, "conn-a").session_id == sid
    with pytest.raises(SessionError) as exc:
        s.get(sid, "conn-b")
    assert (exc.value.code, exc.value.reason) == (458, f"No such session {sid}")


def test_claim_moves_a_session() -> None:
    s = make()
    sid = s.create("a", 0.0).session_id
    s.claim(sid, "b", 1.0)
    assert s.get(sid, "b").owner == "b"
    with pytest.raises(SessionError):
        s.get(sid, "a")
    assert s.owned_by("a") == [] and s.owned_by("b") == [sid]
    with pytest.raises(SessionError) as exc:
        s.claim(12345, "b", 1.0)
    assert exc.value.code == 458


def test_requested_id_conflict_is_468() -> None:
    s = make()
    s.create("a", 0.0, requested_id=42)
    with pytest.raises(SessionError) as exc:
        s.create("b", 0.0, requested_id=42)
    assert (exc.value.code, exc.value.reason) == (468, "Session ID already in use")


def test_session_and_handle_limits() -> None:
    s = make(max_sessions_per_connection=2, max_handles_per_session=2)
    first = s.create("a", 0.0)
    s.create("a", 0.0)
    with pytest.raises(SessionError) as exc:
        s.create("a", 0.0)
    assert exc.value.code == 490
    s.create("b", 0.0)  # another connection is not affected
    s.attach(first)
    s.attach(first)
    with pytest.raises(SessionError):
        s.attach(first)


def test_handles_belong_to_their_session() -> None:
    s = make()
    a, b = s.create("c", 0.0), s.create("c", 0.0)
    h = s.attach(a)
    assert s.handle(a, h) == h and s.session_of(h) == a.session_id
    with pytest.raises(SessionError) as exc:
        s.handle(b, h)
    assert (exc.value.code, exc.value.reason) == (459, f"No such handle {h} in session {b.session_id}")
    s.detach(h)
    assert s.session_of(h) is None and h not in a.handles


def test_expiry_is_refreshed_by_requests() -> None:
    s = make()
    sid = s.create("c", 0.0).session_id
    assert s.expired(59.0, 60) == []
    s.get(sid, "c", now=50.0)
    assert s.expired(100.0, 60) == []
    assert s.expired(110.0, 60) == [sid]
    assert s.expired(1e9, 0) == []  # 0 disables expiry


def test_a_session_timeout_of_its_own_wins_over_the_nodes() -> None:
    """The Admin API's per-session ``set_session_timeout``: seconds, 0 never, -1 the node's."""
    s = make()
    short, never, default = (s.create("c", 0.0).session_id for _ in range(3))
    s.sessions[short].timeout, s.sessions[never].timeout = 5, 0
    assert s.expired(6.0, 60) == [short]
    assert s.expired(1e9, 60) == [short, default]
    assert s.expired(1e9, 0) == [short]  # the node's 0 does not stop a session's own


def test_handles_remember_when_they_were_attached() -> None:
    s = make()
    session = s.create("c", 0.0)
    h = s.attach(session, 12.5)
    assert s.created[h] == 12.5
    s.detach(h)
    assert h not in s.created


def test_destroy_returns_handles_and_frees_ids() -> None:
    s = make()
    session = s.create("c", 0.0)
    handles = sorted(s.attach(session) for _ in range(3))
    assert s.destroy(session.session_id) == handles
    assert s.owned_by("c") == [] and all(s.session_of(h) is None for h in handles)
    assert s.destroy(session.session_id) == []


async def test_memory_registry_claims_atomically() -> None:
    r = MemoryRegistry()
    assert await r.claim("alice", "n/1")
    assert await r.claim("alice", "n/1")  # idempotent for the owner
    assert not await r.claim("alice", "n/2")
    await r.release("alice", "n/2")  # not the owner: no effect
    assert await r.lookup("alice") == "n/1"
    assert await r.names() == ["alice"]
    await r.release("alice", "n/1")
    assert await r.lookup("alice") is None


def test_owner_ids_round_trip() -> None:
    assert parse_owner(owner_id("127.0.0.1:8188", 42)) == ("127.0.0.1:8188", 42)
    assert parse_owner("garbage") is None and parse_owner("n/x") is None


def test_orphans_wait_for_a_claim_then_expire_after_the_reclaim_timeout() -> None:
    s = make()
    kept, other = s.create("gone", 0.0).session_id, s.create("here", 0.0).session_id
    assert s.orphan("gone", 10.0) == [kept] and s.orphans() == [kept]
    # session_timeout 60 still counts from the last request; reclaim 5 from the owner going
    assert s.expired(14.9, 60.0, 5.0) == []
    assert s.expired(15.0, 60.0, 5.0) == [kept]
    assert sorted(s.expired(60.0, 60.0, 5.0)) == sorted([kept, other])
    s.claim(kept, "new", 12.0)
    assert s.orphans() == [] and s.expired(20.0, 60.0, 5.0) == []
    assert s.owned_by("new") == [kept] and s.owned_by("gone") == []


def test_mailbox_holds_up_to_its_limit_dropping_the_oldest() -> None:
    box = Mailbox(2)
    assert box.put({"n": 1}) is None and box.put({"n": 2}) is None
    assert box.put({"n": 3}) == {"n": 1}
    assert box.take(5) == [{"n": 2}, {"n": 3}] and len(box) == 0
