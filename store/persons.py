"""Persons: one person across the anonymous ids and the user id they send.

The ``identities`` table (migration 0013) links anonymous ids to user ids. It is filled
incrementally from the events that carry both ids: an ``identify``, any other event sent
after login, and an ``alias``, whose ``previousId`` is linked like an anonymous id. The
queries resolve every event's person at query time, so a link also claims the events
sent before it, and no event is ever rewritten.

The rules, in order:

1. An event with a user id belongs to that user. User ids are never remapped, so two
   known users are never merged, not by ``identify`` and not by ``alias`` (PostHog's
   rule): ``alias`` only claims ``previousId``'s anonymous events.
2. An event with only an anonymous id belongs to the user that anonymous id was first
   linked to, by event time (ties by user id, so arrival order never changes an answer).
   Several anonymous ids (phone, laptop, a second browser) can join one user.
3. Otherwise the anonymous id is the person.

A shared browser identified as ``u1``, reset, then identified as ``u2`` has two anonymous
ids and yields two persons. Without the reset the one anonymous id stays ``u1``'s: its
anonymous events count for ``u1`` and only the events carrying ``u2`` count for ``u2``.

Every query also leaves out what is not a person's traffic: bots and the project's
excluded (internal or test) events, :data:`COUNTED`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from tracklane.store.client import quote_literal, quote_name

# The filter every analytics query puts on raw events.
COUNTED = "is_bot = 0 AND excluded = ''"

# How a query finds an anonymous id's user, fast. A join against every link of the
# project cost a hash table of all of them per query (with a million links, 0.2 s to 1 s
# more per query: funnels three to ten times slower), so the links are served from a
# hashed dictionary, ``identity_map`` (about 50 ns a lookup), reloaded every few minutes
# (by a ClickHouse server, and by the query process: collector/identity_map.py). What
# the dictionary has not loaded yet, the links written since its load began (less a
# minute, for inserts still committing), is read from the table itself: a small set, so
# a login counts at the next query, retroactively, as the rules say.
IDENTITY_MAP = "identity_map"
IDENTITY_MAP_LIFETIME = (300, 600)  # seconds: ClickHouse reloads at a random point between

# Per anonymous id of project %(p)s whose links changed since the dictionary's snapshot,
# the user it was first linked to (over all its links, old and new, so a late link that
# is the first wins over the dictionary's answer).
RECENT_LINKS = f"""
SELECT anonymous_id, min(first_link).2 AS linked_user
FROM identities
WHERE project_id = %(p)s AND anonymous_id IN (
    SELECT anonymous_id FROM identities
    WHERE project_id = %(p)s AND inserted_at >= (
        SELECT min(if(status IN ('LOADED', 'LOADED_AND_RELOADING'),
                      last_successful_update_time - toIntervalSecond(ceil(loading_duration))
                      - INTERVAL 1 MINUTE,
                      toDateTime(0)))
        FROM system.dictionaries
        WHERE database = currentDatabase() AND name = '{IDENTITY_MAP}'))
GROUP BY anonymous_id
"""

# The recent links as two arrays (anonymous ids, their users' keys), for ``transform``:
# a hash map built once per query, where a join cost a pass over both sides.
WITH_RECENT = (f"WITH (SELECT (groupArray(anonymous_id), groupArray(cityHash64(linked_user))) "
               f"FROM ({RECENT_LINKS})) AS recent")

# A row's person, from its user_id and anonymous_id, under ``WITH_RECENT``: the 64-bit
# hash of the person's id (a user id, or the anonymous id of a person never identified).
# Counting and grouping on it is exact but for hash collisions (about one chance in 10^7
# with a million persons), and faster than on the strings the ids are.
PERSON = (
    "if(user_id != '', cityHash64(user_id), transform(anonymous_id, recent.1, recent.2, "
    f"dictGetOrDefault('{IDENTITY_MAP}', 'user_key', cityHash64(%(p)s, anonymous_id), "
    "cityHash64(anonymous_id))))"
)


def identity_map_ddl(database: str, credentials: str = "") -> str:
    """The statement that (re)creates the ``identity_map`` dictionary over ``database``'s
    identities; ``credentials`` is the source's ``USER … PASSWORD …`` for a ClickHouse
    server whose default user has a password (a rotated password changes the statement,
    so the next migrate recreates it)."""
    query = (f"SELECT cityHash64(toString(project_id), anonymous_id) AS key, "
             f"min(first_link).2 AS user_id, cityHash64(user_id) AS user_key "
             f"FROM {quote_name(database)}.identities GROUP BY project_id, anonymous_id")
    lo, hi = IDENTITY_MAP_LIFETIME
    return (f"CREATE OR REPLACE DICTIONARY {IDENTITY_MAP} "
            "(key UInt64, user_id String, user_key UInt64) "
            f"PRIMARY KEY key SOURCE(CLICKHOUSE(QUERY {quote_literal(query)} {credentials})) "
            f"LAYOUT(HASHED()) LIFETIME(MIN {lo} MAX {hi})")


def reload_identity_map(client: Client) -> None:
    """Reload now: after an erasure, whose deleted links the recent ones cannot outvote."""
    client.command(f"SYSTEM RELOAD DICTIONARY {IDENTITY_MAP}")


def counted_events(where: str, columns: str = "*") -> str:
    """The counted events of project %(p)s matching ``where``, each with its ``person``.

    ``where`` should bound ``timestamp`` so the scan uses the table's date key.
    """
    return (f"{WITH_RECENT} SELECT {columns}, {PERSON} AS person FROM events "
            f"WHERE project_id = %(p)s AND {COUNTED} AND ({where})")


# One person, looked up by any of their ids (the persons API).
#
# ``id`` resolves as the rules above say: a user id (an id some event carries as its user
# id) is its own person, even if an alias also linked it as a previous id; otherwise an
# anonymous id linked to a user is that user's; otherwise the anonymous id is the person.
# The summary is over the person's counted events, all time: a person whose only events
# are bots' or excluded ones is not found.

_RESOLVE = """
SELECT
    (SELECT count() FROM (SELECT 1 FROM events
                          WHERE project_id = %(p)s AND user_id = %(x)s LIMIT 1)) AS is_user,
    (SELECT min(first_link).2 FROM identities
     WHERE project_id = %(p)s AND anonymous_id = %(x)s) AS linked_user
