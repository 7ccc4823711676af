"""pipeline_stale on the real pipeline: the sink stops, the rule fires and holds the
project's business rules, nothing else pages; the sink restarts and it resolves."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry

from tests.pipeline import Pipeline, now_utc, pipeline_settings, poll, running_pipeline
from tests.receiver import Receiver
from tracklane.alerts.clickhouse_rollups import ClickHouseRollups, pipeline_progress
from tracklane.alerts.clickhouse_state import ClickHouseAlertStore
from tracklane.alerts.dispatch import Dispatcher, NotifyMetrics
from tracklane.alerts.engine import AlertEngine
from tracklane.alerts.metrics import AlertMetrics
from tracklane.alerts.rules import parse_rules
from tracklane.alerts.state import Status
from tracklane.broker import TansuBroker
from tracklane.clock import utc_now

RATE = 30  # page views a minute


def rules_yaml(project: str, hook: str, tag: str) -> str:
    return f"""
evaluation: {{lateness: 2s}}
notifiers:
  - {{name: hook, kind: webhook, url: "{hook}/hook", secret: k}}
rules:
  - name: pipeline-{tag}
    project: {project}
    kind: pipeline_stale
    max_delay: 8s
    for: 0s
    keep_firing_for: 0s
    notify: [hook]
  - name: views-drop-{tag}
    project: {project}
    kind: volume_drop
    event: page_view
    for: 0s
    notify: [hook]
  - name: views-zero-{tag}
    project: {project}
    kind: zero_traffic
    event: page_view
    notify: [hook]
"""


async def send_views(p: Pipeline, minutes_back: int, minutes_ahead: int) -> int:
    now = now_utc().replace(second=0, microsecond=0)
    batch: list[dict[str, Any]] = []
    for m in range(-minutes_back, minutes_ahead):
        for i in range(RATE):
            ts = now + timedelta(minutes=m, seconds=i * 60 / RATE)
            batch.append({"type": "page", "name": "home", "anonymousId": f"a{i}",
                          "messageId": uuid.uuid4().hex, "timestamp": ts.isoformat()})
    for i in range(0, len(batch), 500):
        response = await p.http.post("/v1/batch", json={"batch": batch[i:i + 500]},
                                     headers=p.auth)
        assert response.status_code == 200, response.text
    return len(batch)


@pytest.mark.anyio
async def test_stale_pipeline_pages_alone_and_holds_business_rules(
    broker: TansuBroker, store: Client
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    tag = uuid.uuid4().hex[:6]
    async with running_pipeline(settings, store) as p:
        assert p.sink is not None
        project = p.project.id
        sent = await send_views(p, 90, 3)
        await p.wait_inserted(sent)

        with Receiver().running() as receiver:
            config = parse_rules(rules_yaml(project, receiver.url, tag))
            registry = CollectorRegistry()
            dispatcher = Dispatcher(config.notifiers, utc_now, NotifyMetrics(registry))
            await dispatcher.start()
            rollups = ClickHouseRollups(store)
            engine = AlertEngine(
                config, rollups,
                lambda: pipeline_progress(store, settings.consumer_group, settings.topic),
                ClickHouseAlertStore(store), dispatcher, utc_now, AlertMetrics(registry))

            def tick() -> Any:
                rollups.begin_tick(utc_now())
                return engine.tick()

            async def wait_progress_fresh() -> bool:
                progress = pipeline_progress(store, settings.consumer_group, settings.topic)
                return progress.lag == 0 and progress.watermark is not None and (
                    utc_now() - progress.watermark < timedelta(seconds=5))

            await poll(wait_progress_fresh, 20, "the sink did not report progress")
            report = tick()
            assert report.findings[f"views-drop-{tag}"].verdict.value == "ok", report.findings
            assert engine.state_of(f"pipeline-{tag}").status is Status.INACTIVE

            # The consumer stops; events keep coming and wait in Kafka.
            await p.sink.stop()
            await send_views(p, 0, 1)

            async def stale() -> bool:
                report = tick()
                return project in report.held

            await poll(stale, 30, "pipeline_stale did not fire", interval_s=0.5)
            assert engine.state_of(f"pipeline-{tag}").status is Status.FIRING
            held = registry.get_sample_value("tracklane_alert_held_total",
                                             {"rule": f"views-drop-{tag}"})
            assert held is not None and held >= 1
            await poll(lambda: len(receiver.received()) == 1, 10, "no pipeline page")
            page = receiver.payloads()[0]
            assert (page["rule"], page["status"]) == (f"pipeline-{tag}", "firing")
            assert "behind" in page["summary"] or "report" in page["summary"]

            # Held for a while longer: nothing else pages.
            for _ in range(3):
                tick()
            # The sink comes back and catches up: the pipeline alert resolves.
            await p.sink.start()

            async def resolved() -> bool:
                tick()
                return engine.state_of(f"pipeline-{tag}").status is Status.RESOLVED

            await poll(resolved, 30, "pipeline_stale did not resolve", interval_s=0.5)
            report = tick()
            assert project not in report.held
            assert report.findings[f"views-drop-{tag}"].verdict.value == "ok"
            await poll(lambda: len(receiver.received()) == 2, 10, "no resolve")
            await dispatcher.stop(5)
            assert [(x["rule"], x["status"]) for x in receiver.payloads()] == [
                (f"pipeline-{tag}", "firing"), (f"pipeline-{tag}", "resolved")]
