"""Every notifier kind against a real loopback receiver, and delivery with retries."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.pipeline import poll
from tests.receiver import Receiver
from tracklane.alerts.dispatch import Dispatcher, NotifyMetrics
from tracklane.alerts.model import Finding, Notification, NotificationKind, Verdict, Window
from tracklane.alerts.notifiers import (
    NotifyError,
    WebhookSecretError,
    notification_payload,
    render,
    send,
    sign,
    verify,
)
from tracklane.alerts.rules import NotifierSpec

NOW = datetime(2026, 6, 1, 12, 7, 30, tzinfo=UTC)
KEY = b"0123456789abcdef0123456789abcdef"
WHSEC = "whsec_" + base64.b64encode(KEY).decode()
ROUTING_KEY = "R" * 32


def make_notification(
    status: NotificationKind = NotificationKind.FIRING, **changes: Any
) -> Notification:
    """A conversion-drop alert of rule ``checkout`` in project ``demo``."""
    window = Window(NOW.replace(minute=0, second=0), NOW.replace(minute=5, second=0))
    finding = Finding(
        Verdict.BREACH, False, "purchase/add_to_cart 1.5% vs 3.0%", window,
        observed=0.015, expected=0.03, band_low=0.024, p_value=2e-6, deviation=-0.5,
        samples={"from_event": 5000, "to_event": 75}, baseline="same hours of 7 days")
    resolved = status is NotificationKind.RESOLVED
    n = Notification(
        id=f"fp1-1-{status.value}-0", status=status, fingerprint="fp1", rule="checkout",
        project="demo", kind="conversion_drop", severity="critical",
        labels={"rule": "checkout", "team": "shop"}, summary=finding.summary, finding=finding,
        complete_until=window.end, starts_at=NOW - timedelta(minutes=1),
        ends_at=NOW if resolved else None, runbook_url="https://rb.example/checkout",
        dashboard_url="https://grafana.example/d/x")
    return replace(n, **changes)


def make_spec(url: str, kind: str, name: str | None = None, **extra: Any) -> NotifierSpec:
    if kind == "pagerduty":
        extra.setdefault("routing_key", ROUTING_KEY)
    return NotifierSpec.model_validate({"name": name or kind, "kind": kind, "url": url, **extra})


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class FakeSleep:
    """Records backoff waits instead of sleeping them."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


class Done:
    """An ``on_done`` callback that records what it was told."""

    def __init__(self) -> None:
        self.results: list[bool] = []

    def __call__(self, ok: bool) -> None:
        self.results.append(ok)


@dataclass
class Outcome:
    results: list[bool]
    registry: CollectorRegistry
    waits: list[float] = field(default_factory=list)

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def deliver(
    specs: list[NotifierSpec], n: Notification, to: str, **options: Any
) -> Outcome:
    """Submit one notification through a fresh dispatcher and wait until it is settled."""
    registry = CollectorRegistry()
    sleep = FakeSleep()
    dispatcher = Dispatcher(specs, lambda: NOW, NotifyMetrics(registry), sleep=sleep,
                            rng=random.Random(7), **options)
    await dispatcher.start()
    done = Done()
    try:
        dispatcher.submit(to, n, done)
        await asyncio.wait_for(dispatcher.idle(), 30)
    finally:
        await dispatcher.stop(1)
    return Outcome(done.results, registry, sleep.waits)