"""

# The anonymous ids first linked to user %(u)s. The inner scan keeps only the rows whose
# own state names the user: the user who wins the merged state is the winner of one row.
_LINKED_IDS = """
SELECT anonymous_id FROM identities
WHERE project_id = %(p)s AND anonymous_id IN (
    SELECT anonymous_id FROM identities
    WHERE project_id = %(p)s AND first_link.2 = %(u)s)
GROUP BY anonymous_id HAVING min(first_link).2 = %(u)s
ORDER BY anonymous_id
"""

# Only the events carrying one of the person's ids can be theirs; ``person`` decides.
_THEIRS = "user_id = %(u)s OR anonymous_id IN %(ids)s"

_SUMMARY = f"""
SELECT min(timestamp), max(timestamp), count()
FROM ({counted_events(_THEIRS)}) WHERE person = cityHash64(%(u)s)
"""

# The orders per currency, as the KPIs give them: '' is the currency of orders sent
# without one, and of orders without revenue (the collector keeps no currency for those).
_ORDERS = f"""
SELECT currency, count(), sum(revenue)
FROM ({counted_events(f"({_THEIRS}) AND event IN %(o)s")}) WHERE person = cityHash64(%(u)s)
GROUP BY currency ORDER BY currency
"""

# Per trait key, its value in the latest identify that set it (raw JSON text); ties in
# time go to the greater message id, so the answer does not depend on arrival order.
_TRAITS = f"""
SELECT kv.1 AS key, argMax(kv.2, (timestamp, message_id))
FROM ({counted_events(_THEIRS)})
ARRAY JOIN JSONExtractKeysAndValuesRaw(traits) AS kv
WHERE person = cityHash64(%(u)s) AND type = 'identify'
GROUP BY key ORDER BY key
"""


@dataclass(frozen=True, slots=True)
class Orders:
    """A person's orders in one currency: amounts are never added across currencies."""

    currency: str  # '' for orders sent without a currency or without revenue
    orders: int
    revenue: Decimal


@dataclass(frozen=True, slots=True)
class Person:
    """A person's ids and a summary of their counted events."""

    id: str  # the user id, or the anonymous id of a person never identified
    user_id: str | None
    ids: tuple[str, ...]  # the user id (if any) and the anonymous ids linked to it, sorted
    first_seen: datetime
    last_seen: datetime
    events: int
    traits: dict[str, Any]  # latest value per key across the person's identifies
    currencies: tuple[Orders, ...]  # their orders (order events), per currency

    @property
    def orders(self) -> int:
        return sum(c.orders for c in self.currencies)


def find_person(client: Client, project_id: str, any_id: str,
                order_events: Sequence[str]) -> Person | None:
    """The person ``any_id`` (a user id or an anonymous id) belongs to; None if unknown."""
    if not any_id:
        return None
    params: dict[str, Any] = {"p": project_id, "x": any_id}
    is_user, linked_user = client.query(_RESOLVE, parameters=params).result_rows[0]
    if is_user:
        user_id: str | None = any_id
    else:
        user_id = str(linked_user) or None
    person_id = user_id or any_id
    ids = {person_id}
    if user_id is not None:
        ids.update(str(r[0]) for r in client.query(
            _LINKED_IDS, parameters={"p": project_id, "u": user_id}).result_rows)
    params = {"p": project_id, "u": person_id, "ids": sorted(ids), "o": list(order_events)}
    first, last, events = client.query(_SUMMARY, parameters=params).result_rows[0]
    if not events:
        return None
    traits = {str(key): orjson.loads(value) for key, value in client.query(
        _TRAITS, parameters=params).result_rows}
    currencies = tuple(Orders(str(c), int(n), Decimal(r)) for c, n, r in client.query(
        _ORDERS, parameters=params).result_rows)
    return Person(
        id=person_id, user_id=user_id, ids=tuple(sorted(ids)), first_seen=_utc(first),
        last_seen=_utc(last), events=int(events), traits=traits, currencies=currencies,
    )


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
