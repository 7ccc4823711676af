-- Silences created through the API. Expiring one early writes a new version with ends_at
-- set to the time of expiry.
CREATE TABLE IF NOT EXISTS silences
(
    id            String,
    project_id    LowCardinality(String),
    matchers      Map(String, String),
    starts_at     DateTime64(3, 'UTC'),
    ends_at       DateTime64(3, 'UTC'),
    created_by    String,
    comment       String,
    created_at    DateTime64(3, 'UTC'),
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project_id, id)
