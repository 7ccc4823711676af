-- What the collectors accepted and refused, per minute, project, route and reason, so
-- that pipeline health (ingest rate, rejects) is read from ClickHouse beside the data.
-- Collectors add their counters every few seconds; rows for one key are summed.
CREATE TABLE IF NOT EXISTS ingest_minute
(
    minute      DateTime('UTC'),
    project_id  LowCardinality(String),
    route       LowCardinality(String),
    outcome     LowCardinality(String),
    reason      LowCardinality(String),
    events      SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, project_id, route, outcome, reason)
TTL minute + INTERVAL 90 DAY
