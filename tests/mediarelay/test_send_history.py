"""A video ``SendStream``'s history (mediarelay/forwarder.py): the newest ``keep`` packets it
sent, to answer NACKs, and nothing older (memory). Pure: the stream sends into a list."""

from __future__ import annotations

import struct

from mediarelay.forwarder import HISTORY_SIZE, INITIAL_HISTORY, Counters, SendStream


def stream_that_sent(count: int) -> tuple[SendStream, list[bytes]]:
    """A video stream that forwarded ``count`` packets (numbered from 0), and what it put on the wire."""
    wire: list[bytes] = []
    stream = SendStream("video", "1", 1234, 90000, Counters())
    stream.connect(lambda data: data, lambda data, _addr: wire.append(data), None)
    for number in range(count):
        seq = stream.seq.input(number)
        assert seq is not None
        stream.send(struct.pack("!BBHII", 0x80, 96, seq, 0, 1234) + b"\x00" * 100, seq, 100)
    return stream, wire


def kept(stream: SendStream) -> list[int]:
    """The sequence numbers the history still holds, oldest first."""
    assert stream.history is not None
    return sorted((p[2] << 8) | p[3] for p in stream.history if p is not None)


def test_until_its_rate_is_known_a_stream_keeps_its_newest_initial_packets() -> None:
    stream, wire = stream_that_sent(300)
    assert kept(stream) == list(range(300 - INITIAL_HISTORY, 300))
    assert stream.retransmit(300 - INITIAL_HISTORY) and wire[-1][2:4] == struct.pack("!H", 300 - INITIAL_HISTORY)
    assert not stream.retransmit(299 - INITIAL_HISTORY)


def test_a_smaller_history_lets_go_of_the_older_packets_at_once() -> None:
    stream, _ = stream_that_sent(300)
    stream.resize(20)
    assert kept(stream) == list(range(280, 300))
    assert stream.retransmit(280) and not stream.retransmit(279)


def test_a_larger_history_fills_as_packets_are_sent_up_to_the_ring() -> None:
    stream, _ = stream_that_sent(100)
    stream.resize(10_000)
    assert stream.keep == HISTORY_SIZE - 1
    assert kept(stream) == list(range(100 - INITIAL_HISTORY, 100))  # nothing comes back
    for number in range(100, 600):
        seq = stream.seq.input(number)
        assert seq is not None
        stream.send(struct.pack("!BBHII", 0x80, 96, seq, 0, 1234) + b"\x00" * 100, seq, 100)
    assert kept(stream) == list(range(600 - HISTORY_SIZE + 1, 600))


def test_an_audio_stream_keeps_nothing() -> None:
    stream = SendStream("audio", "0", 1, 48000, Counters())
    stream.resize(50)
    assert stream.history is None and not stream.retransmit(0)
