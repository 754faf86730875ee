"""``whole_text_frames``: a read of whole final text frames becomes their payloads; any other
read, even in part, is None (websockets then reads all of it, as before)."""

from __future__ import annotations

import os

import pytest
from websockets.frames import Frame, Opcode

from signaling.text_frames import whole_text_frames


def client_frame(payload: bytes, *, opcode: Opcode = Opcode.TEXT, fin: bool = True, rsv1: bool = False,
                 mask: bool = True) -> bytes:
    """A frame as a client sends it (masked), serialized by websockets itself (RSV1, which
    only an extension may set, set afterwards)."""
    data = Frame(opcode, payload, fin).serialize(mask=mask, extensions=[])
    return bytes([data[0] | 0x40]) + data[1:] if rsv1 else data


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_whole_text_frame_of_any_length_encoding_gives_its_payload(size: int) -> None:
    payload = os.urandom(size)
    assert whole_text_frames(client_frame(payload), None) == [payload]


def test_several_whole_frames_in_one_read_give_every_payload_in_order() -> None:
    payloads = [b'{"janus":"ping","transaction":"1"}', b"", os.urandom(300), b"x" * 70000]
    assert whole_text_frames(b"".join(client_frame(p) for p in payloads), None) == payloads


def test_a_read_that_ends_inside_a_frame_is_left_to_websockets() -> None:
    data = client_frame(b"a") + client_frame(os.urandom(200)) + client_frame(os.urandom(70000))
    for cut in range(1, len(data)):
        if cut in (7, 7 + 208):  # frame boundaries: the whole frames before them
            continue
        assert whole_text_frames(data[:cut], None) is None, cut


@pytest.mark.parametrize("frame", [
    client_frame(b"ping", opcode=Opcode.PING),
    client_frame(b"", opcode=Opcode.PONG),
    client_frame(b"\x03\xe8", opcode=Opcode.CLOSE),
    client_frame(b"half", fin=False),
    client_frame(b"rest", opcode=Opcode.CONT),
    client_frame(b"{}", opcode=Opcode.BINARY),
    client_frame(b"compressed", rsv1=True),
    client_frame(b"{}", mask=False),
    b"",
], ids=["ping", "pong", "close", "fragment", "continuation", "binary", "rsv1", "unmasked", "empty"])
def test_anything_but_whole_final_masked_text_frames_is_left_to_websockets(frame: bytes) -> None:
    assert whole_text_frames(frame, None) is None
    if frame:  # behind a whole one too: nothing of the read is taken
        assert whole_text_frames(client_frame(b"{}") + frame, None) is None


def test_a_frame_over_the_size_limit_is_left_to_websockets() -> None:
    assert whole_text_frames(client_frame(b"x" * 100), 100) == [b"x" * 100]
    assert whole_text_frames(client_frame(b"x" * 101), 100) is None
    assert whole_text_frames(client_frame(b"x" * 70000), 65536) is None
