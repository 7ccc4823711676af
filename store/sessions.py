"""Sessions, as the analytics queries see them.

A session is the SDK's session id when the event has one: those are kept incrementally in
the ``sessions`` table (migration 0009) and read from it. Events without one (server-side
pixel, apps) are sessionized at query time by 30 minutes of inactivity per anonymous id
(a device), from the raw events. :data:`SESSIONS` is both, one row per session, with the
same columns.

A session is a visit, so events a backend sends (``source = 'server'``) never open or
extend one: they arrive with no device of their own and would otherwise pool every
user's orders into one endless session. Bots and excluded traffic are left out of every
session. Each session's ``person`` (:data:`PERSON_SESSIONS`) follows :mod:`store.persons`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tracklane.store.filters import NO_FILTERS, Filters
from tracklane.store.persons import COUNTED, PERSON, WITH_RECENT

SESSION_GAP = timedelta(minutes=30)
# Sessions that start before a range but reach into it are read from this far back.
LOOKBACK = timedelta(days=1)

# One row per non-bot event of project %(p)s in [%(lo)s, %(hi)s), with its session key:
# the SDK session id, else anonymous id + the start of its run of events no more than
# SESSION_GAP apart. %(gap)s is the gap in seconds.
def _session_events(where: str = "") -> str:
    return f"""
SELECT
    *,
    if(session_id != '', session_id,
       concat(anonymous_id, '@', toString(
           sum(starts) OVER (PARTITION BY anonymous_id ORDER BY timestamp, message_id
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)))) AS session_key
FROM
(
    SELECT
        message_id, type, event, timestamp, anonymous_id, distinct_id, session_id, path,
        referrer_domain, toString(utm_source) AS utm_source,
        toString(utm_medium) AS utm_medium, toString(utm_campaign) AS utm_campaign,
        toString(device_type) AS device_type, toString(browser) AS browser,
        toString(os) AS os, toString(country) AS country, toString(region) AS region,
        toString(city) AS city, toString(source) AS source, revenue,
        if(session_id = '' AND dateDiff('millisecond',
               lagInFrame(timestamp, 1, toDateTime64(0, 3, 'UTC')) OVER (
                   PARTITION BY anonymous_id, session_id = '' ORDER BY timestamp, message_id
                   ROWS BETWEEN 1 PRECEDING AND CURRENT ROW),
               timestamp) > %(gap)s * 1000, 1, 0) AS starts
    FROM events
    WHERE project_id = %(p)s AND timestamp >= %(lo)s AND timestamp < %(hi)s AND {COUNTED}
          AND source != 'server' {where}
)
"""


# Only events without an SDK session id: the filter must sit under the window functions,
# or they would run over every event of the range.
_UNSESSIONED_EVENTS = _session_events("AND session_id = ''")


def session_params(project_id: str, start: datetime, end: datetime) -> dict[str, object]:
    """Parameters of SESSIONS for sessions that start in [start, end)."""
    return {"p": project_id, "start": start, "end": end, "lo": start - LOOKBACK,
            "hi": end + LOOKBACK, "gap": int(SESSION_GAP.total_seconds())}


_SESSION_COLUMNS = """
    anonymous_id, user_id, started_at, ended_at, pageviews, interactions, revenue,
    entry_path, exit_path, referrer_domain, utm_source, utm_medium, utm_campaign,
    device_type, browser, os, country, region, city
"""

# One row per counted session of project %(p)s that starts in [%(start)s, %(end)s).
# Bounce: at most one page view and no other interaction (track or screen). With filters
# (store/filters.py), the sessions whose first touch matches and that have at least one
# counted event matching the rest: an SDK session is looked up by its id among the
# matching events, a sessionized one counts its own.
def sessions(filters: Filters = NO_FILTERS) -> str:
    sdk_match = sessionized_match = ""
    if filters.per_event:
        sdk_match = (f" AND session_id IN (SELECT session_id FROM events WHERE project_id = "
                     f"%(p)s AND timestamp >= %(lo)s AND timestamp < %(hi)s AND "
                     f"session_id != '' AND {COUNTED}{filters.per_event})")
        sessionized_match = f" AND countIf(1{filters.per_event}) > 0"
    sdk_match_touch = filters.first_touch("merged")
    sessionized_match += filters.first_touch("events")
    return f"""
SELECT session_key, {_SESSION_COLUMNS},
       pageviews <= 1 AND interactions = 0 AS bounce,
       dateDiff('millisecond', started_at, ended_at) / 1000 AS duration_s
FROM
(
    SELECT
        session_id AS session_key, any(anonymous_id) AS anonymous_id,
        max(user_id) AS user_id, min(started_at) AS started_at, max(ended_at) AS ended_at,
        sum(pageviews) AS pageviews, sum(interactions) AS interactions,
        sum(revenue) AS revenue,
        argMinMerge(entry_path) AS entry_path, argMaxMerge(exit_path) AS exit_path,
        argMinMerge(referrer_domain) AS referrer_domain,
        argMinMerge(utm_source) AS utm_source, argMinMerge(utm_medium) AS utm_medium,
        argMinMerge(utm_campaign) AS utm_campaign,
        argMinMerge(device_type) AS device_type, argMinMerge(browser) AS browser,
        argMinMerge(os) AS os, argMinMerge(country) AS country,
        argMinMerge(region) AS region, argMinMerge(city) AS city
    FROM sessions
    WHERE project_id = %(p)s AND day >= toDate(%(lo)s) AND day <= toDate(%(hi)s){sdk_match}
    GROUP BY session_id
    HAVING max(is_bot) = 0{sdk_match_touch}
    UNION ALL
    SELECT
        session_key, any(anonymous_id), max(if(distinct_id != anonymous_id, distinct_id, '')),
        min(timestamp), max(timestamp),
        countIf(type = 'page'), countIf(type IN ('track', 'screen')),
        sum(toDecimal128(revenue, 4)),
        argMinIf(path, timestamp, type = 'page'), argMaxIf(path, timestamp, type = 'page'),
        argMin(referrer_domain, timestamp), argMin(utm_source, timestamp),
        argMin(utm_medium, timestamp), argMin(utm_campaign, timestamp),
        argMin(device_type, timestamp), argMin(browser, timestamp), argMin(os, timestamp),
        argMin(country, timestamp), argMin(region, timestamp), argMin(city, timestamp)
    FROM ({_UNSESSIONED_EVENTS})
    GROUP BY session_key
    HAVING 1{sessionized_match}
)
WHERE started_at >= %(start)s AND started_at < %(end)s
"""


SESSIONS = sessions()


# SESSIONS with each session's ``person`` (see store.persons): for the queries that need
# it, since resolving persons is a cost the others need not pay.
def person_sessions(filters: Filters = NO_FILTERS) -> str:
    return f"{WITH_RECENT} SELECT *, {PERSON} AS person FROM ({sessions(filters)})"


PERSON_SESSIONS = person_sessions()
