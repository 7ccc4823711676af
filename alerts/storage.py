"""Where alert state, transitions and silences are kept: ClickHouse, or memory in tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from tracklane.alerts.silences import Silence
from tracklane.alerts.state import AlertState, Transition


class AlertStore(Protocol):
    def load_states(self) -> list[AlertState]:
        """Every stored alert state, latest version of each."""
        ...

    def save_states(self, states: Sequence[AlertState], now: datetime) -> None: ...

    def record_transitions(self, transitions: Sequence[Transition]) -> None: ...

    def silences(self, project: str | None, now: datetime) -> list[Silence]:
        """Silences not yet expired (of one project, or all)."""
        ...

    def save_silence(self, silence: Silence) -> None: ...


class MemoryAlertStore:
    """An AlertStore in memory: for the evaluation harness and unit tests."""

    def __init__(self) -> None:
        self._states: dict[str, AlertState] = {}
        self._transitions: list[Transition] = []
        self._silences: dict[str, Silence] = {}

    def load_states(self) -> list[AlertState]:
        return [replace(s) for s in self._states.values()]

    def save_states(self, states: Sequence[AlertState], now: datetime) -> None:
        for s in states:
            self._states[s.fingerprint] = replace(
                s, labels=dict(s.labels), changes=list(s.changes), delivered=dict(s.delivered),
                last_sent=dict(s.last_sent), repeats=dict(s.repeats),
                flap_noticed=dict(s.flap_noticed),
            )

    def record_transitions(self, transitions: Sequence[Transition]) -> None:
        self._transitions.extend(transitions)

    def silences(self, project: str | None, now: datetime) -> list[Silence]:
        return [s for s in self._silences.values()
                if s.ends_at > now and (project is None or s.project == project)]

    def save_silence(self, silence: Silence) -> None:
        self._silences[silence.id] = silence
