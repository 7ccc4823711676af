"""KPIs, breakdowns, time series and funnels against ground truth computed in plain Python.

The shop from tests/analytics_data.py is loaded through the real contract into chDB; the
expected numbers come from its Hit objects, never from SQL.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.client import Client

from tests import analytics_data as data
from tests.analytics_data import Hit, Shop
from tracklane.store import analytics
from tracklane.store.analytics_errors import QueryError
from tracklane.store.persons import RECENT_LINKS, counted_events, reload_identity_map

PROJECT = "kpi-shop"
WHOLE = (data.START, data.START + timedelta(days=data.DAYS))
# A week inside, so sessions and events are cut at both ends.
WEEK = (data.START + timedelta(days=10, hours=13), data.START + timedelta(days=17, hours=13))


@pytest.fixture(scope="module")
def shop(store: Client) -> Iterator[Shop]:
    generated = data.generate(PROJECT)
    data.load(store, generated)
    yield generated


def in_range(hits: list[Hit], span: tuple[datetime, datetime]) -> list[Hit]:
    return [h for h in hits if span[0] <= h.ts < span[1]]


def sessions_starting(shop: Shop, span: tuple[datetime, datetime]) -> list[list[Hit]]:
    return [hs for hs in data.sessions(shop.human).values() if span[0] <= hs[0].ts < span[1]]


def bounced(hits: list[Hit]) -> bool:
    return sum(h.type == "page" for h in hits) <= 1 and not any(h.type == "track" for h in hits)


def pages(hits: list[Hit]) -> list[Hit]:
    return [h for h in hits if h.type == "page"]


@pytest.mark.parametrize("span", [WHOLE, WEEK], ids=["whole", "week"])
def test_kpis_equal_the_ground_truth(store: Client, shop: Shop,
                                     span: tuple[datetime, datetime]) -> None:
    hits = in_range(shop.human, span)
    sessions = sessions_starting(shop, span)
    people = {h.person for h in hits}
    orders = [h for h in hits if h.is_order]
    got = analytics.kpis(store, PROJECT, *span)

    assert got.pageviews == len(pages(hits))
    assert got.visitors_exact == len(people)
    assert abs(got.visitors - len(people)) <= 0.02 * len(people)
    assert got.sessions == len(sessions)
    assert got.bounce_rate == pytest.approx(sum(map(bounced, sessions)) / len(sessions))
    durations = [(hs[-1].ts - hs[0].ts).total_seconds() for hs in sessions]
    assert got.avg_duration_s == pytest.approx(sum(durations) / len(sessions))
    assert got.views_per_visit == pytest.approx(
        sum(len(pages(hs)) for hs in sessions) / len(sessions))
    # Orders are the project's order events; the shop sends no currency, so one bucket.
    revenue = sum((h.revenue for h in orders), Decimal(0))
    assert got.orders == len(orders)
    assert (got.currency, got.revenue) == ("", revenue)
    assert got.aov == (revenue / len(orders)).quantize(Decimal("0.0001"))
    # The crawler's 300 page views, the tester's visits and the test messages are in the
    # store and counted nowhere.
    assert sum(h.agent.bot for h in shop.hits) == 300
    assert sum(h.excluded for h in shop.hits) > 50
    stored = store.query("SELECT count(), countIf(excluded != '') FROM events "
                         "WHERE project_id = %(p)s", parameters={"p": PROJECT}).result_rows[0]
    assert stored == (len(shop.hits), sum(h.excluded for h in shop.hits))


def test_page_breakdown(store: Client, shop: Shop) -> None:
    hits = pages(in_range(shop.human, WEEK))
    views = Counter(h.path for h in hits)
    people: dict[str, set[str]] = defaultdict(set)
    for h in hits:
        people[h.path].add(h.person)
    got = analytics.breakdown(store, PROJECT, *WEEK, "page")
    assert {r.value: (r.pageviews, r.visitors) for r in got} == {
        path: (n, len(people[path])) for path, n in views.items()}
    assert [r.pageviews for r in got] == sorted((r.pageviews for r in got), reverse=True)


SESSION_FACTS: dict[str, Callable[[list[Hit]], str]] = {
    "entry_page": lambda hs: pages(hs)[0].path if pages(hs) else "",
    "exit_page": lambda hs: pages(hs)[-1].path if pages(hs) else "",
    "referrer_domain": lambda hs: hs[0].channel.referrer_domain,
    "utm_source": lambda hs: hs[0].channel.utm_source,
    "utm_medium": lambda hs: hs[0].channel.utm_medium,
    "utm_campaign": lambda hs: hs[0].channel.utm_campaign,
    "device": lambda hs: hs[0].agent.device,
    "browser": lambda hs: hs[0].agent.browser,
    "os": lambda hs: hs[0].agent.os,
}


@pytest.mark.parametrize("dimension", list(SESSION_FACTS))
def test_session_breakdowns(store: Client, shop: Shop, dimension: str) -> None:
    groups: dict[str, list[list[Hit]]] = defaultdict(list)
    for hs in sessions_starting(shop, WEEK):
        groups[SESSION_FACTS[dimension](hs)].append(hs)
    got = {r.value: r for r in analytics.breakdown(store, PROJECT, *WEEK, dimension)}
    assert set(got) == set(groups)
    for value, sessions in groups.items():
        row = got[value]
        assert row.sessions == len(sessions), value
        assert row.pageviews == sum(len(pages(hs)) for hs in sessions), value
        assert row.visitors == len({data.session_person(hs) for hs in sessions}), value
        assert row.bounce_rate == pytest.approx(sum(map(bounced, sessions)) / len(sessions))


@pytest.mark.parametrize(("grain", "tz"), [("day", "UTC"), ("day", "America/New_York"),
                                           ("hour", "Asia/Kolkata"), ("minute", "UTC")])
def test_timeseries_from_the_rollups(store: Client, shop: Shop, grain: analytics.Grain,
                                     tz: str) -> None:
    zone = ZoneInfo(tz)

    def bucket(ts: datetime) -> datetime:
        local = ts.astimezone(zone)
        if grain == "day":
            return local.replace(hour=0, minute=0, second=0, microsecond=0)
        if grain == "hour":
            return local.replace(minute=0, second=0, microsecond=0)
        return local.replace(second=0, microsecond=0)

    for event in ("page_view", "purchase"):
        counts: Counter[datetime] = Counter()
        revenue: dict[datetime, Decimal] = defaultdict(Decimal)
        people: dict[datetime, set[str]] = defaultdict(set)
        for h in in_range(shop.human, WEEK):
            if h.event == event:
                counts[bucket(h.ts)] += 1
                revenue[bucket(h.ts)] += h.revenue
                people[bucket(h.ts)].add(h.distinct_id)
        got = analytics.timeseries(store, PROJECT, event, *WEEK, grain, tz)
        assert {p.time: (p.events, p.visitors, p.revenue) for p in got} == {
            t: (n, len(people[t]), revenue[t]) for t, n in counts.items()}
        counts_only = analytics.timeseries(store, PROJECT, event, *WEEK, grain, tz,
                                           visitors=False)
        assert {p.time: (p.events, p.visitors) for p in counts_only} == {
            t: (n, None) for t, n in counts.items()}


def expected_funnel(hits: list[Hit], steps: list[str], window: timedelta) -> list[int]:
    """Persons reaching each step: for each start, the earliest next step within the window."""
    by_person: dict[str, list[Hit]] = defaultdict(list)
    for h in hits:
        by_person[h.person].append(h)
    reached = [0] * len(steps)
    for person_hits in by_person.values():
        best = 0
        for i, first in enumerate(person_hits):
            if first.event != steps[0]:
                continue
            level, last = 1, first.ts
            for later in person_hits[i + 1:]:
                if level == len(steps) or later.ts - first.ts > window:
                    break
                if later.event == steps[level] and later.ts > last:
                    level, last = level + 1, later.ts
            best = max(best, level)
        for k in range(best):
            reached[k] += 1
    return reached


@pytest.mark.parametrize("window", [timedelta(hours=1), timedelta(seconds=100.5)])
def test_funnel_counts_and_step_conversion(store: Client, shop: Shop, window: timedelta) -> None:
    steps = ["page_view", "add_to_cart", "purchase"]
    hits = in_range(shop.human, WEEK)
    want = expected_funnel(hits, steps, window)
    [got] = analytics.funnel(store, PROJECT, *WEEK, steps, window)
    assert [s.persons for s in got.steps] == want
    assert want[2] > 0
    assert got.steps[1].from_previous == pytest.approx(want[1] / want[0])
    assert got.steps[2].from_first == pytest.approx(want[2] / want[0])


def test_funnel_broken_down_by_device(store: Client, shop: Shop) -> None:
    steps = ["page_view", "add_to_cart", "purchase"]
    hits = in_range(shop.human, WEEK)
    got = {f.segment: [s.persons for s in f.steps] for f in analytics.funnel(
        store, PROJECT, *WEEK, steps, timedelta(hours=1), breakdown_by="device")}
    first_device: dict[str, str] = {}
    for h in hits:
        first_device.setdefault(h.person, h.agent.device)
    for device in ("desktop", "mobile"):
        mine = [h for h in hits if first_device[h.person] == device]
        assert got[device] == expected_funnel(mine, steps, timedelta(hours=1))


def test_conversion_rate_for_a_goal(store: Client, shop: Shop) -> None:
    hits = in_range(shop.human, WEEK)
    people = {h.person for h in hits}
    buyers = {h.person for h in hits if h.event == "purchase"}
    got = analytics.conversion(store, PROJECT, *WEEK, "purchase")
    assert (got.visitors, got.converted) == (len(people), len(buyers))
    assert got.rate == pytest.approx(len(buyers) / len(people))


def test_bad_parameters_raise_query_errors(store: Client, shop: Shop) -> None:
    start, end = WEEK
    with pytest.raises(QueryError, match="after"):
        analytics.kpis(store, PROJECT, end, start)
    with pytest.raises(QueryError, match="dimension"):
        analytics.breakdown(store, PROJECT, start, end, "path; DROP TABLE events")
    with pytest.raises(QueryError, match="steps"):
        analytics.funnel(store, PROJECT, start, end, ["page_view"], timedelta(hours=1))
    with pytest.raises(QueryError, match="steps"):
        analytics.funnel(store, PROJECT, start, end, ["a"] * 11, timedelta(hours=1))
    with pytest.raises(QueryError, match="tz"):
        analytics.timeseries(store, PROJECT, "page_view", start, end, "day", "Mars/Base")
    with pytest.raises(QueryError, match="grain"):
        analytics.timeseries(store, PROJECT, "page_view", start, end, "week", "UTC")  # type: ignore[arg-type]
    # Injection attempts in bound parameters are plain values: nothing matches them.
    evil = "x' OR 1=1 --"
    assert analytics.conversion(store, PROJECT, start, end, evil).converted == 0
    assert analytics.kpis(store, evil, start, end).pageviews == 0
    [funnel] = analytics.funnel(store, PROJECT, start, end, [evil, "purchase"], timedelta(hours=1))
    assert funnel.steps[0].persons == 0
    assert analytics.kpis(store, PROJECT, start, end).pageviews > 0


def test_the_shop_is_shaped_like_real_traffic(shop: Shop) -> None:
    """The ground truth holds the cases that broke on real traffic, so the tests above see them."""
    orders = [h for h in shop.human if h.is_order]
    backend = [h for h in orders if h.agent.server]
    assert 0.25 < len(backend) / len(orders) < 0.45
    assert all(h.user_id and not h.anonymous_id for h in backend)
    assert {h.event for h in backend} == {"purchase", "Order Completed"}
    buyers = {h.person for h in orders}
    logins = {h.person for h in shop.human if h.type == "identify" and h.path == "/login"}
    assert 0.4 < len(logins & buyers) / len(buyers) < 0.6
    assert len({h.person for h in shop.human if h.anonymous_id.endswith("-b")}) > 20
    # Merging matters: far fewer persons than the ids events carry.
    assert len({h.person for h in shop.human}) < 0.8 * len({h.distinct_id for h in shop.human})
    shared = {h.person for h in shop.human if h.anonymous_id == "a-shared"}
    assert shared == {"u-shared-1", "u-shared-2"}


def test_links_from_the_dictionary_count_as_those_from_the_table(store: Client,
                                                                 shop: Shop) -> None:
    """The same persons whether a link is read from identity_map or from the table.

    Loaded just now, every link of the shop is newer than the dictionary and is joined
    from the table. Aged by an hour and reloaded, they all come from the dictionary.
    Then a link arriving late (an earlier login, sent after the reload) must win over the
    dictionary's, as the first link does by the rules. Last in this module: it adds a link.
    """
    def answers() -> tuple[object, ...]:
        steps = ["page_view", "add_to_cart", "purchase"]
        return (analytics.kpis(store, PROJECT, *WHOLE),
                analytics.funnel(store, PROJECT, *WEEK, steps, timedelta(hours=1)),
                analytics.breakdown(store, PROJECT, *WEEK, "utm_source"))

    def recent_links() -> int:
        return int(store.query(f"SELECT count() FROM ({RECENT_LINKS})",
                               parameters={"p": PROJECT}).result_rows[0][0])

    from_table = answers()
    assert recent_links() > 500
    store.command("ALTER TABLE identities UPDATE inserted_at = inserted_at - INTERVAL 1 HOUR "
                  "WHERE project_id = %(p)s", parameters={"p": PROJECT},
                  settings={"mutations_sync": 2})
    reload_identity_map(store)
    assert recent_links() == 0
    assert answers() == from_table
    # a-shared is u-shared-1's in the dictionary; an older login as u-shared-0 arrives now.
    first = min(h.ts for h in shop.hits if h.anonymous_id == "a-shared")
    late = Hit(message_id="late-login", ts=first - timedelta(minutes=1), type="identify",
               event="identify", anonymous_id="a-shared", user_id="u-shared-0", session_id="",
               path="", channel=data.Channel(), agent=data.DESKTOP)
    data.load(store, Shop(PROJECT, [late]))
    assert recent_links() == 1
    kept = [h for h in in_range(shop.human, WHOLE) if h.anonymous_id == "a-shared"
            and not h.user_id]
    got = store.query(
        f"SELECT DISTINCT person = cityHash64('u-shared-0') "
        f"FROM ({counted_events('anonymous_id = %(a)s')}) WHERE user_id = ''",
        parameters={"p": PROJECT, "a": "a-shared"}).result_rows
    assert kept and got == [(1,)]
