"""The per-minute Web Vitals rollups against exact statistics computed in plain Python:
quantiles (linear interpolation, numpy's default), averages, sums and maxima, over
windows of minutes and path prefixes, from web_vitals events stored through the real
contract."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from tests.pipeline import pipeline_settings, running_pipeline
from tracklane.alerts.clickhouse_rollups import ClickHouseRollups
from tracklane.alerts.detectors import detect_threshold
from tracklane.alerts.model import Finding, Verdict
from tracklane.alerts.rules import ThresholdRule
from tracklane.broker import TansuBroker
from tracklane.contract import (
    RequestFacts,
    TimeLimits,
    UserAgentInfo,
    build_envelope,
    envelope_to_row,
    parse_message,
)
from tracklane.projects import Project
from tracklane.store.analytics_errors import QueryError
from tracklane.store.queries import insert_events
from tracklane.store.vitals import vital_stat

PROJECT = "vitals-shop"
START = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
PATHS = ("/", "/product/kettle", "/product/mug", "/checkout")


def planted() -> list[tuple[datetime, str, dict[str, float]]]:
    rng = random.Random(5)
    out = []
    for n in range(900):
        at = START + timedelta(seconds=rng.randrange(20 * 60))
        values = {"lcp": rng.lognormvariate(7.5, 0.5), "fcp": rng.lognormvariate(6.8, 0.4),
                  "ttfb": rng.lognormvariate(5.0, 0.6), "cls": round(rng.random() * 0.3, 4)}
        if n % 3:
            values["inp"] = rng.lognormvariate(4.8, 0.7)
        out.append((at, rng.choice(PATHS), values))
    return out


@pytest.fixture(scope="module")
def vitals(store: Client) -> list[tuple[datetime, str, dict[str, float]]]:
    hits = planted()
    rows = []
    for n, (at, path, values) in enumerate(hits):
        msg = parse_message({
            "type": "track", "event": "web_vitals", "anonymousId": f"a{n % 50}",
            "messageId": f"v-{n}", "timestamp": at.isoformat(),
            "properties": {**values, "path": path},
            "context": {"page": {"path": path, "url": f"https://shop.example{path}"}}})
        facts = RequestFacts(PROJECT, at + timedelta(seconds=1), "192.0.2.0", UserAgentInfo())
        env = build_envelope(msg, facts, TimeLimits(max_past=timedelta(days=3650)))
        rows.append(envelope_to_row(env, 0, n, "vitals"))
    insert_events(store, rows, uuid.uuid4().hex)
    return hits


def exact_quantile(values: list[float], q: float) -> float:
    """Linear interpolation between the two nearest ranks (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@pytest.mark.parametrize(("metric", "minutes", "prefix"), [
    ("lcp", (0, 20), ""), ("lcp", (5, 10), "/product/"), ("inp", (0, 20), "/checkout"),
    ("cls", (3, 4), ""), ("ttfb", (10, 20), "/product/mug"), ("fcp", (0, 1), "/"),
])
def test_rollups_equal_exact_statistics(store: Client, vitals: list[tuple[datetime, str, dict[
        str, float]]], metric: str, minutes: tuple[int, int], prefix: str) -> None:
    start, end = (START + timedelta(minutes=m) for m in minutes)
    values = [v[metric] for at, path, v in vitals
              if start <= at.replace(second=0) < end and path.startswith(prefix) and metric in v]
    assert values, "an empty window proves nothing"
    for q in (0.5, 0.75, 0.9, 0.99):
        got = vital_stat(store, PROJECT, metric, "quantile", start, end, q, prefix)
        assert got.samples == len(values)
        assert got.value == pytest.approx(exact_quantile(values, q), rel=1e-9)
    assert vital_stat(store, PROJECT, metric, "avg", start, end, path_prefix=prefix).value == \
        pytest.approx(sum(values) / len(values), rel=1e-9)
    assert vital_stat(store, PROJECT, metric, "sum", start, end, path_prefix=prefix).value == \
        pytest.approx(sum(values), rel=1e-9)
    assert vital_stat(store, PROJECT, metric, "max", start, end, path_prefix=prefix).value == \
        pytest.approx(max(values), rel=1e-9)


def test_no_samples_and_bad_arguments(store: Client,
                                      vitals: list[tuple[datetime, str, dict[str, float]]]) -> None:
    empty = vital_stat(store, PROJECT, "lcp", "quantile", START - timedelta(hours=2),
                       START - timedelta(hours=1))
    assert (empty.value, empty.samples) == (None, 0)
    with pytest.raises(QueryError, match="metric"):
        vital_stat(store, PROJECT, "speed", "avg", START, START + timedelta(minutes=1))


def test_a_page_speed_rule_fires_above_its_limit_and_clears_below(
        store: Client, vitals: list[tuple[datetime, str, dict[str, float]]]) -> None:
    """"p75 of LCP on /product/ over 5 minutes above a limit fires, and clears below the
    clear value", judged on the rollups as the alert engine reads them."""
    start, end = START + timedelta(minutes=5), START + timedelta(minutes=10)
    p75 = exact_quantile([v["lcp"] for at, path, v in vitals if start <= at.replace(second=0)
                          < end and path.startswith("/product/")], 0.75)
    rollups = ClickHouseRollups(store)

    def judge(value: float, clear_value: float) -> Finding:
        rule = ThresholdRule.model_validate({
            "name": "slow-product", "project": PROJECT, "kind": "threshold",
            "metric": "quantile", "property": "lcp", "q": 0.75, "path_prefix": "/product/",
            "op": "above", "value": value, "clear_value": clear_value, "window": "5m"})
        rollups.begin_tick(end)
        return detect_threshold(rule, rollups, end)

    fired = judge(p75 - 1, p75 - 100)
    assert fired.verdict is Verdict.BREACH and not fired.clear
    assert fired.observed == pytest.approx(p75, rel=1e-9)
    assert fired.summary.startswith("p75 of lcp under /product/ ")
    holding = judge(p75 + 1, p75 - 1)  # under the limit, over the clear value: not yet clear
    assert holding.verdict is Verdict.OK and not holding.clear
    cleared = judge(p75 + 100, p75 + 50)
    assert cleared.verdict is Verdict.OK and cleared.clear
    with pytest.raises(ValueError, match="property: required"):
        ThresholdRule.model_validate({"name": "x", "project": PROJECT, "kind": "threshold",
                                      "metric": "quantile", "op": "above", "value": 1})


@pytest.mark.anyio
async def test_the_query_api_answers_page_speed(
        broker: TansuBroker, store: Client,
        vitals: list[tuple[datetime, str, dict[str, float]]]) -> None:
    project = Project(id=PROJECT, write_keys=["wk_vitals"], read_keys=["rk_vitals"])
    start, end = START, START + timedelta(minutes=20)
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store,
                                project) as p:
        answer = await p.http.post("/v1/query/vitals", headers={
            "Authorization": "Bearer rk_vitals"}, json={
            "from": start.isoformat(), "to": end.isoformat(), "property": "lcp",
            "q": 0.75, "path_prefix": "/product/"})
        bad = await p.http.post("/v1/query/vitals", headers={
            "Authorization": "Bearer rk_vitals"}, json={
            "from": start.isoformat(), "to": end.isoformat(), "property": "speed"})
    values = [v["lcp"] for _, path, v in vitals if path.startswith("/product/")]
    assert answer.status_code == 200, answer.text
    assert answer.json()["samples"] == len(values)
    assert answer.json()["value"] == pytest.approx(exact_quantile(values, 0.75), rel=1e-9)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_query"
