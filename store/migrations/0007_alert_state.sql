-- The alert engine's state per alert, so a restart neither re-pages nor loses a resolve.
-- One row per save; the highest version is the state.
CREATE TABLE IF NOT EXISTS alert_state
(
    fingerprint   String,
    project_id    LowCardinality(String),
    rule          LowCardinality(String),
    status        LowCardinality(String),
    state         String,
    version       UInt64,
    updated_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY fingerprint
