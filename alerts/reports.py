"""Scheduled reports (日报, 周报): when each is due, and what it says.

A daily report sent at 09:00 in its time zone covers the local day before; a weekly one,
sent on its weekday at its time, the seven local days before that weekday. Each KPI is
compared with the period before and with the same period a week earlier (for a weekly
report the two are the same week); the biggest movers among pages, sources and countries
are by visitors against the period before; a configured funnel gives its conversion; and
every alert that fired in the period is listed.

Which periods were sent is kept in ClickHouse (``report_runs``, migration 0017) like
alert state, so a restart neither sends a report twice nor forgets one it missed: only
the latest period is sent then, once, marked late. :class:`ReportScheduler` is driven by
the alert service's clock, so a test moves time on and sees each report go out once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client

from tracklane.alerts import clickhouse_state
from tracklane.alerts.codec import iso
from tracklane.alerts.rules import WEEKDAYS, ReportSpec
from tracklane.store import analytics

# Sent within this long after its time, a report is on time; later, it says it is late.
ON_TIME = timedelta(minutes=10)
MOVER_DIMENSIONS = ("page", "referrer_domain", "country")


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    due: datetime  # UTC: when the report of this period is sent

    def shifted(self, by: timedelta) -> Period:
        return Period(self.start - by, self.end - by, self.due - by)


def latest_due(spec: ReportSpec, now: datetime) -> Period:
    """The most recent period whose report time is at or before ``now``."""
    zone = ZoneInfo(spec.tz)
    local = now.astimezone(zone)
    hour, minute = map(int, spec.at.split(":"))
    at = time(hour, minute)
    day = local.date()
    if spec.every == "day":
        if datetime.combine(day, at, zone) > local:
            day -= timedelta(days=1)
        return _period(day - timedelta(days=1), day, at, zone)
    weekday = WEEKDAYS.index(spec.weekday)
    day -= timedelta(days=(day.weekday() - weekday) % 7)
    if datetime.combine(day, at, zone) > local:
        day -= timedelta(days=7)
    return _period(day - timedelta(days=7), day, at, zone)


def _period(first: date, send_day: date, at: time, zone: ZoneInfo) -> Period:
    # Local midnights, so a day with a daylight-saving change is 23 or 25 hours long.
    return Period(_utc(datetime.combine(first, time(), zone)),
                  _utc(datetime.combine(send_day, time(), zone)),
                  _utc(datetime.combine(send_day, at, zone)))


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(ZoneInfo("UTC"))


@dataclass(frozen=True, slots=True)
class KpiLine:
    name: str
    value: float | None
    previous: float | None
    week_ago: float | None

    def change(self, against: float | None) -> float | None:
        """Relative change against a value; None when there is nothing to compare with."""
        if self.value is None or against is None or against == 0:
            return None
        return (self.value - against) / abs(against)


@dataclass(frozen=True, slots=True)
class Mover:
    dimension: str
    value: str
    visitors: int
    previous: int

    @property
    def delta(self) -> int:
        return self.visitors - self.previous


@dataclass(frozen=True, slots=True)
class FunnelLine:
    event: str
    persons: int
    from_first: float


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    project: str
    every: str
    tz: str
    period: Period
    late: bool
    currency: str | None  # of revenue and AOV, when every order is in one currency
    kpis: list[KpiLine]
    movers: list[Mover]
    funnel: list[FunnelLine]
    alerts: list[dict[str, Any]] = field(default_factory=list)  # transitions to firing

    @property
    def id(self) -> str:
        """Stable per report and period: a receiver can drop a resend by it."""
        return f"report-{self.name}-{self.period.start.strftime('%Y%m%dT%H%M')}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "type": "report", "report": self.name, "project": self.project,
            "every": self.every, "tz": self.tz, "late": self.late,
            "period": {"start": iso(self.period.start), "end": iso(self.period.end),
                       "due": iso(self.period.due)},
            "currency": self.currency,
            "kpis": [{"name": k.name, "value": k.value, "previous": k.previous,
                      "week_ago": k.week_ago, "change": k.change(k.previous),
                      "change_week": k.change(k.week_ago)} for k in self.kpis],
            "movers": [{"dimension": m.dimension, "value": m.value, "visitors": m.visitors,
                        "previous": m.previous, "delta": m.delta} for m in self.movers],
            "funnel": [{"event": f.event, "persons": f.persons, "from_first": f.from_first}
                       for f in self.funnel],
            "alerts": self.alerts,
        }


def build_report(client: Client, spec: ReportSpec, period: Period, late: bool,
                 order_events: Sequence[str]) -> Report:
    """Read the numbers of ``period`` (and the periods it is compared with) from the store."""
    week = timedelta(days=7)
    length = period.end - period.start
    now_k = _kpis(client, spec.project, period, order_events)
    before = _kpis(client, spec.project, period.shifted(length), order_events)
    week_ago = before if length == week else _kpis(client, spec.project, period.shifted(week),
                                                   order_events)
    currency = now_k.currency
    kpis = [KpiLine(name, _kpi(now_k, name), _kpi(before, name), _kpi(week_ago, name))
            for name in spec.kpis]
    movers: list[Mover] = []
    if spec.movers:
        for dimension in MOVER_DIMENSIONS:
            movers += _movers(client, spec, period, length, dimension)
    funnel: list[FunnelLine] = []
    if spec.funnel:
        found = analytics.funnel(client, spec.project, period.start, period.end,
                                 list(spec.funnel), spec.funnel_window)
        if found:
            funnel = [FunnelLine(s.event, s.persons, s.from_first) for s in found[0].steps]
        else:
            funnel = [FunnelLine(event, 0, 0.0) for event in spec.funnel]
    fired = [t for t in clickhouse_state.list_transitions(
        client, spec.project, period.start, period.end, 200) if t["to"] == "firing"]
    return Report(spec.name, spec.project, spec.every, spec.tz, period, late, currency, kpis,
                  movers, funnel, sorted(fired, key=lambda t: str(t["at"])))


def _kpis(client: Client, project: str, period: Period,
          order_events: Sequence[str]) -> analytics.Kpis:
    return analytics.kpis(client, project, period.start, period.end, order_events)


_VALUES: dict[str, Callable[[analytics.Kpis], float | None]] = {
    "pageviews": lambda k: float(k.pageviews),
    "visitors": lambda k: float(k.visitors_exact),
    "sessions": lambda k: float(k.sessions),
    "bounce_rate": lambda k: k.bounce_rate,
    "avg_duration_s": lambda k: k.avg_duration_s,
    "orders": lambda k: float(k.orders),
    "revenue": lambda k: _money(k.revenue),
    "aov": lambda k: _money(k.aov),
    "conversion_rate": lambda k: k.conversion_rate,
}


def _kpi(k: analytics.Kpis, name: str) -> float | None:
    return _VALUES[name](k)


def _money(amount: Decimal | None) -> float | None:
    return None if amount is None else float(amount)


def _movers(client: Client, spec: ReportSpec, period: Period, length: timedelta,
            dimension: str) -> list[Mover]:
    def visitors(p: Period) -> dict[str, int]:
        rows = analytics.breakdown(client, spec.project, p.start, p.end, dimension, 1000)
        return {r.value: r.visitors for r in rows}

    now, before = visitors(period), visitors(period.shifted(length))
    found = [Mover(dimension, value, now.get(value, 0), before.get(value, 0))
             for value in set(now) | set(before)]
    found = [m for m in found if m.delta]
    found.sort(key=lambda m: (-abs(m.delta), m.value))
    return found[: spec.movers]
