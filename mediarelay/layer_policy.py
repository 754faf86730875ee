"""Automatic simulcast substream choice: what the receiver's path can carry (pure, time passed in).

Beyond Janus (issue 13, item 4): unless the receiver pinned a substream with ``set substream``,
the relay picks it from what it learns of the receiver's path on its own hop:

- the receiver's **REMB** estimate (bits/s) of what reaches it;
- the **loss** its receiver reports give for the relay's stream to it (fraction lost, RFC 3550);
- the receiver's ``bitrate`` (its ``set bitrate``): a hard ceiling on what is chosen for it;
- the **bitrate of each substream** as it arrives at the relay (measured), and what each is
  *expected* to need: the most it measured over the last ``PEAK_WINDOW`` s, and at least
  ``LAYER_RATIO`` times what the one below needs (a sender that ramps up fills its lower
  substreams first: a top substream still at 200 kbit/s will need far more in a moment).

Policy (the README has it in prose):

- **Down, fast.** The chosen substream goes down when the ceiling is below its expected
  bitrate (at the next measurement, every second, or at once when the ceiling is set),
  when the estimate stays below ``DOWN_MARGIN`` of its bitrate for ``DOWN_AFTER`` s
  without climbing (``RAMPING``: a receiver's estimate lags behind a bigger substream and
  climbs towards it while the path carries it; one that is congested falls or stands still),
  or when two reports in a row say ``LOSS_DOWN`` or more was lost: with RTCP every second,
  within one or two seconds. It goes to the highest substream that fits the estimate (at
  least one step down).
- **Up, carefully.** After ``UP_AFTER`` s with no congestion sign (loss under ``LOSS_UP``,
  the estimate not falling) and a next substream under the ceiling, it goes up one step when
  the estimate says the next one fits, or when the estimate is *saturated*: a receiver's
  estimate cannot show room it has never been offered (libwebrtc's grows to at most 1.5x what
  it receives), so an estimate at ``SATURATED`` times the current bitrate or more says
  nothing against more, and the relay *probes*. If that probe fails (a down within ``PROBE_GRACE`` s), the wait before the
  next doubles, up to ``MAX_BACKOFF`` s; a substream kept ``PROBE_GRACE`` s resets it.

Nothing here knows packets or sockets: ``rtcp.py`` feeds it (``on_rates`` each RTCP tick,
``on_estimate`` per REMB, ``on_loss`` per report block) and hands ``choice`` to the
``SimulcastSelector`` (``set_auto_target``).
"""

from __future__ import annotations

from collections.abc import Iterable

#: Down when the estimate stays under this share of the chosen substream's bitrate ...
DOWN_MARGIN = 0.9
#: ... for this long (s) ...
DOWN_AFTER = 1.0
#: ... unless it climbed by this factor over the last ``DOWN_AFTER`` s (catching up, not congested).
RAMPING = 1.05
#: Fraction lost (0..1) in a receiver report that counts as congestion (two in a row: down).
LOSS_DOWN = 0.10
#: Fraction lost under which a probe up is allowed.
LOSS_UP = 0.02
#: An estimate this many times the current substream's bitrate is at the receiver's own
#: ceiling (libwebrtc: 1.5x what it receives): it does not say the path is full.
SATURATED = 1.45
#: Up needs this long (s) without a congestion sign; doubled after each failed probe, up to:
UP_AFTER = 4.0
MAX_BACKOFF = 16.0
#: A substream reached by a probe and kept this long (s) counts as a successful probe.
PROBE_GRACE = 8.0
#: Smoothing of the measured substream bitrates (weight of the newest sample).
RATE_WEIGHT = 0.5
#: A substream is expected to need the most it measured (smoothed) over this many seconds ...
PEAK_WINDOW = 10.0
#: ... and at least this many times what the substream below it is expected to need (each
#: has about twice the width and height: typically 2.5-3x the bits; 1.5 is a floor).
LAYER_RATIO = 1.5


