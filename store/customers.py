"""Customer KPIs: repurchase rate, customer lifetime value (CLV), new and returning
visitors, and the time from first visit to first order.

Everything is over merged persons (:mod:`store.persons`) and counted events only (no
bots, no excluded traffic). An order is a counted event named one of the project's
``order_events``; a customer is a person with at least one order. "Ever" means over all
stored events before ``end``: a person's past reaches back before the queried range.

- Repurchase rate: customers with two or more orders / customers, over the orders in
  [start, end) and over every order before ``end`` (all time).
- CLV: each customer's revenue over their life so far (every order before ``end``), per
  currency: a currency's revenue / the customers with an order in that currency. Given
  overall and per cohort, the month (in ``tz``) of the customer's first order. Revenue is
  never added across currencies; orders without a currency (or without revenue) are the
  '' currency.
- New and returning visitors: the persons with a counted event in [start, end); new when
  their first counted event ever is in the range, returning when it is before ``start``.
- Time to first order: for the customers whose first order ever is in [start, end), the
  time from their first counted event ever (any event: a page view, an identify, the order
  itself) to that order. The median is exact: the middle value, or for an even count the
  mean of the two middle values (``quantileExactInclusive(0.5)``), in milliseconds.

Every statement is fixed text with bound parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from tracklane.projects import DEFAULT_ORDER_EVENTS
from tracklane.store.analytics import check_order_events, check_range, check_tz, per
from tracklane.store.persons import counted_events

# One pass over each person's counted events before %(t)s.
_PERSONS = f"""
SELECT
    countIf(last_seen >= %(s)s),
    countIf(first_seen >= %(s)s),
    countIf(range_orders >= 1), countIf(range_orders >= 2),
    countIf(orders >= 1), countIf(orders >= 2),
    countIf(orders >= 1 AND first_order >= %(s)s),
    quantileExactInclusiveIf(0.5)(dateDiff('millisecond', first_seen, first_order),
                                  orders >= 1 AND first_order >= %(s)s)
FROM
(
    SELECT person, min(timestamp) AS first_seen, max(timestamp) AS last_seen,
           countIf(is_order) AS orders,
           countIf(is_order AND timestamp >= %(s)s) AS range_orders,
           minIf(timestamp, is_order) AS first_order
    FROM ({counted_events("timestamp < %(t)s", "timestamp, event IN %(o)s AS is_order")})
    GROUP BY person
)
"""

# Per (cohort month, currency), per month, per currency and overall: customers, orders
# and revenue. A subtotal's grouped-away column is NULL (group_by_use_nulls); the revenue
# of a row without a currency mixes currencies and is not read.
_CLV = f"""
WITH orders AS (
    {counted_events("timestamp < %(t)s AND event IN %(o)s", "timestamp, currency, revenue")}
)
SELECT month, currency, uniqExact(person), count(), sum(revenue)
FROM orders INNER JOIN (
    SELECT person, toStartOfMonth(min(timestamp), %(tz)s) AS month FROM orders GROUP BY person
) AS firsts USING (person)
GROUP BY GROUPING SETS ((month, currency), (month), (currency), ())
ORDER BY month, currency
SETTINGS group_by_use_nulls = 1
"""


@dataclass(frozen=True, slots=True)
class Repurchase:
    customers: int  # persons with at least one order
    repeat_customers: int  # persons with two or more
    rate: float  # repeat_customers / customers; 0.0 without customers


@dataclass(frozen=True, slots=True)
class CurrencyValue:
    """The customers who ordered in one currency, and what they spent in it."""

    currency: str  # '' for orders sent without a currency or without revenue
    customers: int
    orders: int
    revenue: Decimal
    clv: Decimal  # revenue / customers, to 4 decimals


@dataclass(frozen=True, slots=True)
class Cohort:
    month: date  # first day of the local month of the customers' first order
    customers: int
    orders: int  # their orders so far, all currencies
    currencies: list[CurrencyValue]


@dataclass(frozen=True, slots=True)
class Clv:
    customers: int  # every customer with an order before ``end``
    orders: int
    currencies: list[CurrencyValue]  # by currency code
    cohorts: list[Cohort]  # oldest first; months without a first order are left out


@dataclass(frozen=True, slots=True)
class Visitors:
    visitors: int  # persons with a counted event in the range
    new: int  # ... whose first counted event ever is in the range
    returning: int  # ... first seen before it


@dataclass(frozen=True, slots=True)
class TimeToFirstOrder:
    customers: int  # customers whose first order ever is in the range
    median_s: float | None  # None without such customers


@dataclass(frozen=True, slots=True)
class Customers:
    repurchase: Repurchase  # orders in the range
    repurchase_all_time: Repurchase  # every order before ``end``
    clv: Clv
    visitors: Visitors
    time_to_first_order: TimeToFirstOrder


def customers(client: Client, project_id: str, start: datetime, end: datetime,
              order_events: Sequence[str] = DEFAULT_ORDER_EVENTS,
              tz: str = "UTC") -> Customers:
    """Every customer KPI of [start, end); CLV cohorts are months in ``tz``."""
    check_range(start, end)
    params = {"p": project_id, "s": start, "t": end, "o": check_order_events(order_events)}
    check_tz(tz)
    row = client.query(_PERSONS, parameters=params).result_rows[0]
    visitors, new, customers_, repeat, all_customers, all_repeat, measured, median = row
    return Customers(
        repurchase=_repurchase(int(customers_), int(repeat)),
        repurchase_all_time=_repurchase(int(all_customers), int(all_repeat)),
        clv=clv(client, project_id, end, order_events, tz),
        visitors=Visitors(int(visitors), int(new), int(visitors) - int(new)),
        time_to_first_order=TimeToFirstOrder(
            int(measured), None if measured == 0 or math.isnan(median) else median / 1000),
    )


def clv(client: Client, project_id: str, end: datetime,
        order_events: Sequence[str] = DEFAULT_ORDER_EVENTS, tz: str = "UTC") -> Clv:
    """Lifetime value so far (every order before ``end``), overall and per first-order month."""
    rows = client.query(_CLV, parameters={
        "p": project_id, "t": end, "o": check_order_events(order_events), "tz": check_tz(tz),
    }).result_rows
    totals: tuple[int, int] = (0, 0)
    overall: list[CurrencyValue] = []
    months: dict[date, tuple[int, int]] = {}
    per_month: dict[date, list[CurrencyValue]] = {}
    for month, currency, persons, orders, revenue in rows:
        if currency is None:
            if month is None:
                totals = (int(persons), int(orders))
            else:
                months[month] = (int(persons), int(orders))
            continue
        value = CurrencyValue(str(currency), int(persons), int(orders), Decimal(revenue),
                              per(Decimal(revenue), int(persons)))
        (overall if month is None else per_month.setdefault(month, [])).append(value)
    return Clv(
        customers=totals[0], orders=totals[1], currencies=overall,
        cohorts=[Cohort(_as_date(m), n, o, per_month.get(m, []))
                 for m, (n, o) in sorted(months.items())],
    )


def _repurchase(customers: int, repeat: int) -> Repurchase:
    return Repurchase(customers, repeat, repeat / customers if customers else 0.0)


def _as_date(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value
