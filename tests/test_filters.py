"""Filtered KPIs, breakdowns and funnels, KPI series and the realtime view, against ground
truth computed in plain Python from the seeded shop (tests/analytics_data.py).

A filter keeps the events whose own value matches, and the sessions, whole, with at least
one kept event (store/filters.py).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from clickhouse_connect.driver.client import Client

from tests import analytics_data as data
from tests.analytics_data import Hit, Shop
from tests.test_analytics import (
    WEEK,
    bounced,
    expected_funnel,
    in_range,
    pages,
    sessions_starting,
)
from tracklane.store import analytics
from tracklane.store.analytics_errors import QueryError
from tracklane.store.filters import Filters

PROJECT = "filter-shop"


@pytest.fixture(scope="module")
def shop(store: Client) -> Iterator[Shop]:
    generated = data.generate(PROJECT)
    data.load(store, generated)
    yield generated


# A hit's own value of each filter dimension, as the pipeline derives it.
FACTS: dict[str, Callable[[Hit], str]] = {
    "country": lambda h: h.country,
    "page": lambda h: h.path,
    "device": lambda h: h.agent.device,
    "referrer_domain": lambda h: h.channel.referrer_domain,
    "utm_source": lambda h: h.channel.utm_source,
}
FIRST_TOUCH = {"referrer_domain", "utm_source"}
CASES = [{"country": "GB"}, {"country": ""}, {"page": "/pricing"}, {"device": "mobile"},
         {"country": "JP", "device": "desktop"}, {"referrer_domain": "google.com"},
         {"utm_source": "newsletter", "page": "/pricing"}, {"utm_source": ""}]


def matcher(shop: Shop, filters: dict[str, str]) -> Callable[[Hit], bool]:
    """Whether a hit is kept: a first-touch dimension is its SDK session's first event's (a
    hit without a session id has its own), the others the hit's own."""
    firsts: dict[str, Hit] = {}
    for hit in sorted(shop.human, key=lambda x: x.ts):
        firsts.setdefault(hit.session_id, hit)

    def judged(h: Hit, name: str) -> Hit:
        return firsts[h.session_id] if name in FIRST_TOUCH and h.session_id else h

    return lambda h: all(FACTS[name](judged(h, name)) == value
                         for name, value in filters.items())


def test_the_shop_comes_from_several_countries(store: Client, shop: Shop) -> None:
    """Looked up at ingestion from the registries' data in the wheel; a documentation
    address has no country."""
    got = {str(c): int(n) for c, n in store.query(
        "SELECT country, count() FROM events WHERE project_id = %(p)s GROUP BY country",
        parameters={"p": PROJECT}).result_rows}
    assert set(got) == {"GB", "US", "JP", "IE", ""}
    assert got == Counter(h.country for h in shop.hits)


