"""Sequence numbers and timestamps of a forwarded stream (mediarelay/rewriter.py), as tables.

Each row feeds a list of verbs to a fresh rewriter and lists what ``input`` returned, in the
manner of mediasoup's TestSeqManager: ("in", n) forwards source number n, ("drop", n) does
not forward it, ("sync",) is an unmute or a new source SSRC.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from mediarelay.rewriter import SeqRewriter, TimestampRewriter

Step = tuple


def run(start: int, steps: list[Step]) -> list[int | None]:
    rewriter = SeqRewriter(start)
    out: list[int | None] = []
    for step in steps:
        if step[0] == "in":
            out.append(rewriter.input(step[1]))
        elif step[0] == "drop":
            rewriter.drop(step[1])
        else:
            rewriter.sync()
    return out


def ins(*seqs: int) -> list[Step]:
    return [("in", s) for s in seqs]


SEQ_TABLE = [
    ("in order", 1000, ins(0, 1, 2), [1000, 1001, 1002]),
    ("a loss stays a hole", 1000, ins(0, 1, 3, 4), [1000, 1001, 1003, 1004]),
    ("the late packet fills its hole", 1000, ins(0, 2, 1, 3), [1000, 1002, 1001, 1003]),
    ("a duplicate maps to the same number", 1000, ins(5, 6, 6), [1000, 1001, 1001]),
    ("source wraps", 1000, ins(65534, 65535, 0, 1), [1000, 1001, 1002, 1003]),
    ("output wraps", 65534, ins(10, 11, 12, 13), [65534, 65535, 0, 1]),
    ("late across the source wrap", 7, ins(65535, 1, 0), [7, 9, 8]),
    ("unmute continues after the last number sent", 1000, ins(0, 1, 2) + [("sync",)] + ins(700, 701),
     [1000, 1001, 1002, 1003, 1004]),
    ("new SSRC anywhere in the number space", 1000, ins(0, 1) + [("sync",)] + ins(40000, 40001, 40003),
     [1000, 1001, 1002, 1003, 1005]),
    ("a packet from before the sync is stale", 1000, ins(0, 1, 3) + [("sync",)] + ins(10, 2, 11),
     [1000, 1001, 1003, 1004, None, 1005]),
    ("a dropped packet leaves no hole", 1000, ins(0, 1) + [("drop", 2)] + ins(3, 4), [1000, 1001, 1002, 1003]),
    ("two drops in a row", 1000, ins(0) + [("drop", 1), ("drop", 2)] + ins(3), [1000, 1001]),
    ("a drop after a hole keeps the hole for the late packet", 1000,
     ins(0, 1, 3) + [("drop", 4)] + ins(5, 2, 6), [1000, 1001, 1003, 1004, 1002, 1005]),
    ("a drop of a number already passed changes nothing", 1000, ins(0, 2) + [("drop", 1)] + ins(3),
     [1000, 1002, 1003]),
    ("drops across the wrap", 100, ins(65534) + [("drop", 65535)] + ins(0, 1), [100, 101, 102]),
    ("sync after drops", 1000, ins(0) + [("drop", 1)] + ins(2) + [("sync",)] + ins(50), [1000, 1001, 1002]),
]


@pytest.mark.parametrize("start, steps, expected", [row[1:] for row in SEQ_TABLE], ids=[row[0] for row in SEQ_TABLE])
def test_sequence_numbers(start: int, steps: list[Step], expected: list[int | None]) -> None:
    assert run(start, steps) == expected


def test_a_long_stream_keeps_its_offset_through_many_cycles() -> None:
    rewriter = SeqRewriter(30000)
    outs = [rewriter.input(seq % 65536) for seq in range(5000, 5000 + 200000)]
    assert outs[0] == 30000 and outs[-1] == (30000 + 199999) % 65536
    assert all((b - a) % 65536 == 1 for a, b in pairwise(outs))  # type: ignore[operator]


def test_source_maps_an_outgoing_number_back_for_a_nack_upstream() -> None:
    rewriter = SeqRewriter(1000)
    for seq in (10, 11, 13):
        rewriter.input(seq)
    assert rewriter.source(1002) == 12  # the hole: never reached the relay, ask the sender
    assert rewriter.source(1003) == 13
    rewriter.drop(14)
    rewriter.input(15)
    assert rewriter.source(1004) == 15
    assert rewriter.source(1003) == 13
    assert rewriter.source(1100) is None  # not sent yet
    rewriter.sync()
    assert rewriter.source(1004) is None  # numbers from before a sync mean nothing upstream now


def test_source_across_the_wrap() -> None:
    rewriter = SeqRewriter(65535)
    for seq in (400, 401, 403):
        rewriter.input(seq)
    assert rewriter.source(1) == 402


def test_nothing_sent_yet_has_no_source() -> None:
    assert SeqRewriter(5).source(5) is None


# --- timestamps -----------------------------------------------------------------------------


def test_timestamps_move_by_offset_and_wrap() -> None:
    ts = TimestampRewriter(90000, start=4294967000)
    assert ts.input(1000, 0.0) == 4294967000
    assert ts.input(4000, 0.033) == (4294967000 + 3000) % 2**32
    assert ts.input(1000, 0.040) == 4294967000  # a late packet of the first frame
    assert ts.last_out == (4294967000 + 3000) % 2**32 and ts.last_time == 0.033


def test_source_timestamps_that_wrap() -> None:
    ts = TimestampRewriter(48000, start=0)
    assert ts.input(2**32 - 480, 0.0) == 0
    assert ts.input(480, 0.02) == 960


def test_after_a_sync_the_timestamp_advances_by_the_time_that_passed() -> None:
    ts = TimestampRewriter(90000, start=10000)
    ts.input(500, 1.0)
    ts.input(3500, 1.033)
    ts.sync()  # muted for 2 s; the source's own timestamps mean nothing to the receiver
    assert ts.input(777777, 3.033) == 13000 + 180000
    assert ts.input(780777, 3.066) == 13000 + 183000


def test_a_sync_right_away_still_moves_forward() -> None:
    ts = TimestampRewriter(48000, start=0)
    ts.input(100, 5.0)
    ts.sync()
    assert ts.input(99999, 5.0) == 1


def test_at_gives_the_timestamp_of_now_for_a_sender_report() -> None:
    ts = TimestampRewriter(90000, start=0)
    ts.input(0, 10.0)
    ts.input(9000, 10.1)
    assert ts.at(10.6) == 9000 + 45000
