-- Message ids seen recently, sorted for the sink's "which of these ids are stored?" lookup.
CREATE TABLE IF NOT EXISTS event_ids
(
    project_id   LowCardinality(String),
    message_id   String,
    received_at  DateTime64(3, 'UTC'),
    batch_token  String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (project_id, message_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS event_ids_mv TO event_ids AS
SELECT project_id, message_id, received_at, batch_token FROM events
