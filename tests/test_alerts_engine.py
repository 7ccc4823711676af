"""The engine with its ClickHouse state: restarts, silences, reminders and Alertmanager
re-sends, against a controlled rollup view and a real HTTP receiver."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from tracklane.alerts.clickhouse_state import ClickHouseAlertStore, list_transitions
from tracklane.alerts.engine import AlertEngine
from tracklane.alerts.model import Notification, PipelineProgress, Totals
from tracklane.alerts.rules import AlertsFile, parse_rules
from tracklane.alerts.silences import Silence, new_silence_id
from tracklane.alerts.state import Status

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


@dataclass
class FakeClock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class ErrorCounts:
    """Rollups where the 'error' event has whatever count the test sets."""

    count: int = 0

    def minute_counts(self, project: str, event: str, start: datetime, end: datetime) -> list[int]:
        minutes = int((end - start).total_seconds() // 60)
        return [self.count // 5] * minutes

    def totals(self, project: str, event: str, start: datetime, end: datetime) -> Totals:
        return Totals(self.count, self.count, 0.0)

    def history_start(self, project: str) -> datetime | None:
        return T0 - timedelta(days=30)


@dataclass
class Recorder:
    """An outbox that delivers at once, or (``deliver=False``) never hears back, as when
    the process dies with the send in flight."""

    deliver: bool = True
    sent: list[tuple[str, Notification]] = field(default_factory=list)

    def submit(self, notifier: str, n: Notification, on_done: Callable[[bool], None]) -> None:
        self.sent.append((notifier, n))
        if self.deliver:
            on_done(True)


def rules(project: str, name: str, extra: str = "") -> AlertsFile:
    return parse_rules(f"""
notifiers:
  - {{name: hook, kind: webhook, url: "http://127.0.0.1:9/hook"}}
  - {{name: am, kind: alertmanager, url: "http://127.0.0.1:9"}}
rules:
  - name: {name}
    project: {project}
    kind: threshold
    metric: count
    event: error
    op: above
    value: 100
    clear_value: 50
    for: 2m
    keep_firing_for: 2m
    repeat_interval: 1h
    notify: [hook, am]
{extra}
""")


class Harness:
    def __init__(self, store: Client, extra: str = "") -> None:
        self.project = f"p_{uuid.uuid4().hex[:8]}"
        self.rule = f"errors_{uuid.uuid4().hex[:6]}"
        self.config = rules(self.project, self.rule, extra)
        self.store = ClickHouseAlertStore(store)
        self.client = store
        self.clock = FakeClock()
        self.data = ErrorCounts()

    def engine(self, outbox: Recorder) -> AlertEngine:
        def progress() -> PipelineProgress:
            return PipelineProgress(self.clock.now - timedelta(seconds=5), 0, self.clock.now)
        return AlertEngine(self.config, self.data, progress, self.store, outbox, self.clock)

    def run(self, engine: AlertEngine, minutes: int, count: int) -> None:
        self.data.count = count
        for _ in range(minutes):
            self.clock.now += MIN
            engine.tick()


def sent(outbox: Recorder, notifier: str = "hook") -> list[Notification]:
    return [n for name, n in outbox.sent if name == notifier]


def statuses(outbox: Recorder, notifier: str = "hook") -> list[str]:
    return [n.status.value + ("+" * n.repeat) for n in sent(outbox, notifier)]


def test_a_restart_mid_incident_neither_repages_nor_loses_the_resolve(store: Client) -> None:
    h = Harness(store)
    first = Recorder()
    engine = h.engine(first)
    h.run(engine, 5, count=500)
    assert engine.state_of(h.rule).status is Status.FIRING
    assert statuses(first) == ["firing"]
    engine.flush()

    # A new engine on the same store: the same incident, still breaching, is not re-paged.
    second = Recorder()
    restarted = h.engine(second)
    assert restarted.state_of(h.rule).status is Status.FIRING
    h.run(restarted, 5, count=500)
    assert statuses(second) == []
    # The incident ends: the resolve goes out from the new process.
    h.run(restarted, 4, count=0)
    assert statuses(second) == ["resolved"]
    resolve, page = sent(second)[0], sent(first)[0]
    assert resolve.fingerprint == page.fingerprint
    assert resolve.starts_at == page.starts_at and resolve.ends_at is not None
    assert resolve.finding.observed == 0

    history = list_transitions(store, h.project, T0, T0 + timedelta(days=1), 100)
    assert [t["to"] for t in reversed(history)] == ["pending", "firing", "resolved"]


def test_a_send_lost_in_a_crash_is_sent_again_with_the_same_id(store: Client) -> None:
    h = Harness(store)
    lost = Recorder(deliver=False)
    engine = h.engine(lost)
    h.run(engine, 5, count=500)
    assert statuses(lost) == ["firing"]  # submitted once; in flight, so not re-submitted
    engine.flush()

    again = Recorder()
    h.run(h.engine(again), 1, count=500)
    assert statuses(again) == ["firing"]
    # Receivers deduplicate on the id (webhook-id, PagerDuty's dedup key is the fingerprint).
    assert sent(again)[0].id == sent(lost)[0].id


def test_silence_holds_the_page_until_it_expires(store: Client) -> None:
    h = Harness(store)
    h.store.save_silence(Silence(new_silence_id(), h.project, {"rule": h.rule}, T0,
                                 T0 + timedelta(minutes=10), "oncall", "deploy", T0))
    outbox = Recorder()
    engine = h.engine(outbox)
    h.run(engine, 5, count=500)
    assert engine.state_of(h.rule).status is Status.FIRING
    assert statuses(outbox) == []
    h.run(engine, 6, count=500)  # the silence ends at T0 + 10 min
    assert statuses(outbox) == ["firing"]


def test_long_firing_alerts_are_reminded_and_alertmanager_refreshed(store: Client) -> None:
    h = Harness(store)
    outbox = Recorder()
    engine = h.engine(outbox)
    h.run(engine, 3 + 125, count=500)
    assert statuses(outbox, "hook") == ["firing", "firing+", "firing++"]
    # Alertmanager is re-sent every minute so it never expires an active alert.
    assert len(statuses(outbox, "am")) >= 120


@pytest.mark.parametrize("count", [80])
def test_hysteresis_keeps_firing_between_clear_and_fire_values(store: Client, count: int) -> None:
    h = Harness(store)
    outbox = Recorder()
    engine = h.engine(outbox)
    h.run(engine, 5, count=500)
    h.run(engine, 30, count=count)  # below 100 (fire) but above 50 (clear)
    assert engine.state_of(h.rule).status is Status.FIRING
    assert statuses(outbox) == ["firing"]


def test_a_flapping_alert_sends_one_notice_and_stays_open(store: Client) -> None:
    h = Harness(store)
    outbox = Recorder()
    engine = h.engine(outbox)
    for _ in range(6):  # breach 3 minutes, calm 3 minutes, over and over
        h.run(engine, 3, count=500)
        h.run(engine, 3, count=0)
    notes = sent(outbox)
    flap_notices = [n for n in notes if n.flapping]
    assert len(flap_notices) == 1 and flap_notices[0].summary.startswith("[flapping]")
    firsts = {n.id.split("-")[1] for n in notes if n.status.value == "firing"}
    assert len(firsts) <= 2  # paged at most twice before the flap was seen, then held
    assert engine.state_of(h.rule).status is Status.FIRING
    # Calm for the cooldown: one resolve, and the flapping mark is gone.
    h.run(engine, 31, count=0)
    assert statuses(outbox)[-1] == "resolved"
    assert not engine.state_of(h.rule).flapping
