"""Seeded traffic for the alert harness: per-minute counts, late arrivals and stalls.

Counts are generated per minute (not per event) so days of traffic take a fraction of a
second. ``SimRollups`` shows the detectors what a sink would have inserted by a given
time: a minute's on-time events once it has passed, its late events ``delay`` minutes
after that, and nothing new while the pipeline is stalled (then the backlog at once).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tracklane.alerts.model import PipelineProgress, Totals

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, 00:00 UTC
PEAK_SESSIONS = 1000.0  # per minute, at the afternoon peak of a weekday
CONVERSION = 0.03  # purchases per session
EVENTS = ("session_start", "page_view", "add_to_cart", "purchase", "signup", "error")
ORDER_VALUE = 50.0
NORMAL_LATE = 0.015  # share of events that arrive 2..10 minutes late
NORMAL_DELAY_S = (120, 600)
MAX_DELAY_MIN = 16

Factor = Callable[[int], float]  # minute index -> multiplier


def daily(minute: int) -> float:
    """1.0 at 16:00 UTC, 0.35 at 04:00, smooth in between."""
    hour = (minute % 1440) / 60
    return 0.675 - 0.325 * math.cos(2 * math.pi * (hour - 4) / 24)


def weekly(minute: int) -> float:
    return 0.8 if (minute // 1440) % 7 in (5, 6) else 1.0


@dataclass
class Shape:
    """What a scenario does to the traffic; every factor defaults to none."""

    traffic: list[Factor] = field(default_factory=list)  # all events
    conversion: list[Factor] = field(default_factory=list)  # purchase probability
    event: dict[str, list[Factor]] = field(default_factory=dict)  # one event's count
    # [start, end) minutes in which ``share`` of events arrive lo..hi seconds late.
    late_bursts: list[tuple[int, int, float, int, int]] = field(default_factory=list)
    stalls: list[tuple[int, int]] = field(default_factory=list)  # [start, end) minutes

    def factor(self, factors: list[Factor], minute: int) -> float:
        out = 1.0
        for f in factors:
            out *= f(minute)
        return out


def window_factor(start: int, end: int, value: float) -> Factor:
    return lambda m: value if start <= m < end else 1.0


def drift_factor(start: int, ramp: int, hold: int, low: float) -> Factor:
    """Linear decline to ``low`` over ``ramp`` minutes, held for ``hold``, then back."""
    def f(m: int) -> float:
        if m < start or m >= start + ramp + hold:
            return 1.0
        return 1.0 - (1.0 - low) * min(1.0, (m - start) / ramp)
    return f


def holiday_factor(day: int) -> Factor:
    """All traffic eases to 60% over the morning and back by midnight."""
    def f(m: int) -> float:
        if m // 1440 != day:
            return 1.0
        hour = (m % 1440) / 60
        if hour < 6:
            return 1.0
        if hour < 10:
            return 1.0 - 0.4 * (hour - 6) / 4
        if hour < 18:
            return 0.6
        return 0.6 + 0.4 * (hour - 18) / 6
    return f


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw: Knuth's product method, the normal approximation above 60."""
    if lam <= 0:
        return 0
    if lam > 60:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _binomial(rng: random.Random, n: int, p: float) -> int:
    p = min(1.0, max(0.0, p))
    mean = n * p
    if mean > 30 and n * (1 - p) > 30:
        return min(n, max(0, round(rng.gauss(mean, math.sqrt(mean * (1 - p))))))
    return poisson(rng, mean) if p < 0.1 else sum(rng.random() < p for _ in range(n))


@dataclass
class Traffic:
    minutes: int
    counts: dict[str, list[int]]
    late: dict[str, list[int]]
    delay: list[int]  # seconds after its end that a minute's late events arrive
    stalls: list[tuple[int, int]]


