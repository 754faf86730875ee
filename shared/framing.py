"""The IPC wire format: length-prefixed msgpack frames and the three message shapes.

Sans-I/O, like websockets' ``frames.py``: bytes in, checked messages out, and back. No
sockets, tasks or clocks here; ``shared/ipc_channel.py`` moves the bytes. A frame is a 4-byte
big-endian payload length, then one msgpack map of one of these shapes::

    request      {"t": "req", "id": int (1..2**32-1), "method": str, "body": map[, "dl": float]}
    response     {"t": "res", "id": int, "ok": bool, "body": map | nil, "error": str | nil}
    notification {"t": "ntf", "method": str, "body": map}

A request's optional ``dl`` is its deadline: the sender's wall clock (Unix seconds) after
which nobody waits for the answer any more, so the receiver drops it instead of carrying
it out late (``shared/ipc_channel.py`` reads it on its own clock). Anything else is a
``FrameError`` naming the defect in one sentence, so the channel can log it and drop the
peer. What a ``body`` holds is not checked here: that is the job of the
pydantic models in ``shared/messages.py``, once the method is known.
"""

from __future__ import annotations

from typing import Any

import msgpack

#: Default cap on one frame's payload. mediasoup's Channel.ts caps at 4 MiB; our largest
#: message is two SDPs of at most 64 KiB each, so 1 MiB leaves ample room.
MAX_FRAME: int = 1 << 20

#: Request ids are unsigned 32-bit and never 0 (as in mediasoup).
MAX_ID: int = 2**32 - 1

_PREFIX = 4

#: Deadlines outside this range (Unix seconds: 2001..2286) are a bug or a hostile peer.
_DEADLINE_RANGE = (1e9, 1e10)

# Field -> (accepted types, description for the error). ``bool`` is an ``int`` in Python,
# so types are matched exactly, not with isinstance.
_NONE = type(None)
_SHAPES: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "req": {
        "t": ((str,), "a string"),
        "id": ((int,), f"an integer in 1..{MAX_ID}"),
        "method": ((str,), "a string"),
        "body": ((dict,), "a map"),
    },
    "res": {
        "t": ((str,), "a string"),
        "id": ((int,), f"an integer in 1..{MAX_ID}"),
        "ok": ((bool,), "a boolean"),
        "body": ((dict, _NONE), "a map or nil"),
        "error": ((str, _NONE), "a string or nil"),
    },
    "ntf": {
        "t": ((str,), "a string"),
        "method": ((str,), "a string"),
        "body": ((dict,), "a map"),
    },
}

_MSGPACK_NAMES: dict[type, str] = {
    dict: "map", list: "array", str: "string", bytes: "binary", int: "integer",
    float: "float", bool: "boolean", _NONE: "nil",
}


class FrameError(ValueError):
    """Bytes on the wire that are not a valid frame; the message names the defect."""


def _type_name(value: object) -> str:
    return _MSGPACK_NAMES.get(type(value), type(value).__name__)


def check_message(message: object) -> dict[str, Any]:
    """Return ``message`` if it has exactly one of the three wire shapes, else raise FrameError."""
    if type(message) is not dict:
        raise FrameError(f"frame is a msgpack {_type_name(message)}, not a map")
    if "t" not in message:
        raise FrameError("frame map has no field 't'")
    kind = message["t"]
    shape = _SHAPES.get(kind) if type(kind) is str else None
    if shape is None:
        raise FrameError(f"frame field 't' is {kind!r}, not 'req', 'res' or 'ntf'")
    for field, (types, wanted) in shape.items():
        if field not in message:
            raise FrameError(f"'{kind}' frame is missing field '{field}'")
        value = message[field]
        if type(value) not in types or (field == "id" and not 1 <= value <= MAX_ID):
            raise FrameError(f"'{kind}' frame field '{field}' must be {wanted}, got {_type_name(value)} {value!r:.40}")
    for field in message:
        if field not in shape and not (kind == "req" and field == "dl"):
            raise FrameError(f"'{kind}' frame has unexpected field {field!r:.40}")
    if "dl" in message:
        deadline = message["dl"]
        if type(deadline) is not float or not _DEADLINE_RANGE[0] <= deadline <= _DEADLINE_RANGE[1]:
            raise FrameError(f"'req' frame field 'dl' must be a float of Unix seconds, got {_type_name(deadline)} "
                             f"{deadline!r:.40}")
    return message


def encode_frame(message: dict[str, Any], *, max_frame: int = MAX_FRAME) -> bytes:
    """Serialize one message: 4-byte big-endian length, then the msgpack map.

    The shape is checked as on decode, so a bug on this side fails here, not at the peer.
    """
    payload: bytes = msgpack.packb(check_message(message), use_bin_type=True)
    if len(payload) > max_frame:
        raise FrameError(f"frame length {len(payload)} exceeds the limit of {max_frame} bytes")
    return len(payload).to_bytes(_PREFIX, "big") + payload


def decode_payload(payload: bytes) -> dict[str, Any]:
    """Decode one frame's payload (without its length prefix) into a checked message."""
    if not payload:
        raise FrameError("frame payload is empty")
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except msgpack.ExtraData as exc:
        raise FrameError(f"frame payload has {len(exc.extra)} bytes after its msgpack value") from exc
    except (ValueError, TypeError) as exc:  # FormatError, StackError, truncation, bad UTF-8...
        raise FrameError("frame payload is not valid msgpack") from exc
    return check_message(message)


class FrameDecoder:
    """Cuts a byte stream into checked messages; keeps a partial frame until the rest arrives.

    The length prefix is checked as soon as its 4 bytes arrive, so an oversized frame fails
    before its payload is buffered. After a FrameError the stream has lost its framing:
    every later ``feed`` raises the same error.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._error: FrameError | None = None

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add ``data``; return every whole message it completes, in order."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        messages: list[dict[str, Any]] = []
        try:
            while len(self._buffer) >= _PREFIX:
                length = int.from_bytes(self._buffer[:_PREFIX], "big")
                if length > self._max_frame:
                    raise FrameError(f"frame length {length} exceeds the limit of {self._max_frame} bytes")
                if len(self._buffer) < _PREFIX + length:
                    break
                payload = bytes(self._buffer[_PREFIX:_PREFIX + length])
                del self._buffer[:_PREFIX + length]
                messages.append(decode_payload(payload))
        except FrameError as exc:
            self._error = exc
            self._buffer.clear()
            raise
        return messages
