"""Customer KPIs and per-currency revenue against ground truth computed in plain Python.

The seeded shop of tests/analytics_data.py (merged persons, backend orders, ``Order
Completed`` events, logins mid-session, second devices, shared browsers, an internal
tester and a crawler) is loaded through the real contract; the expected answers come from
its hits' ``person`` and ``counted`` labels, never from SQL. Small hand-made shops pin
the multi-currency rules and the median's even-count rule with numbers written out.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.client import Client

from tests import analytics_data as data
from tests.analytics_data import Hit, Shop
from tests.commerce_data import DAY, currency_of, priced
from tracklane.store import analytics, customers
from tracklane.store.analytics_errors import QueryError
from tracklane.store.customers import (
    Clv,
    Cohort,
    CurrencyValue,
    Repurchase,
    TimeToFirstOrder,
    Visitors,
)

PROJECT = "customers-shop"
WHOLE = (data.START, data.START + timedelta(days=data.DAYS))
WEEK = (data.START + timedelta(days=10, hours=13), data.START + timedelta(days=17, hours=13))
# The last days of September: the cohort month of an evening order depends on the zone.
LATE = (data.START + timedelta(days=20), data.START + timedelta(days=30))
CENT = Decimal("0.0001")


@pytest.fixture(scope="module")
def shop(store: Client) -> Iterator[Shop]:
    generated = data.generate(PROJECT)
    data.load(store, generated)
    yield generated


def _month(ts: datetime, tz: str) -> date:
    return ts.astimezone(ZoneInfo(tz)).date().replace(day=1)


def _values(orders: Sequence[Hit]) -> list[CurrencyValue]:
    groups: dict[str, list[Hit]] = defaultdict(list)
    for h in orders:
        groups[currency_of(h)].append(h)
    out = []
    for currency, mine in sorted(groups.items()):
        people = len({h.person for h in mine})
        revenue = sum((h.revenue for h in mine), Decimal(0))
        out.append(CurrencyValue(currency, people, len(mine), revenue,
                                 (revenue / people).quantize(CENT)))
    return out


def _repurchase(orders: Sequence[Hit]) -> Repurchase:
    per_person = Counter(h.person for h in orders)
    repeat = sum(n >= 2 for n in per_person.values())
    return Repurchase(len(per_person), repeat, repeat / len(per_person) if per_person else 0.0)


def expected(hits: Sequence[Hit], start: datetime, end: datetime,
             order_events: Sequence[str] = data.ORDER_EVENTS,
             tz: str = "UTC") -> customers.Customers:
    """Every customer KPI of [start, end), from the hits alone."""
    seen = [h for h in hits if h.counted and h.ts < end]
    first_seen: dict[str, datetime] = {}
    for h in seen:
        first_seen[h.person] = min(h.ts, first_seen.get(h.person, h.ts))
    orders = [h for h in seen if h.event in order_events]
    first_order: dict[str, datetime] = {}
    for h in orders:
        first_order[h.person] = min(h.ts, first_order.get(h.person, h.ts))

    visitors = {h.person for h in seen if h.ts >= start}
    new = {p for p in visitors if first_seen[p] >= start}
    waits = [(first_order[p] - first_seen[p]) // timedelta(milliseconds=1)
             for p in first_order if first_order[p] >= start]

    cohorts = []
    by_month: dict[date, list[Hit]] = defaultdict(list)
    for h in orders:
        by_month[_month(first_order[h.person], tz)].append(h)
    for month, mine in sorted(by_month.items()):
        cohorts.append(Cohort(month, len({h.person for h in mine}), len(mine), _values(mine)))
    return customers.Customers(
        repurchase=_repurchase([h for h in orders if h.ts >= start]),
        repurchase_all_time=_repurchase(orders),
        clv=Clv(len(first_order), len(orders), _values(orders), cohorts),
        visitors=Visitors(len(visitors), len(new), len(visitors) - len(new)),
        time_to_first_order=TimeToFirstOrder(
            len(waits), statistics.median(waits) / 1000 if waits else None),
    )


@pytest.mark.parametrize(("span", "tz"), [(WHOLE, "UTC"), (WEEK, "UTC"), (LATE, "UTC"),
                                          (LATE, "Pacific/Kiritimati"),
                                          (WEEK, "America/Los_Angeles")],
                         ids=["whole", "week", "late", "late-kiritimati", "week-la"])
def test_customer_kpis_equal_the_ground_truth(store: Client, shop: Shop,
                                              span: tuple[datetime, datetime], tz: str) -> None:
    got = customers.customers(store, PROJECT, *span, tz=tz)
    assert got == expected(shop.hits, *span, tz=tz)
    # The numbers are the person-level ones that merging changes.
    assert got.visitors.visitors == analytics.kpis(store, PROJECT, *span).visitors_exact


def test_the_shop_exercises_every_customer_rule(store: Client, shop: Shop) -> None:
    """The ground truth holds what the definitions are about, so the test above sees it."""
    week = expected(shop.hits, *WEEK)
    assert week.repurchase.repeat_customers > 0
    assert week.repurchase_all_time.repeat_customers > week.repurchase.repeat_customers
    assert week.repurchase_all_time.customers > week.repurchase.customers
    assert week.visitors.new > 0 and week.visitors.returning > 0
    assert week.time_to_first_order.customers > 10
    assert len(week.clv.cohorts) == 1  # everyone's first order so far is in September
    assert len(expected(shop.hits, *WHOLE).clv.cohorts) == 2  # and October
    # Customers who browsed anonymously before a backend confirmed their order under the
    # user id: merged, their wait runs from the anonymous first visit.
    backend_buyers = {h.person for h in shop.human if h.is_order and h.agent.server}
    browsed = {h.person for h in shop.human if h.anonymous_id and h.person in backend_buyers}
    assert len(browsed) > 10
    # A zone far east moves some evening first orders of September 30 into October.
    utc, east = expected(shop.hits, *LATE), expected(shop.hits, *LATE, tz="Pacific/Kiritimati")
    assert [c.customers for c in utc.clv.cohorts] != [c.customers for c in east.clv.cohorts]
    # Without merging, a backend's orders and the browsing before them would be two
    # visitors; the tester and the crawler are no one's customers.
    assert all(not h.person.startswith(("qa", "bot")) for h in shop.human if h.is_order)


def test_kpis_report_the_shop_orders_in_their_one_currency(store: Client, shop: Shop) -> None:
    hits = [h for h in shop.human if WEEK[0] <= h.ts < WEEK[1]]
    orders = [h for h in hits if h.is_order]
    revenue = sum((h.revenue for h in orders), Decimal(0))
    aov = (revenue / len(orders)).quantize(CENT)
    got = analytics.kpis(store, PROJECT, *WEEK)
    assert (got.orders, got.currency, got.revenue, got.aov) == (len(orders), "", revenue, aov)
    assert got.currencies == [analytics.CurrencyRevenue("", len(orders), revenue, aov)]
    assert {h.event for h in orders} == {"purchase", "Order Completed"}
    # One order event only: the other's orders and revenue are left out.
    only = analytics.kpis(store, PROJECT, *WEEK, ["Order Completed"])
    completed = [h for h in orders if h.event == "Order Completed"]
    assert only.orders == len(completed) < len(orders)
    assert only.revenue == sum((h.revenue for h in completed), Decimal(0))


def load(store: Client, project: str, hits: list[Hit]) -> Shop:
    shop = Shop(project, hits)
    data.load(store, shop)  # also resolves persons
    return shop


def test_currencies_are_never_added_together(store: Client) -> None:
    project = "customers-multi"
    shop = load(store, project, [
        # Seen two days before the range, back in it: returning, never a customer.
        priced(project, 1, -2 * 86400, "page_view", anon="a0"),
        priced(project, 2, 50, "page_view", anon="a0"),
        # a1 browses, logs in as u1 and buys in EUR; the backend confirms a second order.
        priced(project, 3, 0, "page_view", anon="a1"),
        priced(project, 4, 60, "identify", anon="a1", user="u1"),
        priced(project, 5, 100, "purchase", anon="a1", user="u1", revenue="10", currency="eur"),
        priced(project, 6, 3600, "Order Completed", user="u1", revenue="20", currency="EUR"),
        # a2 pays in USD, then once without a currency.
        priced(project, 7, 1000, "page_view", anon="a2"),
        priced(project, 8, 1300, "purchase", anon="a2", revenue="5.5", currency="USD",
               key="total"),
        priced(project, 9, 2000, "Order Completed", anon="a2", revenue="42.5"),
        priced(project, 10, 500, "page_view", anon="a3"),
        # Not orders, or not counted.
        priced(project, 11, 600, "refund_requested", anon="a3", revenue="7", currency="EUR"),
        priced(project, 12, 700, "purchase", anon="crawler", revenue="1000", currency="EUR",
               bot=True),
    ])
    kpis = analytics.kpis(store, project, *DAY)
    assert kpis.orders == 4
    assert (kpis.currency, kpis.revenue, kpis.aov) == (None, None, None)
    assert kpis.currencies == [
        analytics.CurrencyRevenue("", 1, Decimal("42.5"), Decimal("42.5")),
        analytics.CurrencyRevenue("EUR", 2, Decimal(30), Decimal(15)),
        analytics.CurrencyRevenue("USD", 1, Decimal("5.5"), Decimal("5.5")),
    ]

    got = customers.customers(store, project, *DAY)
    assert got == expected(shop.hits, *DAY)
    values = [CurrencyValue("", 1, 1, Decimal("42.5"), Decimal("42.5")),
              CurrencyValue("EUR", 1, 2, Decimal(30), Decimal(30)),
              CurrencyValue("USD", 1, 1, Decimal("5.5"), Decimal("5.5"))]
    assert got.clv == Clv(2, 4, values, [Cohort(date(2026, 6, 1), 2, 4, values)])
    assert got.repurchase == got.repurchase_all_time == Repurchase(2, 2, 1.0)
    assert got.visitors == Visitors(4, 3, 1)
    # Waits of 100 s (u1, from a1's first page) and 300 s: an even count's median is the
    # mean of the two middle values, not the upper one.
    assert got.time_to_first_order == TimeToFirstOrder(2, 200.0)


def test_an_order_completed_with_revenue_and_the_aov(store: Client) -> None:
    project = "customers-one"
    load(store, project, [
        priced(project, 1, 0, "page_view", anon="a1"),
        priced(project, 2, 30, "Order Completed", anon="a1", revenue="42.5", currency="USD"),
        priced(project, 3, 90, "purchase", anon="a1", revenue="10", currency="USD", key="total"),
        priced(project, 4, 60, "add_to_cart", anon="a1", revenue="99", currency="USD"),
    ])
    got = analytics.kpis(store, project, *DAY)
    assert (got.orders, got.currency, got.revenue, got.aov) == (
        2, "USD", Decimal("52.5"), Decimal("26.25"))
    completed = analytics.kpis(store, project, *DAY, ["Order Completed"])
    assert (completed.orders, completed.revenue, completed.aov) == (
        1, Decimal("42.5"), Decimal("42.5"))
    assert customers.customers(store, project, *DAY).time_to_first_order == (
        TimeToFirstOrder(1, 30.0))


def test_no_orders_and_bad_parameters(store: Client, shop: Shop) -> None:
    empty = customers.customers(store, "customers-nobody", *DAY)
    assert empty == customers.Customers(
        Repurchase(0, 0, 0.0), Repurchase(0, 0, 0.0), Clv(0, 0, [], []), Visitors(0, 0, 0),
        TimeToFirstOrder(0, None))
    kpis = analytics.kpis(store, "customers-nobody", *DAY)
    assert (kpis.orders, kpis.currency, kpis.revenue, kpis.aov, kpis.currencies) == (
        0, None, Decimal(0), None, [])
    with pytest.raises(QueryError, match="tz"):
        customers.customers(store, PROJECT, *WEEK, tz="Mars/Base")
    with pytest.raises(QueryError, match="order_events"):
        customers.customers(store, PROJECT, *WEEK, [])
    with pytest.raises(QueryError, match="order_events"):
        analytics.kpis(store, PROJECT, *WEEK, [])
    with pytest.raises(QueryError, match="after"):
        customers.customers(store, PROJECT, WEEK[1], WEEK[0])
    evil = "purchase') OR 1=1 --"
    assert customers.customers(store, PROJECT, *WEEK, [evil]).clv.customers == 0
