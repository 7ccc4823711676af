"""Detectors: pure functions from minute rollups to a ``Finding``.

Each detector reads rollups only through the ``Rollups`` protocol, takes its time as an
argument (``end``: the exclusive, minute-aligned UTC end of the last closed minute) and
judges twice: ``verdict`` at the fire threshold and ``clear`` at a looser one, so an alert
fires on strong evidence and resolves only when the evidence is gone (hysteresis).
``INSUFFICIENT`` and ``BREACH`` findings are never clear.

Expected count (``expected_count``), shared by the volume and zero-traffic detectors:

* Seasonal: the count over the same [start, end) shifted back d = 1..seasonal_days days
  and w = 1..seasonal_weeks weeks (a week already covered by the daily shifts is not
  counted twice), keeping shifts that start at or after the project's first data. With at
  least ``min_seasons`` of them, expected = median(samples) x L, where the level
  L = (count over [start - level_window, start) + 1) / (median of that period over the same
  shifts + 1), clamped to [0.2, 5], scales the season to today's traffic. The level period
  ends where the window starts, so an incident inside the window is not absorbed into its
  own expectation; the +1 keeps a quiet period from dividing by zero.
* Trailing, while there is too little history (the first days): the rate over the level
  period before the window, scaled to the window; it needs at least half the level period
  to be covered by data. So rules work from the first hour and improve with history.

Detectors:

* volume_drop / volume_spike: c events against a Poisson with mean (1 -/+ margin) x E:
  p = P(X <= c) for a drop, P(X >= c) for a spike. The margin absorbs ordinary daily
  variation and baseline error, so only a real shift of more than the margin can page.
* zero_traffic: s trailing silent minutes at an expected rate of r a minute have
  probability exp(-r s); it fires once s >= ceil(ln(1/alpha) / r), so a busy event pages
  within minutes and a rare one only after a long silence (or never, below min_rate).
* conversion_drop: k to_events out of n from_events against a one-sided binomial test of
  H0: rate >= (1 - margin) x p0, p0 pooled over the same time of day on past days.
* threshold: a static bound on a count, distinct users, revenue or a ratio.
* pipeline_stale: how far the sink's watermark trails the wall clock, and its lag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from tracklane.alerts.model import (
    Finding,
    PipelineProgress,
    Rollups,
    Totals,
    Verdict,
    VitalRollups,
    Window,
)
from tracklane.alerts.rules import (
    VITAL_STATS,
    ConversionRule,
    PipelineStaleRule,
    ThresholdRule,
    VolumeRule,
    ZeroTrafficRule,
)
from tracklane.alerts.stats import binom_cdf, median, poisson_cdf, poisson_sf

BusinessRule = VolumeRule | ZeroTrafficRule | ConversionRule | ThresholdRule
SeasonalRule = VolumeRule | ZeroTrafficRule | ConversionRule

MINUTE = timedelta(minutes=1)
LEVEL_MIN, LEVEL_MAX = 0.2, 5.0
LEVEL_BLOCK = 10  # minutes per block of the level estimate
SPIKE_FLOOR = 1.0  # events per window: a spike needs real evidence over a near-zero baseline


@dataclass(frozen=True, slots=True)
class Expectation:
    """An expected event count over a window and how it was formed."""

    count: float
    baseline: str  # e.g. "seasonal median of 9 periods x level 0.97" or "trailing 60m"
    seasons: int  # seasonal samples used; 0 for the trailing fallback


# --- shared helpers ----------------------------------------------------------------------


def _minutes(span: timedelta) -> int:
    """Whole minutes in a duration, at least 1 (rules may be written in seconds)."""
    return max(1, int(span.total_seconds() // 60))


def _window(end: datetime, span: timedelta) -> Window:
    return Window(end - _minutes(span) * MINUTE, end)


def _count(rollups: Rollups, project: str, event: str, start: datetime, end: datetime) -> int:
    return sum(rollups.minute_counts(project, event, start, end))


def _season_shifts(days: int, weeks: int) -> list[timedelta]:
    """Daily shifts 1..days then weekly shifts not already covered by a daily one, oldest last."""
    shifts = [timedelta(days=d) for d in range(1, days + 1)]
    shifts += [timedelta(weeks=w) for w in range(1, weeks + 1) if 7 * w > days]
    return shifts


def _deviation(observed: float, expected: float | None) -> float | None:
    if expected is None or expected <= 0:
        return None
    return observed / expected - 1.0


def _span(window: Window) -> str:
    return f"{window.start:%H:%M}-{window.end:%H:%M} UTC"


def _num(value: float) -> str:
    """Counts with thousands separators, small values with three significant digits."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _pct(rate: float) -> str:
    return f"{rate:.1%}" if rate >= 0.01 else f"{rate:.2%}"


