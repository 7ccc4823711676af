"""The alert evaluation harness: seeded traffic, injected incidents, the real engine.

Run by ``python -m bench.alerts_harness [--seed N]``, which prints the scores, and by
tests/test_alerts_harness.py, which asserts the acceptance numbers on a fixed seed.

Each scenario generates a week of history and then the evaluated days, runs the real
``AlertEngine`` (detectors, state machine, notification reconciliation) on an injected
clock every simulated minute, and scores the notifications it would have sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tracklane.alerts.engine import AlertEngine
from tracklane.alerts.model import Notification, NotificationKind
from tracklane.alerts.rules import AlertsFile, parse_rules
from tracklane.alerts.simulation import (
    START,
    Shape,
    SimRollups,
    drift_factor,
    generate,
    holiday_factor,
    window_factor,
)
from tracklane.alerts.storage import MemoryAlertStore

DAY = 1440
HISTORY_DAYS = 7
MATCH_GRACE_MIN = 10  # a page up to this long after an incident ends still belongs to it

RULES = """
evaluation: {interval: 60s, lateness: 1m}
notifiers:
  - {name: hook, kind: webhook, url: "http://127.0.0.1:9/hook"}
rules:
  - {name: checkout-conversion, project: sim, kind: conversion_drop,
     from_event: session_start, to_event: purchase, notify: [hook]}
  - {name: pageviews-drop, project: sim, kind: volume_drop, event: page_view, notify: [hook]}
  - {name: errors-spike, project: sim, kind: volume_spike, event: error, notify: [hook]}
  - {name: errors-threshold, project: sim, kind: threshold, metric: count, event: error,
     op: above, value: 100, notify: [hook]}
  - {name: signups-zero, project: sim, kind: zero_traffic, event: signup, notify: [hook]}
  - {name: carts-zero, project: sim, kind: zero_traffic, event: add_to_cart, notify: [hook]}
  - {name: pipeline, project: sim, kind: pipeline_stale, notify: [hook]}
"""


@dataclass(frozen=True)
class Incident:
    rules: frozenset[str]  # the rules expected to page for it
    start: int  # minute index
    end: int


@dataclass
class Scenario:
    name: str
    eval_days: float
    shape: Shape
    incidents: list[Incident] = field(default_factory=list)
    history_days: int = HISTORY_DAYS
    negative: bool = False  # a control: every page is a false one


@dataclass(frozen=True)
class Sent:
    at: int  # sim minute of the tick that sent it
    note: Notification


class Recorder:
    """The harness outbox: records and acknowledges at once."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.minute = 0

    def submit(self, notifier: str, note: Notification, on_done: Callable[[bool], None]) -> None:
        self.sent.append(Sent(self.minute, note))
        on_done(True)


def _minute(ts: datetime) -> float:
    return (ts - START).total_seconds() / 60


def _at_hours(first_day: int, days: int, hours: list[float], length: int,
              rules: set[str]) -> list[Incident]:
    out = []
    for d in range(days):
        for h in hours:
            start = (first_day + d) * DAY + int(h * 60)
            out.append(Incident(frozenset(rules), start, start + length))
    return out


