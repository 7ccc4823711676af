"""The evaluation loop body: closed minutes in, transitions and notifications out.

Each ``tick`` reads the pipeline's progress, evaluates ``pipeline_stale`` rules, then every
business rule over the window ending at the last closed minute (a minute is closed once
the watermark has passed its end plus the allowed lateness). Late events change the
rollups and so the next tick's finding, but an alert is one state per rule: a re-evaluation
can move it, never page for the same incident twice.

Notifications are level-triggered: every tick compares what each notifier should know
(firing incident n, or its resolve) with what it was delivered, and submits the difference.
State is persisted, so after a restart the comparison resumes where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tracklane.alerts.detectors import BusinessRule, detect, detect_pipeline
from tracklane.alerts.metrics import AlertMetrics
from tracklane.alerts.model import (
    Finding,
    Notification,
    NotificationKind,
    Outbox,
    PipelineProgress,
    Rollups,
)
from tracklane.alerts.rules import AlertsFile, NotifierSpec, PipelineStaleRule, Rule
from tracklane.alerts.silences import Silence, silenced
from tracklane.alerts.state import AlertState, Policy, Status, Transition, advance, fingerprint
from tracklane.alerts.storage import AlertStore
from tracklane.clock import Clock

log = logging.getLogger(__name__)

ProgressSource = Callable[[], PipelineProgress]


@dataclass(frozen=True, slots=True)
class TickReport:
    now: datetime
    complete_until: datetime | None
    findings: dict[str, Finding]
    held: frozenset[str]
    transitions: list[Transition]
    submitted: int


def floor_minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def alert_labels(rule: Rule) -> dict[str, str]:
    """The labels silences match on and notifications carry."""
    return {**rule.labels, "rule": rule.name, "kind": rule.kind, "severity": rule.severity}


def policy(rule: Rule) -> Policy:
    return Policy(rule.for_, rule.keep_firing_for, rule.flap_window, rule.flap_changes,
                  rule.flap_cooldown)


class AlertEngine:
    """Evaluates rules on demand (``tick``); the caller owns the cadence and the clock."""

    def __init__(
        self,
        config: AlertsFile,
        rollups: Rollups,
        progress: ProgressSource,
        store: AlertStore,
        outbox: Outbox,
        clock: Clock,
        metrics: AlertMetrics | None = None,
    ) -> None:
        self._config = config
        self._rules = {r.name: r for r in config.rules}
        self._notifiers = {n.name: n for n in config.notifiers}
        self._rollups = rollups
        self._progress = progress
        self._store = store
        self._outbox = outbox
        self._clock = clock
        self._metrics = metrics or AlertMetrics()
        # Delivery callbacks may arrive from another thread, or inside submit itself.
        self._lock = threading.RLock()
        self._states: dict[str, AlertState] = {}
        self._inflight: set[tuple[str, str]] = set()
        self._dirty: set[str] = set()
        wanted = {fingerprint(r.name, r.project, r.labels): r for r in config.rules}
        # Resume stored alerts of the rules still configured; a removed rule's alert is left.
        for state in store.load_states():
            if state.fingerprint in wanted:
                self._states[state.fingerprint] = state
        for fp, rule in wanted.items():
            self._states.setdefault(fp, AlertState(fp, rule.name, rule.project, alert_labels(rule)))

    def state_of(self, rule_name: str) -> AlertState:
        rule = self._rules[rule_name]
        return self._states[fingerprint(rule.name, rule.project, rule.labels)]

    def tick(self) -> TickReport:
        started = time.perf_counter()
        now = self._clock()
        progress = self._progress()
        lateness = self._config.evaluation.lateness
        complete_until = (closed_window_end(progress.watermark, lateness)
                          if progress.watermark is not None else None)
        findings: dict[str, Finding] = {}
        transitions: list[Transition] = []
        held: set[str] = set()
        with self._lock:
            for rule in self._config.rules:
                if isinstance(rule, PipelineStaleRule):
                    finding = detect_pipeline(rule, progress, now)
                    findings[rule.name] = finding
                    transitions += self._advance(rule, finding, now)
                    if self.state_of(rule.name).status in (Status.PENDING, Status.FIRING):
                        held.add(rule.project)
            for rule in self._config.rules:
                if isinstance(rule, PipelineStaleRule) or complete_until is None:
                    continue
                if "*" in held or rule.project in held:
                    self._metrics.held.labels(rule.name).inc()
                    continue
                finding_or_none = self._detect(rule, complete_until)
                if finding_or_none is not None:
                    findings[rule.name] = finding_or_none
                    transitions += self._advance(rule, finding_or_none, now)
            self._persist(transitions, now)
            submitted = self._reconcile(now, complete_until, self._store.silences(None, now))
        if complete_until is not None:
            self._metrics.complete_until.set(complete_until.timestamp())
        self._metrics.tick_seconds.observe(time.perf_counter() - started)
        return TickReport(now, complete_until, findings, frozenset(held), transitions, submitted)

    def _detect(self, rule: BusinessRule, end: datetime) -> Finding | None:
        try:
            return detect(rule, self._rollups, end)
        except Exception:
            # One broken rule (or a store hiccup) must not stop the others.
            log.exception("rule evaluation failed", extra={"rule": rule.name})
            self._metrics.errors.labels(rule.name).inc()
            return None

    def _advance(self, rule: Rule, finding: Finding, now: datetime) -> list[Transition]:
        self._metrics.evaluations.labels(rule.name, finding.verdict.value).inc()
        state = self.state_of(rule.name)
        moved = advance(state, finding, now, policy(rule))
        # Saved each tick anyway: the flap history and the last finding change too.
        self._dirty.add(state.fingerprint)
        for t in moved:
            self._metrics.transitions.labels(rule.name, t.to_status.value).inc()
            log.info("alert transition", extra={
                "rule": rule.name, "project": rule.project, "from": t.from_status.value,
                "to": t.to_status.value, "incident": t.incident, "summary": finding.summary})
        self._metrics.set_state(rule.name, rule.project, rule.severity, state.status)
        return moved

    def _persist(self, transitions: Sequence[Transition], now: datetime) -> None:
        try:
            if transitions:
                self._store.record_transitions(transitions)
            if self._dirty:
                self._store.save_states([self._states[fp] for fp in self._dirty], now)
                self._dirty.clear()
        except Exception:
            log.exception("could not store alert state; will retry next tick")

    # -- notifications -------------------------------------------------------------------

    def _reconcile(
        self, now: datetime, complete_until: datetime | None, silences: list[Silence]
    ) -> int:
        submitted = 0
        for state in list(self._states.values()):
            rule = self._rules.get(state.rule)
            if rule is None:
                continue
            muted = silenced(silences, state.project, alert_labels(rule), now)
            for name in rule.notify:
                if (state.fingerprint, name) in self._inflight:
                    continue
                send = self._due(state, rule, self._notifiers[name], muted, now)
                if send is None:
                    continue
                status, repeat, flap_notice = send
                note = self._notification(state, rule, status, repeat, flap_notice, now,
                                          complete_until)
                self._submit(state, name, note)
                submitted += 1
        return submitted

    def _due(
        self, state: AlertState, rule: Rule, spec: NotifierSpec, muted: bool, now: datetime
    ) -> tuple[NotificationKind, int, bool] | None:
        """What this notifier should be sent now, if anything: (status, repeat, flapping)."""
        firing_key = f"firing:{state.incident}"
        delivered = state.delivered.get(spec.name)
        if state.status is not Status.FIRING:
            # Paged and no longer firing: the resolve is owed, silenced or not.
            return (NotificationKind.RESOLVED, 0, False) if delivered == firing_key else None
        if muted:
            return None
        if delivered != firing_key:
            return NotificationKind.FIRING, 0, state.flapping
        repeats = state.repeats.get(spec.name, 0)
        if state.flapping and state.flap_noticed.get(spec.name) != state.incident:
            return NotificationKind.FIRING, repeats, True
        # Alertmanager forgets alerts it is not reminded of; the others get a reminder.
        interval = (self._config.evaluation.alertmanager_resend if spec.kind == "alertmanager"
                    else rule.repeat_interval)
        last = state.last_sent.get(spec.name)
        if last is not None and now - last >= interval:
            return NotificationKind.FIRING, repeats + 1, state.flapping
        return None

    def _notification(
        self, state: AlertState, rule: Rule, status: NotificationKind, repeat: int,
        flapping: bool, now: datetime, complete_until: datetime | None,
    ) -> Notification:
        finding = state.finding or state.fired_finding
        assert finding is not None  # a state that fired has seen a finding
        suffix = "-flapping" if flapping else ""
        summary = rule.summary or finding.summary
        return Notification(
            id=f"{state.fingerprint}-{state.incident}-{status.value}-{repeat}{suffix}",
            status=status,
            fingerprint=state.fingerprint,
            rule=rule.name,
            project=state.project,
            kind=rule.kind,
            severity=rule.severity,
            labels=alert_labels(rule),
            summary=f"{'[flapping] ' if flapping else ''}{summary}",
            finding=finding,
            complete_until=complete_until or now,
            starts_at=state.fired_at or now,
            ends_at=state.resolved_at if status is NotificationKind.RESOLVED else None,
            runbook_url=rule.runbook_url,
            dashboard_url=rule.dashboard_url or self._config.evaluation.dashboard_url,
            repeat=repeat,
            flapping=flapping,
        )

    def _submit(self, state: AlertState, notifier: str, note: Notification) -> None:
        key = (state.fingerprint, notifier)
        self._inflight.add(key)

        def done(ok: bool) -> None:
            with self._lock:
                self._inflight.discard(key)
                if not ok:
                    return
                if note.status is NotificationKind.RESOLVED:
                    state.delivered[notifier] = f"resolved:{state.incident}"
                else:
                    state.delivered[notifier] = f"firing:{state.incident}"
                    state.repeats[notifier] = note.repeat
                    if note.flapping:
                        state.flap_noticed[notifier] = state.incident
                state.last_sent[notifier] = self._clock()
                self._dirty.add(state.fingerprint)

        self._outbox.submit(notifier, note, done)

    def flush(self) -> None:
        """Store states changed by deliveries since the last tick (e.g. before stopping)."""
        with self._lock:
            self._persist([], self._clock())


def closed_window_end(watermark: datetime, lateness: timedelta) -> datetime:
    """The end of the last closed minute for a watermark."""
    return floor_minute(watermark - lateness)
