-- Which user each anonymous id belongs to, kept incrementally from the events that link
-- the two: an identify (or any event) carrying both ids, and an alias, whose previousId
-- is linked like an anonymous id. One row of aggregate states per (project, anonymous id);
-- the queries finalize them with a GROUP BY and join them onto events, so the merge is
-- retroactive and no event is rewritten.
--
-- An anonymous id belongs to the FIRST user it was linked to (by event time, then user
-- id, so the answer does not depend on arrival order): a shared browser identified as u1
-- and later, without a reset, as u2 stays u1's for its anonymous events, while every event
-- carrying u2's user id is u2's. A user id is never remapped, so two known users are never
-- merged, not by identify and not by alias.
-- Sorted for the join's lookups and for "the ids of one person".
CREATE TABLE IF NOT EXISTS identities
(
    project_id    LowCardinality(String),
    anonymous_id  String,
    -- (time, user id) of the first link: its user is the anonymous id's. A plain tuple,
    -- not an argMin state, so reading a few rows' users costs no state decoding.
    first_link    SimpleAggregateFunction(min, Tuple(DateTime64(3, 'UTC'), String)),
    last_linked   SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    -- When the row was written: the queries read links newer than the identity_map
    -- dictionary's snapshot from the table (see store/persons.py).
    inserted_at   SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (project_id, anonymous_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS identities_mv TO identities AS
SELECT
    events.project_id AS project_id,
    linked AS anonymous_id,
    min((timestamp, events.user_id)) AS first_link,
    max(timestamp) AS last_linked,
    now64(3, 'UTC') AS inserted_at
FROM events
ARRAY JOIN arrayDistinct(arrayFilter(x -> x != '' AND x != events.user_id,
           [anonymous_id, if(type = 'alias', previous_id, '')])) AS linked
WHERE events.user_id != ''
GROUP BY project_id, linked;

-- The links in events stored before this migration. Running it twice is harmless: min
-- and max give the same answer over duplicates.
INSERT INTO identities
SELECT
    events.project_id AS project_id,
    linked AS anonymous_id,
    min((timestamp, events.user_id)) AS first_link,
    max(timestamp) AS last_linked,
    now64(3, 'UTC') AS inserted_at
FROM events
ARRAY JOIN arrayDistinct(arrayFilter(x -> x != '' AND x != events.user_id,
           [anonymous_id, if(type = 'alias', previous_id, '')])) AS linked
WHERE events.user_id != ''
GROUP BY project_id, linked
