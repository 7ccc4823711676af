"""ClickHouse tables of the alert engine: transitions, state and silences."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tracklane.alerts.codec import finding_to_dict, iso, state_from_json, state_to_json
from tracklane.alerts.model import Finding
from tracklane.alerts.silences import Silence
from tracklane.alerts.state import AlertState, Transition

_TRANSITION_COLUMNS = [
    "at", "project_id", "rule", "fingerprint", "kind", "severity", "labels", "from_status",
    "to_status", "incident", "flapping", "verdict", "summary", "observed", "expected",
    "p_value", "window_start", "window_end", "finding",
]
_SILENCE_COLUMNS = ["id", "project_id", "matchers", "starts_at", "ends_at", "created_by",
                    "comment", "created_at", "version"]


class _Versions:
    """Strictly increasing row versions, so the last save wins even within a millisecond."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns())
            return self._last


class ClickHouseAlertStore:
    """The AlertStore of a running service."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._versions = _Versions()

    def load_states(self) -> list[AlertState]:
        rows = self._client.query(
            "SELECT argMax(state, version) FROM alert_state GROUP BY fingerprint"
        ).result_rows
        return [state_from_json(r[0]) for r in rows]

    def save_states(self, states: Sequence[AlertState], now: datetime) -> None:
        if not states:
            return
        self._client.insert(
            "alert_state",
            [[s.fingerprint, s.project, s.rule, s.status.value, state_to_json(s),
              self._versions.next(), now] for s in states],
            column_names=["fingerprint", "project_id", "rule", "status", "state", "version",
                          "updated_at"],
        )

    def record_transitions(self, transitions: Sequence[Transition]) -> None:
        if not transitions:
            return
        self._client.insert("alerts", [_transition_row(t) for t in transitions],
                            column_names=_TRANSITION_COLUMNS)

    def silences(self, project: str | None, now: datetime) -> list[Silence]:
        where = "WHERE project_id = %(p)s" if project is not None else ""
        rows = self._client.query(
            f"SELECT id, argMax(tuple(project_id, matchers, starts_at, ends_at, created_by, "
            f"comment, created_at), version) AS s FROM silences {where} GROUP BY id "
            f"HAVING s.4 > {_MS_PARAM % 'now'} ORDER BY s.3",
            parameters={"p": project, "now": _ms(now)},
        ).result_rows
        return [Silence(r[0], r[1][0], dict(r[1][1]), _utc(r[1][2]), _utc(r[1][3]), r[1][4],
                        r[1][5], _utc(r[1][6])) for r in rows]

    def save_silence(self, silence: Silence) -> None:
        s = silence
        self._client.insert(
            "silences",
            [[s.id, s.project, s.matchers, s.starts_at, s.ends_at, s.created_by, s.comment,
              s.created_at, self._versions.next()]],
            column_names=_SILENCE_COLUMNS,
        )

def list_transitions(
    client: Client, project: str, since: datetime, until: datetime, limit: int,
    rule: str | None = None,
) -> list[dict[str, Any]]:
    """A project's alert transitions in [since, until), newest first, as API rows."""
    rule_filter = "AND rule = %(r)s" if rule else ""
    rows = client.query(
        "SELECT at, rule, fingerprint, kind, severity, labels, from_status, to_status, "
        "incident, flapping, summary, finding FROM alerts "
        f"WHERE project_id = %(p)s AND at >= {_MS_PARAM % 's'} AND at < {_MS_PARAM % 'u'} "
        f"{rule_filter} ORDER BY at DESC, to_status LIMIT %(n)s",
        parameters={"p": project, "s": _ms(since), "u": _ms(until), "n": limit, "r": rule},
    ).result_rows
    return [{
        "at": iso(_utc(r[0])), "rule": r[1], "fingerprint": r[2], "kind": r[3], "severity": r[4],
        "labels": dict(r[5]), "from": r[6], "to": r[7], "incident": int(r[8]),
        "flapping": bool(r[9]), "summary": r[10], "finding": json.loads(r[11]),
    } for r in rows]


def current_states(client: Client, project: str) -> list[AlertState]:
    rows = client.query(
        "SELECT argMax(state, version) FROM alert_state WHERE project_id = %(p)s "
        "GROUP BY fingerprint",
        parameters={"p": project},
    ).result_rows
    return sorted((state_from_json(r[0]) for r in rows), key=lambda s: s.rule)


def _transition_row(t: Transition) -> list[Any]:
    f: Finding = t.finding
    return [
        t.at, t.project, t.rule, t.fingerprint, t.labels.get("kind", ""),
        t.labels.get("severity", ""), t.labels, t.from_status.value, t.to_status.value,
        t.incident, int(t.flapping), f.verdict.value, f.summary, f.observed, f.expected,
        f.p_value, f.window.start, f.window.end, json.dumps(finding_to_dict(f)),
    ]


# Datetime parameters are sent with whole seconds; these keep the milliseconds.
_MS_PARAM = "toDateTime64(%%(%s)s, 3, 'UTC')"


def _ms(ts: datetime) -> str:
    return _utc(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def report_deliveries(client: Client, report: str, period_start: datetime) -> set[str]:
    """The notifiers a report's period has gone to (alerts/report_service.py)."""
    rows = client.query(
        "SELECT DISTINCT notifier FROM report_runs WHERE report = %(r)s "
        f"AND period_start = {_MS_PARAM % 's'}",
        parameters={"r": report, "s": _ms(period_start)},
    ).result_rows
    return {str(r[0]) for r in rows}


def report_ever_sent(client: Client, report: str) -> bool:
    return bool(client.command(
        "SELECT count() > 0 FROM report_runs WHERE report = %(r)s", parameters={"r": report}))


def record_report_delivery(client: Client, report: str, start: datetime, end: datetime,
                           notifier: str, late: bool, at: datetime) -> None:
    client.insert("report_runs", [[report, start, end, notifier, int(late), at]],
                  column_names=["report", "period_start", "period_end", "notifier", "late",
                                "sent_at"])
