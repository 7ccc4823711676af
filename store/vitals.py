"""Page speed from the per-minute Web Vitals rollups (``vitals_minute``, migration 0018).

One statistic of one metric over a time range, optionally of the paths under a prefix:
a quantile (exact, linear interpolation between the two nearest samples, as numpy's
default), the average, the sum or the maximum, and the samples it is made of. The rules
of the alert engine and the panels read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from clickhouse_connect.driver.client import Client

from tracklane.store.analytics_errors import QueryError

METRICS = ("lcp", "inp", "cls", "fcp", "ttfb")
Stat = Literal["quantile", "avg", "sum", "max"]


@dataclass(frozen=True, slots=True)
class VitalStat:
    value: float | None  # None without samples
    samples: int


def vital_stat(client: Client, project_id: str, metric: str, stat: Stat, start: datetime,
               end: datetime, q: float = 0.75, path_prefix: str = "") -> VitalStat:
    """``stat`` of ``metric`` over the minutes in [start, end)."""
    if metric not in METRICS:
        raise QueryError(f"metric: one of {', '.join(METRICS)}")
    if not 0 <= q <= 1:
        raise QueryError("q: 0 to 1")
    expression = {
        "quantile": "quantileExactInclusiveMerge(%(q)s)(quantiles)",
        "avg": "sum(total) / sum(samples)",
        "sum": "sum(total)",
        "max": "max(peak)",
    }[stat]
    row = client.query(
        f"SELECT {expression}, sum(samples) FROM vitals_minute "
        "WHERE project_id = %(p)s AND metric = %(m)s AND minute >= %(s)s AND minute < %(t)s "
        "AND startsWith(path, %(prefix)s)",
        parameters={"p": project_id, "m": metric, "s": start, "t": end, "q": q,
                    "prefix": path_prefix},
    ).result_rows[0]
    samples = int(row[1])
    return VitalStat(float(row[0]) if samples else None, samples)
