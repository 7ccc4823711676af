"""Filters that narrow an analytics query to part of the traffic, e.g. one country.

A filter is a dimension and a value. Events are kept when their own column equals every
filter's value (the page an event was on, its country, device, source...); a session is
kept, whole, when at least one of its events is: "the visits that viewed /pricing", with
their bounce rate and duration as visits. Numbers made of events (page views, visitors,
orders, revenue, funnels) count the kept events only.

The dimension names are the query API's; each maps to one ``events`` column from the
allow-list below, and the values are bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tracklane.store.analytics_errors import QueryError

# Dimension -> events column.
COLUMNS: dict[str, str] = {
    "page": "path", "source": "source", "referrer_domain": "referrer_domain",
    "utm_source": "utm_source", "utm_medium": "utm_medium", "utm_campaign": "utm_campaign",
    "device": "device_type", "browser": "browser", "os": "os",
    "country": "country", "region": "region", "city": "city",
}
DIMENSIONS = tuple(COLUMNS)
MAX_VALUE = 1000


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

    @property
    def sql(self) -> str:
        """`` AND col = %(f_<dimension>)s ...`` for a WHERE on ``events``; '' when empty."""
        return "".join(f" AND {COLUMNS[name]} = %(f_{name})s" for name in sorted(self.values))

    @property
    def params(self) -> dict[str, Any]:
        return {f"f_{name}": value for name, value in self.values.items()}


NO_FILTERS = Filters()
