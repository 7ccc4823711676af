"""Traffic analytics: KPIs, breakdowns, time series and funnels.

Every statement is fixed text with bound parameters; user input only picks from the
allow-lists below or fills a parameter. Bots and excluded traffic are left out
everywhere. A person is anonymous ids merged with their user id (:mod:`store.persons`);
the time series' unique users are the rollups' ``distinct_id``. Orders are the events named
in ``order_events``; their revenue is never added across currencies (docs/commerce.md).

Which table answers what:

- :func:`timeseries` reads the minute rollups: fast over months.
- :func:`kpis`, :func:`breakdown`, :func:`conversion` and :func:`funnel` are exact and
  read raw events and sessions (SDK sessions from the incremental ``sessions`` table,
  others sessionized from raw events; see :mod:`store.sessions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from clickhouse_connect.driver.client import Client

from tracklane.projects import DEFAULT_ORDER_EVENTS
from tracklane.store.analytics_errors import QueryError
from tracklane.store.filters import NO_FILTERS, Filters
from tracklane.store.persons import COUNTED, counted_events
from tracklane.store.sessions import person_sessions, session_params, sessions

Grain = Literal["minute", "hour", "day"]
_STEPS = {"minute": 60, "hour": 3600, "day": 86400}
# Most points one time series may return.
MAX_POINTS = 50_000

_IN_RANGE = "timestamp >= %(s)s AND timestamp < %(t)s"
_PAGES_IN_RANGE = _IN_RANGE + " AND type = 'page'"
# Event-level breakdown dimension -> (grouping expression, events read, ranked by).
# Sources and places are over every counted event, not pages only: a backend's orders have
# no page views, and open no session, but come from somewhere (the user's address it
# reports), so they rank by persons.
_EVENT_DIMENSIONS = {"page": ("path", _PAGES_IN_RANGE, "pv"),
                     "source": ("source", _IN_RANGE, "persons"),
                     "event": ("event", _IN_RANGE, "persons"),
                     "country": ("country", _IN_RANGE, "persons"),
                     "region": ("region", _IN_RANGE, "persons"),
                     "city": ("city", _IN_RANGE, "persons")}
_SESSION_DIMENSIONS = {
    "entry_page": "entry_path", "exit_page": "exit_path",
    "referrer_domain": "referrer_domain", "utm_source": "utm_source",
    "utm_medium": "utm_medium", "utm_campaign": "utm_campaign",
    "device": "device_type", "browser": "browser", "os": "os",
}
DIMENSIONS = tuple(_EVENT_DIMENSIONS) + tuple(_SESSION_DIMENSIONS)
# A funnel breaks down by the value of a person's first event in the range.
_FUNNEL_COLUMNS = {**{d: c for d, c in _SESSION_DIMENSIONS.items() if not d.endswith("_page")},
                   "country": "country", "region": "region", "city": "city"}
FUNNEL_BREAKDOWNS = tuple(_FUNNEL_COLUMNS)
FUNNEL_STEPS = (2, 10)
_TIME_ZONES = frozenset(available_timezones())


def check_range(start: datetime, end: datetime, limit: timedelta | None = None) -> None:
    if end <= start:
        raise QueryError("to: must be after from")
    if limit is not None and end - start > limit:
        raise QueryError(f"range: at most {limit.days} days")


def check_tz(tz: str) -> str:
    if tz not in _TIME_ZONES:
        raise QueryError(f"tz: unknown time zone {tz!r}")
    return tz


# Most order event names one query takes.
MAX_ORDER_EVENTS = 20


def check_order_events(order_events: Sequence[str]) -> list[str]:
    names = list(order_events)
    if not 1 <= len(names) <= MAX_ORDER_EVENTS:
        raise QueryError(f"order_events: 1 to {MAX_ORDER_EVENTS} event names")
    return names


@dataclass(frozen=True, slots=True)
class CurrencyRevenue:
    """The orders of one currency ('' for orders sent without one, or without revenue)."""

    currency: str
    orders: int
    revenue: Decimal
    aov: Decimal  # revenue / orders, to 4 decimals


@dataclass(frozen=True, slots=True)
class Kpis:
    pageviews: int
    visitors: int  # uniq: HyperLogLog-like, within about 2% (exact below ~65k)
    visitors_exact: int
    sessions: int
    bounce_rate: float
    avg_duration_s: float
    views_per_visit: float
    orders: int  # every order event, whatever its currency
    # Revenue is never summed across currencies: the top-level figures are only given when
    # every order is in one currency bucket (revenue 0 and aov None without orders).
    currency: str | None
    revenue: Decimal | None
    aov: Decimal | None
    currencies: list[CurrencyRevenue]  # by currency code; '' sorts first
    converted: int  # persons with an order
    conversion_rate: float  # converted / visitors_exact


def kpis(client: Client, project_id: str, start: datetime, end: datetime,
         order_events: Sequence[str] = DEFAULT_ORDER_EVENTS,
         filters: Filters = NO_FILTERS) -> Kpis:
    """PV, UV, sessions, bounce rate, visit duration, views per visit, orders, revenue, AOV,
    and the share of persons who ordered.

    An order is a counted event named one of ``order_events``; revenue and AOV are the
    orders' own revenue, per currency.
    """
    check_range(start, end)
    params = {"p": project_id, "s": start, "t": end, "o": check_order_events(order_events),
              **filters.params(start, end)}
    events = client.query(
        "SELECT countIf(type = 'page'), uniq(person), uniqExact(person), "
        "uniqExactIf(person, event IN %(o)s) "
        f"FROM ({counted_events(_IN_RANGE + filters.sql)})", parameters=params,
    ).result_rows[0]
    by_currency = client.query(
        # No persons here: resolving them is the costly part of the other query.
        "SELECT currency, count(), sum(revenue) FROM events WHERE project_id = %(p)s "
        f"AND {COUNTED} AND {_IN_RANGE}{filters.sql} AND event IN %(o)s "
        "GROUP BY currency ORDER BY currency", parameters=params,
    ).result_rows
    sess = client.query(
        "SELECT count(), countIf(bounce), avg(duration_s), sum(pageviews) "
        f"FROM ({sessions(filters)})",
        parameters={**session_params(project_id, start, end), **filters.params(start, end)},
    ).result_rows[0]
    n_sessions = int(sess[0])
    currencies = [CurrencyRevenue(str(c), int(n), Decimal(r), per(Decimal(r), int(n)))
                  for c, n, r in by_currency]
    one = currencies[0] if len(currencies) == 1 else None
    return Kpis(
        pageviews=int(events[0]), visitors=int(events[1]), visitors_exact=int(events[2]),
        sessions=n_sessions,
        bounce_rate=int(sess[1]) / n_sessions if n_sessions else 0.0,
        avg_duration_s=float(sess[2]) if n_sessions else 0.0,
        views_per_visit=int(sess[3]) / n_sessions if n_sessions else 0.0,
        orders=sum(c.orders for c in currencies),
        currency=one.currency if one else None,
        revenue=one.revenue if one else (Decimal(0) if not currencies else None),
        aov=one.aov if one else None,
        currencies=currencies,
        converted=int(events[3]),
        conversion_rate=int(events[3]) / int(events[2]) if int(events[2]) else 0.0,
    )


def per(amount: Decimal, count: int) -> Decimal:
    """``amount / count`` to 4 decimals (half to even), as AOV and CLV are given; 0 for 0."""
    return (amount / count).quantize(Decimal("0.0001")) if count else Decimal(0)


@dataclass(frozen=True, slots=True)
class Point:
    time: datetime
    events: int
    visitors: int | None  # None when not asked for
    revenue: Decimal


def timeseries(client: Client, project_id: str, event: str | None, start: datetime,
               end: datetime, grain: Grain, tz: str = "UTC", visitors: bool = True,
               filters: Filters = NO_FILTERS) -> list[Point]:
    """Events, unique persons and revenue of one event (None: every event) per minute, hour
    or local day.

    Read from the minute rollups, which have no dimensions: with filters, from the raw
    events (persons then as everywhere else, merged across their ids). Merging the
    unique-person states costs most of the time over long ranges, so a caller that only
    plots counts (a traffic panel) can leave ``visitors`` out.
    """
    _check_points(start, end, grain)
    params = {"p": project_id, "e": event, "s": start, "t": end, "tz": check_tz(tz),
              **filters.params(start, end)}
    one = "" if event is None else " AND event = %(e)s"
    if filters:
        sql = (f"SELECT toUnixTimestamp({_bucket(grain, 'timestamp')}) AS b, count(), "
               f"{'uniq(person)' if visitors else 'NULL'}, sum(toDecimal128(revenue, 4)) "
               f"FROM ({counted_events(_IN_RANGE + one + filters.sql)}) GROUP BY b ORDER BY b")
    else:
        sql = (f"SELECT toUnixTimestamp({_bucket(grain, 'minute')}) AS b, sum(events), "
               f"{'uniqMerge(users)' if visitors else 'NULL'}, sum(revenue) "
               f"FROM rollups_minute WHERE project_id = %(p)s{one} AND is_bot = 0 "
               "AND minute >= %(s)s AND minute < %(t)s GROUP BY b ORDER BY b")
    rows = client.query(sql, parameters=params).result_rows
    # Up to 50k points: keep the per-row Python work to the datetime it must build.
    zone = _zone(tz)
    return [Point(datetime.fromtimestamp(t, zone), n, users, revenue)
            for t, n, users, revenue in rows]


def _check_points(start: datetime, end: datetime, grain: str) -> int:
    check_range(start, end)
    if grain not in _STEPS:
        raise QueryError(f"grain: one of {', '.join(_STEPS)}")
    step = _STEPS[grain]
    if (end - start).total_seconds() / step > MAX_POINTS:
        raise QueryError(f"range: over {MAX_POINTS} {grain}s; use a coarser grain")
    return step


def _bucket(grain: str, column: str) -> str:
    if grain == "minute":
        return f"toStartOfMinute({column})"
    return f"toStartOf{grain.capitalize()}({column}, %(tz)s)"


def _zone(tz: str) -> tzinfo:
    return UTC if tz == "UTC" else ZoneInfo(tz)


# The metrics a KPI series plots: those made of events, and those made of sessions (by the
# bucket their session starts in).
_EVENT_METRICS = {
    "pageviews": "countIf(type = 'page')",
    "visitors": "uniqExact(person)",
    "orders": "countIf(event IN %(o)s)",
    "revenue": "toFloat64(sumIf(toDecimal128(revenue, 4), event IN %(o)s))",
    "conversion_rate": "uniqExactIf(person, event IN %(o)s) / uniqExact(person)",
}
_SESSION_METRICS = {
    "sessions": "count()",
    "bounce_rate": "countIf(bounce) / count()",
    "avg_duration_s": "avg(duration_s)",
}
METRICS = tuple(_EVENT_METRICS) + tuple(_SESSION_METRICS)


@dataclass(frozen=True, slots=True)
class MetricPoint:
    time: datetime
    value: float


def series(client: Client, project_id: str, metric: str, start: datetime, end: datetime,
           grain: Grain, tz: str = "UTC", order_events: Sequence[str] = DEFAULT_ORDER_EVENTS,
           filters: Filters = NO_FILTERS) -> list[MetricPoint]:
    """One KPI per minute, hour or local day, as :func:`kpis` computes it over each bucket.

    Buckets without traffic are left out. Revenue adds every currency: a chart of one
    shop's sales; :func:`kpis` keeps currencies apart.
    """
    _check_points(start, end, grain)
    params = {"p": project_id, "s": start, "t": end, "tz": check_tz(tz),
              "o": check_order_events(order_events), **filters.params(start, end)}
    if metric in _EVENT_METRICS:
        sql = (f"SELECT toUnixTimestamp({_bucket(grain, 'timestamp')}) AS b, "
               f"{_EVENT_METRICS[metric]} FROM ({counted_events(_IN_RANGE + filters.sql)}) "
               "GROUP BY b ORDER BY b")
    elif metric in _SESSION_METRICS:
        params.update(session_params(project_id, start, end))
        sql = (f"SELECT toUnixTimestamp({_bucket(grain, 'started_at')}) AS b, "
               f"{_SESSION_METRICS[metric]} FROM ({sessions(filters)}) GROUP BY b ORDER BY b")
    else:
        raise QueryError(f"metric: one of {', '.join(METRICS)}")
    zone = _zone(tz)
    return [MetricPoint(datetime.fromtimestamp(t, zone), float(v))
            for t, v in client.query(sql, parameters=params).result_rows]


@dataclass(frozen=True, slots=True)
class BreakdownRow:
    value: str
    pageviews: int
    visitors: int  # persons
    sessions: int  # 0 for pages, sources, events and places
    bounce_rate: float  # 0 for pages, sources, events and places
    events: int  # the events counted, for pages, sources, events and places; 0 otherwise


def breakdown(client: Client, project_id: str, start: datetime, end: datetime,
              dimension: str, limit: int = 100,
              filters: Filters = NO_FILTERS) -> list[BreakdownRow]:
    """Top values of a dimension: pages by page views; sources (browser, server, pixel,
    mobile), event names and places (country, region, city) by persons; the rest by
    sessions."""
    check_range(start, end)
    if not 1 <= limit <= 1000:
        raise QueryError("limit: 1 to 1000")
    if dimension in _EVENT_DIMENSIONS:
        expression, events, rank = _EVENT_DIMENSIONS[dimension]
        rows = client.query(
            f"SELECT {expression} AS v, countIf(type = 'page') AS pv, uniqExact(person) AS "
            f"persons, 0, 0, count() FROM ({counted_events(events + filters.sql)}) "
            f"GROUP BY v ORDER BY {rank} DESC, v LIMIT %(n)s",
            parameters={"p": project_id, "s": start, "t": end, "n": limit,
                        **filters.params(start, end)},
        ).result_rows
    elif dimension in _SESSION_DIMENSIONS:
        rows = client.query(
            f"SELECT {_SESSION_DIMENSIONS[dimension]} AS v, sum(pageviews), "
            "uniqExact(person), count() AS n, avg(bounce), 0 "
            f"FROM ({person_sessions(filters)}) GROUP BY v ORDER BY n DESC, v LIMIT %(n)s",
            parameters={**session_params(project_id, start, end), "n": limit,
                        **filters.params(start, end)},
        ).result_rows
    else:
        raise QueryError(f"dimension: one of {', '.join(DIMENSIONS)}")
    return [BreakdownRow(str(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4]), int(r[5]))
            for r in rows]


@dataclass(frozen=True, slots=True)
class Conversion:
    goal: str
    visitors: int
    converted: int
    rate: float


def conversion(client: Client, project_id: str, start: datetime, end: datetime,
               goal: str, filters: Filters = NO_FILTERS) -> Conversion:
    """Share of persons seen in the range who did the goal event in it."""
    check_range(start, end)
    row = client.query(
        "SELECT uniqExact(person), uniqExactIf(person, event = %(g)s) "
        f"FROM ({counted_events(_IN_RANGE + filters.sql)})",
        parameters={"p": project_id, "s": start, "t": end, "g": goal, **filters.params(start, end)},
    ).result_rows[0]
    visitors, converted = int(row[0]), int(row[1])
    return Conversion(goal, visitors, converted, converted / visitors if visitors else 0.0)


@dataclass(frozen=True, slots=True)
class FunnelStep:
    event: str
    persons: int
    from_previous: float  # share of the previous step's persons
    from_first: float


@dataclass(frozen=True, slots=True)
class Funnel:
    segment: str  # the breakdown value, "" without a breakdown
    steps: list[FunnelStep]


def funnel(client: Client, project_id: str, start: datetime, end: datetime,
           steps: list[str], window: timedelta, breakdown_by: str | None = None,
           filters: Filters = NO_FILTERS) -> list[Funnel]:
    """Persons reaching each step in order, each within `window` of their first step.

    ClickHouse's ``windowFunnel`` over the events in [start, end). A breakdown takes the
    person's value of a session dimension on their first event in the range.
    """
    check_range(start, end)
    if not FUNNEL_STEPS[0] <= len(steps) <= FUNNEL_STEPS[1]:
        raise QueryError(f"steps: {FUNNEL_STEPS[0]} to {FUNNEL_STEPS[1]} events")
    if window <= timedelta(0):
        raise QueryError("window: must be positive")
    segment = "''"
    if breakdown_by is not None:
        if breakdown_by not in _FUNNEL_COLUMNS:
            raise QueryError(f"breakdown: one of {', '.join(FUNNEL_BREAKDOWNS)}")
        segment = f"toString(argMin({_FUNNEL_COLUMNS[breakdown_by]}, timestamp))"
    # The number of conditions follows len(steps); their values are bound parameters.
    conditions = ", ".join(f"event = %(s{i})s" for i in range(len(steps)))
    params: dict[str, Any] = {f"s{i}": name for i, name in enumerate(steps)}
    rows = client.query(
        f"SELECT segment, level, count() FROM ("
        f"  SELECT person, {segment} AS segment, "
        f"  windowFunnel(%(w)s)(toUInt64(toUnixTimestamp64Milli(timestamp)), {conditions}) "
        f"   AS level FROM ({counted_events(_IN_RANGE + filters.sql)}) GROUP BY person"
        ") GROUP BY segment, level",
        parameters={**params, **filters.params(start, end), "p": project_id, "s": start, "t": end,
                    "w": int(window.total_seconds() * 1000)},
    ).result_rows
    reached: dict[str, list[int]] = {}
    for seg, level, count in rows:
        counts = reached.setdefault(str(seg), [0] * len(steps))
        for i in range(int(level)):
            counts[i] += int(count)
    return [Funnel(seg, _steps(steps, counts)) for seg, counts in sorted(reached.items())]


def _steps(names: list[str], counts: list[int]) -> list[FunnelStep]:
    out = []
    for i, (name, n) in enumerate(zip(names, counts, strict=True)):
        prev = counts[i - 1] if i else n
        out.append(FunnelStep(name, n, n / prev if prev else 0.0,
                              n / counts[0] if counts[0] else 0.0))
    return out


REALTIME_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class RealtimePage:
    path: str
    visitors: int
    pageviews: int


@dataclass(frozen=True, slots=True)
class Realtime:
    visitors: int  # persons with an event in the window
    pageviews: int
    pages: list[RealtimePage]  # by visitors, most first


def realtime(client: Client, project_id: str, now: datetime, limit: int = 10) -> Realtime:
    """Who is on the site now: the events of the last :data:`REALTIME_WINDOW` by event time
    (and those up to as far ahead, from clients whose clocks run fast)."""
    params = {"p": project_id, "s": now - REALTIME_WINDOW, "t": now + REALTIME_WINDOW,
              "n": limit}
    total = client.query(
        f"SELECT uniqExact(person), countIf(type = 'page') FROM ({counted_events(_IN_RANGE)})",
        parameters=params,
    ).result_rows[0]
    pages = client.query(
        "SELECT path, uniqExact(person) AS n, count() "
        f"FROM ({counted_events(_PAGES_IN_RANGE)}) GROUP BY path ORDER BY n DESC, path "
        "LIMIT %(n)s", parameters=params,
    ).result_rows
    return Realtime(int(total[0]), int(total[1]),
                    [RealtimePage(str(p), int(v), int(c)) for p, v, c in pages])
