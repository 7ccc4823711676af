"""GET /v1/alerts and the silences API, behind the read key, on the real store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from clickhouse_connect.driver.client import Client

from tests.pipeline import Pipeline, now_utc, pipeline_settings, running_pipeline
from tracklane.alerts.clickhouse_state import ClickHouseAlertStore
from tracklane.alerts.model import Finding, Verdict, Window
from tracklane.alerts.state import AlertState, Status, Transition, fingerprint
from tracklane.broker import TansuBroker


def bearer(p: Pipeline, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or p.project.read_keys[0]}"}


@pytest.mark.anyio
async def test_alert_history_and_current_state(broker: TansuBroker, store: Client) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store) as p:
        now = now_utc()
        fp = fingerprint("checkout", p.project.id, {})
        finding = Finding(Verdict.BREACH, False, "conversion 1.5% vs 3.0%",
                          Window(now - timedelta(minutes=5), now), observed=0.015,
                          expected=0.03)
        labels = {"rule": "checkout", "kind": "conversion_drop", "severity": "critical"}
        state = AlertState(fp, "checkout", p.project.id, labels, Status.FIRING, 1,
                           fired_at=now, finding=finding)
        alert_store = ClickHouseAlertStore(store)
        alert_store.record_transitions([
            Transition(now - timedelta(seconds=60), fp, "checkout", p.project.id, labels,
                       Status.INACTIVE, Status.PENDING, 0, False, finding),
            Transition(now, fp, "checkout", p.project.id, labels, Status.PENDING,
                       Status.FIRING, 1, False, finding)])
        alert_store.save_states([state], now)

        response = await p.http.get("/v1/alerts", headers=bearer(p))
        assert response.status_code == 200, response.text
        body = response.json()
        assert [t["to"] for t in body["transitions"]] == ["firing", "pending"]
        assert body["transitions"][0]["severity"] == "critical"
        assert body["transitions"][0]["finding"]["observed"] == 0.015
        assert [(a["rule"], a["status"]) for a in body["alerts"]] == [("checkout", "firing")]

        assert (await p.http.get("/v1/alerts")).status_code == 401
        assert (await p.http.get("/v1/alerts", headers=bearer(p, "nope"))).status_code == 401
        bad = await p.http.get("/v1/alerts", params={"limit": "0"}, headers=bearer(p))
        assert bad.status_code == 400 and "limit" in bad.json()["message"]


@pytest.mark.anyio
async def test_silences_are_created_listed_and_expired(broker: TansuBroker, store: Client) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store) as p:
        created = await p.http.post("/v1/silences", headers=bearer(p), json={
            "matchers": {"rule": "checkout"}, "duration_minutes": 30,
            "created_by": "ana", "comment": "deploy"})
        assert created.status_code == 201, created.text
        silence = created.json()
        assert silence["state"] == "active" and silence["matchers"] == {"rule": "checkout"}

        listed = (await p.http.get("/v1/silences", headers=bearer(p))).json()["silences"]
        assert [s["id"] for s in listed] == [silence["id"]]
        active = ClickHouseAlertStore(store).silences(p.project.id, now_utc())
        assert active[0].matches(p.project.id, {"rule": "checkout", "kind": "x"})

        gone = await p.http.delete(f"/v1/silences/{silence['id']}", headers=bearer(p))
        assert gone.status_code == 204
        assert (await p.http.get("/v1/silences", headers=bearer(p))).json()["silences"] == []
        again = await p.http.delete(f"/v1/silences/{silence['id']}", headers=bearer(p))
        assert again.status_code == 404

        for body, field in [
            ({"matchers": {}, "duration_minutes": 5, "created_by": "a"}, "matchers"),
            ({"matchers": {"rule": "x"}, "created_by": "a"}, "ends_at"),
            ({"matchers": {"rule": "x"}, "duration_minutes": 5}, "created_by"),
        ]:
            bad = await p.http.post("/v1/silences", headers=bearer(p), json=body)
            assert bad.status_code == 400 and field in bad.json()["message"], bad.text
