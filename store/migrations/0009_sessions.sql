-- Sessions kept incrementally from the SDK's session id: one row of aggregate states per
-- (project, day, session), merged in the background and finalized by the queries with a
-- GROUP BY (project, session), so a session that crosses midnight is still one session.
-- Sorted for "a project's sessions over a day range", the query of every session KPI.
-- Events without a session id (server-side, pixel) are sessionized by the queries instead:
-- 30 minutes of inactivity per anonymous id needs each user's previous event.
CREATE TABLE IF NOT EXISTS sessions
(
    project_id       LowCardinality(String),
    day              Date,
    session_id       String,
    anonymous_id     SimpleAggregateFunction(any, String),
    user_id          SimpleAggregateFunction(max, String),
    started_at       SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ended_at         SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    events           SimpleAggregateFunction(sum, UInt64),
    pageviews        SimpleAggregateFunction(sum, UInt64),
    interactions     SimpleAggregateFunction(sum, UInt64),
    revenue          SimpleAggregateFunction(sum, Decimal(38, 4)),
    is_bot           SimpleAggregateFunction(max, UInt8),
    entry_path       AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    exit_path        AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    referrer_domain  AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    utm_source       AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    utm_medium       AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    utm_campaign     AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    device_type      AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    browser          AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    os               AggregateFunction(argMin, String, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (project_id, day, session_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Entry and exit pages come from page views only; the source from the session's first
-- event. identify, group and alias are not interactions: a session whose only other
-- events are those still bounces.
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
WHERE session_id != ''
GROUP BY project_id, day, session_id
