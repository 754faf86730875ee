"""A WebSocket client written by hand, byte by byte, for tests that must cut the handshake or
a frame into pieces (slowloris): websockets' own client always sends whole frames."""

from __future__ import annotations

import asyncio
import base64
import os
import struct


def handshake_request(forwarded_for: str | None = None) -> bytes:
    """An opening handshake (RFC 6455 4.1), naming a client address when asked."""
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for else ""
    return (f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


async def open_raw(host: str, port: int, forwarded_for: str | None = None
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection past a whole handshake (101), ready for hand-made frames."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(handshake_request(forwarded_for))
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert response.startswith(b"HTTP/1.1 101"), response
    return reader, writer


def frame(payload: bytes, *, opcode: int = 1, fin: bool = True) -> bytes:
    """A masked client frame (payload under 64 kB); opcode 1 text, 0 continuation."""
    assert len(payload) < 65536
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    return bytes([(0x80 if fin else 0) | opcode]) + length + mask + masked


async def close_frame(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[int, str]:
    """Read server frames until a close frame; its code and reason."""
    while True:
        head = await asyncio.wait_for(reader.readexactly(2), timeout)
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(length)
        if head[0] & 0x0F == 8:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
