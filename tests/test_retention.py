"""Cohort retention against ground truth computed in plain Python from the shop's hits.

The shop from tests/analytics_data.py is loaded through the real contract into chDB; the
expected cohorts come from its Hit objects (persons, local dates), never from SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.client import Client

from tests import analytics_data as data
from tests.analytics_data import Hit, Shop
from tracklane.store.analytics_errors import QueryError
from tracklane.store.retention import Retention, retention

PROJECT = "retention-shop"
FIRST = data.START.date()


@pytest.fixture(scope="module")
def shop(store: Client) -> Iterator[Shop]:
    generated = data.generate(PROJECT)
    data.load(store, generated)
    yield generated


@dataclass(frozen=True)
class Expected:
    day: date
    size: int
    retained: list[int]


def expected_cohorts(hits: list[Hit], start: date, end: date, tz: str = "UTC",
                     cohort_event: str | None = None, return_event: str | None = None,
                     max_day: int = 30) -> list[Expected]:
    """The cohorts by the definition, straight from the hits."""
    zone = ZoneInfo(tz)
    first: dict[str, Hit] = {}
    for hit in hits:  # all time: a person's cohort does not depend on the range
        if cohort_event is None or hit.event == cohort_event:
            seen = first.get(hit.person)
            if seen is None or hit.ts < seen.ts:
                first[hit.person] = hit
    returned = {(h.person, h.ts.astimezone(zone).date()) for h in hits
                if return_event is None or h.event == return_event}
    by_day: dict[date, list[str]] = {}
    for person, hit in first.items():
        by_day.setdefault(hit.ts.astimezone(zone).date(), []).append(person)
    out = []
    for i in range((end - start).days + 1):
        day = start + timedelta(days=i)
        people = by_day.get(day, [])
        out.append(Expected(day, len(people), [
            sum((p, day + timedelta(days=n)) in returned for p in people)
            for n in range(max_day + 1)]))
    return out


def as_expected(got: Retention) -> list[Expected]:
    return [Expected(c.day, c.size, c.retained) for c in got.cohorts]


def last_date(shop: Shop) -> date:
    return max(h.ts for h in shop.human).date()


def test_every_cohort_in_utc(store: Client, shop: Shop) -> None:
    # A day either side of the data: those cohorts are zero-filled.
    start, end = FIRST - timedelta(days=1), last_date(shop) + timedelta(days=1)
    want = expected_cohorts(shop.human, start, end)
    got = retention(store, PROJECT, start=start, end=end, max_day=30)

    assert as_expected(got) == want
    assert all(c.retained[0] == c.size for c in got.cohorts)  # day 0 of any event
    assert want[0].size == want[-1].size == 0
    # The data has what each check needs: D1, D7 and D30 returns.
    assert all(sum(c.retained[n] for c in want) > 0 for n in (1, 7, 30))


def test_rates(store: Client, shop: Shop) -> None:
    as_of = last_date(shop)
    got = retention(store, PROJECT, start=FIRST, end=as_of)
    cohorts = expected_cohorts(shop.human, FIRST, as_of)
    for n in (1, 7, 30):
        ripe = [c for c in cohorts if c.day + timedelta(days=n) <= as_of]
        assert ripe and len(ripe) < len(cohorts)  # young cohorts are left out
        want = sum(c.retained[n] for c in ripe) / sum(c.size for c in ripe)
        assert got.rate(n, as_of) == pytest.approx(want, abs=1e-12)
    assert got.rate(0, as_of) == 1.0
    assert got.rate(30, FIRST) == 0.0  # no cohort is 30 days old yet
    with pytest.raises(QueryError):
        got.rate(31, as_of)


def test_cohort_days_are_over_all_time(store: Client, shop: Shop) -> None:
    # Persons active in the range but first seen before it are in no cohort of it.
    start, end = FIRST + timedelta(days=10), FIRST + timedelta(days=20)
    got = retention(store, PROJECT, start=start, end=end, max_day=14)
    assert as_expected(got) == expected_cohorts(shop.human, start, end, max_day=14)
    in_range = {h.person for h in shop.human if start <= h.ts.date() <= end}
    assert sum(c.size for c in got.cohorts) < len(in_range)


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Tokyo"])
def test_local_cohort_days(store: Client, shop: Shop, tz: str) -> None:
    start, end = FIRST - timedelta(days=1), last_date(shop) + timedelta(days=1)
    want = expected_cohorts(shop.human, start, end, tz=tz)
    got = retention(store, PROJECT, start=start, end=end, tz=tz)
    assert as_expected(got) == want
    if tz == "Asia/Tokyo":  # visits end up to 22:00 UTC: many fall on the next local day
        assert want != expected_cohorts(shop.human, start, end)


def test_cohort_and_return_events(store: Client, shop: Shop) -> None:
    start, end = FIRST, last_date(shop)
    want = expected_cohorts(shop.human, start, end, cohort_event="add_to_cart",
                            return_event="purchase")
    got = retention(store, PROJECT, start=start, end=end, cohort_event="add_to_cart",
                    return_event="purchase")
    assert as_expected(got) == want
    # Day 0 is no longer the cohort size: not every cart is bought the same day.
    assert 0 < sum(c.retained[0] for c in want) < sum(c.size for c in want)
    # A return event alone, cohorts by first event ever.
    assert as_expected(retention(store, PROJECT, start=start, end=end,
                                 return_event="purchase", max_day=7)) == expected_cohorts(
        shop.human, start, end, return_event="purchase", max_day=7)


def test_bad_inputs(store: Client, shop: Shop) -> None:
    day = FIRST + timedelta(days=3)
    for bad in ({"tz": "Mars/Olympus_Mons"}, {"tz": "UTC' OR 1=1 --"},
                {"start": day, "end": day - timedelta(days=1)}, {"max_day": -1},
                {"max_day": 366}):
        kwargs: dict[str, Any] = {"start": FIRST, "end": day, **bad}
        with pytest.raises(QueryError):
            retention(store, PROJECT, **kwargs)
    # Names are bound parameters: an injection attempt is just an unknown event.
    for name in ("x' OR 1=1 --", "x\\' OR 1=1 --"):
        got = retention(store, PROJECT, start=FIRST, end=day, cohort_event=name)
        assert [c.size for c in got.cohorts] == [0, 0, 0, 0]
        got = retention(store, PROJECT, start=FIRST, end=day, return_event=name)
        assert all(c.retained == [0] * 31 for c in got.cohorts)
    assert retention(store, "no-such-project", start=FIRST, end=FIRST).cohorts[0].size == 0