class LayerPolicy:
    """The substream the automatic choice wants for one receiver of one simulcast m-line."""

    __slots__ = ("layers", "choice", "rates", "estimate", "cap", "_losses", "_below_since", "_calm_since",
                 "_backoff", "_probe_at", "changes", "_estimates", "_history", "reason")

    def __init__(self, layers: Iterable[int], now: float = 0.0) -> None:
        self.layers = sorted(set(layers))
        if not self.layers:
            raise ValueError("a layer policy needs at least one substream")
        #: What is chosen now (the top one until the path says otherwise).
        self.choice = self.layers[-1]
        #: Measured bits/s of each substream (smoothed), as it arrives at the relay.
        self.rates: dict[int, float] = {}
        self.estimate: int | None = None
        #: The receiver's ``bitrate`` (0: none).
        self.cap = 0
        self._losses: list[float] = []
        self._below_since: float | None = None
        self._calm_since = now
        self._backoff = UP_AFTER
        #: When the last probe up was made (None: not probing).
        self._probe_at: float | None = None
        #: (time, substream) of each change (tests, logs).
        self.changes: list[tuple[float, int]] = []
        #: Recent (time, estimate): is it climbing?
        self._estimates: list[tuple[float, int]] = []
        #: Why the last change was made (logs).
        self.reason = ""
        #: Per substream, its (time, smoothed bitrate) over the last ``PEAK_WINDOW`` s.
        self._history: dict[int, list[tuple[float, float]]] = {}

    # --- inputs ---------------------------------------------------------------------------------

    def on_rates(self, rates: dict[int, float], now: float) -> int:
        """Each substream's bitrate (bits/s) over the last interval; a substream that sent
        nothing keeps its last figure (it may be paused by the fallback's cause, not cheaper)."""
        for index, rate in rates.items():
            if rate <= 0:
                continue
            old = self.rates.get(index)
            smoothed = self.rates[index] = rate if old is None else old + RATE_WEIGHT * (rate - old)
            self._history.setdefault(index, []).append((now, smoothed))
        for history in self._history.values():
            while history and now - history[0][0] > PEAK_WINDOW:
                del history[0]
        return self.decide(now)

    def on_estimate(self, bitrate: int, now: float) -> int:
        """The receiver's REMB."""
        self.estimate = bitrate
        self._estimates.append((now, bitrate))
        while len(self._estimates) > 2 and now - self._estimates[1][0] >= DOWN_AFTER:
            del self._estimates[0]  # keep one sample at least DOWN_AFTER old
        return self.decide(now)

    def _climbing(self) -> bool:
        """Whether the newest estimate is ``RAMPING`` times one ``DOWN_AFTER`` s older or more."""
        newest_time, newest = self._estimates[-1]
        old = next((e for t, e in reversed(self._estimates) if newest_time - t >= DOWN_AFTER), None)
        return old is not None and newest >= RAMPING * old

    def on_loss(self, fraction: float, now: float) -> int:
        """A receiver report about the relay's stream to it: ``fraction`` (0..1) lost."""
        self._losses = [*self._losses[-1:], fraction]
        if fraction >= LOSS_UP:
            self._calm_since = now
        return self.decide(now)

    def set_cap(self, bitrate: int, now: float) -> int:
        self.cap = max(0, bitrate)
        return self.decide(now)

    # --- the decision -----------------------------------------------------------------------------

    def _rate(self, index: int) -> float | None:
        return self.rates.get(index)

    def expected(self, index: int) -> float | None:
        """What substream ``index`` is expected to need (bits/s): the most it measured lately,
        and ``LAYER_RATIO`` times what the one below is expected to need; None: nothing known."""
        history = self._history.get(index)
        peak = max((rate for _, rate in history), default=None) if history else None
        below = max((i for i in self.layers if i < index), default=None)
        floor = self.expected(below) if below is not None else None
        if floor is not None:
            floor *= LAYER_RATIO
        if peak is None or floor is None:
            return peak if floor is None else floor
        return max(peak, floor)

    def _fits(self, index: int, budget: float) -> bool:
        """Whether substream ``index`` as measured fits ``budget`` (one never measured does)."""
        rate = self._rate(index)
        return rate is None or rate <= budget

    def _under_cap(self, index: int) -> bool:
        """Whether substream ``index`` is expected to fit the ceiling (one never measured is,
        unless the one below says it cannot be)."""
        rate = self.expected(index)
        return not self.cap or rate is None or rate <= self.cap

    def decide(self, now: float) -> int:
        """The substream wanted now (``choice``), after applying the policy."""
        current = self.choice
        rate = self._rate(current)
        lower = [i for i in self.layers if i < current]
        if self._probe_at is not None and now - self._probe_at >= PROBE_GRACE:
            self._probe_at, self._backoff = None, UP_AFTER  # the probe held
        # Down: the ceiling, a lasting low estimate, or lasting loss.
        if lower and not self._under_cap(current):
            return self._down(max([i for i in lower if self._under_cap(i)], default=lower[0]), now, "cap")
        if lower and rate is not None:
            if self.estimate is not None and self.estimate < DOWN_MARGIN * rate:
                # Timed by the estimates themselves: an old one seen again proves nothing new.
                estimated_at = self._estimates[-1][0]
                if self._below_since is None or self._climbing():
                    self._below_since = estimated_at
                    self._calm_since = now
                elif estimated_at - self._below_since >= DOWN_AFTER:
                    budget = self.estimate / DOWN_MARGIN
                    fit = [i for i in lower if self._fits(i, budget) and self._under_cap(i)]
                    return self._down(max(fit, default=lower[0]), now, "estimate")
            else:
                self._below_since = None
        if lower and len(self._losses) == 2 and min(self._losses) >= LOSS_DOWN:
            return self._down(lower[-1], now, f"loss {self._losses}")
        # Up, one step, after a calm while.
        higher = [i for i in self.layers if i > current]
        if higher and rate is not None and now - self._calm_since >= self._backoff:
            step = higher[0]
            step_rate = self._rate(step)
            room = (self.estimate is None or self.estimate >= SATURATED * rate
                    or (step_rate is not None and step_rate <= DOWN_MARGIN * self.estimate))
            calm = room and (not self._losses or self._losses[-1] < LOSS_UP)
            if calm and self._under_cap(step):
                self.choice = step
                self._probe_at = now
                self._calm_since = now
                self.changes.append((now, step))
                self.reason = "probe" if room and self.estimate is not None and step_rate is not None \
                    and step_rate > DOWN_MARGIN * self.estimate else "room"
        return self.choice

    def _down(self, index: int, now: float, reason: str) -> int:
        if self._probe_at is not None:  # the probe failed: wait longer before the next
            self._backoff = min(MAX_BACKOFF, self._backoff * 2)
            self._probe_at = None
        self.choice = index
        self.reason = reason
        self._below_since = None
        self._losses = []
        self._calm_since = now
        self.changes.append((now, index))
        return index
