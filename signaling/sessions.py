"""Janus sessions and handles: ids, which transport owner holds what, and expiry.

Pure bookkeeping: the clock is an argument (``now``) and owners are opaque keys (a
WebSocket connection, an HTTP session), so expiry and ownership are tested without
sockets or sleeps.

A session whose owner went away without ``destroy`` is *orphaned* (Janus's
``transport_gone``): kept for ``reclaim_session_timeout`` seconds, for a ``claim`` to take
it back; :meth:`Sessions.expired` lets it go when that time is over.

Ownership is stricter than Janus on purpose: a connection may only act on a session it
created or claimed (``claim`` moves it); any other reference to it is answered as if the
session did not exist (458). Janus lets any connection act on any session id it knows.
"""

from __future__ import annotations

import os
import random
from collections.abc import Hashable
from dataclasses import dataclass, field

from signaling.janus_errors import ErrorCode

#: Ids stay below 2**53 so JavaScript clients (janus.js) hold them exactly, as Janus does.
MAX_ID = 2**53 - 1


class RandomIds:
    """Ids from the system's CSPRNG, read 4 kB at a time instead of one ``getrandom`` call
    per id (``random.SystemRandom``): the same unguessable ids, uniform over 1..MAX_ID, at a
    fifth of the cost. Emptied in a forked child, which must not repeat its parent's ids."""

    CHUNK = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def forget(self) -> None:
        self._pool, self._at = b"", 0

    def next(self) -> int:
        while True:
            if self._at >= len(self._pool):
                self._pool, self._at = os.urandom(self.CHUNK), 0
            value = int.from_bytes(self._pool[self._at:self._at + 8], "big") >> 11  # 53 bits: 0..MAX_ID
            self._at += 8
            if value:
                return value


#: One pool for the process (emptied in a forked child).
_IDS = RandomIds()
os.register_at_fork(after_in_child=_IDS.forget)


