"""Rendering and sending one notification: a webhook, Slack, Alertmanager, PagerDuty,
the DingTalk, WeCom and Feishu robots (alerts/chat_robots.py), or email (alerts/mail.py).

``render`` builds the HTTP request (pure, no I/O); ``send`` delivers it and raises
``NotifyError`` unless the receiver accepted it. Retries are the dispatcher's job, not this
module's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx

from tracklane.alerts import chat_robots
from tracklane.alerts.codec import iso
from tracklane.alerts.mail import email_message, send_mail
from tracklane.alerts.messages import number
from tracklane.alerts.model import Notification, NotificationKind
from tracklane.alerts.rules import NotifierSpec

SECRET_PREFIX = "whsec_"
# Standard Webhooks receivers reject timestamps further than this from their clock.
SIGNATURE_TOLERANCE = timedelta(minutes=5)
DEFAULT_VALIDITY = timedelta(minutes=5)
PAGERDUTY_SUMMARY_MAX = 1024
PAGERDUTY_SEVERITIES = frozenset({"critical", "error", "warning", "info"})
_SLACK_TEXT_MAX = 3000  # a section block's text
_SLACK_FIELD_MAX = 2000  # one field of a section block
_USER_AGENT = "tracklane-notifier"


class NotifyError(RuntimeError):
    """A receiver did not accept a notification: non-2xx answer or transport failure.

    ``retryable`` is False when trying again cannot help (a 4xx other than 408/425/429,
    or a notifier misconfiguration), so the dispatcher gives up at once.
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class WebhookSecretError(ValueError):
    """A ``whsec_`` secret whose remainder is not base64, or an empty signing key."""


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """One rendered POST: where, what and with which headers."""

    url: str
    body: bytes
    headers: dict[str, str]


# --- the common payload -------------------------------------------------------------------


def _finite(x: float | None) -> float | None:
    # JSON has no NaN or Infinity; a ratio over an empty baseline must not break the body.
    return x if x is not None and math.isfinite(x) else None


def notification_payload(n: Notification) -> dict[str, Any]:
    """The one JSON shape of a notification; the webhook body is exactly this."""
    f = n.finding
    return {
        "id": n.id,
        "status": n.status.value,
        "rule": n.rule,
        "project": n.project,
        "kind": n.kind,
        "severity": n.severity,
        "labels": dict(n.labels),
        "fingerprint": n.fingerprint,
        "summary": n.summary,
        "verdict": f.verdict.value,
        "observed": _finite(f.observed),
        "expected": _finite(f.expected),
        "band": {"low": _finite(f.band_low), "high": _finite(f.band_high)},
        "p_value": _finite(f.p_value),
        "deviation": _finite(f.deviation),
        "samples": dict(f.samples),
        "baseline": f.baseline,
        "window": {"start": iso(f.window.start), "end": iso(f.window.end)},
        "complete_until": iso(n.complete_until),
        "starts_at": iso(n.starts_at),
        "ends_at": iso(n.ends_at),
        "runbook_url": n.runbook_url,
        "dashboard_url": n.dashboard_url,
        "repeat": n.repeat,
        "flapping": n.flapping,
    }


