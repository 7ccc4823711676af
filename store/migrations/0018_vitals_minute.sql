-- Page speed per minute (the browser SDK's Web Vitals add-on: one web_vitals event per
-- page view): per project, metric and path, the samples, their sum and maximum, and an
-- exact quantile state (linear interpolation, as numpy's default), mergeable across
-- minutes and paths, so p75 of LCP under /product/ over 5 minutes is one merge. Sorted
-- for "a project's metric over a time range", the query of the rules and the panels.
CREATE TABLE IF NOT EXISTS vitals_minute
(
    project_id  LowCardinality(String),
    metric      LowCardinality(String),
    minute      DateTime('UTC'),
    path        String,
    samples     SimpleAggregateFunction(sum, UInt64),
    total       SimpleAggregateFunction(sum, Float64),
    peak        SimpleAggregateFunction(max, Float64),
    quantiles   AggregateFunction(quantileExactInclusive(0.5), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (project_id, metric, minute, path)
SETTINGS non_replicated_deduplication_window = 1000;

-- The path is the page's (context.page), else the add-on's own `path` property.
CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_minute_mv TO vitals_minute AS
SELECT
    project_id,
    m.1 AS metric,
    toStartOfMinute(timestamp) AS minute,
    if(path != '', path, JSONExtractString(properties, 'path')) AS path,
    toUInt64(count()) AS samples,
    sum(assumeNotNull(m.2)) AS total,
    max(assumeNotNull(m.2)) AS peak,
    quantileExactInclusiveState(0.5)(assumeNotNull(m.2)) AS quantiles
FROM events
ARRAY JOIN arrayFilter(x -> isNotNull(x.2), [
    ('lcp', JSONExtract(properties, 'lcp', 'Nullable(Float64)')),
    ('inp', JSONExtract(properties, 'inp', 'Nullable(Float64)')),
    ('cls', JSONExtract(properties, 'cls', 'Nullable(Float64)')),
    ('fcp', JSONExtract(properties, 'fcp', 'Nullable(Float64)')),
    ('ttfb', JSONExtract(properties, 'ttfb', 'Nullable(Float64)'))]) AS m
WHERE event = 'web_vitals' AND is_bot = 0 AND excluded = ''
GROUP BY project_id, metric, minute, path