def generate(seed: int, minutes: int, shape: Shape) -> Traffic:
    rng = random.Random(seed)
    counts: dict[str, list[int]] = {e: [0] * minutes for e in EVENTS}
    late: dict[str, list[int]] = {e: [0] * minutes for e in EVENTS}
    delay = [0] * minutes
    level = 0.0  # slowly varying log-noise of traffic (AR(1), sd ~5%)
    for m in range(minutes):
        level = 0.98 * level + math.sqrt(1 - 0.98 ** 2) * rng.gauss(0, 0.05)
        mult = daily(m) * weekly(m) * math.exp(level) * shape.factor(shape.traffic, m)
        sessions = poisson(rng, PEAK_SESSIONS * mult)
        # Binomial conversions with extra noise: the rate itself varies ~10% minute to minute.
        conv = CONVERSION * math.exp(rng.gauss(0, 0.10)) * shape.factor(shape.conversion, m)
        row = {
            "session_start": sessions,
            "page_view": poisson(rng, 3 * sessions),
            "add_to_cart": _binomial(rng, sessions, 0.10),
            "purchase": _binomial(rng, sessions, conv),
            "signup": poisson(rng, 12 * weekly(m) * shape.factor(shape.traffic, m)),
            "error": poisson(rng, 5 * (0.5 + 0.5 * daily(m)) * shape.factor(shape.traffic, m)),
        }
        share, (lo, hi) = NORMAL_LATE, NORMAL_DELAY_S
        for b_start, b_end, b_share, b_lo, b_hi in shape.late_bursts:
            if b_start <= m < b_end:
                share, lo, hi = b_share, b_lo, b_hi
        delay[m] = rng.randint(lo, hi)
        for event, n in row.items():
            n = round(n * shape.factor(shape.event.get(event, []), m))
            counts[event][m] = n
            late[event][m] = _binomial(rng, n, share)
    return Traffic(minutes, counts, late, delay, list(shape.stalls))


class SimRollups:
    """``alerts.model.Rollups`` over generated traffic, as visible at ``set_time``."""

    def __init__(self, traffic: Traffic, history_from: int = 0) -> None:
        self._t = traffic
        self._history = START + timedelta(minutes=history_from)
        self._visible_s = 0.0

    def set_time(self, sim_s: float) -> None:
        """The sink inserts on arrival, except while stalled; then it catches up at once."""
        visible = sim_s
        for start, end in self._t.stalls:
            if start * 60 <= sim_s < end * 60:
                visible = start * 60
        self._visible_s = visible

    @property
    def visible_s(self) -> float:
        return self._visible_s

    def _index(self, ts: datetime) -> int:
        return int((ts - START).total_seconds() // 60)

    def minute_counts(self, project: str, event: str, start: datetime, end: datetime) -> list[int]:
        lo, hi = self._index(start), self._index(end)
        full = self._t.counts[event]
        out = [0] * (max(0, -lo)) + full[max(0, lo):max(0, min(hi, self._t.minutes))]
        out += [0] * (hi - lo - len(out))
        # Only the newest minutes can still miss events; older ones are complete.
        first_partial = int(self._visible_s // 60) - MAX_DELAY_MIN - 1
        for m in range(max(lo, first_partial), hi):
            if m < 0 or m >= self._t.minutes:
                continue
            out[m - lo] = self._visible(event, m)
        return out

    def _visible(self, event: str, m: int) -> int:
        closed_s = (m + 1) * 60
        if self._visible_s < closed_s:
            return 0
        late = self._t.late[event][m]
        on_time = self._t.counts[event][m] - late
        return on_time + (late if self._visible_s >= closed_s + self._t.delay[m] else 0)

    def totals(self, project: str, event: str, start: datetime, end: datetime) -> Totals:
        n = sum(self.minute_counts(project, event, start, end))
        revenue = ORDER_VALUE * n if event == "purchase" else 0.0
        return Totals(n, n, revenue)  # users: one per event is close enough for the harness

    def history_start(self, project: str) -> datetime | None:
        return self._history

    def progress(self, sim_s: float) -> PipelineProgress:
        """Watermark a few seconds behind while flowing; frozen, with a backlog, in a stall."""
        now = START + timedelta(seconds=sim_s)
        visible = START + timedelta(seconds=self._visible_s)
        stalled = self._visible_s < sim_s
        lag = int((sim_s - self._visible_s) / 60 * 4000) if stalled else 0
        return PipelineProgress(visible - timedelta(seconds=3), lag,
                                visible if stalled else now)