def json_body(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


# --- Standard Webhooks signing ------------------------------------------------------------


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret.

    ``whsec_<base64>`` (the Standard Webhooks form) is base64-decoded after the prefix.
    Any other secret is used as its UTF-8 bytes, as written. The reference Standard Webhooks
    libraries base64-decode every secret, so receivers built on them should be given a
    ``whsec_`` secret.
    """
    if secret.startswith(SECRET_PREFIX):
        raw = secret.removeprefix(SECRET_PREFIX)
        try:
            # Keys are often written unpadded; surplus padding is ignored by the decoder.
            key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except binascii.Error:
            raise WebhookSecretError(
                "webhook secret: 'whsec_' must be followed by base64") from None
    else:
        key = secret.encode()
    if not key:
        raise WebhookSecretError("webhook secret: empty signing key")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    mac = hmac.new(signing_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime | None = None,
    tolerance: timedelta = SIGNATURE_TOLERANCE,
) -> bool:
    """True when one ``v1`` entry of ``webhook-signature`` matches (compared in constant time).

    Header names are matched case-insensitively. With ``now`` given, a timestamp further
    than ``tolerance`` from it is rejected too, as the spec asks receivers to (replays).
    A malformed ``whsec_`` secret raises WebhookSecretError: that is a configuration error.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if now is not None and abs(now.timestamp() - timestamp) > tolerance.total_seconds():
        return False
    expected = sign(secret, msg_id, timestamp, body).encode()
    return any(
        hmac.compare_digest(expected, candidate.encode())
        for candidate in signatures.split()
        if candidate.startswith("v1,")
    )


# --- per-service renderings ---------------------------------------------------------------


def _line(n: Notification) -> str:
    return f"[{n.status.value.upper()}] {n.severity} {n.rule} ({n.project}): {n.summary}"


def _window(n: Notification) -> str:
    return f"{iso(n.finding.window.start)} .. {iso(n.finding.window.end)}"


def _description(n: Notification) -> str:
    f = n.finding
    parts = [f"observed {number(f.observed)}", f"expected {number(f.expected)}"]
    if f.band_low is not None or f.band_high is not None:
        parts.append(f"band [{number(f.band_low)}, {number(f.band_high)}]")
    if f.p_value is not None:
        parts.append(f"p={number(f.p_value)}")
    if f.baseline:
        parts.append(f"baseline: {f.baseline}")
    parts.append(f"window {_window(n)}")
    parts.append(f"data complete until {iso(n.complete_until)}")
    return "; ".join(parts)


def _links(n: Notification) -> list[tuple[str, str]]:
    return [(name, url) for name, url in
            (("Runbook", n.runbook_url), ("Dashboard", n.dashboard_url)) if url]


def _esc(text: str) -> str:
    # Slack reads &, < and > as control characters in mrkdwn; escaped, they show as typed.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_body(n: Notification) -> dict[str, Any]:
    """An incoming-webhook message: a one-line ``text`` fallback and section blocks."""
    f = n.finding
    line = _esc(_line(n))
    fields = [
        ("Observed", number(f.observed)),
        ("Expected", number(f.expected)),
        ("Band", f"{number(f.band_low)} .. {number(f.band_high)}"),
        ("p-value", number(f.p_value)),
        ("Window", _window(n)),
        ("Data complete until", iso(n.complete_until) or ""),
    ]
    if f.baseline:
        fields.append(("Baseline", f.baseline))
    if n.flapping:
        fields.append(("Flapping", "yes: resolves only after a calm period"))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"*{line}*", _SLACK_TEXT_MAX)}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": _cut(f"*{label}*\n{_esc(value)}", _SLACK_FIELD_MAX)}
            for label, value in fields
        ]},
    ]
    links = _links(n)
    if links:
        text = " | ".join(f"<{_esc(url)}|{name}>" for name, url in links)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    return {"text": line, "blocks": blocks}


def alertmanager_body(n: Notification, now: datetime, validity: timedelta) -> list[dict[str, Any]]:
    """Alertmanager API v2 ``postableAlerts``: a list holding this one alert."""
    labels = {
        **n.labels,
        "alertname": n.rule,
        "project": n.project,
        "severity": n.severity,
        "kind": n.kind,
        "fingerprint": n.fingerprint,
    }
    annotations = {"summary": n.summary, "description": _description(n)}
    if n.runbook_url:
        annotations["runbook_url"] = n.runbook_url
    if n.dashboard_url:
        annotations["dashboard_url"] = n.dashboard_url
    if n.status is NotificationKind.RESOLVED:
        # Alertmanager refuses an end before the start.
        ends = max(n.ends_at or now, n.starts_at)
    else:
        # Expires unless re-sent: if this process dies, the alert does not fire forever.
        ends = now + validity
    return [{
        "labels": labels,
        "annotations": annotations,
        "startsAt": iso(n.starts_at),
        "endsAt": iso(ends),
        "generatorURL": n.dashboard_url or "",
    }]


