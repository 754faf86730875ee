"""The operator's endpoints on the API port: ``/healthz``, ``/readyz``, ``/metrics``.

- ``/healthz``: 200 ``ok`` while the process serves HTTP at all (a liveness probe).
- ``/readyz``: 200 ``ready`` when the node can take a new call: not draining, at least one
  relay worker connected, and the registry answering (``Registry.ready``); otherwise 503 with
  the first reason in one line (``draining``, ``no relay worker connected``, ``registry not
  ready``). A load balancer or orchestrator stops sending new users on 503.
- ``/metrics``: Prometheus text format (``signaling/metrics.py``).

Only these exact paths (query string ignored) come here; every other GET stays with the
demo page's allow-list (``http_static``).
"""

from __future__ import annotations

import asyncio
import email.utils
from typing import Protocol

from websockets.datastructures import Headers
from websockets.http11 import Response

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

    async def response(self, target: str) -> Response | None:
        """The answer for ``target`` (a request path, maybe with a query), or None: not ours."""
        path = target.split("?", 1)[0]
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


def _reply(status: int, content_type: str, body: bytes) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ])
    phrase = {200: "OK", 503: "Service Unavailable"}.get(status, "")
    return Response(status, phrase, headers, body)