def scenarios() -> list[Scenario]:
    h = HISTORY_DAYS
    conv = _at_hours(h, 2, [11, 14, 17, 20], 50, {"checkout-conversion"})
    zero = _at_hours(h, 1, [1, 5, 9, 13, 17, 21], 40, {"signups-zero"})
    spike = _at_hours(h, 1, [3, 9, 15, 21], 25, {"errors-spike", "errors-threshold"})
    stall = _at_hours(h, 1, [4, 12, 20], 20, {"pipeline"})
    drift = [Incident(frozenset({"checkout-conversion"}), h * DAY + 9 * 60, h * DAY + 15 * 60)]
    fresh = [Incident(frozenset({"checkout-conversion"}), 10 * 60, 10 * 60 + 50)]
    # A burst of late data: for 30 minutes, 40% of events arrive 20-55 s late (inside the
    # allowed lateness), or 15% arrive 2-6 minutes late (after their minute was evaluated).
    late = [(h * DAY + d * DAY + 13 * 60, h * DAY + d * DAY + 13 * 60 + 30, share, lo, hi)
            for d, share, lo, hi in ((1, 0.4, 20, 55), (4, 0.15, 120, 360), (6, 0.4, 20, 55))]
    return [
        Scenario("conversion drop 50%", 2, Shape(conversion=[
            window_factor(i.start, i.end, 0.5) for i in conv]), conv),
        Scenario("event goes to zero", 1, Shape(event={"signup": [
            window_factor(i.start, i.end, 0.0) for i in zero]}), zero),
        Scenario("error spike 5x", 1, Shape(event={"error": [
            window_factor(i.start, i.end, 5.0) for i in spike]}), spike),
        Scenario("pipeline stall", 1, Shape(stalls=[(i.start, i.end) for i in stall]), stall),
        Scenario("slow conversion drift", 1, Shape(conversion=[
            drift_factor(drift[0].start, 300, 60, 0.5)]), drift),
        Scenario("conversion drop, no history", 0.5, Shape(conversion=[
            window_factor(fresh[0].start, fresh[0].end, 0.5)]), fresh, history_days=0),
        Scenario("controls: noise, holiday, late data", 7, Shape(
            traffic=[holiday_factor(h + 2)], late_bursts=late), negative=True),
    ]


@dataclass
class Run:
    scenario: Scenario
    sent: list[Sent]
    eval_start: int
    eval_end: int
    seconds: float


def run(scenario: Scenario, config: AlertsFile, seed: int) -> Run:
    started = time.perf_counter()
    eval_start = scenario.history_days * DAY
    eval_end = eval_start + int(scenario.eval_days * DAY)
    traffic = generate(seed, eval_end + 60, scenario.shape)
    rollups = SimRollups(traffic)
    outbox = Recorder()
    sim_s = 0.0

    def clock() -> datetime:
        return START + timedelta(seconds=sim_s)

    engine = AlertEngine(config, rollups, lambda: rollups.progress(sim_s), MemoryAlertStore(),
                         outbox, clock)
    # Tick in the middle of every simulated minute, as a 60 s cadence would.
    for minute in range(eval_start, eval_end):
        sim_s = minute * 60 + 30.0
        outbox.minute = minute
        rollups.set_time(sim_s)
        engine.tick()
    return Run(scenario, outbox.sent, eval_start, eval_end, time.perf_counter() - started)


