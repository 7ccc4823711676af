"""Alert state as a plain state machine driven by findings and an injected time.

inactive → pending (the breach must hold ``for``) → firing → resolved (clear for
``keep_firing_for``) → pending … Firing needs a breach at the fire threshold; resolving
needs the looser clear threshold, so a value hovering near the line does not toggle.
A condition that changes too often within ``flap_window`` marks the alert flapping: it
then resolves only after ``flap_cooldown`` of being clear.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from tracklane.alerts.model import Finding, Verdict


class Status(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Policy:
    """The timing knobs of one rule."""

    for_: timedelta
    keep_firing_for: timedelta
    flap_window: timedelta
    flap_changes: int
    flap_cooldown: timedelta


@dataclass(slots=True)
class AlertState:
    """One alert: a rule and a label set. Persisted, so a restart resumes it."""

    fingerprint: str
    rule: str
    project: str
    labels: dict[str, str]
    status: Status = Status.INACTIVE
    incident: int = 0  # number of the current (or last) firing period
    pending_since: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    clear_since: datetime | None = None
    flapping: bool = False
    last_condition: bool | None = None  # True breach, False clear
    changes: list[datetime] = field(default_factory=list)
    # Per notifier: the last status delivered ("firing:3", "resolved:3"), when, and the
    # incident whose flapping notice went out.
    delivered: dict[str, str] = field(default_factory=dict)
    last_sent: dict[str, datetime] = field(default_factory=dict)
    repeats: dict[str, int] = field(default_factory=dict)
    flap_noticed: dict[str, int] = field(default_factory=dict)
    finding: Finding | None = None  # the last finding, for notifications and the API
    fired_finding: Finding | None = None  # the finding that made it fire


@dataclass(frozen=True, slots=True)
class Transition:
    at: datetime
    fingerprint: str
    rule: str
    project: str
    labels: dict[str, str]
    from_status: Status
    to_status: Status
    incident: int
    flapping: bool
    finding: Finding


def fingerprint(rule: str, project: str, labels: dict[str, str]) -> str:
    """Stable across restarts and processes: the dedup key for every notifier."""
    parts = [f"rule={rule}", f"project={project}"] + [f"{k}={v}" for k, v in sorted(labels.items())]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def advance(state: AlertState, finding: Finding, now: datetime, policy: Policy) -> list[Transition]:
    """Feed one finding into the state; returns the transitions it caused (often none)."""
    state.finding = finding
    breach = finding.verdict is Verdict.BREACH
    _track_changes(state, breach, finding.clear, now, policy)
    before = state.status
    out: list[Transition] = []

    def move(to: Status) -> None:
        out.append(Transition(now, state.fingerprint, state.rule, state.project, dict(state.labels),
                              state.status, to, state.incident, state.flapping, finding))
        state.status = to

    if state.status in (Status.INACTIVE, Status.RESOLVED) and breach:
        state.pending_since = now
        move(Status.PENDING)
    if state.status is Status.PENDING:
        if not breach:
            state.pending_since = None
            move(Status.INACTIVE)
        elif state.pending_since is not None and now - state.pending_since >= policy.for_:
            state.incident += 1
            state.fired_at = now
            state.fired_finding = finding
            state.clear_since = None
            state.resolved_at = None
            state.flapping = len(state.changes) >= policy.flap_changes
            move(Status.FIRING)
    elif state.status is Status.FIRING and before is Status.FIRING:
        if finding.clear:
            state.clear_since = state.clear_since or now
        else:
            state.clear_since = None
        if not state.flapping and len(state.changes) >= policy.flap_changes:
            state.flapping = True
        hold = policy.flap_cooldown if state.flapping else policy.keep_firing_for
        if state.clear_since is not None and now - state.clear_since >= hold:
            state.resolved_at = now
            move(Status.RESOLVED)
            state.flapping = False
            state.pending_since = None
    return out


def _track_changes(
    state: AlertState, breach: bool, clear: bool, now: datetime, policy: Policy
) -> None:
    """Count flips between breach and clear; values between the thresholds flip nothing."""
    condition = True if breach else (False if clear else None)
    if condition is not None:
        if state.last_condition is not None and condition != state.last_condition:
            state.changes.append(now)
        state.last_condition = condition
    horizon = now - policy.flap_window
    state.changes = [t for t in state.changes if t > horizon]