class SessionError(Exception):
    """A refusal with its Janus core code (458, 459, 468, 490...)."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Session:
    session_id: int
    owner: Hashable
    last_seen: float
    handles: set[int] = field(default_factory=set)
    #: Its own timeout (the Admin API's ``set_session_timeout``): -1 the node's, 0 never, else seconds.
    timeout: int = -1
    #: When its owner went away without ``destroy`` (None while it has one).
    orphaned_at: float | None = None


class Sessions:
    """Every session and handle of one signalling node."""

    def __init__(
        self,
        *,
        max_sessions_per_connection: int = 16,
        max_handles_per_session: int = 16,
        rng: random.Random | None = None,
    ) -> None:
        self.sessions: dict[int, Session] = {}
        self.handle_session: dict[int, int] = {}
        self.max_sessions_per_connection = max_sessions_per_connection
        self.max_handles_per_session = max_handles_per_session
        self._by_owner: dict[Hashable, set[int]] = {}
        #: When each handle was attached (the Admin API's ``handle_info``).
        self.created: dict[int, float] = {}
        self._rng = rng
        self._ids = _IDS

    def _new_id(self) -> int:
        while True:
            candidate = self._rng.randint(1, MAX_ID) if self._rng is not None else self._ids.next()
            if candidate not in self.sessions and candidate not in self.handle_session:
                return candidate

    # --- sessions -----------------------------------------------------------------------

    def _owned_with_room(self, owner: Hashable) -> set[int]:
        """The sessions ``owner`` holds, if it may hold one more (else 490, ours: Janus has no cap)."""
        owned = self._by_owner.setdefault(owner, set())
        if len(owned) >= self.max_sessions_per_connection:
            raise SessionError(
                ErrorCode.UNKNOWN, f"Too many sessions on this connection (at most {self.max_sessions_per_connection})"
            )
        return owned

    def create(self, owner: Hashable, now: float, requested_id: int | None = None) -> Session:
        owned = self._owned_with_room(owner)
        if requested_id is not None:
            if not 1 <= requested_id <= MAX_ID:
                raise SessionError(ErrorCode.INVALID_ELEMENT_TYPE, "Invalid element type (id should be a positive integer)")
            if requested_id in self.sessions or requested_id in self.handle_session:
                raise SessionError(ErrorCode.SESSION_CONFLICT, "Session ID already in use")
            session_id = requested_id
        else:
            session_id = self._new_id()
        session = Session(session_id, owner, now)
        self.sessions[session_id] = session
        owned.add(session_id)
        return session

    def get(self, session_id: int, owner: Hashable, now: float | None = None) -> Session:
        """The session, if ``owner`` holds it; refreshes its timer when ``now`` is given."""
        session = self.sessions.get(session_id)
        if session is None or session.owner != owner:
            raise SessionError(ErrorCode.SESSION_NOT_FOUND, f"No such session {session_id}")
        if now is not None:
            session.last_seen = now
        return session

    def claim(self, session_id: int, owner: Hashable, now: float) -> Session:
        """Move a session to ``owner`` (reconnect), as Janus's ``claim`` does."""
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionError(ErrorCode.SESSION_NOT_FOUND, f"No such session {session_id}")
        if session.owner != owner:
            owned = self._owned_with_room(owner)
            self._by_owner.get(session.owner, set()).discard(session_id)
            owned.add(session_id)
            session.owner = owner
        session.last_seen = now
        session.orphaned_at = None
        return session

    def orphan(self, owner: Hashable, now: float) -> list[int]:
        """``owner`` is gone: its sessions wait for a ``claim`` (their owner key is kept, no
        other owner ever has it). Returns their ids."""
        owned = self.owned_by(owner)
        for session_id in owned:
            self.sessions[session_id].orphaned_at = now
        return owned

    def destroy(self, session_id: int) -> list[int]:
        """Forget a session; returns the handles it held (to be detached by the caller)."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return []
        owned = self._by_owner.get(session.owner)
        if owned is not None:
            owned.discard(session_id)
            if not owned:
                del self._by_owner[session.owner]
        for handle in session.handles:
            self.handle_session.pop(handle, None)
            self.created.pop(handle, None)
        return sorted(session.handles)

    def owned_by(self, owner: Hashable) -> list[int]:
        return sorted(self._by_owner.get(owner, ()))

    def expired(self, now: float, timeout: float, reclaim_timeout: float = 0.0) -> list[int]:
        """Sessions without a request for ``timeout`` seconds (0 disables expiry; a session's
        own timeout, set through the Admin API, wins), and orphans not claimed within
        ``reclaim_timeout`` seconds of their owner going."""
        def over(s: Session) -> bool:
            limit = timeout if s.timeout < 0 else s.timeout
            if limit > 0 and now - s.last_seen >= limit:
                return True
            return s.orphaned_at is not None and now - s.orphaned_at >= reclaim_timeout

        return [sid for sid, s in self.sessions.items() if over(s)]

    def orphans(self) -> list[int]:
        return sorted(sid for sid, s in self.sessions.items() if s.orphaned_at is not None)

    def owner_of(self, session_id: int) -> Hashable | None:
        session = self.sessions.get(session_id)
        return session.owner if session is not None else None

    # --- handles ------------------------------------------------------------------------

    def attach(self, session: Session, now: float = 0.0) -> int:
        if len(session.handles) >= self.max_handles_per_session:
            raise SessionError(
                ErrorCode.PLUGIN_ATTACH, f"Too many handles in this session (at most {self.max_handles_per_session})"
            )
        handle = self._new_id()
        session.handles.add(handle)
        self.handle_session[handle] = session.session_id
        self.created[handle] = now
        return handle

    def handle(self, session: Session, handle_id: int) -> int:
        if handle_id not in session.handles:
            raise SessionError(ErrorCode.HANDLE_NOT_FOUND, f"No such handle {handle_id} in session {session.session_id}")
        return handle_id

    def detach(self, handle_id: int) -> None:
        session_id = self.handle_session.pop(handle_id, None)
        self.created.pop(handle_id, None)
        if session_id is not None and session_id in self.sessions:
            self.sessions[session_id].handles.discard(handle_id)

    def session_of(self, handle_id: int) -> int | None:
        return self.handle_session.get(handle_id)
