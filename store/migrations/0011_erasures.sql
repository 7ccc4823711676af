-- One row per user erasure (DELETE /v1/users/<id>), kept as proof that it was done.
-- Never the user id itself: its SHA-256, so a given id's erasure can be looked up by
-- hashing it again. Never the read key: a fingerprint of it. Counts only, not the days
-- the user was active.
CREATE TABLE IF NOT EXISTS erasures
(
    erasure_id        String,
    project_id        LowCardinality(String),
    user_hash         String,
    requested_at      DateTime64(3, 'UTC'),
    requested_by      String,
    events_deleted    UInt64,
    anonymous_ids     UInt32,
    days_rebuilt      UInt32,
    minutes_rebuilt   UInt32,
    sessions_rebuilt  UInt32
)
ENGINE = MergeTree
ORDER BY (project_id, requested_at)
