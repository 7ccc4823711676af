"""POST /v1/query/...: JSON in and out behind the read key, clear 400s, harmless injection."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tests import analytics_data as data
from tests.commerce_data import DAY, priced
from tests.pipeline import Pipeline, new_project, pipeline_settings, running_pipeline
from tracklane.broker import TansuBroker
from tracklane.collector.query_answers import CustomersAnswer, KpisAnswer
from tracklane.projects import DEFAULT_ORDER_EVENTS
from tracklane.store import analytics, customers

pytestmark = pytest.mark.anyio

FROM, TO = data.START.isoformat(), (data.START + timedelta(days=data.DAYS)).isoformat()


async def ask(p: Pipeline, name: str, body: dict[str, Any], key: str | None = None) -> Any:
    return await p.http.post(f"/v1/query/{name}", json=body, headers={
        "Authorization": f"Bearer {key or p.project.read_keys[0]}"})


async def test_queries_answer_json_that_matches_the_library(
    broker: TansuBroker, store: Client,
) -> None:
    project = new_project("query")
    data.load(store, data.generate(project.id, users=300))
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store,
                                project) as p:
        span = {"from": FROM, "to": TO}
        kpis = await ask(p, "kpis", span)
        assert kpis.status_code == 200, kpis.text
        want = analytics.kpis(store, project.id, data.START,
                              data.START + timedelta(days=data.DAYS))
        assert kpis.json() == KpisAnswer.of(want, list(DEFAULT_ORDER_EVENTS)).model_dump(
            mode="json")
        assert kpis.json()["pageviews"] == want.pageviews > 0
        assert kpis.json()["revenue"] == float(want.revenue or 0) > 0
        purchases = (await ask(p, "kpis", {**span, "order_events": ["purchase"]})).json()
        assert 0 < purchases["orders"] < want.orders  # backends also send Order Completed

        series = (await ask(p, "timeseries", {**span, "event": "page_view", "grain": "day",
                                              "tz": "Europe/Paris"})).json()["points"]
        assert sum(pt["events"] for pt in series) == want.pageviews
        assert series[0]["time"].endswith("+02:00")

        rows = (await ask(p, "breakdown", {**span, "dimension": "utm_source"})).json()["rows"]
        assert {r["value"] for r in rows} == {"", "google", "newsletter"}

        funnel = (await ask(p, "funnel", {**span, "steps": ["page_view", "add_to_cart",
                                                             "purchase"]})).json()
        counts = [s["persons"] for s in funnel["funnels"][0]["steps"]]
        assert counts[0] >= counts[1] >= counts[2] > 0

        goal = (await ask(p, "conversion", {**span, "goal": "purchase"})).json()
        assert goal["converted"] >= counts[2]  # buyers outside a funnel window count too

        cohorts = (await ask(p, "retention", {
            "from_day": data.START.date().isoformat(), "to_day": TO[:10], "max_day": 7,
            "tz": "Europe/Paris"})).json()
        assert sum(c["size"] for c in cohorts["cohorts"]) > 0
        assert all(c["retained"][0] == c["size"] for c in cohorts["cohorts"])
        assert 0 < cohorts["rates"]["d1"] < 1 and set(cohorts["rates"]) == {"d1", "d7"}

        for model in ("first_touch", "last_touch", "linear", "time_decay", "position_based"):
            channels = (await ask(p, "attribution", {**span, "conversion_event": "purchase",
                                                     "model": model})).json()["channels"]
            # Each purchase gives out exactly one conversion of credit.
            assert sum(c["conversions"] for c in channels) == pytest.approx(
                purchases["orders"])
            assert sum(c["share"] for c in channels) == pytest.approx(1.0)

        customers_ = (await ask(p, "customers", {**span, "tz": "Europe/Paris"})).json()
        assert customers_ == CustomersAnswer.of(customers.customers(
            store, project.id, data.START, data.START + timedelta(days=data.DAYS),
            tz="Europe/Paris"), list(DEFAULT_ORDER_EVENTS), "Europe/Paris").model_dump(
            mode="json")
        assert customers_["visitors"]["visitors"] == want.visitors_exact
        assert customers_["clv"]["cohorts"][0]["month"] == "2026-09-01"

        spec = (await p.http.get("/openapi.json")).json()
        for name in ("kpis", "timeseries", "breakdown", "conversion", "funnel", "retention",
                     "attribution", "customers"):
            assert f"/v1/query/{name}" in spec["paths"]


def answer_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    ref = spec["paths"][path]["post"]["responses"]["200"]["content"]["application/json"][
        "schema"]["$ref"]
    schema: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


async def test_orders_follow_the_project_order_events(broker: TansuBroker,
                                                      store: Client) -> None:
    project = new_project("orders").model_copy(
        update={"order_events": ["checkout_done", "Order Completed"]})
    pid = project.id
    data.load(store, data.Shop(pid, [
        priced(pid, 1, 0, "page_view", anon="a1"),
        priced(pid, 2, 60, "checkout_done", anon="a1", revenue="30", currency="EUR"),
        priced(pid, 3, 90, "purchase", anon="a1", revenue="10", currency="EUR"),
        priced(pid, 4, 100, "page_view", anon="a2"),
        priced(pid, 5, 400, "Order Completed", anon="a2", revenue="42.5", currency="USD"),
    ]))
    span = {"from": DAY[0].isoformat(), "to": DAY[1].isoformat()}
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store,
                                project) as p:
        got = (await ask(p, "kpis", span)).json()
        assert got["order_events"] == ["checkout_done", "Order Completed"]
        assert got["orders"] == 2
        # Two currencies: no total, no AOV across them; one row each.
        assert (got["currency"], got["revenue"], got["aov"]) == (None, None, None)
        assert got["currencies"] == [
            {"currency": "EUR", "orders": 1, "revenue": 30.0, "aov": 30.0},
            {"currency": "USD", "orders": 1, "revenue": 42.5, "aov": 42.5}]
        # The body may name other order events; the deprecated order_event still works.
        for body in ({"order_events": ["purchase"]}, {"order_event": "purchase"}):
            one = (await ask(p, "kpis", {**span, **body})).json()
            assert (one["order_events"], one["orders"], one["currency"], one["revenue"],
                    one["aov"]) == (["purchase"], 1, "EUR", 10.0, 10.0)

        answer = (await ask(p, "customers", span)).json()
        assert answer["order_events"] == ["checkout_done", "Order Completed"]
        assert answer["clv"]["currencies"] == [
            {"currency": "EUR", "customers": 1, "orders": 1, "revenue": 30.0, "clv": 30.0},
            {"currency": "USD", "customers": 1, "orders": 1, "revenue": 42.5, "clv": 42.5}]
        assert answer["clv"]["cohorts"] == [{"month": "2026-06-01", "customers": 2,
                                             "orders": 2,
                                             "currencies": answer["clv"]["currencies"]}]
        assert answer["visitors"] == {"visitors": 2, "new": 2, "returning": 0}
        assert answer["repurchase"] == {"customers": 2, "repeat_customers": 0, "rate": 0.0}
        # Waits of 60 s and 300 s: the mean of the two middle values.
        assert answer["time_to_first_order"] == {"customers": 2, "median_s": 180.0}

        spec = (await p.http.get("/openapi.json")).json()
        kpis = answer_schema(spec, "/v1/query/kpis")
        assert {"order_events", "orders", "currency", "revenue", "aov", "currencies"} <= set(
            kpis["properties"])
        assert {"repurchase", "repurchase_all_time", "clv", "visitors",
                "time_to_first_order"} <= set(answer_schema(
                    spec, "/v1/query/customers")["properties"])
        body = spec["paths"]["/v1/query/kpis"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        fields = spec["components"]["schemas"][body]["properties"]
        assert fields["order_event"]["deprecated"] is True
        assert "order_events" in fields


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("kpis", {"from": TO, "to": FROM}, "to: must be after from"),
    ("kpis", {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "at most 400"),
    ("kpis", {"from": "yesterday", "to": TO}, "from"),
    ("kpis", {"to": TO}, "from: Field required"),
    ("kpis", {"from": FROM, "to": TO, "metric": "ltv"}, "metric: Extra inputs"),
    ("kpis", {"from": FROM, "to": TO, "order_events": []}, "order_events"),
    ("kpis", {"from": FROM, "to": TO, "order_events": ["x"] * 21}, "order_events"),
    ("kpis", {"from": FROM, "to": TO, "order_event": "purchase", "order_events": ["x"]},
     "order_event: deprecated"),
    ("customers", {"from": TO, "to": FROM}, "to: must be after from"),
    ("customers", {"from": FROM, "to": TO, "tz": "Mars/Base"}, "tz"),
    ("customers", {"from": FROM, "to": TO, "order_events": [""]}, "order_events.0"),
    ("timeseries", {"from": FROM, "to": TO, "event": "x", "grain": "week"}, "grain"),
    ("timeseries", {"from": FROM, "to": TO, "event": "x", "tz": "Mars/Base"}, "tz"),
    ("timeseries", {"from": FROM, "to": TO, "event": "x", "grain": "minute"}, "coarser grain"),
    ("breakdown", {"from": FROM, "to": TO, "dimension": "path; DROP TABLE events"},
     "dimension"),
    ("funnel", {"from": FROM, "to": TO, "steps": ["a"]}, "steps"),
    ("funnel", {"from": FROM, "to": TO, "steps": ["a"] * 11}, "steps"),
    ("funnel", {"from": FROM, "to": TO, "steps": ["a", "b"], "window_s": 0}, "window_s"),
    ("retention", {"from_day": "2026-10-02", "to_day": "2026-10-01"}, "to_day"),
    ("retention", {"from_day": "2026-10-01", "to_day": "2026-10-02", "max_day": 999},
     "max_day"),
    ("attribution", {"from": FROM, "to": TO, "conversion_event": "purchase",
                     "model": "u_shaped"}, "model"),
    ("attribution", {"from": FROM, "to": TO, "conversion_event": "purchase",
                     "model": "linear", "lookback_days": -1}, "lookback_days"),
]


async def test_bad_parameters_get_clear_400s_and_injection_is_harmless(
    broker: TansuBroker, store: Client,
) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store) as p:
        for name, body, message in BAD:
            response = await ask(p, name, body)
            assert response.status_code == 400, (name, body, response.text)
            assert response.json()["error"] == "invalid_query"
            assert message in response.json()["message"], (message, response.json())
        # No key, or a bad one: 401 before the body is looked at.
        assert (await p.http.post("/v1/query/kpis", json={})).status_code == 401
        assert (await ask(p, "kpis", {"from": FROM, "to": TO}, key="rk_nope")).status_code == 401

        evil = "x' OR 1=1 --"
        for name, body in (
            ("conversion", {"goal": evil}), ("kpis", {"order_event": evil}),
            ("kpis", {"order_events": [evil]}), ("customers", {"order_events": [evil]}),
            ("timeseries", {"event": evil, "grain": "day", "tz": "UTC"}),
            ("funnel", {"steps": [evil, "purchase'); DROP TABLE events; --"]}),
            ("attribution", {"conversion_event": evil, "model": "linear"}),
        ):
            response = await ask(p, name, {"from": FROM, "to": TO, **body})
            assert response.status_code == 200, response.text
        assert store.command("EXISTS TABLE events") == 1
