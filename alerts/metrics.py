"""Prometheus metrics of the alert engine, on a registry passed in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tracklane.alerts.state import Status


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.evaluations = Counter(
            "tracklane_alert_evaluations", "Rule evaluations, by verdict.", ["rule", "verdict"],
            registry=r)
        self.errors = Counter(
            "tracklane_alert_evaluation_errors", "Rule evaluations that raised.", ["rule"],
            registry=r)
        self.held = Counter(
            "tracklane_alert_held", "Evaluations skipped while the project's pipeline is stale.",
            ["rule"], registry=r)
        self.transitions = Counter(
            "tracklane_alert_transitions", "Alert state transitions, by target state.",
            ["rule", "to"], registry=r)
        # Like Prometheus's ALERTS series: 1 for the state each alert is in, 0 otherwise.
        self.state = Gauge(
            "tracklane_alert_state", "Current state of each alert (1 = in this state).",
            ["rule", "project", "severity", "state"], registry=r)
        self.complete_until = Gauge(
            "tracklane_alert_complete_until_seconds",
            "Unix time up to which minutes are closed and evaluated.", registry=r)
        self.tick_seconds = Histogram(
            "tracklane_alert_tick_seconds", "Time to evaluate every rule once.", registry=r)

    def set_state(self, rule: str, project: str, severity: str, status: Status) -> None:
        for s in Status:
            self.state.labels(rule, project, severity, s.value).set(1 if s is status else 0)
