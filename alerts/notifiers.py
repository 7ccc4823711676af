"""Rendering and sending one notification to webhook, Slack, Alertmanager or PagerDuty."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from alerts.codec import finding_to_dict, iso
from alerts.model import Notification, NotificationKind
from alerts.rules import NotifierSpec


class NotifyError(RuntimeError):
    """A notifier did not accept a notification (non-2xx answer or transport failure)."""


def notification_payload(n: Notification) -> dict[str, Any]:
    """The one JSON shape of a notification; the webhook sends exactly this."""
    f = finding_to_dict(n.finding)
    return {
        "id": n.id, "status": n.status.value, "rule": n.rule, "project": n.project,
        "kind": n.kind, "severity": n.severity, "labels": n.labels,
        "fingerprint": n.fingerprint, "summary": n.summary,
        "observed": f["observed"], "expected": f["expected"], "band": f["band"],
        "p_value": f["p_value"], "deviation": f["deviation"], "samples": f["samples"],
        "baseline": f["baseline"], "verdict": f["verdict"], "window": f["window"],
        "complete_until": iso(n.complete_until), "starts_at": iso(n.starts_at),
        "ends_at": iso(n.ends_at), "runbook_url": n.runbook_url,
        "dashboard_url": n.dashboard_url, "repeat": n.repeat, "flapping": n.flapping,
    }


def _secret_bytes(secret: str) -> bytes:
    # Standard Webhooks keys are "whsec_" + base64; other secrets are used as given.
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks v1 signature: base64 HMAC-SHA256 of ``id.timestamp.body``."""
    mac = hmac.new(_secret_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body,
                   hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """True when one of the ``webhook-signature`` entries matches (constant time)."""
    expected = sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())


def _line(n: Notification) -> str:
    return f"[{n.status.value.upper()}] {n.severity} {n.rule} ({n.project}): {n.summary}"


def _description(n: Notification) -> str:
    f = n.finding
    parts = [f"observed {f.observed}", f"expected {f.expected}"]
    if f.band_low is not None or f.band_high is not None:
        parts.append(f"band [{f.band_low}, {f.band_high}]")
    if f.p_value is not None:
        parts.append(f"p={f.p_value:.3g}")
    parts.append(f"window {iso(f.window.start)}..{iso(f.window.end)}")
    parts.append(f"complete until {iso(n.complete_until)}")
    return "; ".join(parts)


def _slack(n: Notification) -> dict[str, Any]:
    links = " | ".join(f"<{url}|{name}>" for name, url in
                       (("runbook", n.runbook_url), ("dashboard", n.dashboard_url)) if url)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_line(n)}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _description(n)}},
    ]
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
    return {"text": _line(n), "blocks": blocks}


def _alertmanager(n: Notification, now: datetime, validity: timedelta) -> list[dict[str, Any]]:
    labels = {**n.labels, "alertname": n.rule, "project": n.project, "severity": n.severity,
              "kind": n.kind, "fingerprint": n.fingerprint}
    annotations = {"summary": n.summary, "description": _description(n)}
    if n.runbook_url:
        annotations["runbook_url"] = n.runbook_url
    if n.dashboard_url:
        annotations["dashboard_url"] = n.dashboard_url
    # A firing alert expires at endsAt unless re-sent, so a dead engine does not leave
    # it firing forever; a resolve sets endsAt to when it resolved.
    ends = n.ends_at if n.status is NotificationKind.RESOLVED and n.ends_at else now + validity
    return [{"labels": labels, "annotations": annotations, "startsAt": iso(n.starts_at),
             "endsAt": iso(ends), "generatorURL": n.dashboard_url or ""}]


_PD_SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}


def _pagerduty(n: Notification, routing_key: str) -> dict[str, Any]:
    if n.status is NotificationKind.RESOLVED:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": n.fingerprint}
    links = [{"href": url, "text": name} for name, url in
             (("Runbook", n.runbook_url), ("Dashboard", n.dashboard_url)) if url]
    return {
        "routing_key": routing_key, "event_action": "trigger", "dedup_key": n.fingerprint,
        "payload": {
            "summary": _line(n)[:1024], "source": "tracklane",
            "severity": _PD_SEVERITY.get(n.severity, "warning"),
            "timestamp": iso(n.starts_at), "component": n.project, "group": n.rule,
            "class": n.kind, "custom_details": notification_payload(n),
        },
        "links": links,
    }


def render(
    spec: NotifierSpec, n: Notification, now: datetime, validity: timedelta
) -> tuple[str, bytes, dict[str, str]]:
    """URL, body and headers of the request that delivers ``n`` through ``spec``."""
    headers = {"content-type": "application/json", **spec.headers}
    url = spec.url
    body: Any
    if spec.kind == "webhook":
        body = notification_payload(n)
    elif spec.kind == "slack":
        body = _slack(n)
    elif spec.kind == "alertmanager":
        url = spec.url.rstrip("/") + "/api/v2/alerts"
        body = _alertmanager(n, now, validity)
    else:
        assert spec.routing_key is not None  # validated with the rules file
        body = _pagerduty(n, spec.routing_key)
    raw = json.dumps(body, separators=(",", ":")).encode()
    if spec.kind == "webhook" and spec.secret:
        stamp = int(now.timestamp())
        headers.update({"webhook-id": n.id, "webhook-timestamp": str(stamp),
                        "webhook-signature": sign(spec.secret, n.id, stamp, raw)})
    return url, raw, headers


async def send(
    client: httpx.AsyncClient, spec: NotifierSpec, n: Notification, now: datetime,
    validity: timedelta = timedelta(minutes=5),
) -> None:
    """Deliver one notification; raises NotifyError unless the receiver answers 2xx."""
    url, body, headers = render(spec, n, now, validity)
    try:
        response = await client.post(url, content=body, headers=headers,
                                     timeout=spec.timeout.total_seconds())
    except httpx.HTTPError as exc:
        raise NotifyError(f"{spec.name}: {type(exc).__name__}: {exc}") from None
    if not 200 <= response.status_code < 300:
        raise NotifyError(f"{spec.name}: HTTP {response.status_code}: {response.text[:200]}")
