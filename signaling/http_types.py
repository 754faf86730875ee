"""Plain HTTP requests and answers, as the API listener hands them to the HTTP adapters.

The one shape every HTTP adapter speaks (the Janus HTTP transport, the Admin API, the
operator's endpoints, the demo page), so none of them depends on the library that parses
the bytes: the listener turns what arrives into an ``HttpRequest`` (body already read and
bounded) and writes whatever ``HttpResponse`` an adapter returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs


@dataclass(frozen=True)
class HttpRequest:
    """One request: ``path`` without its query, ``query`` decoded (last value wins),
    header names lower-cased, ``peer`` the client's address as the front door counts it."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    peer: str = ""

    @classmethod
    def from_target(cls, method: str, target: str, headers: Mapping[str, str] | None = None,
                    body: bytes = b"", peer: str = "") -> HttpRequest:
        """Split a request target (``/janus/1?rid=2&maxev=5``) into path and query."""
        path, _, query = target.partition("?")
        decoded = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
        lowered = {name.lower(): value for name, value in (headers or {}).items()}
        return cls(method.upper(), path, decoded, lowered, body, peer)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass(frozen=True)
class HttpResponse:
    """One answer. ``headers`` are extra headers; the listener adds Content-Length."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


#: An adapter: the answer for a request, or None when the path is not its own.
HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse | None]]