@dataclass
class Score:
    scenario: str
    rule: str
    incidents: int
    detected: int
    pages: int
    true_pages: int
    false_pages: int
    delays: list[float]  # minutes from incident start to the page
    closed_delays: list[float]  # closed minutes of the incident the page had seen
    flaps: int
    unresolved: int
    days: float
    negative: bool

    @property
    def recall(self) -> float | None:
        return self.detected / self.incidents if self.incidents else None

    @property
    def precision(self) -> float | None:
        return self.true_pages / self.pages if self.pages else None

    @property
    def false_per_day(self) -> float:
        return self.false_pages / self.days


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def score(result: Run, rule: str) -> Score:
    sc = result.scenario
    mine = [s for s in result.sent if s.note.rule == rule]
    firsts: dict[int, Sent] = {}
    for s in mine:
        if s.note.status is NotificationKind.FIRING:
            firsts.setdefault(int(s.note.id.split("-")[1]), s)
    resolved = {int(s.note.id.split("-")[1]) for s in mine
                if s.note.status is NotificationKind.RESOLVED}
    expected = [i for i in sc.incidents if rule in i.rules]
    hits: dict[Incident, list[tuple[int, Sent]]] = {i: [] for i in expected}
    false_pages = 0
    for number, page in sorted(firsts.items()):
        match = None if sc.negative else next(
            (i for i in expected if i.start <= page.at <= i.end + MATCH_GRACE_MIN), None)
        if match is None:
            false_pages += 1
        else:
            hits[match].append((number, page))
    delays, closed, flaps, unresolved, detected = [], [], 0, 0, 0
    for incident, pages in hits.items():
        if not pages:
            continue
        detected += 1
        number, page = pages[0]
        delays.append(page.at + 0.5 - incident.start)
        closed.append(_minute(page.note.complete_until) - incident.start)
        flaps += len(pages) - 1
        unresolved += sum(1 for n, _ in pages if n not in resolved)
    days = (result.eval_end - result.eval_start) / DAY
    return Score(sc.name, rule, len(expected), detected, len(firsts),
                 len(firsts) - false_pages, false_pages, delays, closed, flaps, unresolved, days,
                 sc.negative)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def table(scores: list[Score]) -> str:
    head = (f"{'scenario':<36} {'rule':<20} {'inc':>3} {'det':>3} {'recall':>6} "
            f"{'prec':>5} {'p50':>5} {'p90':>5} {'cl90':>5} {'false/d':>7} {'flaps':>5} "
            f"{'resolved':>8}")
    lines = [head, "-" * len(head)]
    for s in scores:
        if not (s.incidents or s.pages or s.negative):
            continue
        flaps = s.flaps / s.detected if s.detected else None
        lines.append(
            f"{s.scenario:<36} {s.rule:<20} {s.incidents:>3} {s.detected:>3} "
            f"{_fmt(s.recall):>6} {_fmt(s.precision):>5} {_fmt(_pct(s.delays, 0.5), '.1f'):>5} "
            f"{_fmt(_pct(s.delays, 0.9), '.1f'):>5} {_fmt(_pct(s.closed_delays, 0.9), '.1f'):>5} "
            f"{s.false_per_day:>7.2f} {_fmt(flaps):>5} "
            f"{('yes' if s.unresolved == 0 else f'{s.unresolved} no') if s.detected else '-':>8}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def acceptance(runs: list[Run], scores: list[Score]) -> list[Check]:
    by = {(s.scenario, s.rule): s for s in scores}
    conv = by[("conversion drop 50%", "checkout-conversion")]
    zero = by[("event goes to zero", "signups-zero")]
    controls = [s for s in scores if s.scenario.startswith("controls")]
    stall = next(r for r in runs if r.scenario.name == "pipeline stall")
    stall_pages = [s for s in stall.sent if s.note.status is NotificationKind.FIRING
                   and s.note.rule != "pipeline" and s.note.repeat == 0]
    incident_scores = [s for s in scores if s.incidents and s.detected]
    p90 = _pct(conv.delays, 0.9)
    worst_zero = max(zero.closed_delays, default=None)
    worst_false = max(controls, key=lambda s: s.false_per_day)
    return [
        Check("50% conversion drop notified, p90 delay <= 10 min",
              conv.detected == conv.incidents and p90 is not None and p90 <= 10,
              f"{conv.detected}/{conv.incidents} detected, p90 {_fmt(p90, '.1f')} min"),
        Check("event at >= 10/min that stops notified within 3 closed minutes",
              zero.detected == zero.incidents and worst_zero is not None and worst_zero <= 3,
              f"{zero.detected}/{zero.incidents} detected, worst {_fmt(worst_zero, '.0f')} "
              "closed minutes"),
        Check("negative controls <= 0.1 false notifications per rule per day",
              all(s.false_per_day <= 0.1 for s in controls),
              f"worst {worst_false.rule} {worst_false.false_per_day:.2f}/day over "
              f"{worst_false.days:.0f} days"),
        Check("every detected incident resolved",
              all(s.unresolved == 0 for s in incident_scores),
              ", ".join(f"{s.rule}: {s.unresolved}" for s in incident_scores if s.unresolved)
              or "all resolved"),
        Check("pipeline stall pages pipeline_stale only",
              by[("pipeline stall", "pipeline")].detected == len(stall.scenario.incidents)
              and not stall_pages,
              f"pipeline {by[('pipeline stall', 'pipeline')].detected}/"
              f"{len(stall.scenario.incidents)}, other pages {len(stall_pages)}"),
    ]


def evaluate(seed: int) -> tuple[list[Run], list[Score]]:
    config = parse_rules(RULES, "harness rules")
    runs = [run(sc, config, seed + i) for i, sc in enumerate(scenarios())]
    scores = [score(r, rule.name) for r in runs for rule in config.rules]
    return runs, scores
