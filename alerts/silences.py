"""Silences: mute notifications for alerts matching every given label until they expire.

A silenced alert still changes state and is recorded; only its notifications wait. When
the silence ends while the alert is still firing, the page goes out then.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    project: str
    matchers: dict[str, str]  # label -> value, all must match; labels include rule and kind
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, project: str, labels: dict[str, str]) -> bool:
        return project == self.project and all(
            labels.get(k) == v for k, v in self.matchers.items()
        )


def new_silence_id() -> str:
    return uuid.uuid4().hex


def silenced(silences: list[Silence], project: str, labels: dict[str, str], now: datetime) -> bool:
    return any(s.active(now) and s.matches(project, labels) for s in silences)
