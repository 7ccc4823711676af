"""Every Grafana dashboard query, run on the session's chDB against planted data.

Grafana and the ClickHouse plugin rewrite a panel's SQL before ClickHouse sees it: the
dashboard's variables, then the plugin's macros. ``expand`` does the same for exactly the
macros the dashboards use (as pkg/macros of grafana/clickhouse-datasource writes them), and
refuses anything left with a ``$``, so a typo in a dashboard fails here instead of in Grafana.
A multi-value variable (the KPI dashboard's order events) expands as Grafana's ``sqlstring``
format writes it: each value quoted, joined by commas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tests.analytics_data import (
    CRAWLER,
    DESKTOP,
    OFFICE_IP,
    PHONE,
    SHOPPER_IP,
    Agent,
    Channel,
    Hit,
    Shop,
    load,
)
from tests.commerce_data import priced
from tests.pipeline import now_utc
from tracklane.alerts.clickhouse_state import ClickHouseAlertStore
from tracklane.alerts.model import Finding, Verdict, Window
from tracklane.alerts.state import Status, Transition, fingerprint
from tracklane.store import queries
from tracklane.store.persons import COUNTED, PERSON, WITH_RECENT

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROJECT = "grafana-test"
SHOP = "grafana-shop"  # orders in two currencies, customers old and new
GROUP = "grafana-test-sink"
TOPIC = "grafana-test.events"
# The panel interval Grafana would pick for a short range; rollups are per minute anyway.
INTERVAL_S = 60


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str  # panel title, variable or annotation name
    sql: str

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.where}"


@dataclass(frozen=True)
class Range:
    start: datetime
    end: datetime


def load_dashboard(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def dashboard_queries() -> Iterator[Query]:
    """Every SQL text of every dashboard: panel targets, variables and annotations."""
    for path in DASHBOARDS:
        board = load_dashboard(path)
        for panel in board["panels"]:
            for target in panel["targets"]:
                yield Query(path.name, f"{panel['title']} [{target['refId']}]",
                            target["rawSql"])
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                yield Query(path.name, f"variable {var['name']}", var["query"])
        for note in board["annotations"]["list"]:
            if "target" in note:
                yield Query(path.name, f"annotation {note['name']}", note["target"]["rawSql"])


Value = str | list[str]


def variable_defaults(board: dict[str, Any]) -> dict[str, Value]:
    """Textbox and custom variables: the value (or values) the dashboard opens with."""
    out: dict[str, Value] = {}
    for v in board["templating"]["list"]:
        if v["type"] in ("textbox", "custom"):
            value = v["current"]["value"]
            out[v["name"]] = [str(x) for x in value] if isinstance(value, list) else str(value)
    return out


def expand(sql: str, variables: Mapping[str, Value], span: Range) -> str:
    start, end = int(span.start.timestamp()), int(span.end.timestamp())

    def with_column(match: re.Match[str]) -> str:
        name, column = match.group(1), match.group(2).strip()
        if name == "timeFilter":
            return f"{column} >= toDateTime({start}) AND {column} <= toDateTime({end})"
        if name == "dateFilter":
            return (f"{column} >= toDate('{span.start:%Y-%m-%d}') AND "
                    f"{column} <= toDate('{span.end:%Y-%m-%d}')")
        if name == "timeInterval":
            return f"toStartOfInterval(toDateTime({column}), INTERVAL {INTERVAL_S} second)"
        raise AssertionError(f"macro $__{name}() is not expanded by this test")

    bare = {"fromTime": f"toDateTime({start})", "toTime": f"toDateTime({end})",
            "interval_s": str(INTERVAL_S)}
    # Grafana substitutes variables first; the plugin then expands its macros.
    def variable(match: re.Match[str]) -> str:
        value = variables[match.group(1) or match.group(3)]
        values = value if isinstance(value, list) else [value]
        if match.group(2) == "sqlstring":
            # Grafana's sqlstring format: each value quoted, with ' doubled, then joined
            # by commas.
            return ",".join("'" + v.replace("'", "''") + "'" for v in values)
        assert match.group(2) is None, f"format {match.group(2)} is not expanded by this test"
        assert isinstance(value, str), "a multi-value variable needs a format"
        return value

    out = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)", variable, sql)
    out = re.sub(r"\$__(\w+)\(([^()]*)\)", with_column, out)
    out = re.sub(r"\$__(fromTime|toTime|interval_s)\b", lambda m: bare[m.group(1)], out)
    assert "$" not in out, f"unexpanded: {out}"
    return out


@dataclass(frozen=True)
class Planted:
    span: Range
    firing_rule: str
    resolved_rule: str


DIRECT = Channel()


# Where the visitors are (the registries' countries, looked up at ingestion): a3 unknown.
IPS = {"a1": "81.2.69.160", "a2": "1.0.16.1"}


def _hits(base: datetime) -> list[Hit]:
    """Three human sessions and a crawler; see the tests below for what they add up to."""
    def hit(n: int, minute: int, type_: str, event: str, anon: str, session: str, path: str,
            agent: Agent, channel: Channel = DIRECT, revenue: str = "0") -> Hit:
        return Hit(f"{PROJECT}-{n}", base + timedelta(minutes=minute), type_, event, anon, "",
                   session, path, channel, agent, Decimal(revenue), ip=IPS.get(anon, SHOPPER_IP))

    google = Channel("google", "cpc", "autumn", "https://www.google.com/")
    news = Channel(referrer="https://news.example/story/1")
    return [
        hit(1, 0, "page", "page_view", "a1", "s1", "/", DESKTOP, google),
        hit(2, 2, "page", "page_view", "a1", "s1", "/pricing", DESKTOP),
        hit(3, 3, "track", "add_to_cart", "a1", "s1", "/product/kettle", DESKTOP),
        hit(4, 4, "track", "purchase", "a1", "s1", "/checkout", DESKTOP, revenue="49.90"),
        hit(5, 5, "page", "page_view", "bot-1", "bot-s1", "/", CRAWLER),
        hit(6, 10, "page", "page_view", "a2", "s2", "/docs", PHONE, news),
        hit(7, 20, "page", "page_view", "a3", "s3", "/", DESKTOP),
        hit(8, 25, "page", "page_view", "a3", "s3", "/blog/launch", DESKTOP),
        hit(9, 26, "track", "add_to_cart", "a3", "s3", "/product/kettle", DESKTOP),
    ]


def _transitions(base: datetime) -> tuple[list[Transition], str, str]:
    finding = Finding(Verdict.BREACH, False, "conversion 1.0% vs 3.0%",
                      Window(base, base + timedelta(minutes=5)), observed=0.01, expected=0.03)
    out: list[Transition] = []
    rules = {"grafana-firing": [Status.PENDING, Status.FIRING],
             "grafana-resolved": [Status.PENDING, Status.FIRING, Status.RESOLVED]}
    for rule, path in rules.items():
        labels = {"rule": rule, "kind": "conversion_drop", "severity": "critical"}
        fp = fingerprint(rule, PROJECT, {})
        before = Status.INACTIVE
        for step, status in enumerate(path):
            out.append(Transition(base + timedelta(minutes=6 + step), fp, rule, PROJECT, labels,
                                  before, status, 1 if status is not Status.PENDING else 0,
                                  False, finding))
            before = status
    return out, "grafana-firing", "grafana-resolved"


OLD = -3 * 86400  # seconds: three days before the base, so before every panel's range


def _shop_hits(base: datetime) -> list[Hit]:
    """Customers old and new, orders in EUR and USD; see test_commerce_panels."""
    def at(n: int, seconds: int, event: str, **fields: Any) -> Hit:
        return priced(SHOP, n, seconds, event, at=base, **fields)

    return [
        at(1, OLD, "page_view", anon="a-ret"),  # a returning visitor, never a customer
        at(2, 60, "page_view", anon="a-ret"),
        # c1: browses, logs in, buys; the backend confirms a second order by user id.
        at(3, 0, "page_view", anon="a-c1"),
        at(4, 60, "identify", anon="a-c1", user="u-c1"),
        at(5, 120, "purchase", anon="a-c1", user="u-c1", revenue="10", currency="EUR"),
        at(6, 600, "Order Completed", user="u-c1", revenue="20", currency="EUR"),
        # c2: one order in USD, four minutes after arriving.
        at(7, 300, "page_view", anon="a-c2"),
        at(8, 540, "Order Completed", anon="a-c2", revenue="42.5", currency="USD"),
        # c3: a customer since three days ago, back for a second order.
        at(9, OLD, "page_view", anon="a-c3"),
        at(10, OLD + 60, "purchase", anon="a-c3", revenue="15", currency="EUR", key="total"),
        at(11, 700, "page_view", anon="a-c3"),
        at(12, 760, "purchase", anon="a-c3", revenue="5", currency="EUR"),
        # Not orders, or not counted: a crawler, the office, a refund request.
        at(13, 800, "purchase", anon="bot-1", revenue="1000", currency="EUR", bot=True),
        replace(at(14, 820, "purchase", anon="a-qa", revenue="500", currency="EUR"),
                ip=OFFICE_IP),
        at(15, 900, "refund_requested", anon="a-c2", revenue="7", currency="EUR"),
    ]


@pytest.fixture(scope="module")
def planted(store: Client) -> Planted:
    now = now_utc()
    base = now.replace(second=0, microsecond=0) - timedelta(hours=1)
    load(store, Shop(PROJECT, _hits(base)))
    load(store, Shop(SHOP, _shop_hits(base)))
    transitions, firing, resolved = _transitions(base)
    ClickHouseAlertStore(store).record_transitions(transitions)
    queries.write_progress(store, GROUP, TOPIC, [
        queries.PartitionProgress(0, 120, 125, 5, now - timedelta(seconds=4)),
        queries.PartitionProgress(1, 80, 80, 0, now - timedelta(seconds=2)),
    ], now)
    minute = base + timedelta(minutes=1)
    store.insert("ingest_minute", [
        [minute, PROJECT, "batch", "accepted", "", 9],
        [minute, PROJECT, "batch", "rejected", "invalid_write_key", 2],
    ], column_names=["minute", "project_id", "route", "outcome", "reason", "events"])
    # Page speed as the vitals_minute view keeps it: four LCP samples in one minute.
    store.command(
        "INSERT INTO vitals_minute SELECT %(p)s, 'lcp', %(m)s, '/product/kettle', count(), "
        "sum(x), max(x), quantileExactInclusiveState(0.5)(x) "
        "FROM (SELECT arrayJoin([1200., 2500., 3100., 4000.]) AS x)",
        parameters={"p": PROJECT, "m": minute + timedelta(minutes=1)})
    span = Range(base - timedelta(minutes=10), now + timedelta(minutes=1))
    return Planted(span, firing, resolved)


def run(store: Client, planted: Planted, dashboard: str, where: str,
        **variables: Value) -> list[tuple[Any, ...]]:
    """The rows of one panel (by title, first target) or variable, as Grafana would ask."""
    matches = [q for q in dashboard_queries()
               if q.dashboard == dashboard and q.where.split(" [")[0] == where]
    assert matches, f"no query {dashboard}: {where}"
    return _rows(store, planted, matches[0], **variables)


def _rows(store: Client, planted: Planted, query: Query,
          **overrides: Value) -> list[tuple[Any, ...]]:
    board = load_dashboard(ROOT / "grafana" / "dashboards" / query.dashboard)
    variables = {**variable_defaults(board),
                 "project": PROJECT, "event": "page_view", "group": GROUP, **overrides}
    result = store.query(expand(query.sql, variables, planted.span))
    return [tuple(row) for row in result.result_rows]


def test_the_dashboards_are_the_five_expected() -> None:
    assert [p.name for p in DASHBOARDS] == [
        "alerts.json", "funnel.json", "kpis.json", "pipeline.json", "traffic.json"]
    uids = {load_dashboard(p)["uid"] for p in DASHBOARDS}
    assert len(uids) == len(DASHBOARDS)


@pytest.mark.parametrize("query", list(dashboard_queries()), ids=str)
def test_every_query_runs_and_returns_rows(store: Client, planted: Planted,
                                           query: Query) -> None:
    assert _rows(store, planted, query), f"{query} returned no rows"


def test_variables_offer_the_planted_values(store: Client, planted: Planted) -> None:
    assert (PROJECT,) in run(store, planted, "traffic.json", "variable project")
    assert {r[0] for r in run(store, planted, "traffic.json", "variable event")} == {
        "page_view", "add_to_cart", "purchase"}
    assert (GROUP,) in run(store, planted, "pipeline.json", "variable group")


def test_page_speed_is_the_p75_of_the_samples(store: Client, planted: Planted) -> None:
    rows = run(store, planted, "traffic.json", "Page speed: p75 by metric (ms)")
    # Linear interpolation: 3100 + (4000 - 3100) x 0.25.
    assert [(metric, p75) for _, metric, p75 in rows] == [("lcp", pytest.approx(3325))]


def test_traffic_counts_humans_and_bots_apart(store: Client, planted: Planted) -> None:
    rows = run(store, planted, "traffic.json", "${event} per minute")
    assert sum(r[1] for r in rows) == 5 and sum(r[2] for r in rows) == 1
    assert run(store, planted, "traffic.json", "Users of ${event} in range") == [(3,)]
    by_name = {r[0]: r[1] for r in run(store, planted, "traffic.json", "Events by name")}
    assert by_name == {"page_view": 5, "add_to_cart": 2, "purchase": 1}


def test_kpis_match_the_planted_sessions(store: Client, planted: Planted) -> None:
    def value(title: str) -> Any:
        rows = run(store, planted, "kpis.json", title)
        assert len(rows) == 1, title
        return rows[0][0]

    assert value("Page views") == 5
    assert value("Unique visitors") == 3
    assert value("Sessions") == 3
    assert value("Bounce rate") == pytest.approx(1 / 3)  # s2: one page, nothing else
    assert value("Avg visit duration") == pytest.approx((240 + 0 + 360) / 3)
    assert value("Views per visit") == pytest.approx(5 / 3)
    # The one order was sent without a currency.
    assert run(store, planted, "kpis.json", "Revenue") == [("(none)", pytest.approx(49.9))]
    assert value("Orders") == 1
    assert run(store, planted, "kpis.json", "Average order value") == [
        ("(none)", pytest.approx(49.9))]
    assert run(store, planted, "kpis.json", "Median time to first order") == [(240.0, 1)]
    assert run(store, planted, "kpis.json", "New vs returning visitors") == [(3, 0)]
    referrers = {r[0]: r[1] for r in run(store, planted, "kpis.json", "Referrer domains")}
    assert referrers == {"google.com": 1, "news.example": 1, "(direct)": 1}
    devices = {r[0]: r[1] for r in run(store, planted, "kpis.json", "Devices")}
    assert devices == {"desktop": 2, "mobile": 1}
    countries = {r[0]: r[1] for r in run(store, planted, "kpis.json", "Countries")}
    assert countries == {"GB": 1, "JP": 1, "(unknown)": 1}
    pages = {r[0]: r[1] for r in run(store, planted, "kpis.json", "Top pages")}
    assert pages == {"/": 2, "/pricing": 1, "/docs": 1, "/blog/launch": 1}


def test_commerce_panels(store: Client, planted: Planted) -> None:
    """Orders by the order events, per currency, over persons; see _shop_hits."""
    def rows(title: str, **variables: Value) -> list[tuple[Any, ...]]:
        return run(store, planted, "kpis.json", title, project=SHOP, **variables)

    assert rows("Orders") == [(4,)]
    assert rows("Unique visitors") == [(4,)]  # a-ret, u-c1 (two ids), a-c2, a-c3
    # Never added across currencies.
    assert rows("Revenue") == [("EUR", 35.0), ("USD", 42.5)]
    assert rows("Average order value") == [("EUR", pytest.approx(35 / 3)), ("USD", 42.5)]
    # In range: c1 twice, c2 and c3 once. All time: c3's order three days ago too.
    assert rows("Repurchase rate") == [(pytest.approx(1 / 3), pytest.approx(2 / 3))]
    # c1 waited 120 s from the first page (anonymous, merged by the login), c2 240 s; c3's
    # first order is before the range. Two values: their mean.
    assert rows("Median time to first order") == [(180.0, 2)]
    assert rows("New vs returning visitors") == [(2, 2)]
    assert rows("Customer lifetime value") == [("EUR", 2, 4, 50.0, 25.0),
                                               ("USD", 1, 1, 42.5, 42.5)]
    old = (planted.span.start + timedelta(minutes=10, seconds=OLD)).date().replace(day=1)
    new = (planted.span.start + timedelta(minutes=10)).date().replace(day=1)
    cohorts = rows("CLV by first-order month")
    if old == new:
        assert cohorts == [(new, "EUR", 2, 4, 50.0, 25.0), (new, "USD", 1, 1, 42.5, 42.5)]
    else:
        assert cohorts == [(old, "EUR", 1, 2, 20.0, 20.0), (new, "EUR", 1, 2, 30.0, 30.0),
                           (new, "USD", 1, 1, 42.5, 42.5)]
    # Another project's order events: one name, or one typed in with a quote.
    assert rows("Orders", order_events=["Order Completed"]) == [(2,)]
    assert rows("Revenue", order_events=["Order Completed"]) == [("EUR", 20.0), ("USD", 42.5)]
    hostile = ["purchase' OR 1=1 OR event = '"]
    assert rows("Orders", order_events=hostile) == [(0,)]
    assert rows("Customer lifetime value", order_events=hostile) == []


def _flat(sql: str) -> str:
    return " ".join(sql.split()).replace("( ", "(").replace(" )", ")")


def test_kpi_panels_count_as_the_api_does() -> None:
    """Raw events are read with the counted filter, persons as store/persons.py has them."""
    persons = _flat(f"{PERSON} AS person FROM events "
                    f"WHERE project_id = %(p)s AND {COUNTED} AND (").replace(
                        "%(p)s", "${project:sqlstring}")
    recent = _flat(WITH_RECENT).replace("%(p)s", "${project:sqlstring}")
    person_panels = 0
    for query in dashboard_queries():
        if query.dashboard not in ("kpis.json", "funnel.json"):
            continue
        if "FROM events" in query.sql or "FROM (SELECT" in query.sql:
            assert COUNTED in query.sql or "FROM sessions" in query.sql, query
        if "person" in query.sql:
            person_panels += 1
            assert persons in _flat(query.sql), query
            assert recent in _flat(query.sql), query
            assert "distinct_id" not in query.sql, query
    assert person_panels == 10  # seven KPI panels, the funnel's three
    board = load_dashboard(ROOT / "grafana" / "dashboards" / "kpis.json")
    assert variable_defaults(board)["order_events"] == ["purchase", "Order Completed"]


def test_funnel_counts_users_reaching_each_step(store: Client, planted: Planted) -> None:
    assert run(store, planted, "funnel.json", "Funnel") == [
        ("page_view", 3), ("add_to_cart", 2), ("purchase", 1)]
    steps = run(store, planted, "funnel.json", "Steps")
    third = pytest.approx(1 / 3)
    assert [(r[2], r[3], r[4]) for r in steps] == [
        (3, 1.0, 1.0), (2, pytest.approx(2 / 3), pytest.approx(2 / 3)), (1, third, 0.5)]
    assert run(store, planted, "funnel.json", "Conversion ${step1} → ${step3}")[0][0] == (
        pytest.approx(1 / 3))


def test_a_quote_in_a_text_box_is_a_value_not_sql(store: Client, planted: Planted) -> None:
    board = load_dashboard(ROOT / "grafana" / "dashboards" / "funnel.json")
    funnel = next(q for q in dashboard_queries()
                  if q.dashboard == "funnel.json" and q.where.startswith("Funnel ["))
    hostile = "page_view' OR 1=1 OR event = '"
    variables = {**variable_defaults(board), "project": PROJECT, "step1": hostile}
    rows = store.query(expand(funnel.sql, variables, planted.span)).result_rows
    assert [tuple(r) for r in rows] == [(hostile, 0), ("add_to_cart", 0), ("purchase", 0)]


def test_alerts_show_what_is_firing_now(store: Client, planted: Planted) -> None:
    firing = run(store, planted, "alerts.json", "Currently firing")
    assert [r[0] for r in firing] == [planted.firing_rule]
    assert firing[0][1] == "critical" and firing[0][4] == pytest.approx(0.01)
    assert run(store, planted, "alerts.json", "Firing now") == [(1,)]
    per_rule = {r[0]: (r[3], r[4]) for r in run(store, planted, "alerts.json", "Per rule")}
    assert per_rule == {planted.firing_rule: (1, 0), planted.resolved_rule: (1, 1)}


def test_pipeline_shows_lag_watermark_and_rejects(store: Client, planted: Planted) -> None:
    assert run(store, planted, "pipeline.json", "Consumer lag") == [(5,)]
    delay = run(store, planted, "pipeline.json", "Watermark delay")[0][0]
    assert 4 <= delay < 60
    partitions = run(store, planted, "pipeline.json", "Partitions")
    assert [(r[0], r[1], r[4]) for r in partitions] == [(TOPIC, 0, 5), (TOPIC, 1, 0)]
    rejects = run(store, planted, "pipeline.json", "Rejects by route and reason")
    assert ("batch", "invalid_write_key", 2) in rejects


def test_expand_refuses_what_it_does_not_know() -> None:
    span = Range(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    assert expand("SELECT 1 WHERE $__timeFilter(at)", {}, span) == (
        "SELECT 1 WHERE at >= toDateTime(1767225600) AND at <= toDateTime(1767312000)")
    with pytest.raises(AssertionError, match="not expanded"):
        expand("SELECT $__timeGroup(at, 1m)", {}, span)
    with pytest.raises(KeyError):
        expand("SELECT '${nope}'", {}, span)