def _p(p: float) -> str:
    if p <= 0.0:
        return "p<1e-300"
    if p >= 0.01:
        return f"p={p:.2f}"
    mantissa, exponent = f"{p:.0e}".split("e")
    return f"p={mantissa}e{int(exponent)}"


def _duration(seconds: float) -> str:
    """7m12s, 5m, 2h, 1h05m, 45s."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    mins, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{mins:02d}m" if mins else f"{hours}h"
    if mins:
        return f"{mins}m{secs:02d}s" if secs else f"{mins}m"
    return f"{secs}s"


def _insufficient(
    window: Window, summary: str, *, observed: float | None = None,
    expected: float | None = None, samples: dict[str, int] | None = None, baseline: str = "",
) -> Finding:
    return Finding(Verdict.INSUFFICIENT, False, summary, window, observed=observed,
                   expected=expected, samples=samples or {}, baseline=baseline)


# --- the shared baseline -----------------------------------------------------------------


def expected_count(
    rollups: Rollups, project: str, event: str, start: datetime, end: datetime,
    rule: SeasonalRule,
) -> Expectation | None:
    """Expected count of ``event`` over [start, end): seasonal x level, else trailing.

    None when the project has too little history for either (see the module docstring).
    """
    history = rollups.history_start(project)
    if history is None:
        return None
    window_minutes = int((end - start).total_seconds() // 60)
    split = _minutes(rule.level_window)
    level = split * MINUTE
    current = rollups.minute_counts(project, event, start - level, start)

    samples: list[int] = []
    level_samples: list[list[int]] = []
    for shift in _season_shifts(rule.seasonal_days, rule.seasonal_weeks):
        if start - shift < history:
            break  # shifts only grow, so every later one is before the data too
        # One read per shift: its level period followed by its window.
        counts = rollups.minute_counts(project, event, start - shift - level, end - shift)
        samples.append(sum(counts[split:]))
        if start - shift - level >= history:
            level_samples.append(_blocks(counts[:split]))

    if len(samples) >= rule.min_seasons:
        seasonal = median(samples)
        factor = 1.0
        if level_samples:
            now_blocks = _blocks(current)
            factor = median(
                (now_blocks[b] + 1) / (median(s[b] for s in level_samples) + 1)
                for b in range(len(now_blocks))
            )
            factor = min(LEVEL_MAX, max(LEVEL_MIN, factor))
        return Expectation(
            seasonal * factor,
            f"seasonal median of {len(samples)} periods x level {factor:.2f}",
            len(samples),
        )

    # Trailing: minutes before the first data hold nothing, so use the covered part only.
    covered_from = max(start - level, history)
    covered = int((start - covered_from).total_seconds() // 60)
    if covered * 2 < split:
        return None
    blocks = _blocks(current[split - covered:])
    rate = median(blocks) / min(LEVEL_BLOCK, covered)
    return Expectation(rate * window_minutes, f"trailing {covered}m", 0)


def _blocks(counts: list[int]) -> list[int]:
    """Sums of consecutive LEVEL_BLOCK-minute blocks (the last may be shorter, so it is
    dropped when there are others).

    The level is the median block ratio, not the ratio of sums, so a burst or a gap of a
    few minutes just before the window (a spike still going on) does not move the baseline.
    """
    sums = [sum(counts[i:i + LEVEL_BLOCK]) for i in range(0, len(counts), LEVEL_BLOCK)]
    if len(sums) > 1 and len(counts) % LEVEL_BLOCK:
        sums.pop()
    return sums


# --- volume ------------------------------------------------------------------------------


def detect_volume(rule: VolumeRule, rollups: Rollups, end: datetime) -> Finding:
    """volume_drop / volume_spike: the window's count against a Poisson tail.

    Drop: p = P(X <= c | (1 - margin) E), needs E >= min_expected. Spike: p = P(X >= c |
    (1 + margin) max(E, 1)); the floor (not min_expected) keeps a near-silent event's
    first few events from paging while a jump from ~0 to dozens still does.
    """
    window = _window(end, rule.window)
    c = _count(rollups, rule.project, rule.event, window.start, window.end)
    spike = rule.kind == "volume_spike"
    label = f"{rule.event} volume"
    samples = {"events": c}
    exp = expected_count(rollups, rule.project, rule.event, window.start, window.end, rule)
    if exp is None:
        return _insufficient(
            window, f"{label} {_num(c)}: too little history for a baseline, {_span(window)}",
            observed=float(c), samples=samples)
    samples["seasons"] = exp.seasons
    margin = rule.effective_margin
    expected = exp.count
    baseline = exp.baseline
    if spike:
        if expected < SPIKE_FLOOR:
            expected, baseline = SPIKE_FLOOR, f"{baseline}, floored at {SPIKE_FLOOR:g}"
        bound = (1.0 + margin) * expected
        p = poisson_sf(c, bound)
        band_low, band_high, side = None, bound, "<="
    else:
        if expected < rule.min_expected:
            return _insufficient(
                window,
                f"{label} {_num(c)} vs expected {_num(expected)}: below min_expected "
                f"{rule.min_expected:g}, {_span(window)}",
                observed=float(c), expected=expected, samples=samples, baseline=baseline)
        bound = max(0.0, 1.0 - margin) * expected
        p = poisson_cdf(c, bound)
        band_low, band_high, side = bound, None, ">="
    summary = (f"{label} {_num(c)} vs expected {_num(expected)} (band {side} {_num(bound)}), "
               f"{_p(p)} over {_span(window)}")
    return Finding(
        Verdict.BREACH if p < rule.alpha else Verdict.OK, p > rule.alpha_clear, summary, window,
        observed=float(c), expected=expected, band_low=band_low, band_high=band_high,
        p_value=p, deviation=_deviation(c, expected), samples=samples, baseline=baseline)


# --- zero traffic ------------------------------------------------------------------------


def _silent_minutes(counts: list[int]) -> int:
    silent = 0
    for count in reversed(counts):
        if count:
            break
        silent += 1
    return silent


def detect_zero_traffic(rule: ZeroTrafficRule, rollups: Rollups, end: datetime) -> Finding:
    """zero_traffic: s silent minutes at expected rate r have probability exp(-r s).

    Needed silence = clamp(ceil(ln(1/alpha) / r), min_silent, max_silent): 2 minutes at
    10/min, over an hour at 0.2/min. The rate comes from ``expected_count`` over the silent
    run itself, its level period before the silence started. Clear once a minute has events.
    """
    max_silent = _minutes(rule.max_silent)
    min_silent = int(rule.min_silent.total_seconds() // 60)
    counts = rollups.minute_counts(rule.project, rule.event, end - max_silent * MINUTE, end)
    silent = _silent_minutes(counts)
    if silent == 0:
        last = Window(end - MINUTE, end)
        n = counts[-1] if counts else 0
        return Finding(
            Verdict.OK, True, f"{rule.event} flowing: {_num(n)} events over {_span(last)}", last,
            observed=float(n), samples={"events": n, "silent_minutes": 0},
            # No baseline read: this is the common case, and any events end a silence.
            baseline="events in the last closed minute")
    window = Window(end - silent * MINUTE, end)
    samples = {"events": 0, "silent_minutes": silent}
    head = f"{rule.event} silent for {silent}m ({_span(window)})"
    exp = expected_count(rollups, rule.project, rule.event, window.start, window.end, rule)
    if exp is None:
        return _insufficient(window, f"{head}: too little history for a baseline",
                             observed=0.0, samples=samples)
    rate = exp.count / silent
    if rate < rule.min_rate:
        return _insufficient(window, f"{head}: expected {rate:.3g}/min is below min_rate "
                             f"{rule.min_rate:g}/min", observed=0.0, expected=exp.count,
                             samples=samples, baseline=exp.baseline)
    raw_needed = math.ceil(math.log(1.0 / rule.alpha) / rate)
    if raw_needed > max_silent:
        return _insufficient(window, f"{head}: at {rate:.3g}/min it takes {raw_needed}m of "
                             f"silence to tell, over max_silent {max_silent}m", observed=0.0,
                             expected=exp.count, samples=samples, baseline=exp.baseline)
    needed = max(raw_needed, min_silent)
    p = math.exp(-rate * silent)
    verdict = Verdict.BREACH if silent >= needed else Verdict.OK
    summary = (f"{head}, expected {_num(exp.count)} events ({rate:.3g}/min), "
               f"fires at {needed}m, {_p(p)}")
    return Finding(verdict, False, summary, window, observed=0.0, expected=exp.count,
                   p_value=p, deviation=-1.0, samples=samples,
                   baseline=exp.baseline)


# --- conversion --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PooledRate:
    """A baseline conversion: to_count / from_count, pooled over its periods."""

    from_count: int
    to_count: int
    baseline: str


def _pooled(
    rollups: Rollups, rule: ConversionRule, periods: list[tuple[datetime, datetime]]
) -> tuple[int, int, int]:
    """(from, to, periods with from events) summed over the periods."""
    total_from = total_to = with_data = 0
    for start, end in periods:
        n = _count(rollups, rule.project, rule.from_event, start, end)
        total_from += n
        total_to += _count(rollups, rule.project, rule.to_event, start, end)
        with_data += n > 0
    return total_from, total_to, with_data


def conversion_baseline(
    rollups: Rollups, rule: ConversionRule, window: Window, history: datetime
) -> PooledRate:
    """Pooled to/from over baseline_window centred on the window's time on past days.

    Pooling (sum of to over sum of from) weights each day by its traffic. With under a day
    of history, or too few from events on past days, the pooled rate just before the window.
    """
    span = _minutes(rule.baseline_window)
    if window.end - history >= timedelta(days=1) and rule.seasonal_days:
        # Centred on the window, minute-aligned; clipped so it never overlaps the window.
        offset = (window.minutes // 2 - span // 2) * MINUTE
        periods = []
        for d in range(1, rule.seasonal_days + 1):
            start = window.start + offset - timedelta(days=d)
            end = min(start + span * MINUTE, window.start)
            if end <= history:
                break
            periods.append((start, end))
        n, k, days = _pooled(rollups, rule, periods)
        if n >= rule.min_samples:
            return PooledRate(n, k, f"pooled {span}m around this time on {days} past days")
    n, k, _ = _pooled(rollups, rule, [(window.start - span * MINUTE, window.start)])
    return PooledRate(n, k, f"trailing {span}m")


def detect_conversion(rule: ConversionRule, rollups: Rollups, end: datetime) -> Finding:
    """conversion_drop: one-sided binomial test of the window's to/from rate.

    H0: rate >= (1 - margin) p0; p = P(X <= k | Bin(n, (1 - margin) p0)). A baseline off by
    less than the margin cannot page, and the exact tail stays valid for small k.
    """
    window = _window(end, rule.window)
    n = _count(rollups, rule.project, rule.from_event, window.start, window.end)
    k = _count(rollups, rule.project, rule.to_event, window.start, window.end)
    label = f"{rule.to_event}/{rule.from_event} conversion"
    samples = {"from_event": n, "to_event": k}
    observed = k / n if n else None
    head = f"{label} {_pct(observed) if observed is not None else 'n/a'}, n={n:,}"
    if n < rule.min_samples:
        return _insufficient(window, f"{head}: below min_samples {rule.min_samples} over "
                             f"{_span(window)}", observed=observed, samples=samples)
    history = rollups.history_start(rule.project)
    if history is None:
        return _insufficient(window, f"{head}: no history", observed=observed, samples=samples)
    base = conversion_baseline(rollups, rule, window, history)
    if base.from_count < rule.min_samples:
        return _insufficient(
            window, f"{head}: baseline has only {base.from_count:,} {rule.from_event} events",
            observed=observed, samples=samples, baseline=base.baseline)
    p0 = base.to_count / base.from_count
    if n * p0 < rule.min_expected:
        return _insufficient(
            window, f"{head}: expected {n * p0:.3g} {rule.to_event} events, below "
            f"min_expected {rule.min_expected:g}", observed=observed, expected=p0,
            samples=samples, baseline=base.baseline)
    bound = min(1.0, (1.0 - rule.margin) * p0)
    p = binom_cdf(k, n, bound)
    rate = k / n
    summary = (f"{label} {_pct(rate)} vs expected {_pct(p0)} (band >= {_pct(bound)}), "
               f"{_p(p)}, n={n:,} over {_span(window)}")
    return Finding(
        Verdict.BREACH if p < rule.alpha else Verdict.OK, p > rule.alpha_clear, summary, window,
        observed=rate, expected=p0, band_low=bound, p_value=p, deviation=_deviation(rate, p0),
        samples=samples, baseline=base.baseline)


# --- threshold ---------------------------------------------------------------------------


def _metric_value(rule: ThresholdRule, totals: Totals) -> float:
    if rule.metric == "unique_users":
        return float(totals.users)
    if rule.metric == "revenue":
        return totals.revenue
    return float(totals.events)


def detect_threshold(rule: ThresholdRule, rollups: Rollups, end: datetime) -> Finding:
    """threshold: value > value (above) or < value (below); clears past clear_value."""
    window = _window(end, rule.window)
    if rule.metric == "ratio":
        assert rule.from_event is not None and rule.to_event is not None  # rule validator
        n = _count(rollups, rule.project, rule.from_event, window.start, window.end)
        k = _count(rollups, rule.project, rule.to_event, window.start, window.end)
        label = f"{rule.to_event}/{rule.from_event} ratio"
        samples = {"from_event": n, "to_event": k}
        if n < max(1, rule.min_samples):
            return _insufficient(window, f"{label}: only {n:,} {rule.from_event} events over "
                                 f"{_span(window)}", samples=samples)
        value = k / n
    elif rule.metric in VITAL_STATS:
        assert rule.property is not None  # rule validator
        if not isinstance(rollups, VitalRollups):
            return _insufficient(window, "page speed: these rollups hold none")
        stat = f"p{rule.q * 100:g}" if rule.metric == "quantile" else rule.metric
        label = f"{stat} of {rule.property}" + (
            f" under {rule.path_prefix}" if rule.path_prefix else "")
        found, n = rollups.vital(rule.project, rule.property, rule.metric, window.start,
                                 window.end, rule.q, rule.path_prefix)
        samples = {"samples": n}
        if found is None or n < max(1, rule.min_samples):
            return _insufficient(window, f"{label}: only {n:,} page views over "
                                 f"{_span(window)}", samples=samples)
        value = found
    else:
        assert rule.event is not None  # rule validator
        totals = rollups.totals(rule.project, rule.event, window.start, window.end)
        label = f"{rule.event} {rule.metric.replace('_', ' ')}"
        samples = {"events": totals.events, "users": totals.users}
        value = _metric_value(rule, totals)
    if rule.op == "below":
        # A window that starts before the project's first data undercounts: only "below"
        # could fire on that, and falsely.
        history = rollups.history_start(rule.project)
        if history is None or history > window.start:
            return _insufficient(window, f"{label} {_num(value)}: window not fully covered "
                                 f"by data, {_span(window)}", observed=value, samples=samples)
    limit = rule.value
    clear_at = rule.clear_value if rule.clear_value is not None else limit
    if rule.op == "above":
        breach, clear, band_low, band_high = value > limit, value <= clear_at, None, limit
        rel = ">" if breach else "<="
    else:
        breach, clear, band_low, band_high = value < limit, value >= clear_at, limit, None
        rel = "<" if breach else ">="
    summary = f"{label} {_num(value)} {rel} limit {_num(limit)}"
    if clear_at != limit:
        summary += f" (clears at {_num(clear_at)})"
    summary += f" over {_span(window)}"
    return Finding(
        Verdict.BREACH if breach else Verdict.OK, clear and not breach, summary, window,
        observed=value, expected=limit, band_low=band_low, band_high=band_high,
        deviation=_deviation(value, limit), samples=samples, baseline="static threshold")


# --- pipeline ----------------------------------------------------------------------------


def _floor_minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def detect_pipeline(rule: PipelineStaleRule, progress: PipelineProgress, now: datetime) -> Finding:
    """pipeline_stale: watermark delay (now - watermark), lag, and whether the sink reports.

    BREACH when delay > max_delay, lag > max_lag, or the last report is older than
    max_delay (the sink stopped). Clear when delay <= clear_delay (max_delay / 2 by
    default) and lag <= max_lag / 2. No watermark yet (no sink ever reported): INSUFFICIENT.
    """
    limit = rule.max_delay.total_seconds()
    clear_delay = (rule.clear_delay if rule.clear_delay is not None
                   else rule.max_delay / 2).total_seconds()
    lag = progress.lag
    if progress.watermark is None:
        window = Window(_floor_minute(now), _floor_minute(now) + MINUTE)
        return _insufficient(window, "stream sink has not reported a watermark yet",
                             samples={"lag": lag}, baseline="static limit")
    start = _floor_minute(min(progress.watermark, now))
    window = Window(start, max(start + MINUTE, _floor_minute(now) + MINUTE))
    delay = max(0.0, (now - progress.watermark).total_seconds())
    report_age = (now - progress.updated_at).total_seconds() if progress.updated_at else 0.0
    silent = report_age > limit
    breach = delay > limit or lag > rule.max_lag or silent
    clear = not breach and delay <= clear_delay and lag <= rule.max_lag / 2
    if progress.watermark.year <= 1970:
        # A partition the sink has not yet read up to date (just started, or recovering).
        summary = f"a stream partition has no watermark yet, lag {lag:,} records"
    else:
        summary = (f"stream watermark {_duration(delay)} behind (limit {_duration(limit)}), "
                   f"lag {lag:,} records")
    if lag > rule.max_lag:
        summary += f" (limit {rule.max_lag:,})"
    if silent:
        summary = (f"stream sink silent for {_duration(report_age)} "
                   f"(limit {_duration(limit)}); " + summary)
    return Finding(
        Verdict.BREACH if breach else Verdict.OK, clear, summary, window,
        observed=delay, expected=limit, band_high=limit, deviation=_deviation(delay, limit),
        samples={"lag": lag}, baseline="static limit")


# --- dispatch ----------------------------------------------------------------------------


def detect(rule: BusinessRule, rollups: Rollups, end: datetime) -> Finding:
    """Evaluate one business rule over the window ending at ``end`` (last closed minute)."""
    if isinstance(rule, VolumeRule):
        return detect_volume(rule, rollups, end)
    if isinstance(rule, ZeroTrafficRule):
        return detect_zero_traffic(rule, rollups, end)
    if isinstance(rule, ConversionRule):
        return detect_conversion(rule, rollups, end)
    return detect_threshold(rule, rollups, end)
