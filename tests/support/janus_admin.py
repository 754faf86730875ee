"""A client of a Janus Admin API over WebSocket (subprotocol ``janus-admin-protocol``), for
tests against our node or the real Janus alike.

    async with AdminClient.connect("ws://127.0.0.1:7088/", secret) as admin:
        sessions = (await admin.request("list_sessions"))["sessions"]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

ADMIN_PROTOCOL = websockets.Subprotocol("janus-admin-protocol")


class AdminClient:
    def __init__(self, ws: ClientConnection, secret: str | None) -> None:
        self.ws = ws
        self.secret = secret

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, secret: str | None, *, wait: float = 10.0) -> AsyncIterator[AdminClient]:
        """Connect, retrying for up to ``wait`` s while the port is not open yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                ws = await websockets.connect(url, subprotocols=[ADMIN_PROTOCOL], open_timeout=5, proxy=None,
                                              max_size=None)
                break
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)
        try:
            yield cls(ws, secret)
        finally:
            await ws.close()

    async def request(self, verb: str, *, wait: float = 5.0, **fields: Any) -> dict[str, Any]:
        """One request (with the secret, unless ``admin_secret`` is given); its answer within
        ``wait`` s (not ``timeout``: that is a field of ``set_session_timeout``)."""
        message: dict[str, Any] = {"janus": verb, "transaction": secrets.token_hex(6), **fields}
        if self.secret is not None:
            message.setdefault("admin_secret", self.secret)
        await self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
            if reply.get("transaction") == message["transaction"] or "transaction" not in reply:
                return dict(reply)
