"""Filters that narrow an analytics query to part of the traffic, e.g. one country.

A filter is a dimension and a value. Two kinds of dimension:

- a visit's **first touch**, how it arrived (referrer domain, UTM source, medium and
  campaign): a session is kept when its first event has the value, and so are all its
  events, as Plausible and Google Analytics filter by source: the newsletter's visitors'
  page views are every page view of their visits, not only the landing page's. An event
  without an SDK session id (the pixel, a backend's) is judged by its own value, since its
  session is only made at query time;
- everything else (the page an event was on, its device, browser, OS, source, country,
  region, city): an event is kept when its own value matches, and a session, whole, when
  at least one of its events is: "the visits that viewed /pricing", with their bounce rate
  and duration as visits.

Numbers made of events (page views, visitors, orders, revenue, funnels) count the kept
events; numbers made of sessions, the kept sessions.

The dimension names are the query API's; each maps to one ``events`` column from the
allow-list below, and the values are bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from tracklane.store.analytics_errors import QueryError

# Dimension -> events column.
COLUMNS: dict[str, str] = {
    "page": "path", "source": "source", "referrer_domain": "referrer_domain",
    "utm_source": "utm_source", "utm_medium": "utm_medium", "utm_campaign": "utm_campaign",
    "device": "device_type", "browser": "browser", "os": "os",
    "country": "country", "region": "region", "city": "city",
}
DIMENSIONS = tuple(COLUMNS)
FIRST_TOUCH = frozenset({"referrer_domain", "utm_source", "utm_medium", "utm_campaign"})
MAX_VALUE = 1000
# A session's rows in ``sessions`` are by day: those of the events in a range are within a
# day of it (a session ends 30 minutes after its last event).
_SESSION_DAYS = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Filters:
    """Dimension -> value; empty matches everything."""

    values: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.values.items():
            if name not in COLUMNS:
                raise QueryError(f"filters: unknown dimension {name!r}; one of "
                                 f"{', '.join(DIMENSIONS)}")
            if len(value) > MAX_VALUE:
                raise QueryError(f"filters.{name}: longer than {MAX_VALUE} characters")

    def __bool__(self) -> bool:
        return bool(self.values)

    def _conditions(self, first_touch: bool, template: str) -> str:
        return "".join(f" AND {template.format(column=COLUMNS[name], name=name)}"
                       for name in sorted(self.values) if (name in FIRST_TOUCH) == first_touch)

    @property
    def sql(self) -> str:
        """`` AND ...``: the WHERE on ``events`` that keeps the matching events; '' when empty.

        A first-touch filter keeps an SDK session's events when the session's first touch
        matches, found in ``sessions`` over [%(f_lo)s, %(f_hi)s] (see :meth:`params`)."""
        own = self.per_event
        touch = self._conditions(True, "{column} = %(f_{name})s")
        if not touch:
            return own
        sessions = (f"SELECT session_id FROM sessions WHERE project_id = %(p)s AND "
                    f"day >= toDate(%(f_lo)s) AND day <= toDate(%(f_hi)s) GROUP BY session_id "
                    f"HAVING 1{self.first_touch('states')}")
        return f"{own} AND if(session_id != '', session_id IN ({sessions}), 1{touch})"

    @property
    def per_event(self) -> str:
        """The conditions on an event's own values (not first touch); '' without any."""
        return self._conditions(False, "{column} = %(f_{name})s")

    def first_touch(self, of: Literal["states", "merged", "events"]) -> str:
        """The first-touch conditions on a session: on the ``sessions`` table's ``states``,
        on the values merged from them under their own names (``merged``), or on raw
        ``events`` grouped into a session."""
        return self._conditions(True, {
            "states": "argMinMerge({column}) = %(f_{name})s",
            "merged": "{column} = %(f_{name})s",
            "events": "argMin(toString({column}), timestamp) = %(f_{name})s",
        }[of])

    def params(self, start: datetime, end: datetime) -> dict[str, Any]:
        """The values, and the session days searched for the events of [start, end)."""
        return {**{f"f_{name}": value for name, value in self.values.items()},
                "f_lo": start - _SESSION_DAYS, "f_hi": end + _SESSION_DAYS}


NO_FILTERS = Filters()
