"""Multi-touch attribution: which channels brought the sessions that led to conversions.

A conversion is a counted event named ``conversion_event`` in [start, end). Its touches
are the sessions (see :mod:`store.sessions`; bots and excluded traffic left out) of the
same person (merged across devices and login, see :mod:`store.persons`) that started in
[conversion time - lookback, conversion time], the converting session included. A
conversion without any touch (say, an order a backend confirmed for a person never seen
browsing) gets one ``direct`` touch.

A touch's channel is ``utm_source/utm_medium`` when the session landed with a UTM source,
else the referrer domain, else ``direct``. Each conversion's credit (1) and revenue are
split over its touches, oldest first, by the model:

- ``first_touch``: all to the oldest; ``last_touch``: all to the latest;
- ``linear``: 1/n each;
- ``time_decay``: weight 2^(-(conversion time - touch time) / half_life), normalized to 1;
- ``position_based``: one touch 100%, two 50/50, else 40% first, 40% last and 20% split
  evenly over the middle.

Every statement is fixed text with bound parameters; the model only picks a weight
expression from :data:`_WEIGHTS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from clickhouse_connect.driver.client import Client

from tracklane.store.analytics import check_range
from tracklane.store.analytics_errors import QueryError
from tracklane.store.filters import NO_FILTERS, Filters
from tracklane.store.persons import counted_events
from tracklane.store.sessions import PERSON_SESSIONS, session_params

# Per model, the weights of `touches` (sorted oldest first; n = length(touches)).
_WEIGHTS: dict[str, str] = {
    "first_touch": "arrayMap(i -> toFloat64(i = 1), arrayEnumerate(touches))",
    "last_touch": "arrayMap(i -> toFloat64(i = length(touches)), arrayEnumerate(touches))",
    "linear": "arrayMap(i -> 1 / length(touches), arrayEnumerate(touches))",
    "time_decay": "arrayMap(w -> w / arraySum(decay), decay)",
    "position_based": """arrayMap(i -> multiIf(
        length(touches) = 1, 1.,
        length(touches) = 2, 0.5,
        i = 1 OR i = length(touches), 0.4,
        0.2 / (length(touches) - 2)), arrayEnumerate(touches))""",
}
MODELS = tuple(_WEIGHTS)

_CHANNEL = """multiIf(
    toString(utm_source) != '', concat(toString(utm_source), '/', toString(utm_medium)),
    toString(referrer_domain) != '', toString(referrer_domain),
    'direct')"""

# Parameters: the SESSIONS ones for sessions starting in [start - lookback, end), plus
# %(event)s, %(conv_lo)s, %(conv_hi)s, %(lookback)s and %(half_life)s (milliseconds).
# With filters, only the conversions that match them are credited.
def _attribution(filters: Filters) -> str:
    return f"""
WITH
conversions AS (
    SELECT message_id, person, timestamp AS ts, toFloat64(revenue) AS revenue
    FROM ({counted_events("event = %(event)s "
                          "AND timestamp >= %(conv_lo)s AND timestamp < %(conv_hi)s"
                          + filters.sql)})
),
touch_sessions AS (
    SELECT person, started_at, {_CHANNEL} AS channel FROM ({PERSON_SESSIONS})
)
SELECT channel, sum(weight) AS credit, sum(weight * revenue) AS credited_revenue
FROM
(
    SELECT revenue, touches,
           -- Decay is measured from the latest touch, not the conversion: the factor
           -- cancels in the normalization, and the latest touch's weight of 1 keeps the
           -- sum from underflowing to 0 when lookback is many half-lives.
           arrayMap(t -> exp2(-dateDiff('millisecond', t.1, touches[-1].1) / %(half_life)s),
                    touches) AS decay,
           {{weights}} AS weights
    FROM
    (
        SELECT c.message_id AS conversion, any(c.ts) AS conv_ts, any(c.revenue) AS revenue,
               -- Sorted on (start, channel): ties in start time break the same way always.
               arraySort(groupArrayIf((s.started_at, s.channel),
                   dateDiff('millisecond', s.started_at, c.ts) BETWEEN 0 AND %(lookback)s))
                   AS found,
               if(empty(found), [(conv_ts, 'direct')], found) AS touches
        FROM conversions AS c LEFT JOIN touch_sessions AS s ON s.person = c.person
        GROUP BY conversion
    )
)
ARRAY JOIN arrayMap(t -> t.2, touches) AS channel, weights AS weight
GROUP BY channel
-- Rounded: equal credits summed in another order differ in the last bits, and must
-- still tie and fall back to the channel name.
ORDER BY round(credit, 9) DESC, channel
"""


@dataclass(frozen=True, slots=True)
class ChannelCredit:
    channel: str
    conversions: float  # credited conversions (each conversion's weights sum to 1)
    revenue: float  # credited revenue: each conversion's revenue times the weight
    share: float  # conversions / all conversions


def attribution(client: Client, project_id: str, *, conversion_event: str, start: datetime,
                end: datetime, model: str, lookback: timedelta = timedelta(days=30),
                half_life: timedelta = timedelta(days=7),
                filters: Filters = NO_FILTERS) -> list[ChannelCredit]:
    """Conversions in [start, end) credited to channels by ``model``, most credited first."""
    check_range(start, end)
    if model not in _WEIGHTS:
        raise QueryError(f"model: one of {', '.join(MODELS)}")
    if lookback < timedelta(0):
        raise QueryError("lookback: must not be negative")
    if half_life <= timedelta(0):
        raise QueryError("half_life: must be positive")
    rows = client.query(
        _attribution(filters).replace("{weights}", _WEIGHTS[model]),
        parameters={**filters.params(start - lookback, end),
            **session_params(project_id, start - lookback, end),
            "event": conversion_event, "conv_lo": start, "conv_hi": end,
            "lookback": _ms(lookback), "half_life": _ms(half_life),
        },
    ).result_rows
    total = sum(float(r[1]) for r in rows)
    return [ChannelCredit(str(channel), float(credit), float(revenue),
                          float(credit) / total if total else 0.0)
            for channel, credit, revenue in rows]


def _ms(span: timedelta) -> int:
    return span // timedelta(milliseconds=1)