def expected_signature(key: bytes, headers: dict[str, str], body: bytes) -> str:
    """Standard Webhooks v1, computed from the spec rather than the module under test."""
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body.decode()}"
    digest = hmac.new(key, content.encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# --- webhook ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("secret", "key"), [("s3cret", b"s3cret"), (WHSEC, KEY)])
async def test_webhook_is_signed_to_the_standard_webhooks_spec(secret: str, key: bytes) -> None:
    with Receiver().running() as receiver:
        out = await deliver([make_spec(receiver.url + "/hook", "webhook", secret=secret)],
                            make_notification(), "webhook")
        assert out.results == [True]
        (req,) = receiver.received()
    assert req.method == "POST" and req.path == "/hook"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["webhook-id"] == "fp1-1-firing-0"
    assert req.headers["webhook-timestamp"] == str(int(NOW.timestamp()))
    assert req.headers["webhook-signature"] == expected_signature(key, req.headers, req.body)
    assert verify(secret, req.headers, req.body)
    assert verify(secret, req.headers, req.body, now=NOW + timedelta(minutes=4))
    assert not verify(secret, req.headers, req.body, now=NOW + timedelta(minutes=6))
    assert not verify(secret, req.headers, req.body + b" ")
    assert not verify("another-secret", req.headers, req.body)
    body = req.json()
    assert body == notification_payload(make_notification())
    assert body["status"] == "firing" and body["fingerprint"] == "fp1"
    assert body["band"] == {"low": 0.024, "high": None}
    assert body["samples"] == {"from_event": 5000, "to_event": 75}
    assert body["window"] == {"start": "2026-06-01T12:00:00.000Z",
                              "end": "2026-06-01T12:05:00.000Z"}
    assert body["starts_at"] == "2026-06-01T12:06:30.000Z" and body["ends_at"] is None


@pytest.mark.anyio
async def test_webhook_without_secret_is_unsigned_and_carries_configured_headers() -> None:
    with Receiver().running() as receiver:
        spec = make_spec(receiver.url, "webhook", headers={"Authorization": "Bearer t0k"})
        out = await deliver([spec], make_notification(), "webhook")
        assert out.results == [True]
        (req,) = receiver.received()
    assert "webhook-signature" not in req.headers
    assert req.headers["webhook-id"] == "fp1-1-firing-0"  # receivers still dedup on it
    assert req.headers["authorization"] == "Bearer t0k"


def test_sign_and_verify_helpers() -> None:
    body = b'{"a":1}'
    unpadded = "whsec_" + base64.b64encode(b"k" * 20).decode().rstrip("=")
    digest = hmac.new(b"k" * 20, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    assert sign(unpadded, "msg_1", 1700000000, body) == "v1," + base64.b64encode(digest).decode()
    good = sign(WHSEC, "msg_1", 1700000000, body)
    headers = {"Webhook-Id": "msg_1", "Webhook-Timestamp": "1700000000",
               "Webhook-Signature": f"v1,bm9wZQ== {good}"}  # several signatures, any matches
    assert verify(WHSEC, headers, body)
    assert not verify(WHSEC, {**headers, "Webhook-Signature": "v1,bm9wZQ=="}, body)
    assert not verify(WHSEC, {"webhook-id": "msg_1"}, body)
    assert not verify(WHSEC, {**headers, "Webhook-Timestamp": "soon"}, body)
    with pytest.raises(WebhookSecretError):
        sign("whsec_not base64!", "msg_1", 1700000000, body)


# --- Slack, Alertmanager, PagerDuty --------------------------------------------------------


@pytest.mark.anyio
async def test_slack_body_shape() -> None:
    n = make_notification(summary="purchase < add_to_cart & falling")
    with Receiver().running() as receiver:
        out = await deliver([make_spec(receiver.url + "/services/T/B/x", "slack")], n, "slack")
        assert out.results == [True]
        (req,) = receiver.received()
    assert req.path == "/services/T/B/x"
    body = req.json()
    assert set(body) == {"text", "blocks"}
    assert body["text"] == (
        "[FIRING] critical checkout (demo): purchase &lt; add_to_cart &amp; falling")
    assert "\n" not in body["text"]
    assert all(block["type"] == "section" for block in body["blocks"])
    rendered = json.dumps(body["blocks"])
    for expected in ("Observed", "0.015", "Expected", "0.03", "2026-06-01T12:00:00.000Z",
                     "<https://rb.example/checkout|Runbook>",
                     "<https://grafana.example/d/x|Dashboard>"):
        assert expected in rendered
    fields = body["blocks"][1]["fields"]
    assert 0 < len(fields) <= 10 and all(f["type"] == "mrkdwn" for f in fields)
    resolved = render(make_spec("http://x", "slack"), make_notification(
        NotificationKind.RESOLVED), NOW)
    assert json.loads(resolved.body)["text"].startswith("[RESOLVED] critical checkout (demo): ")


@pytest.mark.anyio
async def test_alertmanager_path_and_ends_at() -> None:
    with Receiver().running() as receiver:
        spec = make_spec(receiver.url + "/", "alertmanager")
        fired = await deliver([spec], make_notification(), "alertmanager")
        resolved = await deliver([spec], make_notification(NotificationKind.RESOLVED),
                                 "alertmanager")
        short = await deliver([spec], make_notification(), "alertmanager",
                              alertmanager_validity=timedelta(minutes=2))
        assert fired.results == resolved.results == short.results == [True]
        reqs = receiver.received()
    assert [r.path for r in reqs] == ["/api/v2/alerts"] * 3
    (alert,) = reqs[0].json()
    assert set(alert) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert alert["labels"] == {"alertname": "checkout", "project": "demo",
                               "severity": "critical", "kind": "conversion_drop",
                               "fingerprint": "fp1", "rule": "checkout", "team": "shop"}
    assert alert["annotations"]["summary"] == "purchase/add_to_cart 1.5% vs 3.0%"
    assert "observed 0.015" in alert["annotations"]["description"]
    assert "p=2e-06" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"] == "https://rb.example/checkout"
    assert alert["startsAt"] == "2026-06-01T12:06:30.000Z"
    assert alert["generatorURL"] == "https://grafana.example/d/x"
    # Firing: now + validity, so Alertmanager expires it unless it is re-sent.
    assert alert["endsAt"] == "2026-06-01T12:12:30.000Z"
    assert reqs[2].json()[0]["endsAt"] == "2026-06-01T12:09:30.000Z"
    # Resolved: when it resolved.
    assert reqs[1].json()[0]["endsAt"] == "2026-06-01T12:07:30.000Z"
    no_end = make_notification(NotificationKind.RESOLVED, ends_at=None)
    later = NOW + timedelta(seconds=20)
    body = json.loads(render(spec, no_end, later).body)
    assert body[0]["endsAt"] == "2026-06-01T12:07:50.000Z"


@pytest.mark.anyio
async def test_pagerduty_trigger_and_resolve_share_the_dedup_key() -> None:
    with Receiver().running() as receiver:
        spec = make_spec(receiver.url + "/v2/enqueue", "pagerduty")
        for status in (NotificationKind.FIRING, NotificationKind.RESOLVED):
            out = await deliver([spec], make_notification(status), "pagerduty")
            assert out.results == [True]
        trigger_req, resolve_req = receiver.received()
    assert trigger_req.path == resolve_req.path == "/v2/enqueue"
    trigger = trigger_req.json()
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "fp1"
    payload = trigger["payload"]
    assert payload["summary"].startswith("[FIRING] critical checkout (demo): ")
    assert payload["source"] == "tracklane" and payload["severity"] == "critical"
    assert payload["timestamp"] == "2026-06-01T12:06:30.000Z"
    assert (payload["component"], payload["group"], payload["class"]) == (
        "demo", "checkout", "conversion_drop")
    assert payload["custom_details"] == notification_payload(make_notification())
    assert trigger["links"] == [{"href": "https://rb.example/checkout", "text": "Runbook"},
                                {"href": "https://grafana.example/d/x", "text": "Dashboard"}]
    assert resolve_req.json() == {"routing_key": ROUTING_KEY, "event_action": "resolve",
                                  "dedup_key": "fp1"}


def test_pagerduty_summary_is_cut_to_1024_characters() -> None:
    n = make_notification(summary="x" * 5000)
    body = json.loads(render(make_spec("http://pd", "pagerduty"), n, NOW).body)
    assert len(body["payload"]["summary"]) == 1024


def test_payload_is_strict_json_even_for_non_finite_values() -> None:
    n = make_notification()
    finding = replace(n.finding, expected=0.0, deviation=float("inf"), p_value=float("nan"))
    payload = notification_payload(replace(n, finding=finding))
    assert payload["deviation"] is None and payload["p_value"] is None
    assert payload["expected"] == 0.0
    json.dumps(payload, allow_nan=False)


# --- send ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_send_raises_notify_error_with_the_status() -> None:
    with Receiver().running() as receiver:
        receiver.statuses = [503, 404]
        spec = make_spec(receiver.url, "slack")
        async with httpx.AsyncClient() as client:
            with pytest.raises(NotifyError, match="HTTP 503") as unavailable:
                await send(client, spec, make_notification(), NOW)
            with pytest.raises(NotifyError, match="HTTP 404") as missing:
                await send(client, spec, make_notification(), NOW)
            await send(client, spec, make_notification(), NOW)
    assert unavailable.value.status == 503 and unavailable.value.retryable
    assert missing.value.status == 404 and not missing.value.retryable


@pytest.mark.anyio
async def test_send_is_bounded_by_the_notifier_timeout() -> None:
    with Receiver().running() as receiver:
        receiver.delay_s = 2.0
        spec = make_spec(receiver.url, "webhook", timeout="300ms")
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with httpx.AsyncClient() as client:
            with pytest.raises(NotifyError, match="webhook: ") as err:
                await send(client, spec, make_notification(), NOW)
        assert loop.time() - started < 1.5
        assert err.value.retryable


@pytest.mark.anyio
async def test_transport_failure_is_a_notify_error() -> None:
    spec = make_spec(f"http://127.0.0.1:{closed_port()}/hook", "webhook")
    async with httpx.AsyncClient() as client:
        with pytest.raises(NotifyError, match="ConnectError") as err:
            await send(client, spec, make_notification(), NOW)
    assert err.value.status is None and err.value.retryable


# --- dispatch: retries, give-up, concurrency, shutdown ------------------------------------


@pytest.mark.anyio
async def test_failed_sends_are_retried_then_delivered_once() -> None:
    with Receiver().running() as receiver:
        receiver.statuses = [500, 500]
        out = await deliver([make_spec(receiver.url, "webhook", secret=WHSEC)],
                            make_notification(), "webhook")
        reqs = receiver.received()
    assert out.results == [True]
    assert len(reqs) == 3
    # Retries resend the same message: same id, so a receiver can dedup.
    assert {r.headers["webhook-id"] for r in reqs} == {"fp1-1-firing-0"}
    assert out.sample("tracklane_notification_failures_total", notifier="webhook") == 2
    assert out.sample("tracklane_notifications_sent_total", notifier="webhook",
                      status="firing") == 1
    assert out.sample("tracklane_notifications_dropped_total", notifier="webhook") == 0
    assert out.sample("tracklane_notification_send_seconds_count", notifier="webhook") == 3
    # Full jitter under a doubling cap: the first wait is at most 1 s, the second 2 s.
    assert len(out.waits) == 2
    assert 0 <= out.waits[0] <= 1 and 0 <= out.waits[1] <= 2


@pytest.mark.anyio
async def test_a_dead_receiver_is_given_up_after_max_retry() -> None:
    dead = make_spec(f"http://127.0.0.1:{closed_port()}/hook", "webhook", name="dead",
                     max_retry="10s")
    out = await deliver([dead], make_notification(), "dead")
    assert out.results == [False]
    assert out.sample("tracklane_notifications_dropped_total", notifier="dead") == 1
    assert out.sample("tracklane_notification_failures_total", notifier="dead") == (
        len(out.waits) + 1)
    assert out.sample("tracklane_notifications_sent_total", notifier="dead",
                      status="firing") == 0
    # The budget is spent by backoff waits (not real time): retried until 10 s were spent.
    assert len(out.waits) >= 2
    assert 9 < sum(out.waits) <= 10
    for i, wait in enumerate(out.waits):
        assert 0 <= wait <= min(2.0**i, 60)


@pytest.mark.anyio
async def test_a_client_error_is_not_retried() -> None:
    with Receiver().running() as receiver:
        receiver.statuses = [400]
        out = await deliver([make_spec(receiver.url, "pagerduty")], make_notification(),
                            "pagerduty")
        assert len(receiver.received()) == 1
    assert out.results == [False] and out.waits == []
    assert out.sample("tracklane_notifications_dropped_total", notifier="pagerduty") == 1


@pytest.mark.anyio
async def test_a_bad_webhook_secret_is_dropped_without_sending() -> None:
    with Receiver().running() as receiver:
        spec = make_spec(receiver.url, "webhook", secret="whsec_*not*base64*")
        out = await deliver([spec], make_notification(), "webhook")
        assert receiver.received() == []
    assert out.results == [False] and out.waits == []


@pytest.mark.anyio
async def test_one_slow_receiver_does_not_delay_another() -> None:
    with Receiver().running() as fast, Receiver().running() as slow:
        slow.delay_s = 2.0
        dispatcher = Dispatcher([make_spec(fast.url, "webhook"), make_spec(slow.url, "slack")],
                                lambda: NOW, CollectorRegistry())
        await dispatcher.start()
        try:
            slow_done, fast_done = Done(), Done()
            dispatcher.submit("slack", make_notification(), slow_done)
            await poll(lambda: len(slow.received()) == 1, 5.0, "slow receiver got the request")
            dispatcher.submit("webhook", make_notification(), fast_done)
            await poll(lambda: fast_done.results == [True], 1.0, "fast receiver waited")
            assert slow_done.results == []
            assert dispatcher.in_flight == 1
            await asyncio.wait_for(dispatcher.idle(), 10)
            assert slow_done.results == [True]
        finally:
            await dispatcher.stop(5)


@pytest.mark.anyio
async def test_alerts_to_one_notifier_are_sent_concurrently() -> None:
    with Receiver().running() as slow:
        slow.delay_s = 1.0
        dispatcher = Dispatcher([make_spec(slow.url, "webhook")], lambda: NOW,
                                CollectorRegistry())
        await dispatcher.start()
        try:
            dones = [Done() for _ in range(6)]
            for i, done in enumerate(dones):
                dispatcher.submit("webhook", make_notification(id=f"n{i}", fingerprint=f"fp{i}"),
                                  done)
            # One after another would take 6 s; together, about 1 s.
            await poll(lambda: all(d.results == [True] for d in dones), 4.0,
                       "sends to one notifier ran one at a time")
        finally:
            await dispatcher.stop(5)
    assert sorted(r.headers["webhook-id"] for r in slow.received()) == [
        f"n{i}" for i in range(6)]


@pytest.mark.anyio
async def test_unknown_notifier_and_stopped_dispatcher_report_failure() -> None:
    registry = CollectorRegistry()
    dispatcher = Dispatcher([], lambda: NOW, registry)
    early = Done()
    dispatcher.submit("nobody", make_notification(), early)  # before start: refused, no raise
    await dispatcher.start()
    unknown = Done()
    dispatcher.submit("nobody", make_notification(), unknown)
    await dispatcher.idle()
    await dispatcher.stop(1)
    late = Done()
    dispatcher.submit("nobody", make_notification(), late)
    assert early.results == unknown.results == late.results == [False]
    assert registry.get_sample_value("tracklane_notifications_dropped_total",
                                     {"notifier": "nobody"}) == 3


@pytest.mark.anyio
async def test_a_raising_callback_does_not_break_delivery() -> None:
    def explode(ok: bool) -> None:
        raise RuntimeError("engine bug")

    with Receiver().running() as receiver:
        dispatcher = Dispatcher([make_spec(receiver.url, "webhook")], lambda: NOW,
                                CollectorRegistry())
        await dispatcher.start()
        try:
            dispatcher.submit("webhook", make_notification(), explode)
            dispatcher.submit("nobody", make_notification(), explode)
            await asyncio.wait_for(dispatcher.idle(), 10)
            after = Done()
            dispatcher.submit("webhook", make_notification(), after)
            await asyncio.wait_for(dispatcher.idle(), 10)
            assert after.results == [True]
        finally:
            await dispatcher.stop(1)


@pytest.mark.anyio
async def test_stop_cancels_sends_past_the_timeout() -> None:
    with Receiver().running() as slow:
        slow.delay_s = 2.0
        dispatcher = Dispatcher([make_spec(slow.url, "webhook")], lambda: NOW,
                                CollectorRegistry())
        await dispatcher.start()
        done = Done()
        dispatcher.submit("webhook", make_notification(), done)
        await poll(lambda: len(slow.received()) == 1, 5.0, "request reached the receiver")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await dispatcher.stop(0.2)
        assert loop.time() - started < 1.5
        assert done.results == [False]
        assert dispatcher.in_flight == 0
