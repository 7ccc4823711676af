"""Every notifier kind against a real loopback receiver, and retries with backoff."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from alerts.dispatch import Dispatcher, NotifyMetrics
from alerts.model import Finding, Notification, NotificationKind, Verdict, Window
from alerts.notifiers import verify
from alerts.rules import NotifierSpec
from tests.pipeline import poll
from tests.receiver import Receiver

NOW = datetime(2026, 6, 1, 12, 7, 30, tzinfo=UTC)
KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def note(status: NotificationKind = NotificationKind.FIRING) -> Notification:
    window = Window(NOW.replace(minute=0, second=0), NOW.replace(minute=5, second=0))
    finding = Finding(Verdict.BREACH, False, "purchase/add_to_cart 1.5% vs 3.0%", window,
                      observed=0.015, expected=0.03, band_low=0.024, p_value=2e-6,
                      deviation=-0.5, samples={"from_event": 5000, "to_event": 75},
                      baseline="same hours of 7 days")
    resolved = status is NotificationKind.RESOLVED
    return Notification(
        id=f"fp1-1-{status.value}-0", status=status, fingerprint="fp1", rule="checkout",
        project="demo", kind="conversion_drop", severity="critical",
        labels={"rule": "checkout", "team": "shop"}, summary=finding.summary, finding=finding,
        complete_until=window.end, starts_at=NOW - timedelta(minutes=1),
        ends_at=NOW if resolved else None, runbook_url="https://rb.example/checkout",
        dashboard_url="https://grafana.example/d/x")


def spec(receiver: Receiver, kind: str, **extra: Any) -> NotifierSpec:
    return NotifierSpec.model_validate({"name": kind, "kind": kind, "url": receiver.url + "/in",
                                        **extra})


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


class Delivery:
    def __init__(self) -> None:
        self.results: list[bool] = []

    def __call__(self, ok: bool) -> None:
        self.results.append(ok)


async def deliver(
    specs: list[NotifierSpec], n: Notification, to: str
) -> tuple[bool, CollectorRegistry]:
    registry = CollectorRegistry()
    dispatcher = Dispatcher(specs, lambda: NOW, NotifyMetrics(registry), sleep=no_sleep,
                            rng=random.Random(1))
    await dispatcher.start()
    done = Delivery()
    dispatcher.submit(to, n, done)
    await dispatcher.idle()
    await dispatcher.stop(1)
    return done.results == [True], registry


@pytest.mark.anyio
@pytest.mark.parametrize("secret", ["s3cret", f"whsec_{KEY}"])
async def test_webhook_is_signed_to_the_standard_webhooks_scheme(secret: str) -> None:
    with Receiver().running() as receiver:
        ok, _ = await deliver([spec(receiver, "webhook", secret=secret)], note(), "webhook")
        assert ok
        req = receiver.received()[0]
    key = base64.b64decode(KEY) if secret.startswith("whsec_") else secret.encode()
    signed = f"{req.headers['webhook-id']}.{req.headers['webhook-timestamp']}.".encode() + req.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert req.headers["webhook-signature"] == expected
    assert req.headers["webhook-id"] == "fp1-1-firing-0"
    assert req.headers["webhook-timestamp"] == str(int(NOW.timestamp()))
    assert verify(secret, req.headers, req.body)
    assert not verify(secret, req.headers, req.body + b" ")
    body = req.json()
    assert body["status"] == "firing" and body["fingerprint"] == "fp1"
    assert body["samples"] == {"from_event": 5000, "to_event": 75}
    assert body["window"] == {"start": "2026-06-01T12:00:00.000Z",
                              "end": "2026-06-01T12:05:00.000Z"}


@pytest.mark.anyio
async def test_slack_alertmanager_and_pagerduty_shapes() -> None:
    with Receiver().running() as receiver:
        specs = [spec(receiver, "slack"), spec(receiver, "alertmanager"),
                 spec(receiver, "pagerduty", routing_key="R" * 32)]
        for s in specs:
            for status in (NotificationKind.FIRING, NotificationKind.RESOLVED):
                ok, _ = await deliver(specs, note(status), s.name)
                assert ok
        reqs = receiver.received()
    slack_fire, _, am_fire, am_resolve, pd_fire, pd_resolve = reqs
    assert slack_fire.json()["text"].startswith("[FIRING] critical checkout (demo):")
    assert slack_fire.json()["blocks"]

    assert am_fire.path == "/in/api/v2/alerts"
    alert = am_fire.json()[0]
    assert alert["labels"]["alertname"] == "checkout" and alert["labels"]["team"] == "shop"
    assert alert["annotations"]["runbook_url"] == "https://rb.example/checkout"
    assert alert["endsAt"] == "2026-06-01T12:12:30.000Z"  # now + validity, refreshed by resends
    assert am_resolve.json()[0]["endsAt"] == "2026-06-01T12:07:30.000Z"  # when it resolved

    trigger = pd_fire.json()
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "fp1"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["custom_details"]["p_value"] == 2e-6
    assert {"href": "https://rb.example/checkout", "text": "Runbook"} in trigger["links"]
    assert pd_resolve.json() == {"routing_key": "R" * 32, "event_action": "resolve",
                                 "dedup_key": "fp1"}


@pytest.mark.anyio
async def test_failed_sends_are_retried_then_delivered_once() -> None:
    with Receiver().running() as receiver:
        receiver.statuses = [500, 503]
        ok, registry = await deliver([spec(receiver, "webhook")], note(), "webhook")
        assert ok
        assert len(receiver.received()) == 3
    labels = {"notifier": "webhook"}
    assert registry.get_sample_value("tracklane_notification_failures_total", labels) == 2
    assert registry.get_sample_value("tracklane_notifications_sent_total",
                                     {**labels, "status": "firing"}) == 1


@pytest.mark.anyio
async def test_a_dead_receiver_is_given_up_after_max_retry() -> None:
    dead = NotifierSpec(name="dead", kind="webhook", url="http://127.0.0.1:9/hook",
                        max_retry=timedelta(seconds=0.5))
    ok, registry = await deliver([dead], note(), "dead")
    assert not ok
    assert registry.get_sample_value("tracklane_notifications_dropped_total",
                                     {"notifier": "dead"}) == 1


@pytest.mark.anyio
async def test_one_slow_receiver_does_not_delay_another() -> None:
    with Receiver().running() as fast, Receiver().running() as slow:
        slow.delay_s = 2.0
        dispatcher = Dispatcher([spec(fast, "webhook"), spec(slow, "slack")], lambda: NOW,
                                NotifyMetrics(CollectorRegistry()))
        await dispatcher.start()
        slow_done, fast_done = Delivery(), Delivery()
        dispatcher.submit("slack", note(), slow_done)
        dispatcher.submit("webhook", note(), fast_done)
        await poll(lambda: fast_done.results == [True], 1.0, "fast receiver waited")
        assert slow_done.results == []
        await dispatcher.stop(5)
        assert slow_done.results == [True]
