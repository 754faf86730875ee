"""The automatic substream choice (mediarelay/layer_policy.py): synthetic paths over time.

Substreams of 150 kbit/s, 500 kbit/s and 1.5 Mbit/s; the receiver's REMB and receiver
reports arrive every second, as the relay's RTCP does, and ``Path`` plays them."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from mediarelay.layer_policy import DOWN_AFTER, MAX_BACKOFF, PEAK_WINDOW, UP_AFTER, LayerPolicy

RATES = {0: 150_000.0, 1: 500_000.0, 2: 1_500_000.0}


class Path:
    """A receiver whose path carries ``capacity(t)`` bits/s and loses ``loss(t)``; its REMB
    behaves as libwebrtc's: while what it receives passes, it climbs 8% a second up to 1.5x
    what it receives; when more arrives than passes (overuse), it falls to 85% of what passes."""

    def __init__(self, capacity: Callable[[float], float], loss: Callable[[float], float] = lambda t: 0.0,
                 cap: int = 0) -> None:
        self.policy = LayerPolicy(RATES)
        self.policy.set_cap(cap, 0.0)
        self.capacity = capacity
        self.loss = loss
        self.trace: list[tuple[float, int]] = []
        self.estimate = 300_000.0  # libwebrtc's start

    def run(self, until: float, start: float = 0.0) -> None:
        t = start
        while t < until:
            received = RATES[self.policy.choice]
            self.policy.on_rates(RATES, t)
            if received > self.capacity(t):
                self.estimate = 0.85 * self.capacity(t)
            else:
                self.estimate = min(1.08 * self.estimate, 1.5 * received + 10_000)
            self.policy.on_estimate(int(self.estimate), t)
            self.policy.on_loss(self.loss(t), t)
            self.trace.append((t, self.policy.choice))
            t = round(t + 1.0, 3)

    def first(self, layer: int, after: float) -> float:
        return next(t for t, choice in self.trace if t >= after and choice == layer)


def test_a_path_that_carries_everything_keeps_the_top_substream() -> None:
    path = Path(lambda t: 10_000_000)
    path.run(60)
    assert {choice for _, choice in path.trace} == {2}
    assert path.policy.changes == []


def test_a_path_that_shrinks_goes_down_within_two_seconds_and_back_up_when_it_grows() -> None:
    path = Path(lambda t: 10_000_000 if t < 10 or t >= 30 else 700_000)
    path.run(60)
    assert path.first(1, after=10) - 10 <= DOWN_AFTER + 1.0
    narrow = [choice for t, choice in path.trace if 12 <= t < 30]
    assert set(narrow) <= {1, 2} and narrow.count(1) >= 0.75 * len(narrow)  # 1.5 Mbit/s does not pass:
    probes = [t for t, layer in path.policy.changes if 12 <= t < 30 and layer == 2]  # probed, backing off
    assert all(b - a > 4 for a, b in itertools.pairwise(probes))
    back = path.first(2, after=30)
    assert back - 30 <= MAX_BACKOFF + 1.0  # at the next probe (a failed one waits at most MAX_BACKOFF)
    assert all(choice == 2 for t, choice in path.trace if t > back)


def test_a_path_too_narrow_for_the_middle_goes_to_the_bottom_and_stays_there_mostly() -> None:
    # 300 kbit/s: the bottom's estimate is saturated (1.5x 150), so the relay probes the middle
    # now and then; each failed probe waits twice as long.
    path = Path(lambda t: 10_000_000 if t < 5 else 300_000)
    path.run(120)
    assert path.first(0, after=5) - 5 <= DOWN_AFTER + 1.0
    assert path.policy.changes[0][1] == 0 and {c for _, c in path.policy.changes} == {0, 1}
    after = [choice for t, choice in path.trace if t >= 7]
    assert after.count(0) >= 0.85 * len(after)


def test_lasting_loss_brings_it_down_and_failed_probes_back_off() -> None:
    # The path loses 20% whenever more than 600 kbit/s goes through it.
    path = Path(lambda t: 10_000_000)
    path.loss = lambda t: 0.2 if RATES[path.policy.choice] > 600_000 else 0.0
    path.run(200)
    downs = [t for t, layer in path.policy.changes if layer == 1]
    ups = [t for t, layer in path.policy.changes if layer == 2]
    assert downs[0] <= 2.0  # two reports
    assert len(ups) >= 3
    waits = [up - down for down, up in zip(downs, ups, strict=False)]
    assert waits[1:] == sorted(waits[1:]) and waits[-1] > waits[1]  # each failed probe waits longer
    assert max(waits) <= MAX_BACKOFF + 1.0
    assert all(c in (1, 2) for _, c in path.policy.changes)


def test_one_lossy_report_is_not_enough() -> None:
    path = Path(lambda t: 10_000_000, loss=lambda t: 0.3 if t in (5.0, 9.0) else 0.0)
    path.run(20)
    assert path.policy.changes == []


@pytest.mark.parametrize("cap, layer", [(1_000_000, 1), (400_000, 0), (2_000_000, 2)])
def test_the_receivers_bitrate_is_a_ceiling(cap: int, layer: int) -> None:
    path = Path(lambda t: 10_000_000, cap=cap)
    path.run(30)
    assert {choice for t, choice in path.trace if t >= 1} == {layer}


def test_lifting_the_ceiling_brings_the_top_back() -> None:
    path = Path(lambda t: 10_000_000, cap=600_000)
    path.run(10)
    assert path.policy.choice == 1
    path.policy.set_cap(0, 10.0)
    path.run(30, start=10)
    assert path.policy.choice == 2 and path.first(2, after=10) - 10 <= UP_AFTER + 1.0


def test_without_measured_rates_an_estimate_moves_nothing() -> None:
    policy = LayerPolicy([0, 1, 2])
    for t in range(10):
        policy.on_estimate(50_000, float(t))
    assert policy.changes == []
    assert LayerPolicy([0, 1]).choice == 1
    with pytest.raises(ValueError, match="at least one"):
        LayerPolicy([])


def ramping(top: Callable[[float], float], lower: tuple[float, float] = (150_000.0, 300_000.0)) -> Callable[
        [float], dict[int, float]]:
    """A sender ramping up as Chromium does: its lower substreams at their rates, the top one
    at ``top(t)`` (its estimate fills the lower ones first)."""
    return lambda t: {0: lower[0], 1: lower[1], 2: top(t)}


def play(policy: LayerPolicy, rates: Callable[[float], dict[int, float]], start: float, until: float,
         cap_at: float | None = None, cap: int = 0) -> None:
    """The relay's measurements each second; the receiver sets ``cap`` at ``cap_at`` (between two)."""
    t = start
    while t < until:
        if cap_at is not None and t <= cap_at < t + 1.0:
            policy.on_rates(rates(t), t)
            policy.set_cap(cap, cap_at)
        else:
            policy.on_rates(rates(t), t)
        t += 1.0


