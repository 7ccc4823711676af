"""Detectors and their statistics, on an in-memory Rollups: deterministic, no store needed."""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tracklane.alerts.detectors import BusinessRule, detect, detect_pipeline, expected_count
from tracklane.alerts.model import Finding, PipelineProgress, Totals, Verdict
from tracklane.alerts.rules import (
    ConversionRule,
    PipelineStaleRule,
    ThresholdRule,
    VolumeRule,
    ZeroTrafficRule,
)
from tracklane.alerts.simulation import poisson
from tracklane.alerts.stats import binom_cdf, median, poisson_cdf, poisson_sf

MINUTE = timedelta(minutes=1)
END = datetime(2024, 3, 20, 12, 0, tzinfo=UTC)  # a Wednesday; end of the last closed minute
P = "shop"


def _key(ts: datetime) -> int:
    return int(ts.timestamp()) // 60


class MemoryRollups:
    """The Rollups protocol over dicts: (project, event) -> {epoch minute: value}."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
        self.users: dict[tuple[str, str], dict[int, set[str]]] = defaultdict(dict)
        self.revenue: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)

    def set(self, event: str, minute: datetime, count: int, *, users: set[str] | None = None,
            revenue: float = 0.0, project: str = P) -> None:
        key = _key(minute)
        self.counts[project, event][key] = count
        self.users[project, event][key] = users or set()
        self.revenue[project, event][key] = revenue

    def fill(self, event: str, start: datetime, end: datetime,
             rate: float | Callable[[datetime], float], rng: random.Random | None = None,
             project: str = P) -> None:
        """Per-minute counts over [start, end): Poisson(rate) with rng, else round(rate)."""
        series = self.counts[project, event]
        minute = start
        while minute < end:
            lam = rate(minute) if callable(rate) else rate
            series[_key(minute)] = poisson(rng, lam) if rng else round(lam)
            minute += MINUTE

    def minute_counts(self, project: str, event: str, start: datetime, end: datetime) -> list[int]:
        series = self.counts.get((project, event), {})
        return [series.get(m, 0) for m in range(_key(start), _key(end))]

    def totals(self, project: str, event: str, start: datetime, end: datetime) -> Totals:
        minutes = range(_key(start), _key(end))
        users: set[str] = set()
        for m in minutes:
            users |= self.users[project, event].get(m, set())
        return Totals(sum(self.minute_counts(project, event, start, end)), len(users),
                      sum(self.revenue[project, event].get(m, 0.0) for m in minutes))

    def history_start(self, project: str) -> datetime | None:
        firsts = [min(m for m, c in series.items() if c)
                  for (proj, _), series in self.counts.items()
                  if proj == project and any(series.values())]
        return datetime.fromtimestamp(min(firsts) * 60, UTC) if firsts else None


def binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


# --- stats -------------------------------------------------------------------------------


def _pmf(k: int, lam: float) -> float:
    return math.exp(-lam + k * math.log(lam) - math.lgamma(k + 1))


def _binom_pmf(k: int, n: int, p: float) -> float:
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return math.exp(log_choose + k * math.log(p) + (n - k) * math.log1p(-p))


@pytest.mark.parametrize("lam", [0.05, 1.0, 3.5, 10.0, 42.0, 99.5, 150.0, 400.0])
def test_poisson_tails_match_exact_sums(lam: float) -> None:
    top = int(lam + 15 * math.sqrt(lam) + 40)
    pmf = [_pmf(k, lam) for k in range(top + 200)]
    for k in range(top):
        for got, want in ((poisson_cdf(k, lam), math.fsum(pmf[: k + 1])),
                          (poisson_sf(k, lam), math.fsum(pmf[k:]))):
            # Quadrature (large k) keeps 1e-9 down to 1e-30, only the magnitude beyond.
            assert got == pytest.approx(want, rel=1e-9 if want > 1e-30 else 1e-5)


def test_poisson_edges_and_known_values() -> None:
    assert poisson_cdf(-1, 5.0) == 0.0
    assert poisson_sf(0, 5.0) == 1.0
    assert poisson_cdf(3, 0.0) == 1.0 and poisson_sf(1, 0.0) == 0.0
    assert poisson_cdf(0, 7.0) == pytest.approx(math.exp(-7.0), rel=1e-13)
    assert poisson_sf(1, 1e-9) == pytest.approx(-math.expm1(-1e-9), rel=1e-9)  # no cancelling
    assert poisson_cdf(2, 2.0) == pytest.approx(5 * math.exp(-2.0), rel=1e-13)
    # Far tails keep their digits instead of rounding to 0 or 1.
    assert poisson_sf(60, 10.0) == pytest.approx(math.fsum(_pmf(k, 10.0) for k in range(60, 200)),
                                                 rel=1e-9)
    assert 0 < poisson_cdf(700, 1000.0) < 1e-20


@pytest.mark.parametrize(("k", "lam"), [(999_000, 1e6), (1_004_000, 1e6), (29_500, 30_000.0)])
def test_poisson_large_counts_match_log_space_sums(k: int, lam: float) -> None:
    sd = math.sqrt(lam)
    lower = [_pmf(j, lam) for j in range(max(0, int(k - 40 * sd)), k + 1)]
    upper = [_pmf(j, lam) for j in range(k, int(k + 40 * sd))]
    # Relative 1e-7: lgamma(1e6) ~ 1.3e7 itself carries ~1e-9 absolute error per term.
    assert poisson_cdf(k, lam) == pytest.approx(min(1.0, math.fsum(lower)), rel=1e-7)
    assert poisson_sf(k, lam) == pytest.approx(min(1.0, math.fsum(upper)), rel=1e-7)


@pytest.mark.parametrize("n", [1, 2, 7, 30, 61])
@pytest.mark.parametrize("p", [1e-4, 0.03, 0.5, 0.91])
def test_binom_cdf_matches_exact_sums(n: int, p: float) -> None:
    pmf = [_binom_pmf(k, n, p) for k in range(n + 1)]
    for k in range(n + 1):
        assert binom_cdf(k, n, p) == pytest.approx(min(1.0, math.fsum(pmf[: k + 1])), rel=1e-9)


@pytest.mark.parametrize(("k", "n", "p"),
                         [(75, 5000, 0.024), (29_488, 1_000_000, 0.03), (2_400, 5000, 0.5),
                          (873, 1_000_000, 0.001), (9_700, 10_000, 0.975)])
def test_binom_cdf_large_n_matches_log_space_sum(k: int, n: int, p: float) -> None:
    sd = math.sqrt(n * p * (1 - p))
    terms = [_binom_pmf(j, n, p) for j in range(max(0, int(k - 40 * sd)), k + 1)]
    assert binom_cdf(k, n, p) == pytest.approx(math.fsum(terms), rel=1e-7)


def test_binom_cdf_edges() -> None:
    assert binom_cdf(-1, 10, 0.5) == 0.0
    assert binom_cdf(10, 10, 0.5) == 1.0 and binom_cdf(12, 10, 0.5) == 1.0
    assert binom_cdf(0, 10, 0.0) == 1.0
    assert binom_cdf(9, 10, 1.0) == 0.0
    assert binom_cdf(0, 10, 0.5) == pytest.approx(0.5**10, rel=1e-13)
    assert binom_cdf(4, 9, 0.5) == pytest.approx(0.5, rel=1e-13)  # symmetry


def test_tails_are_fast_at_large_counts() -> None:
    rng = random.Random(7)
    args = [(rng.randint(0, 2_000_000), rng.uniform(1, 1e6)) for _ in range(4000)]
    started = time.perf_counter()
    for k, lam in args:
        poisson_cdf(k, lam)
        poisson_sf(k, lam)
    for k, lam in args[:1000]:
        binom_cdf(k // 2, 1_000_000, lam / 2e6)
    # ~10 us a call; O(k) loops would take minutes.
    assert time.perf_counter() - started < 2.0


def test_median() -> None:
    assert median([3, 1, 2]) == 2.0
    assert median([4, 1, 3, 2]) == 2.5
    with pytest.raises(ValueError):
        median([])


# --- baseline ----------------------------------------------------------------------------


def volume(**kw: object) -> VolumeRule:
    return VolumeRule.model_validate({"name": "v", "project": P, "kind": "volume_drop",
                                      "event": "checkout", **kw})


def test_seasonal_baseline_is_a_robust_median_of_past_periods() -> None:
    r = MemoryRollups()
    r.fill("checkout", END - timedelta(days=29), END, 100)
    # Yesterday had an outage in this window: the median ignores it.
    for i in range(5):
        r.set("checkout", END - timedelta(days=1) - (i + 1) * MINUTE, 0)
    exp = expected_count(r, P, "checkout", END - 5 * MINUTE, END, volume())
    assert exp is not None
    assert exp.seasons == 10  # 1..7 days and 2, 3, 4 weeks (1 week is day 7)
    assert exp.count == pytest.approx(500.0)
    assert exp.baseline == "seasonal median of 10 periods x level 1.00"


def test_seasons_are_limited_to_history_then_fall_back_to_trailing() -> None:
    r = MemoryRollups()
    r.fill("checkout", END - timedelta(days=3, minutes=5), END, 100)
    exp = expected_count(r, P, "checkout", END - 5 * MINUTE, END, volume())
    assert exp is not None and exp.seasons == 3
    exp = expected_count(r, P, "checkout", END - 5 * MINUTE, END, volume(min_seasons=4))
    assert exp is not None and exp.seasons == 0 and exp.baseline == "trailing 60m"
    assert exp.count == pytest.approx(500.0)


def test_trailing_baseline_works_from_the_first_hour() -> None:
    r = MemoryRollups()
    r.fill("checkout", END - 40 * MINUTE, END, 100)
    exp = expected_count(r, P, "checkout", END - 5 * MINUTE, END, volume())
    assert exp is not None
    assert exp.baseline == "trailing 35m" and exp.count == pytest.approx(500.0)
    # Under half the level window covered: no baseline yet.
    young = MemoryRollups()
    young.fill("checkout", END - 30 * MINUTE, END, 100)
    assert expected_count(young, P, "checkout", END - 5 * MINUTE, END, volume()) is None
    finding = detect(volume(), young, END)
    assert finding.verdict == Verdict.INSUFFICIENT and not finding.clear
    assert detect(volume(), MemoryRollups(), END).verdict == Verdict.INSUFFICIENT


def test_level_adjustment_scales_the_season_and_is_clamped() -> None:
    r = MemoryRollups()
    r.fill("checkout", END - timedelta(days=8), END - timedelta(hours=3), 100)
    r.fill("checkout", END - timedelta(hours=3), END, 150)  # a busier day than usual
    exp = expected_count(r, P, "checkout", END - 5 * MINUTE, END, volume())
    assert exp is not None
    # The level is the median ratio of 10-minute blocks: (1500 + 1) / (1000 + 1).
    assert exp.count == pytest.approx(500 * 1501 / 1001)
    assert "x level 1.50" in exp.baseline
    assert detect(volume(), r, END).verdict == Verdict.OK  # busier now is not a drop
    r.fill("checkout", END - timedelta(hours=3), END, 2000)
    exp = expected_count(r, P, "checkout", END - 5 * MINUTE, END, volume())
    assert exp is not None and exp.count == pytest.approx(2500.0)  # level clamped at 5


# --- volume ------------------------------------------------------------------------------


def noisy_history(rate: float, seed: int, until: datetime = END) -> MemoryRollups:
    r = MemoryRollups()
    r.fill("checkout", END - timedelta(days=29), until, rate, random.Random(seed))
    return r


def test_volume_drop_ignores_normal_noise_and_breaches_on_a_real_drop() -> None:
    r = noisy_history(200, seed=1)
    for back in range(60):
        finding = detect(volume(), r, END - back * MINUTE)
        assert finding.verdict == Verdict.OK and finding.clear, finding.summary
    # 20%: inside the 30% margin, so not an incident.
    r.fill("checkout", END - 5 * MINUTE, END, 160, random.Random(2))
    assert detect(volume(), r, END).verdict == Verdict.OK
    r.fill("checkout", END - 5 * MINUTE, END, 100, random.Random(3))  # halved
    finding = detect(volume(), r, END)
    assert finding.verdict == Verdict.BREACH and not finding.clear
    assert finding.p_value is not None and finding.p_value < 1e-10
    assert finding.expected is not None and finding.expected == pytest.approx(1000, rel=0.1)
    assert finding.band_low == pytest.approx(0.7 * finding.expected)
    assert finding.observed is not None and finding.observed < 600
    assert finding.deviation == pytest.approx(finding.observed / finding.expected - 1)
    assert finding.window.start == END - 5 * MINUTE and finding.window.end == END
    assert finding.samples["events"] == finding.observed
    assert finding.baseline.startswith("seasonal median of 10 periods")
    assert finding.summary.startswith("checkout volume ")
    assert "(band >= " in finding.summary and finding.summary.endswith("over 11:55-12:00 UTC")


def test_volume_spike_from_near_zero_and_not_on_noise() -> None:
    spike = volume(kind="volume_spike")
    r = noisy_history(0.1, seed=4)  # ~0.5 a window: far below min_expected
    for back in range(60):
        assert detect(spike, r, END - back * MINUTE).verdict == Verdict.OK
    r.fill("checkout", END - 5 * MINUTE, END, 10)  # 50 events
    finding = detect(spike, r, END)
    assert finding.verdict == Verdict.BREACH
    assert finding.expected == 1.0 and finding.band_high == 2.0
    assert "floored at 1" in finding.baseline
    busy = noisy_history(200, seed=5)
    for back in range(60):
        assert detect(spike, busy, END - back * MINUTE).verdict == Verdict.OK
    busy.fill("checkout", END - 5 * MINUTE, END, 500, random.Random(6))  # x2.5
    assert detect(spike, busy, END).verdict == Verdict.BREACH


def test_volume_drop_needs_min_expected() -> None:
    r = noisy_history(1.0, seed=8)  # ~5 a window
    r.fill("checkout", END - 5 * MINUTE, END, 0)
    finding = detect(volume(), r, END)
    assert finding.verdict == Verdict.INSUFFICIENT and not finding.clear
    assert finding.observed == 0.0 and "min_expected" in finding.summary


def test_volume_hysteresis_between_thresholds() -> None:
    r = MemoryRollups()
    r.fill("checkout", END - timedelta(days=8), END, 200)  # E = 1000, band >= 700
    r.fill("checkout", END - 5 * MINUTE, END, 130)  # 650: p ~ 0.03
    finding = detect(volume(), r, END)
    assert finding.p_value is not None and 1e-4 < finding.p_value < 0.05
    assert finding.verdict == Verdict.OK and not finding.clear
    r.fill("checkout", END - 5 * MINUTE, END, 150)  # 750: above the band
    assert detect(volume(), r, END).clear


# --- zero traffic ------------------------------------------------------------------------


def zero(**kw: object) -> ZeroTrafficRule:
    return ZeroTrafficRule.model_validate({"name": "z", "project": P, "kind": "zero_traffic",
                                           "event": "checkout", **kw})


def test_zero_traffic_is_fast_for_a_busy_event() -> None:
    r = noisy_history(10, seed=9, until=END - 2 * MINUTE)
    assert r.counts[P, "checkout"][_key(END - 3 * MINUTE)] > 0
    flowing = detect(zero(), r, END - 2 * MINUTE)
    assert flowing.verdict == Verdict.OK and flowing.clear
    one = detect(zero(), r, END - MINUTE)
    assert one.verdict == Verdict.OK and not one.clear and one.samples["silent_minutes"] == 1
    two = detect(zero(), r, END)
    assert two.verdict == Verdict.BREACH and not two.clear
    assert two.samples == {"events": 0, "silent_minutes": 2}
    assert two.expected is not None and two.expected == pytest.approx(20, rel=0.3)
    assert two.observed == 0.0
    assert two.p_value == pytest.approx(math.exp(-two.expected))
    assert two.window.start == END - 2 * MINUTE


def test_zero_traffic_from_the_first_hour() -> None:
    r = MemoryRollups()
    r.fill("checkout", END - 45 * MINUTE, END - 2 * MINUTE, 10)
    finding = detect(zero(), r, END)
    assert finding.verdict == Verdict.BREACH and finding.baseline.startswith("trailing")


def test_zero_traffic_is_patient_for_a_rare_event() -> None:
    r = MemoryRollups()
    r.fill("checkout", END - timedelta(days=8), END,
           lambda m: 1 if _key(m) % 5 == 4 else 0)  # 0.2 a minute
    r.fill("checkout", END - 60 * MINUTE, END, 0)
    hour = detect(zero(), r, END)
    assert hour.samples["silent_minutes"] == 60 and hour.expected == pytest.approx(12)
    assert hour.verdict == Verdict.OK and not hour.clear
    assert "fires at 70m" in hour.summary  # ceil(ln(1e6) / 0.2)
    r.fill("checkout", END - 70 * MINUTE, END, 0)
    longer = detect(zero(), r, END)
    assert longer.samples["silent_minutes"] == 70 and longer.verdict == Verdict.BREACH


def test_zero_traffic_too_rare_to_judge() -> None:
    r = MemoryRollups()
    r.fill("checkout", END - timedelta(days=8), END,
           lambda m: 1 if _key(m) % 50 == 0 else 0)  # 0.02 a minute: below min_rate
    r.fill("checkout", END - 60 * MINUTE, END, 0)
    finding = detect(zero(), r, END)
    assert finding.verdict == Verdict.INSUFFICIENT and not finding.clear
    assert "below min_rate" in finding.summary


# --- conversion --------------------------------------------------------------------------


def conversion(**kw: object) -> ConversionRule:
    return ConversionRule.model_validate({
        "name": "c", "project": P, "kind": "conversion_drop", "from_event": "add_to_cart",
        "to_event": "purchase", **kw})


def funnel_history(seed: int, start: datetime, until: datetime) -> MemoryRollups:
    rng = random.Random(seed)
    r = MemoryRollups()
    minute = start
    while minute < until:
        n = round(rng.gauss(1000, math.sqrt(1000)))
        r.set("add_to_cart", minute, n)
        r.set("purchase", minute, max(0, round(rng.gauss(0.03 * n, math.sqrt(0.03 * n)))))
        minute += MINUTE
    return r


def live_minutes(r: MemoryRollups, rng: random.Random, start: datetime, minutes: int,
                 rate: float) -> None:
    for i in range(minutes):
        r.set("add_to_cart", start + i * MINUTE, 1000)
        r.set("purchase", start + i * MINUTE, binomial(rng, 1000, rate))


def test_conversion_halved_breaches_within_one_window() -> None:
    r = funnel_history(10, END - timedelta(days=8), END)
    rng = random.Random(11)
    live_minutes(r, rng, END, 30, 0.03)  # normal
    for j in range(1, 31):
        finding = detect(conversion(), r, END + j * MINUTE)
        assert finding.verdict == Verdict.OK, finding.summary
    drop = END + 30 * MINUTE
    live_minutes(r, rng, drop, 10, 0.015)
    verdicts = [detect(conversion(), r, drop + j * MINUTE).verdict for j in range(6)]
    assert verdicts[0] == Verdict.OK
    assert Verdict.BREACH in verdicts and verdicts[5] == Verdict.BREACH
    finding = detect(conversion(), r, drop + 5 * MINUTE)
    assert finding.samples["from_event"] == 5000
    assert finding.expected is not None and finding.expected == pytest.approx(0.03, rel=0.05)
    assert finding.band_low == pytest.approx(0.8 * finding.expected)
    assert finding.observed is not None and finding.observed < 0.02
    assert finding.baseline == "pooled 180m around this time on 7 past days"
    assert finding.summary.startswith("purchase/add_to_cart conversion ")
    assert "n=5,000 over 12:30-12:35 UTC" in finding.summary


def test_conversion_trailing_baseline_on_the_first_day() -> None:
    r = funnel_history(12, END - timedelta(hours=2), END)
    live_minutes(r, random.Random(13), END - 5 * MINUTE, 5, 0.012)
    finding = detect(conversion(), r, END)
    assert finding.baseline == "trailing 180m" and finding.verdict == Verdict.BREACH


def test_conversion_insufficient_at_low_samples() -> None:
    r = MemoryRollups()
    r.fill("add_to_cart", END - timedelta(days=2), END, 30)  # 150 a window < 200
    r.fill("purchase", END - timedelta(days=2), END, 1)
    finding = detect(conversion(), r, END)
    assert finding.verdict == Verdict.INSUFFICIENT and "min_samples" in finding.summary
    assert detect(conversion(min_samples=100, min_expected=4), r, END).verdict == Verdict.OK
    # 150 x 1/30 = 5 expected purchases: below the default min_expected of 10.
    finding = detect(conversion(min_samples=100), r, END)
    assert finding.verdict == Verdict.INSUFFICIENT and "min_expected" in finding.summary


def test_conversion_hysteresis_between_thresholds() -> None:
    r = MemoryRollups()
    r.fill("add_to_cart", END - timedelta(days=2), END, 1000)
    r.fill("purchase", END - timedelta(days=2), END, 30)  # p0 = 3%, band >= 2.4%
    r.fill("purchase", END - 5 * MINUTE, END, 20)  # k = 100 of 5000
    finding = detect(conversion(), r, END)
    assert finding.p_value == pytest.approx(binom_cdf(100, 5000, 0.024))
    assert finding.p_value is not None and 1e-3 < finding.p_value < 0.05
    assert finding.verdict == Verdict.OK and not finding.clear
    r.fill("purchase", END - 5 * MINUTE, END, 23)  # 115: close to the band, clear
    assert detect(conversion(), r, END).clear


# --- threshold ---------------------------------------------------------------------------


def threshold(**kw: object) -> ThresholdRule:
    return ThresholdRule.model_validate({"name": "t", "project": P, "kind": "threshold", **kw})


def test_threshold_count_with_hysteresis() -> None:
    r = MemoryRollups()
    r.fill("error", END - timedelta(hours=1), END, 30)  # 150 a window
    rule = threshold(event="error", op="above", value=100, clear_value=50)
    finding = detect(rule, r, END)
    assert finding.verdict == Verdict.BREACH and not finding.clear
    assert finding.observed == 150 and finding.band_high == 100 and finding.p_value is None
    assert finding.summary == "error count 150 > limit 100 (clears at 50) over 11:55-12:00 UTC"
    r.fill("error", END - 5 * MINUTE, END, 16)  # 80: under the limit, above clear_value
    finding = detect(rule, r, END)
    assert finding.verdict == Verdict.OK and not finding.clear
    r.fill("error", END - 5 * MINUTE, END, 10)
    assert detect(rule, r, END).clear


def test_threshold_unique_users_and_revenue() -> None:
    r = MemoryRollups()
    r.fill("purchase", END - timedelta(hours=1), END - 5 * MINUTE, 1)
    for i in range(5):
        r.set("purchase", END - (i + 1) * MINUTE, 2, users={f"u{i}", "u-regular"},
              revenue=12.5)
    users = detect(threshold(event="purchase", metric="unique_users", op="below", value=10),
                   r, END)
    assert users.verdict == Verdict.BREACH and users.observed == 6
    assert users.samples == {"events": 10, "users": 6}
    revenue = threshold(event="purchase", metric="revenue", op="below", value=50,
                        clear_value=80)
    finding = detect(revenue, r, END)
    assert finding.observed == 62.5 and finding.verdict == Verdict.OK and not finding.clear
    assert finding.band_low == 50
    # A window the project's data does not fully cover would undercount: no verdict.
    young = MemoryRollups()
    young.fill("purchase", END - 2 * MINUTE, END, 1)
    assert detect(revenue, young, END).verdict == Verdict.INSUFFICIENT


def test_threshold_ratio_needs_samples() -> None:
    r = MemoryRollups()
    r.fill("add_to_cart", END - timedelta(hours=1), END, 20)
    r.fill("purchase", END - timedelta(hours=1), END, 1)
    rule = threshold(metric="ratio", from_event="add_to_cart", to_event="purchase",
                     op="below", value=0.06, clear_value=0.08, min_samples=50)
    finding = detect(rule, r, END)
    assert finding.verdict == Verdict.BREACH and finding.observed == pytest.approx(0.05)
    assert finding.samples == {"from_event": 100, "to_event": 5}
    strict = rule.model_copy(update={"min_samples": 500})
    assert detect(strict, r, END).verdict == Verdict.INSUFFICIENT
    empty = threshold(metric="ratio", from_event="x", to_event="purchase", op="above", value=1)
    assert detect(empty, r, END).verdict == Verdict.INSUFFICIENT  # never 0/0


# --- pipeline ----------------------------------------------------------------------------


def stale(**kw: object) -> PipelineStaleRule:
    return PipelineStaleRule.model_validate({"name": "s", "kind": "pipeline_stale", **kw})


def progress(behind: timedelta, lag: int = 0, reported: timedelta = timedelta(0)
             ) -> PipelineProgress:
    return PipelineProgress(END - behind, lag, END - reported)


def test_pipeline_stale() -> None:
    rule = stale()
    late = detect_pipeline(rule, progress(timedelta(minutes=7, seconds=12), 1234), END)
    assert late.verdict == Verdict.BREACH and not late.clear
    assert late.summary == "stream watermark 7m12s behind (limit 5m), lag 1,234 records"
    assert late.observed == 432 and late.expected == 300 and late.samples == {"lag": 1234}
    between = detect_pipeline(rule, progress(timedelta(minutes=3)), END)
    assert between.verdict == Verdict.OK and not between.clear
    fine = detect_pipeline(rule, progress(timedelta(seconds=70)), END)
    assert fine.verdict == Verdict.OK and fine.clear
    lagging = detect_pipeline(rule, progress(timedelta(seconds=10), lag=2_000_000), END)
    assert lagging.verdict == Verdict.BREACH
    half_lag = detect_pipeline(rule, progress(timedelta(seconds=10), lag=600_000), END)
    assert half_lag.verdict == Verdict.OK and not half_lag.clear
    stopped = detect_pipeline(rule, progress(timedelta(seconds=10), reported=timedelta(
        minutes=6)), END)
    assert stopped.verdict == Verdict.BREACH and "silent for 6m" in stopped.summary
    custom = stale(clear_delay="4m")
    assert detect_pipeline(custom, progress(timedelta(minutes=3)), END).clear
    never = detect_pipeline(rule, PipelineProgress(None, 0, None), END)
    assert never.verdict == Verdict.INSUFFICIENT and not never.clear


# --- cost --------------------------------------------------------------------------------


class TimedRollups:
    """Wraps a Rollups and times its calls, so the detector's own cost can be measured."""

    def __init__(self, inner: MemoryRollups) -> None:
        self.inner = inner
        self.spent = 0.0

    def minute_counts(self, project: str, event: str, start: datetime, end: datetime) -> list[int]:
        t = time.perf_counter()
        try:
            return self.inner.minute_counts(project, event, start, end)
        finally:
            self.spent += time.perf_counter() - t

    def totals(self, project: str, event: str, start: datetime, end: datetime) -> Totals:
        return self.inner.totals(project, event, start, end)

    def history_start(self, project: str) -> datetime | None:
        t = time.perf_counter()
        try:
            return self.inner.history_start(project)
        finally:
            self.spent += time.perf_counter() - t


def test_detector_math_is_microseconds_not_a_scan_per_minute() -> None:
    r = funnel_history(14, END - timedelta(days=7), END)
    r.fill("checkout", END - timedelta(days=7), END, 200, random.Random(15))
    timed = TimedRollups(r)
    rules: list[BusinessRule] = [volume(), conversion()]
    findings: list[Finding] = []
    started = time.perf_counter()
    for _ in range(50):
        findings += [detect(rule, timed, END) for rule in rules]
    own = (time.perf_counter() - started - timed.spent) / 100
    assert all(f.verdict == Verdict.OK for f in findings)
    # About 70 us here; the bound is the order of magnitude only (a loaded CI machine).
    # bench.alerts_harness prints the cost per evaluation tick.
    assert own < 5e-3, f"{own * 1e6:.0f} us of detector math per detect()"


def test_pipeline_partition_without_a_watermark_is_said_plainly() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    finding = detect_pipeline(stale(), PipelineProgress(epoch, 21, END), END)
    assert finding.verdict == Verdict.BREACH
    assert finding.summary == "a stream partition has no watermark yet, lag 21 records"
