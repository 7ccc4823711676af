"""The detectors' view of ``rollups_minute`` (and of the sink's progress) in ClickHouse.

A seasonal baseline reads the same minutes of past days on every tick, so whole past days
are fetched once and cached; only recent days are read again on each tick.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import cast

from clickhouse_connect.driver.client import Client

from tracklane.alerts.model import PipelineProgress, Totals
from tracklane.store.vitals import Stat, vital_stat

_DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Late events may still land in a day this long after it ended; older days are cached.
# (Much later arrivals are rare and only nudge a baseline, which is a median anyway.)
_FINAL_AFTER = timedelta(hours=3)
_CACHED_DAYS = 1024


class ClickHouseRollups:
    """Implements ``alerts.model.Rollups``; call ``begin_tick`` before each evaluation."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._now = _EPOCH
        self._final: OrderedDict[tuple[str, str, datetime], list[int]] = OrderedDict()
        self._recent: dict[tuple[str, str, datetime], list[int]] = {}
        self._history: dict[str, datetime | None] = {}

    def begin_tick(self, now: datetime) -> None:
        self._now = now
        self._recent.clear()
        self._history.clear()

    def minute_counts(self, project: str, event: str, start: datetime, end: datetime) -> list[int]:
        out: list[int] = []
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        while day < end:
            counts = self._day(project, event, day)
            lo = max(0, _minutes(start - day))
            hi = min(1440, _minutes(end - day))
            out.extend(counts[lo:hi])
            day += _DAY
        return out

    def totals(self, project: str, event: str, start: datetime, end: datetime) -> Totals:
        row = self._client.query(
            "SELECT sum(events), uniqMerge(users), sum(revenue) FROM rollups_minute "
            "WHERE project_id = %(p)s AND event = %(e)s AND minute >= %(s)s AND minute < %(t)s "
            "AND is_bot = 0",
            parameters={"p": project, "e": event, "s": start, "t": end},
        ).result_rows[0]
        return Totals(int(row[0] or 0), int(row[1] or 0), float(row[2] or 0))

    def vital(self, project: str, prop: str, stat: str, start: datetime, end: datetime,
              q: float, path_prefix: str) -> tuple[float | None, int]:
        found = vital_stat(self._client, project, prop, cast(Stat, stat), start, end, q,
                           path_prefix)
        return found.value, found.samples

    def history_start(self, project: str) -> datetime | None:
        if project not in self._history:
            first = self._client.query(
                "SELECT min(minute) FROM rollups_minute WHERE project_id = %(p)s",
                parameters={"p": project},
            ).result_rows[0][0]
            first = _utc(first) if first is not None else _EPOCH
            self._history[project] = None if first <= _EPOCH else first
        return self._history[project]

    def _day(self, project: str, event: str, day: datetime) -> list[int]:
        key = (project, event, day)
        final = day + _DAY + _FINAL_AFTER <= self._now
        cache = self._final if final else self._recent
        found = cache.get(key)
        if found is not None:
            if final:
                self._final.move_to_end(key)
            return found
        counts = [0] * 1440
        rows = self._client.query(
            "SELECT minute, sum(events) FROM rollups_minute WHERE project_id = %(p)s "
            "AND event = %(e)s AND minute >= %(s)s AND minute < %(t)s AND is_bot = 0 "
            "GROUP BY minute",
            parameters={"p": project, "e": event, "s": day, "t": day + _DAY},
        ).result_rows
        for minute, n in rows:
            counts[_minutes(_utc(minute) - day)] = int(n)
        cache[key] = counts
        if final and len(self._final) > _CACHED_DAYS:
            self._final.popitem(last=False)
        return counts


def pipeline_progress(client: Client, group: str, topic: str) -> PipelineProgress:
    """The sink's progress over all partitions: the oldest watermark and report, total lag."""
    row = client.query(
        "SELECT count(), min(w), sum(greatest(l, 0)), min(u) FROM ("
        " SELECT partition, argMax(watermark, updated_at) AS w, argMax(lag, updated_at) AS l,"
        " max(updated_at) AS u FROM stream_progress"
        " WHERE consumer_group = %(g)s AND topic = %(t)s GROUP BY partition)",
        parameters={"g": group, "t": topic},
    ).result_rows[0]
    if not row[0]:
        return PipelineProgress(None, 0, None)
    return PipelineProgress(_utc(row[1]), int(row[2]), _utc(row[3]))


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
