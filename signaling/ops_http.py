"""The operator's endpoints on the API port: ``/healthz``, ``/readyz``, ``/metrics``.

- ``/healthz``: 200 ``ok`` while the process serves HTTP at all (a liveness probe).
- ``/readyz``: 200 ``ready`` when the node can take a new call: not draining, at least one
  relay worker connected, and the registry answering (``Registry.ready``); otherwise 503 with
  the first reason in one line (``draining``, ``no relay worker connected``, ``registry not
  ready``). A load balancer or orchestrator stops sending new users on 503.
- ``/metrics``: Prometheus text format (``signaling/metrics.py``).

Only GET (and HEAD) of these exact paths (query string ignored) are answered here, as an
``HttpHandler`` of the API listener (``http_listener``); anything else goes on to the next
adapter. Answers close the connection: a probe opens one per check.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from signaling.http_types import HttpRequest, HttpResponse
from signaling.metrics import CONTENT_TYPE, NodeMetrics
from signaling.registry import Registry

PATHS = ("/healthz", "/readyz", "/metrics")
#: Longest a readiness check waits for the registry before it counts as not ready.
REGISTRY_CHECK_TIMEOUT = 2.0
TEXT = "text/plain; charset=utf-8"


class Node(Protocol):
    """What the endpoints read from the server."""

    @property
    def draining(self) -> bool: ...

    def workers_connected(self) -> int: ...


class OpsEndpoints:
    def __init__(self, node: Node, registry: Registry, metrics: NodeMetrics) -> None:
        self.node = node
        self.registry = registry
        self.metrics = metrics

    async def handle(self, request: HttpRequest) -> HttpResponse | None:
        """The ``HttpHandler``: the answer for a GET of one of ``PATHS``, or None: not ours."""
        if request.method not in ("GET", "HEAD"):
            return None
        path = request.path
        if path == "/healthz":
            return _reply(200, TEXT, b"ok\n")
        if path == "/readyz":
            reason = await self.not_ready()
            return _reply(503, TEXT, f"{reason}\n".encode()) if reason else _reply(200, TEXT, b"ready\n")
        if path == "/metrics":
            await self.check_registry()
            return _reply(200, CONTENT_TYPE, self.metrics.render())
        return None

    async def not_ready(self) -> str | None:
        """Why the node should get no new users now, or None when it is ready."""
        if self.node.draining:
            return "draining"
        if not self.node.workers_connected():
            return "no relay worker connected"
        if not await self.check_registry():
            return "registry not ready"
        return None

    async def check_registry(self) -> bool:
        """Ask the registry, time it, and record both in the metrics."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            ok = await asyncio.wait_for(self.registry.ready(), REGISTRY_CHECK_TIMEOUT)
        except (TimeoutError, OSError):
            ok = False
        self.metrics.registry_checked(ok, loop.time() - started)
        return ok


def _reply(status: int, content_type: str, body: bytes) -> HttpResponse:
    return HttpResponse(status, body, content_type, headers=(
        ("Connection", "close"), ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")))
