"""End to end: `tracklane up` with a rules file pages a signed webhook on a live conversion
drop, says nothing about the still-open minute, survives a restart mid-incident without
paging again, and sends the resolve."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.receiver import Received, Receiver
from tests.up_process import tracklane_up, wait_for
from tracklane.broker import free_port
from tracklane.projects import Project, write_default_projects

pytestmark = [pytest.mark.e2e]

SECRET = "s3cret"
PER_MINUTE = 60  # add_to_cart per minute; 25% of them convert normally
RULES = """
evaluation:
  interval: 1s
  lateness: 2s
  dashboard_url: https://grafana.example/d/tracklane
notifiers:
  - name: oncall
    kind: webhook
    url: {url}/hook
    secret: {secret}
rules:
  - name: checkout-conversion
    project: demo
    kind: conversion_drop
    from_event: add_to_cart
    to_event: purchase
    severity: critical
    notify: [oncall]
    runbook_url: https://example.com/runbooks/checkout
    window: 1m
    min_samples: 40
    for: 0s
    keep_firing_for: 0s
  - name: pipeline
    project: demo
    kind: pipeline_stale
    notify: [oncall]
"""


def minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def event(name: str, at: datetime | None, user: int) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "track", "event": name, "userId": f"u{user}",
                           "messageId": uuid.uuid4().hex}
    if at is not None:
        out["timestamp"] = at.isoformat()
    return out


def send(base: str, project: Project, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 500):
        response = httpx.post(f"{base}/v1/batch", json={"batch": events[i:i + 500]},
                              auth=(project.write_keys[0], ""), timeout=30)
        assert response.status_code == 200, response.text


def history(start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Normal traffic: PER_MINUTE carts and a quarter of them bought, each minute."""
    out = []
    at = start
    while at < end:
        for i in range(PER_MINUTE):
            ts = at + timedelta(seconds=i * 60 / PER_MINUTE)
            out.append(event("add_to_cart", ts, i))
            if i % 4 == 0:
                out.append(event("purchase", ts, i))
        at += timedelta(minutes=1)
    return out


def verify_signature(req: Received) -> None:
    """Standard Webhooks v1, computed here from the spec rather than with our own code."""
    msg_id, ts = req.headers["webhook-id"], req.headers["webhook-timestamp"]
    mac = hmac.new(SECRET.encode(), f"{msg_id}.{ts}.".encode() + req.body, hashlib.sha256)
    expected = "v1," + base64.b64encode(mac.digest()).decode()
    assert expected in req.headers["webhook-signature"].split(" ")
    assert abs(int(ts) - time.time()) < 60


def pages(receiver: Receiver) -> list[dict[str, Any]]:
    return [r.json() for r in receiver.received()]


def test_live_conversion_drop_pages_once_and_resolves_across_a_restart(tmp_path: Path) -> None:
    project = write_default_projects(tmp_path / "data" / "projects.toml", "demo")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with Receiver().running() as receiver:
        rules = tmp_path / "alerts.yaml"
        rules.write_text(RULES.format(url=receiver.url, secret=SECRET))
        # The test backfills three hours from one script as fast as it can, which the
        # per-client rate limit would (rightly) slow down.
        env = {"TRACKLANE_ALERTS_FILE": str(rules),
               "TRACKLANE_CLIENT_RATE_LIMIT_EVENTS_PER_S": "0"}
        with tracklane_up(tmp_path, port, env):
            assert "2 rules from" in (tmp_path / "up.out").read_text()
            # Start the live minute with most of it ahead, so the test can watch it open.
            wait_for(lambda: datetime.now(UTC).second < 30, 35, "start of a minute")
            live = minute(datetime.now(UTC))
            send(base, project, history(live - timedelta(hours=3), live))

            # The drop, live: carts keep coming, purchases almost stop (2 of 60).
            for i in range(PER_MINUTE):
                batch = [event("add_to_cart", None, i)]
                if i % 30 == 0:
                    batch.append(event("purchase", None, i))
                send(base, project, batch)
            # While the live minute is open, the closed window is normal: nothing is sent.
            wait_for(lambda: metric(base, "tracklane_alert_evaluations_total",
                                    'rule="checkout-conversion",verdict="ok"') >= 3, 20,
                     "the conversion rule was not evaluated on the closed minutes")
            assert datetime.now(UTC) < live + timedelta(minutes=1)
            assert receiver.received() == []

            firing = wait_for(lambda: pages(receiver), 90, "no page after the minute closed")
            assert len(firing) == 1
            page = firing[0]
            verify_signature(receiver.received()[0])
            assert page["status"] == "firing"
            assert page["rule"] == "checkout-conversion"
            assert page["project"] == "demo"
            assert page["severity"] == "critical"
            assert page["kind"] == "conversion_drop"
            assert page["labels"]["rule"] == "checkout-conversion"
            assert len(page["fingerprint"]) >= 16
            assert "conversion" in page["summary"]
            # What was observed, what was expected, how sure, on how much data.
            assert page["observed"] < 0.05 and abs(page["expected"] - 0.25) < 0.02
            assert page["band"]["low"] is not None and page["p_value"] < 1e-3
            assert page["samples"]["from_event"] == PER_MINUTE
            # The evaluated window is the live minute, now closed, and no later minute.
            assert page["window"] == {"start": iso(live), "end": iso(live + timedelta(minutes=1))}
            assert parse(page["complete_until"]) >= live + timedelta(minutes=1)
            assert parse(page["starts_at"]) >= live + timedelta(minutes=1)
            assert page["ends_at"] is None
            assert page["runbook_url"] == "https://example.com/runbooks/checkout"
            assert page["dashboard_url"] == "https://grafana.example/d/tracklane"

            listed = alerts_api(base, project)
            assert [t["to"] for t in listed["transitions"]][:2] == ["firing", "pending"]
            assert 'tracklane_alert_state{' in httpx.get(f"{base}/metrics").text

        # Restart mid-incident: the alert is still firing and must not page again.
        with tracklane_up(tmp_path, port, env):
            wait_for(lambda: metric(base, "tracklane_alert_evaluations_total",
                                    'rule="checkout-conversion",verdict="breach"') >= 3, 30,
                     "the restarted engine did not evaluate the incident")
            assert len(pages(receiver)) == 1

            # Late purchases for the live minute restore its conversion, and traffic since
            # is normal: the alert resolves.
            restore = [event("purchase", live + timedelta(seconds=30), i) for i in range(13)]
            now = datetime.now(UTC)
            send(base, project, restore + history(live + timedelta(minutes=1),
                                                  minute(now) + timedelta(minutes=1)))
            wait_for(lambda: len(pages(receiver)) == 2, 30, "no resolve notification")
            resolved = pages(receiver)[1]
            verify_signature(receiver.received()[1])
            assert resolved["status"] == "resolved"
            assert resolved["fingerprint"] == page["fingerprint"]
            assert parse(resolved["ends_at"]) >= parse(resolved["starts_at"])
            assert resolved["starts_at"] == page["starts_at"]
            # Nothing else paged: not the pipeline rule, not a second firing.
            assert [p["status"] for p in pages(receiver)] == ["firing", "resolved"]
            assert process_ok(tmp_path)


def process_ok(workdir: Path) -> bool:
    return "Traceback" not in (workdir / "up.err").read_text()


def alerts_api(base: str, project: Project) -> dict[str, Any]:
    response = httpx.get(f"{base}/v1/alerts",
                         headers={"Authorization": f"Bearer {project.read_keys[0]}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def metric(base: str, name: str, labels: str) -> float:
    prefix = f"{name}{{{labels}}} "
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))
