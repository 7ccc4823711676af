-- The ids each erasure covered (DELETE /v1/users/<id>): the user id and the anonymous ids
-- that were theirs, as HMACs under the install's secret, never the ids. The sink drops an
-- event of one of them that happened or arrived before the erasure (store/erased_ids.py).
-- No TTL: the list has to outlast Kafka's retention, the spool's replays and the oldest
-- late event the collector accepts, at one short row per id.
CREATE TABLE IF NOT EXISTS erased_ids
(
    project_id  LowCardinality(String),
    id_hash     String,
    kind        Enum8('user' = 1, 'anonymous' = 2),
    erased_at   DateTime64(3, 'UTC'),
    erasure_id  String,
    -- Which secret made id_hash (a short HMAC of a fixed text), to tell a sink holding
    -- another one.
    key_check   LowCardinality(String)
)
ENGINE = MergeTree
ORDER BY (project_id, id_hash);

-- How many erased_ids rows the sink's last round read: an erasure deletes only once every
-- live sink reads its rows, so no batch read before it lands after the delete.
ALTER TABLE stream_progress ADD COLUMN IF NOT EXISTS erasures_seen UInt64 DEFAULT 0
