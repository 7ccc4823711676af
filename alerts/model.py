"""The types the alerting parts share: what detectors read, what they find, what is sent.

Detectors read rollups through the ``Rollups`` protocol (ClickHouse in production, plain
lists in the evaluation harness) and return a ``Finding``; the state machine turns findings
into transitions; notifiers send ``Notification`` objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Verdict(StrEnum):
    OK = "ok"
    BREACH = "breach"
    INSUFFICIENT = "insufficient_data"


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open range of whole minutes, [start, end)."""

    start: datetime
    end: datetime

    @property
    def minutes(self) -> int:
        return int((self.end - self.start).total_seconds() // 60)


@dataclass(frozen=True, slots=True)
class Totals:
    """One event over a window: count, distinct users and revenue."""

    events: int
    users: int
    revenue: float


@dataclass(frozen=True, slots=True)
class PipelineProgress:
    """The sink's progress as stored by the stream, reduced over partitions."""

    watermark: datetime | None  # every event received before it is inserted (min over partitions)
    lag: int  # records in Kafka not yet inserted (sum over partitions)
    updated_at: datetime | None  # when the sink last reported (oldest partition)


class Rollups(Protocol):
    """Read-only minute rollups, as visible at evaluation time. Bot traffic is excluded."""

    def minute_counts(self, project: str, event: str, start: datetime, end: datetime) -> list[int]:
        """Events per minute over [start, end), zero-filled, oldest first."""
        ...

    def totals(self, project: str, event: str, start: datetime, end: datetime) -> Totals:
        """Count, distinct users and revenue of one event over [start, end)."""
        ...

    def history_start(self, project: str) -> datetime | None:
        """The first minute holding any data of the project, or None when it has none."""
        ...


@runtime_checkable
class VitalRollups(Protocol):
    """Rollups that also hold page speed (the store's ``vitals_minute``)."""

    def vital(self, project: str, prop: str, stat: str, start: datetime, end: datetime,
              q: float, path_prefix: str) -> tuple[float | None, int]:
        """A statistic of a Web Vitals property over [start, end), and its samples."""
        ...


@dataclass(frozen=True, slots=True)
class Finding:
    """What one detector saw in one window.

    ``verdict`` is judged at the fire threshold; ``clear`` at the (looser) clear threshold,
    so an alert fires on strong evidence and resolves only once the evidence is gone.
    """

    verdict: Verdict
    clear: bool
    summary: str
    window: Window
    observed: float | None = None
    expected: float | None = None
    band_low: float | None = None
    band_high: float | None = None
    p_value: float | None = None
    deviation: float | None = None  # relative: observed / expected - 1
    samples: dict[str, int] = field(default_factory=dict)
    baseline: str = ""  # how the expectation was formed, e.g. "seasonal median of 7 days"


class NotificationKind(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to on-call about one alert. Notifiers render it for their service."""

    id: str  # stable per delivery attempt series: receivers may dedup on it
    status: NotificationKind
    fingerprint: str  # stable for the alert (rule + labels): the dedup key
    rule: str
    project: str
    kind: str  # detector kind, e.g. conversion_drop
    severity: str
    labels: dict[str, str]
    summary: str
    finding: Finding
    complete_until: datetime  # data is complete (all minutes closed) up to here
    starts_at: datetime
    ends_at: datetime | None
    runbook_url: str | None
    dashboard_url: str | None
    repeat: int = 0  # 0 for the first send of this status, n for the n-th reminder
    flapping: bool = False


class Outbox(Protocol):
    """Where the engine hands notifications; ``submit`` must return at once (never block).

    ``on_done(True)`` reports a delivery, ``on_done(False)`` a send given up after retries;
    the engine re-submits anything still undelivered on a later evaluation.
    """

    def submit(
        self, notifier: str, notification: Notification, on_done: Callable[[bool], None]
    ) -> None: ...