def pagerduty_body(n: Notification, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event; a resolve carries only the keys it needs."""
    if n.status is NotificationKind.RESOLVED:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": n.fingerprint}
    severity = n.severity if n.severity in PAGERDUTY_SEVERITIES else "warning"
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": n.fingerprint,
        "payload": {
            "summary": _cut(_line(n), PAGERDUTY_SUMMARY_MAX),
            "source": "tracklane",
            "severity": severity,
            "timestamp": iso(n.starts_at),
            "component": n.project,
            "group": n.rule,
            "class": n.kind,
            "custom_details": notification_payload(n),
        },
        "links": [{"href": url, "text": name} for name, url in _links(n)],
        "client": "Tracklane",
    }
    if n.dashboard_url:
        event["client_url"] = n.dashboard_url
    return event


def render(
    spec: NotifierSpec, n: Notification, now: datetime, validity: timedelta = DEFAULT_VALIDITY
) -> OutgoingRequest:
    """The request that delivers ``n`` through ``spec``; raises WebhookSecretError."""
    # Lower-case names, so a configured header replaces ours instead of doubling it.
    headers = {"content-type": "application/json", "user-agent": _USER_AGENT}
    headers.update({k.lower(): v for k, v in spec.headers.items()})
    url = spec.url or ""
    body: Any
    if spec.kind == "webhook":
        body = notification_payload(n)
    elif spec.kind == "slack":
        body = slack_body(n)
    elif spec.kind == "alertmanager":
        url = url.rstrip("/") + "/api/v2/alerts"
        body = alertmanager_body(n, now, validity)
    elif spec.kind == "dingtalk":
        url, body = chat_robots.dingtalk_request(spec, n, now)
    elif spec.kind == "wecom":
        body = chat_robots.wecom_body(spec, n)
    elif spec.kind == "feishu":
        body = chat_robots.feishu_body(spec, n, now)
    else:
        # Validated with the rules file; an empty key would be refused by PagerDuty anyway.
        body = pagerduty_body(n, spec.routing_key or "")
    raw = json_body(body)
    if spec.kind == "webhook":
        headers.update(signed_webhook_headers(spec, n.id, now, raw))
    return OutgoingRequest(url, raw, headers)


def signed_webhook_headers(spec: NotifierSpec, msg_id: str, now: datetime,
                           raw: bytes) -> dict[str, str]:
    """Standard Webhooks' headers; the id and timestamp go out unsigned too, as receivers
    dedup on the id."""
    stamp = int(now.astimezone(UTC).timestamp())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(stamp)}
    if spec.secret:
        headers["webhook-signature"] = sign(spec.secret, msg_id, stamp, raw)
    return headers


def _retryable(status: int) -> bool:
    # Server errors, timeouts, "too early" and rate limits pass; any other answer (a 4xx,
    # or a redirect, which is not followed) means the request or the URL is wrong.
    return status >= 500 or status in (408, 425, 429)


async def send(
    client: httpx.AsyncClient,
    spec: NotifierSpec,
    n: Notification,
    now: datetime,
    validity: timedelta = DEFAULT_VALIDITY,
) -> None:
    """Deliver one notification; raises NotifyError unless the receiver answers 2xx.

    ``now`` stamps ``webhook-timestamp`` and sets a firing Alertmanager alert's ``endsAt``
    (``now + validity``). The whole request is bounded by ``spec.timeout``.
    """
    if spec.kind == "email":
        assert spec.email is not None
        await deliver_mail(spec, email_message(spec, spec.email, n))
        return
    try:
        request = render(spec, n, now, validity)
    except ValueError as exc:  # a bad webhook secret, or a body JSON cannot hold
        raise NotifyError(f"{spec.name}: cannot render: {exc}", retryable=False) from None
    await deliver(client, spec, request)


async def deliver(client: httpx.AsyncClient, spec: NotifierSpec, request: OutgoingRequest,
                  ) -> None:
    """POST a rendered request; raises NotifyError unless the receiver accepted it (a 2xx,
    and for the chat robots an error code of 0 in the answer)."""
    timeout = spec.timeout.total_seconds()
    try:
        # httpx bounds each phase (connect, read...); this bounds the request as a whole.
        async with asyncio.timeout(timeout):
            response = await client.post(
                request.url, content=request.body, headers=request.headers, timeout=timeout)
    except TimeoutError:
        raise NotifyError(f"{spec.name}: no answer within {timeout:g}s") from None
    except httpx.HTTPError as exc:
        # The exception text, not the URL: Slack and webhook URLs can carry credentials.
        raise NotifyError(f"{spec.name}: {type(exc).__name__}: {exc}") from None
    status = response.status_code
    if not 200 <= status < 300:
        raise NotifyError(f"{spec.name}: HTTP {status}: {response.text[:200]}",
                          status=status, retryable=_retryable(status))
    if spec.kind in chat_robots.RATE_LIMITED:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        refused = chat_robots.answer_error(spec.kind, answer)
        if refused is not None:
            raise NotifyError(f"{spec.name}: {refused[0]}", status=status,
                              retryable=refused[1])


async def deliver_mail(spec: NotifierSpec, mail: EmailMessage) -> None:
    """Send a composed email; raises NotifyError unless the server took it."""
    timeout = spec.timeout.total_seconds()
    try:
        async with asyncio.timeout(timeout):
            await send_mail(spec, mail, timeout)
    except TimeoutError:
        raise NotifyError(f"{spec.name}: no answer within {timeout:g}s") from None
    except aiosmtplib.SMTPResponseException as exc:
        # 5xx (a refused login, an unknown recipient) will not pass on a retry; 4xx may.
        raise NotifyError(f"{spec.name}: SMTP {exc.code}: {exc.message[:200]}",
                          status=exc.code, retryable=exc.code < 500) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise NotifyError(f"{spec.name}: {type(exc).__name__}: {exc}") from None
