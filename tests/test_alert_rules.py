"""The rules file: short forms work, bad files fail at start naming the rule and the field."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.up_process import wait_for
from tracklane.alerts.rules import ConversionRule, RulesFileError, parse_rules
from tracklane.alerts.service import check_projects
from tracklane.broker import free_port
from tracklane.processes import Child

SHORT = """
notifiers:
  - name: oncall
    kind: webhook
    url: http://127.0.0.1:9999/hook
    secret: s3cret
rules:
  - name: checkout-conversion
    project: demo
    kind: conversion_drop
    from_event: add_to_cart
    to_event: purchase
    severity: critical
    notify: [oncall]
    runbook_url: https://example.com/runbooks/checkout
"""


def test_the_short_form_gets_sensible_defaults() -> None:
    rule = parse_rules(SHORT).rules[0]
    assert isinstance(rule, ConversionRule)
    assert rule.window == timedelta(minutes=5) and rule.margin == 0.2
    assert rule.min_samples == 200 and rule.for_ == timedelta(0)


def test_overrides_and_durations() -> None:
    text = SHORT + "    window: 90s\n    for: 2m\n    margin: 0.3\n"
    rule = parse_rules(text).rules[0]
    assert isinstance(rule, ConversionRule)
    assert rule.window == timedelta(seconds=90) and rule.for_ == timedelta(minutes=2)


@pytest.mark.parametrize(("change", "message"), [
    ("    to_event: purchase\n", "rule 'checkout-conversion': to_event: Field required"),
    ("    severity: critical\n", "rule 'checkout-conversion': severity: Input should be"),
    ("    notify: [oncall]\n", "rule 'checkout-conversion': notify: no notifier named 'pager'"),
    ("    from_event: add_to_cart\n", "rule 'checkout-conversion': window: not a duration"),
    ("    kind: conversion_drop\n", "rule 'checkout-conversion': kind: Input tag 'conversion'"),
])
def test_errors_name_the_rule_and_the_field(change: str, message: str) -> None:
    replacement = {
        "    to_event: purchase\n": "",
        "    severity: critical\n": "    severity: loud\n",
        "    notify: [oncall]\n": "    notify: [pager]\n",
        "    from_event: add_to_cart\n": "    from_event: add_to_cart\n    window: soon\n",
        "    kind: conversion_drop\n": "    kind: conversion\n",
    }[change]
    with pytest.raises(RulesFileError) as err:
        parse_rules(SHORT.replace(change, replacement), "alerts.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("alerts.yaml: ")


def test_unknown_fields_and_projects_are_errors() -> None:
    with pytest.raises(RulesFileError, match="rule 'checkout-conversion': treshold: Extra"):
        parse_rules(SHORT + "    treshold: 3\n")
    with pytest.raises(RulesFileError, match="rule 'checkout-conversion': project: no project"):
        check_projects(parse_rules(SHORT), {"shop"})


def test_a_bad_rules_file_stops_up_before_it_starts(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(SHORT.replace("    to_event: purchase\n", ""))
    tracklane = str(Path(sys.executable).parent / "tracklane")
    result = subprocess.run(
        [tracklane, "up", "--data-dir", str(tmp_path / "data"), "--alerts-file", str(rules),
         "--port", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"tracklane: alerts file {rules}: rule 'checkout-conversion': to_event: " \
           "Field required" in result.stderr
    assert "Traceback" not in result.stderr
    missing = subprocess.run([tracklane, "alerts"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "TRACKLANE_ALERTS_FILE" in missing.stderr


def test_tracklane_alerts_runs_alone_and_stops_cleanly(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(SHORT + """  - name: pipeline
    project: demo
    kind: pipeline_stale
evaluation:
  interval: 1s
""")
    port = free_port()
    # As compose does: the schema is `migrate`'s, the alerts only check it.
    subprocess.run([str(Path(sys.executable).parent / "tracklane"), "migrate", "--store",
                    f"chdb://{tmp_path / 'store'}"], cwd=tmp_path, check=True, timeout=120,
                   capture_output=True)
    log = tmp_path / "alerts.log"
    child = Child([str(Path(sys.executable).parent / "tracklane"), "alerts", "--store",
                   f"chdb://{tmp_path / 'store'}", "--alerts-file", str(rules),
                   "--metrics-port", str(port)], stdout=log, stderr=log, cwd=tmp_path)
    try:
        def evaluated() -> bool:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            except httpx.HTTPError:
                return False
            # No sink has reported yet: the pipeline rule says so, and nothing pages.
            return ('tracklane_alert_evaluations_total{rule="pipeline",'
                    'verdict="insufficient_data"}') in text
        wait_for(evaluated, 60, "tracklane alerts did not evaluate")
    finally:
        code = child.stop(signal.SIGTERM, 30)
    err = log.read_text()
    assert code == 0, err
    assert "Traceback" not in err
