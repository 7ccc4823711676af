-- Where each event was sent from (browser, server, pixel, mobile) and why it is not
-- counted (test, internal_ip, internal_user; empty: counted). Excluded traffic is kept in
-- events, for audit and for the API's `source`/`excluded` filters, but never enters the
-- rollups or the sessions: everything that reads those (alerts, Grafana, the time series)
-- leaves it out as the raw-event queries do.
ALTER TABLE events
    ADD COLUMN IF NOT EXISTS source LowCardinality(String) DEFAULT '' AFTER is_bot,
    ADD COLUMN IF NOT EXISTS excluded LowCardinality(String) DEFAULT '' AFTER source;

DROP VIEW IF EXISTS rollups_minute_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollups_minute_mv TO rollups_minute AS
SELECT
    project_id,
    event,
    toStartOfMinute(timestamp) AS minute,
    is_bot,
    toUInt64(count()) AS events,
    uniqState(distinct_id) AS users,
    sum(toDecimal128(revenue, 4)) AS revenue
FROM events
WHERE excluded = ''
GROUP BY project_id, event, minute, is_bot;

DROP VIEW IF EXISTS sessions_mv;

-- As in 0009. A backend's event joins a session only when it carries the browser's
-- session id (context.sessionId): then it is part of that visit.
CREATE MATERIALIZED VIEW IF NOT EXISTS sessions_mv TO sessions AS
SELECT
    project_id,
    toDate(timestamp) AS day,
    session_id,
    any(anonymous_id) AS anonymous_id,
    max(user_id) AS user_id,
    min(timestamp) AS started_at,
    max(timestamp) AS ended_at,
    toUInt64(count()) AS events,
    toUInt64(countIf(type = 'page')) AS pageviews,
    toUInt64(countIf(type IN ('track', 'screen'))) AS interactions,
    sum(toDecimal128(revenue, 4)) AS revenue,
    max(is_bot) AS is_bot,
    argMinStateIf(path, timestamp, type = 'page') AS entry_path,
    argMaxStateIf(path, timestamp, type = 'page') AS exit_path,
    argMinState(toString(referrer_domain), timestamp) AS referrer_domain,
    argMinState(toString(utm_source), timestamp) AS utm_source,
    argMinState(toString(utm_medium), timestamp) AS utm_medium,
    argMinState(toString(utm_campaign), timestamp) AS utm_campaign,
    argMinState(toString(device_type), timestamp) AS device_type,
    argMinState(toString(browser), timestamp) AS browser,
    argMinState(toString(os), timestamp) AS os
FROM events
WHERE session_id != '' AND excluded = ''
GROUP BY project_id, day, session_id
