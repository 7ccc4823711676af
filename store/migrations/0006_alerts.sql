-- Every alert state transition (pending, firing, resolved, ...), with what was observed.
-- Sorted for "a project's alerts over a time range", the query of GET /v1/alerts and of
-- the Grafana annotations.
CREATE TABLE IF NOT EXISTS alerts
(
    at            DateTime64(3, 'UTC'),
    project_id    LowCardinality(String),
    rule          LowCardinality(String),
    fingerprint   String,
    kind          LowCardinality(String),
    severity      LowCardinality(String),
    labels        Map(String, String),
    from_status   LowCardinality(String),
    to_status     LowCardinality(String),
    incident      UInt32,
    flapping      UInt8,
    verdict       LowCardinality(String),
    summary       String,
    observed      Nullable(Float64),
    expected      Nullable(Float64),
    p_value       Nullable(Float64),
    window_start  DateTime('UTC'),
    window_end    DateTime('UTC'),
    finding       String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (project_id, at, rule)
