-- Minute rollups as aggregate states, so that parts merge and re-aggregate correctly.
-- Sorted for "one event of one project over a time range", the query of the stats API and
-- of the alert detectors.
CREATE TABLE IF NOT EXISTS rollups_minute
(
    project_id  LowCardinality(String),
    event       LowCardinality(String),
    minute      DateTime('UTC'),
    is_bot      UInt8,
    events      SimpleAggregateFunction(sum, UInt64),
    users       AggregateFunction(uniq, String),
    revenue     SimpleAggregateFunction(sum, Decimal(38, 4))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (project_id, event, minute, is_bot)
SETTINGS non_replicated_deduplication_window = 1000;

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
GROUP BY project_id, event, minute, is_bot
