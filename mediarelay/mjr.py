"""Janus's ``.mjr`` recording format, byte for byte (``src/record.c``), both ways.

A file is the 8-byte magic ``MJR00002``; then, with the first frame, a 16-bit big-endian
length and the info JSON (``t`` a/v/d, ``c`` codec, ``f`` fmtp, ``x`` extension map,
``s`` created and ``u`` first-frame real time in microseconds, in that order, as Janus
writes them with ``JSON_PRESERVE_ORDER``); then frames: ``MEET``, a 32-bit big-endian
millisecond offset from the first frame, a 16-bit length, and the packet: an RTP packet
as it arrived (decrypted), or for data an 8-byte big-endian real-time microsecond stamp
followed by the message (the length counts both).

Pure: bytes in, bytes out. Writing them to a file is ``recorder.py``'s; reading a file
back (``read``) serves ``videocall recordings`` and the tests. A file cut short (a crash,
a full disk) reads up to its last whole frame.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

MAGIC = b"MJR00002"
FRAME_MAGIC = b"MEET"
#: Janus's post-processor reads the info header into a 1 KiB buffer.
MAX_INFO = 1023
#: A frame's length is 16 bits.
MAX_FRAME = 0xFFFF
_DATA_STAMP = struct.Struct("!Q")
_FRAME_HEAD = struct.Struct("!4sIH")

Kind = Literal["audio", "video", "data"]
_TYPE_LETTER: dict[Kind, str] = {"audio": "a", "video": "v", "data": "d"}
_LETTER_TYPE: dict[str, Kind] = {letter: kind for kind, letter in _TYPE_LETTER.items()}


class MjrError(ValueError):
    """A file that is not a ``.mjr`` recording, or one this reader cannot follow."""


@dataclass(frozen=True)
class Info:
    """The info header: what is recorded and when it started."""

    kind: Kind
    codec: str
    created_us: int
    first_frame_us: int
    fmtp: str | None = None
    extensions: dict[int, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The length-prefixed JSON Janus writes before the first frame."""
        info: dict[str, Any] = {"t": _TYPE_LETTER[self.kind], "c": self.codec}
        if self.fmtp:
            info["f"] = self.fmtp
        if self.extensions:
            info["x"] = {str(i): uri for i, uri in sorted(self.extensions.items()) if 0 < i < 16}
        info["s"] = self.created_us
        info["u"] = self.first_frame_us
        text = json.dumps(info, separators=(",", ":")).encode()
        if len(text) > MAX_INFO:
            raise MjrError(f"info header of {len(text)} bytes is longer than {MAX_INFO}")
        return struct.pack("!H", len(text)) + text


def frame(offset_ms: int, packet: bytes) -> bytes:
    """One RTP frame, ``offset_ms`` after the first (32 bits, as Janus wraps it)."""
    if not 0 < len(packet) <= MAX_FRAME:
        raise MjrError(f"a frame holds 1 to {MAX_FRAME} bytes, not {len(packet)}")
    return _FRAME_HEAD.pack(FRAME_MAGIC, offset_ms & 0xFFFFFFFF, len(packet)) + packet


def data_frame(offset_ms: int, real_time_us: int, message: bytes) -> bytes:
    """One data channel message, with the real-time stamp Janus prepends to data."""
    return frame(offset_ms, _DATA_STAMP.pack(real_time_us) + message)


@dataclass(frozen=True)
class Frame:
    """A frame read back: its offset in ms and its packet (for data: the message)."""

    offset_ms: int
    packet: bytes
    #: For data frames, the real time the message was written (microseconds).
    real_time_us: int | None = None


@dataclass
class Recording:
    """A whole file read back: its info (None when no frame was ever written) and frames."""

    info: Info | None
    frames: list[Frame]
    #: True when the file ends inside a frame (cut short); the frames before it are whole.
    truncated: bool = False


def read(data: bytes) -> Recording:
    """Parse a ``.mjr`` file's bytes; ``MjrError`` for anything that is not one."""
    if not data.startswith(MAGIC):
        raise MjrError("not a Janus recording (no MJR00002 header)")
    if len(data) == len(MAGIC):
        return Recording(None, [])
    if len(data) < len(MAGIC) + 2:
        return Recording(None, [], truncated=True)
    (length,) = struct.unpack_from("!H", data, len(MAGIC))
    start = len(MAGIC) + 2
    if length > MAX_INFO:
        raise MjrError(f"info header of {length} bytes is longer than {MAX_INFO}")
    if len(data) < start + length:
        return Recording(None, [], truncated=True)
    info = _parse_info(data[start:start + length])
    frames, end = _frames(data, start + length, info.kind == "data")
    return Recording(info, frames, truncated=end != len(data))


def _parse_info(raw: bytes) -> Info:
    try:
        info = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MjrError(f"info header is not JSON: {exc}") from None
    if not isinstance(info, dict):
        raise MjrError("info header is not a JSON object")
    kind = _LETTER_TYPE.get(str(info.get("t", "")).lower())
    codec, created, first = info.get("c"), info.get("s"), info.get("u")
    if kind is None or not isinstance(codec, str) or not isinstance(created, int) or not isinstance(first, int):
        raise MjrError("info header lacks its type, codec or times")
    fmtp = info.get("f") if isinstance(info.get("f"), str) else None
    raw_ext = info.get("x")
    if not isinstance(raw_ext, dict):
        raw_ext = {}
    extensions = {int(k): v for k, v in raw_ext.items() if k.isdigit() and isinstance(v, str)}
    return Info(kind, codec.lower(), created, first, fmtp, extensions)


def _frames(data: bytes, offset: int, is_data: bool) -> tuple[list[Frame], int]:
    """The whole frames from ``offset`` on, and where the last one ends."""
    frames: list[Frame] = []
    while offset + _FRAME_HEAD.size <= len(data):
        magic, stamp, length = _FRAME_HEAD.unpack_from(data, offset)
        if magic != FRAME_MAGIC:
            raise MjrError(f"no frame header at byte {offset}")
        body = offset + _FRAME_HEAD.size
        if body + length > len(data):
            break  # cut short inside the last frame
        packet = data[body:body + length]
        if is_data:
            if length < _DATA_STAMP.size:
                raise MjrError(f"data frame at byte {body} is shorter than its time stamp")
            (real_time,) = _DATA_STAMP.unpack_from(packet)
            frames.append(Frame(stamp, packet[_DATA_STAMP.size:], real_time))
        else:
            frames.append(Frame(stamp, packet))
        offset = body + length
    return frames, offset
