"""The Janus HTTP transport (REST + long poll), as an adapter of the Janus core.

What Janus's ``transports/janus_http.c`` answers, under ``base_path`` (default ``/janus``):

- ``POST <base>`` (``create``, ``info``, ``ping``), ``POST <base>/<session>`` (``attach``,
  ``keepalive``, ``destroy``, ``claim``), ``POST <base>/<session>/<handle>`` (``message``,
  ``trickle``, ``hangup``, ``detach``): the path gives the ids a body leaves out (457 when
  they conflict), and the answer is the core's synchronous reply (``ack`` for a message,
  ``success`` or an error for the rest), always HTTP 200 as in Janus;
- ``GET <base>/info`` and ``GET <base>/ping`` as ``info`` and ``ping``;
- ``GET <base>/<session>?maxev=N`` the long poll: it counts as a ``keepalive`` (checked like
  one: ``apisecret``/``token`` from the query, 403 without), then answers up to N events the
  session holds (one object when N is 1, an array otherwise), waiting up to
  ``long_poll_wait`` seconds for the first, else ``{"janus": "keepalive"}``; a GET on a handle
  path is redirected (302) to its session's, as Janus does;
- CORS as Janus: every answer carries ``Access-Control-Allow-Origin`` (``*``, or the page's
  origin when ``allowed_origins`` lists it), ``Access-Control-Max-Age`` and the
  ``Access-Control-Allow-Methods``/``-Headers`` a preflight asked for; ``OPTIONS`` is that
  preflight's empty 200.

Stricter than Janus where Janus is weak: a body is bounded by ``max_message_size`` (Janus takes
4 MB), strict JSON as on the WebSocket path, and an empty POST, an unsupported method (a PUT
with a body), a path with too many or non-numeric parts, all get a Janus error (Janus closes
the connection without a word on the first three). A request from an Origin that
``allowed_origins`` does not list is refused (403), as Janus's ``enforce_cors`` does.

Sessions: each session created (or claimed) over HTTP has its own owner, an :class:`HttpOwner`
with no sink, so its events wait in its mailbox for the next GET. HTTP requests act only on
sessions held over HTTP (others are 458, as on the WebSocket path); ``claim`` moves a session
here from a WebSocket, and a WebSocket's ``claim`` moves it back.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from shared.settings import Settings
from signaling import janus_replies as replies
from signaling.frontdoor import FrontDoor
from signaling.http_types import HttpRequest, HttpResponse
from signaling.janus_core import JanusCore, Message
from signaling.janus_errors import ErrorCode
from signaling.strict_json import JsonError, loads

JSON = "application/json"
#: Most events one long poll may ask for (``maxev``); more is read as this many.
MAX_EVENTS_PER_POLL = 256


@dataclass(frozen=True)
class HttpOwner:
    """The owner of one session held over HTTP (no sink: its events wait for a GET)."""

    serial: int

    def __str__(self) -> str:
        return f"http#{self.serial}"


class PathError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JanusHttpTransport:
    """``handle`` is an ``HttpHandler``: the answer under ``base_path``, None elsewhere."""

    def __init__(self, core: JanusCore, settings: Settings, door: FrontDoor) -> None:
        self.core = core
        self.settings = settings
        self.door = door
        self.base = settings.base_path
        self._serials = itertools.count(1)

    # --- routing ------------------------------------------------------------------------------

    def _parts(self, path: str) -> list[str] | None:
        """The path's parts after the base (``[]``, ``[session]``, ``[session, handle]`` or
        more), or None when the path is not ours."""
        if path != self.base and not path.startswith(self.base + "/"):
            return None
        rest = path[len(self.base):].strip("/")
        return rest.split("/") if rest else []

    async def handle(self, request: HttpRequest) -> HttpResponse | None:
        parts = self._parts(request.path)
        if parts is None:
            return None
        cors = self._cors(request)
        origin = request.header("origin") or None
        if origin is not None and (refusal := self.door.origin_refusal(origin)) is not None:
            return self._json(replies.error(ErrorCode.UNAUTHORIZED, refusal.reason), cors, status=403)
        if request.method == "OPTIONS":
            return HttpResponse(200, b"", headers=cors)
        if len(parts) > 2:
            return self._path_error(f"Too many path components (at most {self.base}/<session>/<handle>)", cors)
        if request.method == "GET":
            return await self._get(request, parts, cors)
        if request.method == "POST":
            return await self._post(request, parts, cors)
        return self._json(replies.error(ErrorCode.TRANSPORT_SPECIFIC, f"Unsupported method {request.method[:16]}"), cors)

    def _cors(self, request: HttpRequest) -> tuple[tuple[str, str], ...]:
        origin = request.header("origin")
        if self.door.allowed_origins:
            headers: list[tuple[str, str]] = []
            if origin and self.door.origin_refusal(origin) is None:
                headers += [("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Credentials", "true")]
            headers.append(("Vary", "Origin"))
        else:
            headers = [("Access-Control-Allow-Origin", "*")]
        headers.append(("Access-Control-Max-Age", "86400"))
        if method := request.header("access-control-request-method"):
            headers.append(("Access-Control-Allow-Methods", method[:200]))
        if asked := request.header("access-control-request-headers"):
            headers.append(("Access-Control-Allow-Headers", asked[:1000]))
        return tuple(headers)

    # --- answers --------------------------------------------------------------------------------

    @staticmethod
    def _json(message: Any, cors: tuple[tuple[str, str], ...], *, status: int = 200,
              extra: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
        return HttpResponse(status, replies.dumps_bytes(message), JSON, cors + extra)

    def _path_error(self, reason: str, cors: tuple[tuple[str, str], ...]) -> HttpResponse:
        return self._json(replies.error(ErrorCode.INVALID_REQUEST_PATH, reason), cors, status=404)

    def _ids(self, parts: list[str]) -> tuple[int | None, int | None]:
        ids: list[int | None] = []
        for name, part in zip(("session", "handle"), parts, strict=False):
            if not part.isascii() or not part.isdigit() or len(part) > 16 or int(part) < 1:
                raise PathError(f"Invalid {name} in the path: {part[:32]!r}")
            ids.append(int(part))
        ids += [None] * (2 - len(ids))
        return ids[0], ids[1]

    def _owner(self, session_id: int | None) -> Hashable:
        """The HTTP owner of ``session_id`` if HTTP holds it, else a new one (a ``create``,
        or a ``claim``; anything else from it is 458)."""
        if session_id is not None and isinstance(owner := self.core.sessions.owner_of(session_id), HttpOwner):
            return owner
        return HttpOwner(next(self._serials))

    async def _ask(self, frame: str | bytes, owner: Hashable, address: str) -> Message:
        answers: list[Message] = []
        await self.core.handle_frame(frame, owner, address, answers.append)
        return answers[0] if answers else replies.error(ErrorCode.UNKNOWN, "No answer")

    # --- POST: a request ----------------------------------------------------------------------

    async def _post(self, request: HttpRequest, parts: list[str], cors: tuple[tuple[str, str], ...]) -> HttpResponse:
        if parts[:1] in (["info"], ["ping"]):
            return self._json(replies.error(ErrorCode.TRANSPORT_SPECIFIC, f"Use GET for the {parts[0]} endpoint"),
                              cors, status=400)
        try:
            path_session, path_handle = self._ids(parts)
        except PathError as exc:
            return self._path_error(exc.reason, cors)
        body = request.body
        if not body.strip():
            return self._json(replies.error(ErrorCode.INVALID_JSON, "Request payload missing"), cors)
        if len(body) > self.settings.max_message_size:
            return self._json(replies.error(ErrorCode.TRANSPORT_SPECIFIC, f"Message too large ({len(body)} bytes, "
                                            f"the limit is {self.settings.max_message_size})"), cors)
        try:
            obj = loads(body, max_depth=self.settings.max_json_depth)
        except JsonError as exc:
            return self._json(replies.error(ErrorCode.INVALID_JSON, f"Invalid Janus API request - {exc}"), cors)
        if not isinstance(obj, dict):
            return self._json(replies.error(ErrorCode.INVALID_JSON_OBJECT, "JSON error: not an object"), cors)
        for name, from_path in (("session_id", path_session), ("handle_id", path_handle)):
            if from_path is None:
                continue
            given = obj.get(name)
            if given is not None and given != 0 and given != from_path:  # Janus: 0 or absent takes the path's
                what = "session" if name == "session_id" else "handle"
                return self._json(replies.error(ErrorCode.INVALID_REQUEST_PATH,
                                                f"Conflicting {what} ID (payload and path)"), cors)
            obj[name] = from_path
        session_id = obj.get("session_id")
        owner = self._owner(session_id if isinstance(session_id, int) and not isinstance(session_id, bool) else None)
        frame = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return self._json(await self._ask(frame, owner, request.peer), cors)

    # --- GET: info, ping, the long poll -------------------------------------------------------

    async def _get(self, request: HttpRequest, parts: list[str], cors: tuple[tuple[str, str], ...]) -> HttpResponse:
        if parts in (["info"], ["ping"]):
            frame = json.dumps({"janus": parts[0], "transaction": secrets.token_hex(6)})
            return self._json(await self._ask(frame, HttpOwner(0), request.peer), cors)
        if not parts:
            return self._path_error(f"A long poll needs a session: GET {self.base}/<session>", cors)
        try:
            session_id, handle_id = self._ids(parts)
        except PathError as exc:
            return self._path_error(exc.reason, cors)
        assert session_id is not None
        # Every GET is a keepalive, checked as one (apisecret/token from the query).
        keepalive: dict[str, Any] = {"janus": "keepalive", "session_id": session_id,
                                     "transaction": secrets.token_hex(6)}
        for field in ("apisecret", "token"):
            if (value := request.query.get(field)) is not None:
                keepalive[field] = value
        answer = await self._ask(json.dumps(keepalive), self._owner(session_id), request.peer)
        if answer.get("janus") == "error":
            code = answer["error"]["code"]
            status = 403 if code == ErrorCode.UNAUTHORIZED else 404 if code == ErrorCode.SESSION_NOT_FOUND else 400
            answer.pop("transaction", None)
            return self._json(answer, cors, status=status)
        if handle_id is not None:
            return HttpResponse(302, b"", headers=cors + (("Location", f"{self.base}/{session_id}"),))
        maxev = _max_events(request.query.get("maxev"))
        events = await self.core.poll(session_id, maxev, self.settings.long_poll_wait)
        if not events:
            if session_id not in self.core.sessions.sessions:  # destroyed or timed out meanwhile
                return self._json(replies.error(ErrorCode.SESSION_NOT_FOUND, f"No such session {session_id}",
                                                session_id=session_id), cors, status=404)
            events = [{"janus": "keepalive"}]
        return self._json(events[0] if maxev == 1 else events, cors)


def _max_events(text: str | None) -> int:
    """``maxev`` as Janus reads it (``atoi``; below 1 is 1), bounded."""
    if text is None:
        return 1
    digits = text.strip()
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    number = ""
    for char in digits[:12]:
        if not ("0" <= char <= "9"):
            break
        number += char
    value = sign * int(number) if number else 0
    return min(max(value, 1), MAX_EVENTS_PER_POLL)
