"""How loaded a relay worker is, from what it reports to ``worker.stats`` (pure: time is passed in).

A node polls each worker every few seconds (``relay_client.RelayPool``); from two reports in a
row this derives the worker's CPU (cores busy) and packets per second. Placement picks the
worker with the lowest ``score``:

    score = reported CPU + CALL_COST x (calls the worker reports + calls placed here since)

The CPU is what the worker really spends, whoever placed its calls (several nodes may share
it) and however heavy they are; the call count stands for calls that have just been placed and
do not cost CPU yet (a call starts its media a second or more after it is placed), and breaks
ties between idle workers. When a worker's report is missing or older than ``max_age`` (it is
new, or too busy to answer), the score falls back to the calls this node placed on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.messages import WorkerStatsResult

#: About what one call with audio and video costs a worker, in cores (README: 0.7-1% of a core).
CALL_COST = 0.01


@dataclass
class WorkerLoad:
    """The last report of one worker, the rates derived from the report before it, and the IPC
    round trip of the request that fetched it."""

    stats: WorkerStatsResult | None = None
    #: When ``stats`` arrived (seconds, monotonic).
    at: float | None = None
    #: Cores busy over the last interval (1.0 = one core all the time).
    cpu: float = 0.0
    packets_per_second: float = 0.0
    #: Seconds between sending ``worker.stats`` and its answer.
    rtt: float | None = None
    #: Calls placed on the worker since ``stats`` was taken (not in its count yet).
    placed_since: int = 0

    def update(self, stats: WorkerStatsResult, now: float, rtt: float, counted: int) -> None:
        """A new report: rates from the previous one when it is of the same process.

        ``counted``: ``placed_since`` when the request was sent. Those calls were asked of the
        worker before ``worker.stats`` on the same channel, so its count has them; calls placed
        while the request was on its way are still to add.
        """
        previous, then = self.stats, self.at
        if previous is not None and then is not None and previous.pid == stats.pid and now > then:
            elapsed = now - then
            self.cpu = max(0.0, stats.cpu_seconds - previous.cpu_seconds) / elapsed
            packets = (stats.packets_in + stats.packets_out) - (previous.packets_in + previous.packets_out)
            self.packets_per_second = max(0, packets) / elapsed
        else:
            self.cpu = self.packets_per_second = 0.0
        self.stats, self.at, self.rtt = stats, now, rtt
        self.placed_since = max(0, self.placed_since - counted)

    def placed(self, count: int = 1) -> None:
        """``count`` calls placed (-1: a placement the worker refused after all)."""
        self.placed_since = max(0, self.placed_since + count)

    def forget(self) -> None:
        """The worker's channel closed: what it said no longer holds."""
        self.stats = self.at = self.rtt = None
        self.cpu = self.packets_per_second = 0.0
        self.placed_since = 0

    def fresh(self, now: float, max_age: float) -> bool:
        return self.stats is not None and self.at is not None and now - self.at <= max_age

    def score(self, now: float, max_age: float, own_calls: int) -> float:
        """Lower is better; see the module docstring."""
        if self.stats is not None and self.fresh(now, max_age):
            return self.cpu + CALL_COST * (self.stats.calls + self.placed_since)
        return CALL_COST * own_calls
