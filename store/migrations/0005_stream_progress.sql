-- Per-partition progress of the sink: lag and the watermark up to which every event
-- received by the collector is inserted. Alerting reads it to tell a stalled pipeline from
-- a traffic drop.
CREATE TABLE IF NOT EXISTS stream_progress
(
    consumer_group  String,
    topic           String,
    partition       UInt32,
    next_offset     Int64,
    highwater       Int64,
    lag             Int64,
    watermark       DateTime64(3, 'UTC'),
    updated_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (consumer_group, topic, partition)
TTL toDateTime(updated_at) + INTERVAL 30 DAY