def test_a_top_substream_still_ramping_under_a_cap_goes_down_when_the_cap_is_set() -> None:
    # The top substream is at 100-220 kbit/s (its sender's estimate still ramps), under the
    # 250 kbit/s cap, but it is expected to need at least 1.5x the middle's 300 kbit/s.
    policy = LayerPolicy([0, 1, 2])
    play(policy, ramping(lambda t: 100_000 + 20_000 * t), 0.0, 6.0, cap_at=5.5, cap=250_000)
    assert policy.changes == [(5.5, 0)]  # at once; the middle (300 kbit/s) does not fit either
    assert policy.expected(2) == pytest.approx(450_000)


def test_a_top_substream_crossing_the_cap_goes_down_at_the_next_measurement() -> None:
    # Lower substreams too small to say anything; the top one ramps 150, 200, 240, 300, 400 kbit/s.
    policy = LayerPolicy([0, 1, 2])
    top = [150_000, 200_000, 240_000, 300_000, 400_000, 500_000]
    play(policy, ramping(lambda t: top[int(t)], lower=(50_000.0, 100_000.0)), 0.0, 6.0, cap_at=0.5, cap=250_000)
    [(when, layer)] = policy.changes
    crossed = next(t for t, rate in enumerate(top) if rate > 250_000)
    assert layer == 1 and crossed <= when <= crossed + 1.0


def test_a_substream_that_needed_more_lately_is_not_probed_under_a_cap_it_broke() -> None:
    # The top substream needed 900 kbit/s, then its sender eased off to 200 kbit/s for a
    # while: under a 250 kbit/s cap it is not taken again before PEAK_WINDOW has passed.
    policy = LayerPolicy([0, 1, 2])
    play(policy, ramping(lambda t: 900_000 if t < 5 else 200_000, lower=(50_000.0, 100_000.0)), 0.0, 30.0,
         cap_at=4.5, cap=250_000)
    assert policy.changes[0] == (4.5, 1)
    ups = [t for t, layer in policy.changes if layer == 2]
    assert ups and min(ups) >= 4.0 + PEAK_WINDOW
