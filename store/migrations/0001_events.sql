-- Raw events, one row per accepted message id.
-- Sorted for the per-project, per-day, per-event scans of the query API; partitions are
-- days so that retention drops whole parts.
CREATE TABLE IF NOT EXISTS events
(
    project_id       LowCardinality(String),
    message_id       String,
    type             LowCardinality(String),
    event            LowCardinality(String),
    timestamp        DateTime64(3, 'UTC'),
    received_at      DateTime64(3, 'UTC'),
    sent_at          Nullable(DateTime64(3, 'UTC')),
    anonymous_id     String,
    user_id          String,
    distinct_id      String,
    session_id       String,
    group_id         String,
    previous_id      String,
    url              String,
    path             String,
    title            String,
    referrer         String,
    referrer_domain  LowCardinality(String),
    utm_source       LowCardinality(String),
    utm_medium       LowCardinality(String),
    utm_campaign     LowCardinality(String),
    utm_term         String,
    utm_content      String,
    click_id         String,
    click_id_type    LowCardinality(String),
    browser          LowCardinality(String),
    browser_version  LowCardinality(String),
    os               LowCardinality(String),
    os_version       LowCardinality(String),
    device_type      LowCardinality(String),
    is_bot           UInt8,
    ip               String,
    locale           LowCardinality(String),
    library_name     LowCardinality(String),
    library_version  LowCardinality(String),
    revenue          Decimal(18, 4),
    currency         LowCardinality(String),
    properties       String,
    traits           String,
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    batch_token      String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (project_id, toDate(timestamp), event, timestamp)
-- The sink replays an interrupted batch with the same insert_deduplication_token.
SETTINGS non_replicated_deduplication_window = 1000
