-- The sink's offsets of record: before each insert it writes the batch's exact range and
-- deduplication token here, so a restart can replay that same batch with that same token.
CREATE TABLE IF NOT EXISTS stream_offsets
(
    consumer_group  String,
    topic           String,
    partition       UInt32,
    seq             UInt64,
    start_offset    UInt64,
    end_offset      UInt64,
    first_key       String,
    batch_token     String,
    written_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(seq)
ORDER BY (consumer_group, topic, partition)
