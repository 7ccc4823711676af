"""Cohort retention: of the persons first seen on a day, how many come back N days later.

Persons are merged across their ids (see :mod:`store.persons`); bots and excluded
traffic are left out. A person's cohort day is the local date, in the query's time zone, of their
first event ever (or of their first ``cohort_event``), over all time and not just the
queried range. They are retained on day N when they have a ``return_event`` (any event
if none is given) on the local date cohort day + N.

Every statement is fixed text with bound parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from clickhouse_connect.driver.client import Client

from tracklane.store.analytics import check_tz
from tracklane.store.analytics_errors import QueryError
from tracklane.store.filters import NO_FILTERS, Filters
from tracklane.store.persons import counted_events

MAX_DAY = 365
MAX_COHORTS = 3660  # days in one query: the result has a row per day, zero-filled
# No time zone is more than 14 hours from UTC: a day either side of the local dates
# bounds their UTC instants, so the scan can use the table's (UTC) date key.
_TZ_MARGIN = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Per cohort day in [%(start)s, %(end)s]: its size and, per person, the offsets (0..%(max)s)
# of the local days with a return event. A person without any return event still counts
# in the size: the LEFT JOIN gives them the default date 1970-01-01, offset out of range.
# With filters, only the matching events count, as cohort and as return events.
def _retention(filters: Filters) -> str:
    return f"""
WITH
firsts AS (
    SELECT person, toDate(min(timestamp), %(tz)s) AS cohort_day
    FROM ({counted_events("(%(any_c)s = 1 OR event = %(c)s)" + filters.sql)})
    GROUP BY person
    HAVING cohort_day >= %(start)s AND cohort_day <= %(end)s
),
returns AS (
    SELECT DISTINCT person, toDate(timestamp, %(tz)s) AS day
    FROM ({counted_events("(%(any_r)s = 1 OR event = %(r)s) "
                          "AND timestamp >= %(lo)s AND timestamp < %(hi)s" + filters.sql)})
    WHERE day >= %(start)s AND day <= %(last)s
)
SELECT cohort_day, count() AS size,
       sumForEach(arrayMap(n -> toUInt64(has(offsets, n)), range(%(max)s + 1))) AS retained
FROM
(
    SELECT f.person AS person, any(f.cohort_day) AS cohort_day,
           groupArray(dateDiff('day', f.cohort_day, r.day)) AS offsets
    FROM firsts AS f LEFT JOIN returns AS r ON r.person = f.person
    GROUP BY person
)
GROUP BY cohort_day
ORDER BY cohort_day
"""


@dataclass(frozen=True, slots=True)
class Cohort:
    day: date  # local date of the first (cohort) event
    size: int
    retained: list[int]  # index N: persons with a return event on day + N


@dataclass(frozen=True, slots=True)
class Retention:
    cohorts: list[Cohort]  # every day of the range, oldest first, zero-filled

    def rate(self, n: int, as_of: date) -> float:
        """Overall day-N rate: sum(retained[n]) / sum(size) over cohorts with day + n <= as_of.

        ``as_of`` is the last date with complete data (today, or the data's last date):
        younger cohorts have not had their day N yet and would drag the rate down. 0.0
        when no cohort qualifies.
        """
        width = len(self.cohorts[0].retained) if self.cohorts else 0
        if not 0 <= n < width:
            raise QueryError(f"n: 0 to max_day ({width - 1})")
        ripe = [c for c in self.cohorts if c.day + timedelta(days=n) <= as_of]
        size = sum(c.size for c in ripe)
        return sum(c.retained[n] for c in ripe) / size if size else 0.0


def retention(client: Client, project_id: str, *, start: date, end: date, tz: str = "UTC",
              cohort_event: str | None = None, return_event: str | None = None,
              max_day: int = 30, filters: Filters = NO_FILTERS) -> Retention:
    """Cohorts by local first-seen day in [start, end] (inclusive), retained days 0..max_day."""
    if end < start:
        raise QueryError("end: must not be before start")
    if (end - start).days >= MAX_COHORTS:
        raise QueryError(f"range: at most {MAX_COHORTS} days")
    if not 0 <= max_day <= MAX_DAY:
        raise QueryError(f"max_day: 0 to {MAX_DAY}")
    last = end + timedelta(days=max_day)
    rows = client.query(
        _retention(filters),
        parameters={
            # First events are looked for all time: so are the sessions of first touches.
            **filters.params(_EPOCH, _utc_midnight(last) + 2 * _TZ_MARGIN),
            "p": project_id, "tz": check_tz(tz), "start": start, "end": end, "last": last,
            "max": max_day,
            # A flag rather than NULL or '' as "any event": '' is a (strange) event name.
            "any_c": int(cohort_event is None), "c": cohort_event or "",
            "any_r": int(return_event is None), "r": return_event or "",
            "lo": _utc_midnight(start) - _TZ_MARGIN, "hi": _utc_midnight(last) + 2 * _TZ_MARGIN,
        },
    ).result_rows
    found = {_as_date(r[0]): Cohort(_as_date(r[0]), int(r[1]), [int(x) for x in r[2]])
             for r in rows}
    days = (start + timedelta(days=i) for i in range((end - start).days + 1))
    return Retention([found.get(d) or Cohort(d, 0, [0] * (max_day + 1)) for d in days])


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _as_date(value: date) -> date:
    # A Date column arrives as datetime.date; be strict so a datetime never slips in.
    return value.date() if isinstance(value, datetime) else value
