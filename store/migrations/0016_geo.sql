-- Where each event's request came from, looked up on the raw IP at ingestion
-- (collector/geoip.py): the ISO 3166-1 alpha-2 country, and with a MaxMind database the
-- region and city. A session takes its first event's place, as it takes its source.
ALTER TABLE events
    ADD COLUMN IF NOT EXISTS country LowCardinality(String) DEFAULT '' AFTER ip,
    ADD COLUMN IF NOT EXISTS region LowCardinality(String) DEFAULT '' AFTER country,
    ADD COLUMN IF NOT EXISTS city LowCardinality(String) DEFAULT '' AFTER region;

ALTER TABLE sessions
    ADD COLUMN IF NOT EXISTS country AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS region AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS city AggregateFunction(argMin, String, DateTime64(3, 'UTC'));

DROP VIEW IF EXISTS sessions_mv;

-- As in 0012, with the place.
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
    argMinState(toString(os), timestamp) AS os,
    argMinState(toString(country), timestamp) AS country,
    argMinState(toString(region), timestamp) AS region,
    argMinState(toString(city), timestamp) AS city
FROM events
WHERE session_id != '' AND excluded = ''
GROUP BY project_id, day, session_id
