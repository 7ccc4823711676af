"""The evaluation harness on a fixed seed: the acceptance numbers of the alerting issue."""

from __future__ import annotations

from tracklane.alerts.harness import acceptance, evaluate, table


def test_detectors_meet_their_targets_on_seeded_traffic() -> None:
    runs, scores = evaluate(seed=7)
    print("\n" + table(scores))
    checks = acceptance(runs, scores)
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, failed
    assert {c.name for c in checks} >= {
        "50% conversion drop notified, p90 delay <= 10 min",
        "event at >= 10/min that stops notified within 3 closed minutes",
        "negative controls <= 0.1 false notifications per rule per day",
        "every detected incident resolved",
        "pipeline stall pages pipeline_stale only",
    }
    # Every injected incident is caught by at least one of its rules.
    for run in runs:
        for incident in run.scenario.incidents:
            assert any(s.detected for s in scores
                       if s.scenario == run.scenario.name and s.rule in incident.rules)
