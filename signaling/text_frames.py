"""Whole client text frames cut from one read, or None: the common case of the WebSocket reader.

A Janus client sends each request as one small masked text frame, and a read from the
socket almost always holds exactly that frame (or a few whole ones). websockets parses every
frame with a generator per header field, and hands it on through its event list; for such
reads ``GuardedConnection.data_received`` takes the frames from here instead and hands them
to websockets' own message queue, as websockets would.

Only what needs no decision of websockets' is taken: final (unfragmented) text frames with
no reserved bit set, masked (a client's), each no larger than ``max_size``, and nothing left
over. Anything else (a control frame, a fragment, a binary frame, a partial frame, an
oversized or unmasked frame) returns None, with nothing consumed: the read then goes to
websockets whole, which answers it (pong, close, 1002, 1009...) exactly as before. UTF-8
is checked where websockets checks it, when the message is taken from its queue.

Pure: bytes in, payloads out; no socket, no websockets state.
"""

from __future__ import annotations

from websockets.frames import apply_mask

__all__ = ["whole_text_frames"]

#: FIN set, RSV1-3 clear, opcode 1 (text).
_FINAL_TEXT = 0x81
_MASKED = 0x80


def whole_text_frames(data: bytes, max_size: int | None) -> list[bytes] | None:
    """The unmasked payloads of the whole final text frames ``data`` is made of, in order;
    None if ``data`` is empty or is anything else, even in part."""
    end = len(data)
    pos = 0
    payloads: list[bytes] = []
    while pos < end:
        if end - pos < 6 or data[pos] != _FINAL_TEXT:
            return None
        second = data[pos + 1]
        if not second & _MASKED:
            return None  # websockets closes with 1002 "incorrect masking"
        length = second & 0x7F
        start = pos + 2
        if length == 126:
            length = int.from_bytes(data[start:start + 2], "big")
            start += 2
        elif length == 127:
            length = int.from_bytes(data[start:start + 8], "big")
            start += 8
        if max_size is not None and length > max_size:
            return None  # websockets closes with 1009
        payload = start + 4
        pos = payload + length
        if pos > end:
            return None  # not all here yet (the mask too, perhaps)
        payloads.append(apply_mask(data[payload:pos], data[start:payload]))
    return payloads or None
