"""JSON forms of findings and alert states, for storage and the API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tracklane.alerts.model import Finding, Verdict, Window
from tracklane.alerts.state import AlertState, Status


def iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ts(raw: str | None) -> datetime | None:
    return None if raw is None else datetime.fromisoformat(raw.replace("Z", "+00:00"))


def finding_to_dict(f: Finding) -> dict[str, Any]:
    return {
        "verdict": f.verdict.value, "clear": f.clear, "summary": f.summary,
        "window": {"start": iso(f.window.start), "end": iso(f.window.end)},
        "observed": f.observed, "expected": f.expected,
        "band": {"low": f.band_low, "high": f.band_high},
        "p_value": f.p_value, "deviation": f.deviation, "samples": dict(f.samples),
        "baseline": f.baseline,
    }


def finding_from_dict(d: dict[str, Any]) -> Finding:
    start, end = _ts(d["window"]["start"]), _ts(d["window"]["end"])
    assert start is not None and end is not None
    return Finding(
        verdict=Verdict(d["verdict"]), clear=bool(d["clear"]), summary=d["summary"],
        window=Window(start, end), observed=d.get("observed"), expected=d.get("expected"),
        band_low=d["band"]["low"], band_high=d["band"]["high"], p_value=d.get("p_value"),
        deviation=d.get("deviation"), samples=dict(d.get("samples") or {}),
        baseline=d.get("baseline", ""),
    )


def state_to_json(s: AlertState) -> str:
    return json.dumps({
        "fingerprint": s.fingerprint, "rule": s.rule, "project": s.project,
        "labels": s.labels, "status": s.status.value, "incident": s.incident,
        "pending_since": iso(s.pending_since), "fired_at": iso(s.fired_at),
        "resolved_at": iso(s.resolved_at), "clear_since": iso(s.clear_since),
        "flapping": s.flapping, "last_condition": s.last_condition,
        "changes": [iso(t) for t in s.changes],
        "delivered": s.delivered,
        "last_sent": {k: iso(v) for k, v in s.last_sent.items()},
        "repeats": s.repeats, "flap_noticed": s.flap_noticed,
        "finding": finding_to_dict(s.finding) if s.finding else None,
        "fired_finding": finding_to_dict(s.fired_finding) if s.fired_finding else None,
    })


def state_from_json(raw: str) -> AlertState:
    d = json.loads(raw)
    return AlertState(
        fingerprint=d["fingerprint"], rule=d["rule"], project=d["project"],
        labels=dict(d["labels"]), status=Status(d["status"]), incident=int(d["incident"]),
        pending_since=_ts(d["pending_since"]), fired_at=_ts(d["fired_at"]),
        resolved_at=_ts(d["resolved_at"]), clear_since=_ts(d["clear_since"]),
        flapping=bool(d["flapping"]), last_condition=d["last_condition"],
        changes=[t for t in (_ts(x) for x in d["changes"]) if t is not None],
        delivered=dict(d["delivered"]),
        last_sent={k: t for k, v in d["last_sent"].items() if (t := _ts(v)) is not None},
        repeats={k: int(v) for k, v in d["repeats"].items()},
        flap_noticed={k: int(v) for k, v in d["flap_noticed"].items()},
        finding=finding_from_dict(d["finding"]) if d["finding"] else None,
        fired_finding=finding_from_dict(d["fired_finding"]) if d["fired_finding"] else None,
    )
