"""``worker.stats``' numbers: every fast-path counter is classified, ended calls stay counted."""

from __future__ import annotations

from types import SimpleNamespace

from mediarelay.forwarder import Counters
from mediarelay.media_flow import MediaFlow
from mediarelay.worker_stats import DROP_REASONS, NOT_DROPS, WorkerTotals, counters_fields


def test_every_counter_is_a_drop_reason_or_named_as_not_one() -> None:
    """A counter added to ``forwarder.Counters`` must be classified here, or it goes unreported."""
    assert set(DROP_REASONS) | set(NOT_DROPS) == counters_fields()
    assert not set(DROP_REASONS) & set(NOT_DROPS)


def fake_call(packets: int, forwarded: int, muted: int) -> SimpleNamespace:
    flow = MediaFlow(kind="audio", mid="0")
    for _ in range(packets):
        flow.on_packet(100, 0.0)
    counters = Counters(forwarded=forwarded, forwarded_octets=100 * forwarded, muted=muted)
    return SimpleNamespace(caller=SimpleNamespace(flows=[flow]), callee=SimpleNamespace(flows=[]),
                           media=SimpleNamespace(counters=counters))


def test_ended_calls_stay_in_the_totals() -> None:
    totals = WorkerTotals()
    live, ended = fake_call(10, 8, 2), fake_call(5, 5, 0)
    totals.call_ended(ended)
    report = totals.result([live], creating=1)
    assert (report.calls, report.legs) == (2, 4)  # one held, one being created
    assert (report.packets_in, report.bytes_in) == (15, 1500)
    assert (report.packets_out, report.bytes_out) == (13, 1300)
    assert report.drops["muted"] == 2 and set(report.drops) == set(DROP_REASONS)
    assert report.cpu_seconds > 0 and report.rss_bytes > 1_000_000