@pytest.mark.parametrize("filters", CASES, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_filtered_kpis_equal_the_ground_truth(store: Client, shop: Shop,
                                              filters: dict[str, str]) -> None:
    matches = matcher(shop, filters)
    hits = [h for h in in_range(shop.human, WEEK) if matches(h)]
    assert hits, "a filter the shop never matches proves nothing"
    # A session's first touch is its first hit's; the other filters need one matching hit.
    own = {k: v for k, v in filters.items() if k not in FIRST_TOUCH}
    touch = {k: v for k, v in filters.items() if k in FIRST_TOUCH}
    sessions = [hs for hs in sessions_starting(shop, WEEK)
                if all(FACTS[k](hs[0]) == v for k, v in touch.items())
                and any(all(FACTS[k](h) == v for k, v in own.items()) for h in hs)]
    people = {h.person for h in hits}
    orders = [h for h in hits if h.is_order]
    got = analytics.kpis(store, PROJECT, *WEEK, filters=Filters(filters))

    assert got.pageviews == len(pages(hits))
    assert got.visitors_exact == len(people)
    assert got.sessions == len(sessions)
    assert got.bounce_rate == pytest.approx(sum(map(bounced, sessions)) / len(sessions))
    durations = [(hs[-1].ts - hs[0].ts).total_seconds() for hs in sessions]
    assert got.avg_duration_s == pytest.approx(sum(durations) / len(sessions))
    assert got.orders == len(orders)
    assert got.revenue == sum((h.revenue for h in orders), Decimal(0))
    buyers = {h.person for h in orders}
    assert got.converted == len(buyers)
    assert got.conversion_rate == pytest.approx(len(buyers) / len(people))


def test_filtered_breakdowns(store: Client, shop: Shop) -> None:
    filters = {"country": "US"}
    matches = matcher(shop, filters)
    hits = [h for h in pages(in_range(shop.human, WEEK)) if matches(h)]
    got = analytics.breakdown(store, PROJECT, *WEEK, "page", filters=Filters(filters))
    assert {r.value: r.pageviews for r in got} == Counter(h.path for h in hits)
    # Sessions by device, among the sessions with a US event.
    groups: dict[str, int] = Counter(
        hs[0].agent.device for hs in sessions_starting(shop, WEEK)
        if any(matches(h) for h in hs))
    got_devices = analytics.breakdown(store, PROJECT, *WEEK, "device", filters=Filters(filters))
    assert {r.value: r.sessions for r in got_devices} == groups
    # Countries by persons, over every counted event: a backend's orders open no session
    # but carry their user's address.
    everything = in_range(shop.human, WEEK)
    places: dict[str, set[str]] = defaultdict(set)
    for h in everything:
        places[h.country].add(h.person)
    got_places = analytics.breakdown(store, PROJECT, *WEEK, "country")
    assert {r.value: (r.visitors, r.pageviews, r.events) for r in got_places} == {
        c: (len(people), sum(h.country == c for h in pages(everything)),
            sum(h.country == c for h in everything)) for c, people in places.items()}
    assert any(h.agent.server and h.country for h in everything)
    # Event names by persons: what the funnel builder offers.
    names = analytics.breakdown(store, PROJECT, *WEEK, "event")
    expected = defaultdict(set)
    for h in in_range(shop.human, WEEK):
        expected[h.event].add(h.person)
    assert {r.value: (r.visitors, r.events) for r in names} == {
        name: (len(people), sum(h.event == name for h in in_range(shop.human, WEEK)))
        for name, people in expected.items()}


def test_filtered_funnel_and_conversion(store: Client, shop: Shop) -> None:
    filters = {"device": "mobile", "utm_source": "google"}
    matches = matcher(shop, filters)
    steps = ["page_view", "add_to_cart", "purchase"]
    hits = [h for h in in_range(shop.human, WEEK) if matches(h)]
    [funnel] = analytics.funnel(store, PROJECT, *WEEK, steps, timedelta(hours=1),
                                filters=Filters(filters))
    assert [s.persons for s in funnel.steps] == expected_funnel(hits, steps, timedelta(hours=1))
    got = analytics.conversion(store, PROJECT, *WEEK, "add_to_cart", filters=Filters(filters))
    assert (got.visitors, got.converted) == (
        len({h.person for h in hits}), len({h.person for h in hits if h.event == "add_to_cart"}))


def day_of(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def test_kpi_series_by_day(store: Client, shop: Shop) -> None:
    hits = in_range(shop.human, WEEK)
    series = {m: {p.time: p.value for p in analytics.series(store, PROJECT, m, *WEEK, "day")}
              for m in ("pageviews", "visitors", "orders", "sessions", "bounce_rate")}
    assert series["pageviews"] == {d: float(n) for d, n in
                                   Counter(day_of(h.ts) for h in pages(hits)).items()}
    people: dict[datetime, set[str]] = defaultdict(set)
    for h in hits:
        people[day_of(h.ts)].add(h.person)
    assert series["visitors"] == {d: float(len(p)) for d, p in people.items()}
    assert series["orders"] == {d: float(n) for d, n in
                                Counter(day_of(h.ts) for h in hits if h.is_order).items()}
    by_day: dict[datetime, list[list[Hit]]] = defaultdict(list)
    for hs in sessions_starting(shop, WEEK):
        by_day[day_of(hs[0].ts)].append(hs)
    assert series["sessions"] == {d: float(len(s)) for d, s in by_day.items()}
    assert series["bounce_rate"] == pytest.approx(
        {d: sum(map(bounced, s)) / len(s) for d, s in by_day.items()})
    with pytest.raises(QueryError, match="metric"):
        analytics.series(store, PROJECT, "nonsense", *WEEK, "day")


def test_timeseries_of_every_event_and_filtered(store: Client, shop: Shop) -> None:
    hits = in_range(shop.human, WEEK)
    every = analytics.timeseries(store, PROJECT, None, *WEEK, "day", visitors=False)
    assert {p.time: p.events for p in every} == Counter(day_of(h.ts) for h in hits)
    filtered = analytics.timeseries(store, PROJECT, "page_view", *WEEK, "day",
                                    filters=Filters({"country": "IE"}))
    ie = [h for h in pages(hits) if h.country == "IE"]
    people: dict[datetime, set[str]] = defaultdict(set)
    for h in ie:
        people[day_of(h.ts)].add(h.person)
    assert {p.time: (p.events, p.visitors) for p in filtered} == {
        d: (n, len(people[d])) for d, n in Counter(day_of(h.ts) for h in ie).items()}


def test_realtime_is_the_last_five_minutes(store: Client, shop: Shop) -> None:
    # The busiest moment of the shop, as "now": the hit with the most others within the
    # window either side.
    times = sorted(h.ts for h in shop.human)
    w = analytics.REALTIME_WINDOW
    now = max(times, key=lambda t: bisect.bisect_left(times, t + w)
              - bisect.bisect_left(times, t - w))
    window = [h for h in shop.human
              if now - analytics.REALTIME_WINDOW <= h.ts < now + analytics.REALTIME_WINDOW]
    got = analytics.realtime(store, PROJECT, now)
    assert got.visitors == len({h.person for h in window}) > 0
    assert got.pageviews == len(pages(window))
    per_page: dict[str, set[str]] = defaultdict(set)
    for h in pages(window):
        per_page[h.path].add(h.person)
    assert {p.path: p.visitors for p in got.pages} == {k: len(v) for k, v in per_page.items()}


def test_unknown_filters_are_refused() -> None:
    with pytest.raises(QueryError, match="unknown dimension"):
        Filters({"colour": "red"})
