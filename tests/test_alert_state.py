"""The alert state machine on an injected clock: pending, firing, hysteresis, flapping."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tracklane.alerts.model import Finding, Verdict, Window
from tracklane.alerts.state import AlertState, Policy, Status, advance, fingerprint

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
POLICY = Policy(for_=2 * MIN, keep_firing_for=3 * MIN, flap_window=60 * MIN, flap_changes=3,
                flap_cooldown=30 * MIN)


def finding(verdict: Verdict, clear: bool) -> Finding:
    return Finding(verdict, clear, f"{verdict.value} clear={clear}", Window(T0, T0 + MIN))


BREACH = finding(Verdict.BREACH, False)
CLEAR = finding(Verdict.OK, True)
BETWEEN = finding(Verdict.OK, False)  # no longer at the fire threshold, not yet clear
INSUFFICIENT = finding(Verdict.INSUFFICIENT, False)


def new_state() -> AlertState:
    return AlertState(fingerprint("r", "p", {}), "r", "p", {})


def run(
    state: AlertState, steps: list[Finding], start: datetime = T0, policy: Policy = POLICY
) -> list[Status]:
    """Feed one finding per minute; return the status after each."""
    out = []
    for i, f in enumerate(steps):
        advance(state, f, start + i * MIN, policy)
        out.append(state.status)
    return out


def test_fires_only_after_the_breach_holds_for_its_duration() -> None:
    state = new_state()
    assert run(state, [BREACH, BREACH, BREACH]) == [Status.PENDING, Status.PENDING, Status.FIRING]
    assert state.incident == 1
    assert state.fired_at == T0 + 2 * MIN


def test_a_short_breach_never_fires() -> None:
    state = new_state()
    assert run(state, [BREACH, CLEAR, BREACH, BETWEEN]) == [
        Status.PENDING, Status.INACTIVE, Status.PENDING, Status.INACTIVE]
    assert state.incident == 0


def test_resolves_only_after_clear_for_keep_firing_for() -> None:
    state = new_state()
    statuses = run(state, [BREACH] * 3 + [CLEAR, CLEAR, CLEAR, CLEAR])
    assert statuses[2:] == [Status.FIRING, Status.FIRING, Status.FIRING, Status.FIRING,
                            Status.RESOLVED]
    assert state.resolved_at == T0 + 6 * MIN


def test_hysteresis_between_thresholds_keeps_it_firing() -> None:
    state = new_state()
    run(state, [BREACH] * 3 + [BETWEEN] * 20)
    assert state.status is Status.FIRING
    assert state.clear_since is None


def test_a_blip_of_breach_restarts_the_keep_firing_clock() -> None:
    state = new_state()
    no_flap = replace(POLICY, flap_changes=10)
    statuses = run(state, [BREACH] * 3 + [CLEAR, CLEAR, BREACH, CLEAR, CLEAR, CLEAR, CLEAR],
                   policy=no_flap)
    assert Status.RESOLVED not in statuses[:-1]
    assert statuses[-1] is Status.RESOLVED


def test_insufficient_data_neither_fires_nor_resolves() -> None:
    state = new_state()
    assert run(state, [INSUFFICIENT] * 5) == [Status.INACTIVE] * 5
    run(state, [BREACH] * 3 + [INSUFFICIENT] * 10, T0 + 10 * MIN)
    assert state.status is Status.FIRING


def test_flapping_holds_the_alert_open_instead_of_paging_again() -> None:
    state = new_state()
    # Breach 3 minutes, clear 5 minutes, over and over: without flap detection every cycle
    # would resolve and page again.
    cycle = [BREACH] * 3 + [CLEAR] * 5
    statuses = run(state, cycle * 6)
    assert state.flapping
    assert state.status is Status.FIRING
    # It fired at most twice (the flap is detected within two cycles), then held.
    assert state.incident <= 2
    # Once calm for the cooldown, it resolves and flapping is over.
    after = run(state, [CLEAR] * 31, T0 + len(statuses) * MIN)
    # Held far past keep_firing_for (3 min), resolved after the 30 min cooldown.
    assert after[20] is Status.FIRING and after[-1] is Status.RESOLVED
    assert not state.flapping


def test_fingerprint_is_stable_and_label_order_free() -> None:
    one, other = {"a": "1", "b": "2"}, {"b": "2", "a": "1"}
    assert fingerprint("r", "p", one) == fingerprint("r", "p", other)
    assert fingerprint("r", "p", {}) != fingerprint("r", "q", {})
