"""Erasing one user from one project: their raw events and their share of every aggregate.

What is erased, within the project only, is the person of :mod:`store.persons` whose user
id is the id, and every row naming the id:

- every event whose ``user_id``, ``anonymous_id`` or ``previous_id`` is the id (an alias
  from or to it, a row that holds the raw id in any id column);
- every *anonymous* event (no user id) of the anonymous ids that belong to the user: those
  first linked to them in ``identities`` (devices, browsers, an alias's previous id), what
  was done on them before and between logins.

An anonymous id first linked to another user is that user's: its anonymous events stay.
Events that carry one of the user's anonymous ids with *another* user id belong to that
other person (a shared browser identified as ``u1``, then without a reset as ``u2``) and
stay too: erasing ``u1`` keeps ``u2``'s events, erasing ``u2`` keeps the anonymous
id's anonymous events, which are ``u1``'s.

``identities`` keeps no link the erased events made: its rows of every anonymous id the
user's events or the erased events link (and of the id itself) are rebuilt from the
events that remain, with the view's own SELECT, as for the aggregates below. So the
shared browser's anonymous id, once ``u1`` is erased, belongs to ``u2``, whose remaining
events link it; an anonymous id only the user linked has no row left. A link whose
events have all expired (the table's TTL) is not kept by a rebuild either.

Aggregates keep no trace of the user: ``uniq`` states cannot be subtracted from, so the
rows a deleted event fed are rebuilt from the events that remain, with the very SELECT of
the materialized view that filled them (read from the live view definition, its source
narrowed to the affected rows). ``rollups_minute`` is rebuilt per affected minute of the
project (every event and bot flag of that minute), ``sessions`` per affected (day,
session id), ``identities`` per affected anonymous id. The rebuilds run *before* the raw
events are deleted, reading the remaining events as "the affected ones minus the erased
ones": a failure at any step leaves the raw events in place, so the same request can
simply be retried and redoes everything. That is also why the anonymous ids that belong
to the user are found from ``identities`` *and* the events together: after a failed
attempt rebuilt ``identities``, the user's own events still say which ids were theirs.

Before anything is deleted, the user id and their anonymous ids go to ``erased_ids``
(:mod:`store.erased_ids`), and the erasure waits until every live sink reads them: from
then on the sink drops the person's events that happened or arrived before the erasure,
whether still in Kafka or the spool, retried by a client or sent late. Events that
arrive in that wait and link one more anonymous id to the user add it to the list too.
``event_ids`` rows are kept: they hold only the project, an opaque message id, the
receive time and a batch token, and expire with the deduplication window.

Deletes are ``ALTER TABLE ... DELETE`` mutations run with ``mutations_sync = 2``: the rows
are physically rewritten away, not just masked, when :func:`erase_user` returns.
The tables keep an insert deduplication window, and a rebuilt block may equal an earlier
one (a retried erasure rebuilds the very rows of the failed attempt): re-inserts run with
``insert_deduplicate = 0`` and, for servers where ``deduplicate_insert`` supersedes that, a
deduplication token unique to the attempt, so they are never dropped as replays.

One audit row per request goes to ``erasures`` (migration 0011): an HMAC of the user id
under the install's secret (``TRACKLANE_SECRET``), never the id, and the counts, never the
affected days.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tracklane.store import erased_ids
from tracklane.store.persons import reload_identity_map

# One erasure at a time in this process: two rebuilding the same minute at once could
# each delete the old rows and each insert the new ones.
_LOCK = threading.Lock()

# Physically rewrite the rows away and wait for it, on every replica there may be.
_MUTATION = {"mutations_sync": 2}

# The erased events. %(anon)s is the list of anonymous ids that belong to the user, read
# once up front: a mutation may evaluate a subquery over the table it is rewriting more
# than once.
_ERASED = (
    "(project_id = %(p)s AND (user_id = %(u)s OR previous_id = %(u)s OR anonymous_id = %(u)s "
    "OR (user_id = '' AND anonymous_id != '' AND anonymous_id IN %(anon)s)))"
)
_ERASED_DAYS = f"SELECT DISTINCT toDate(timestamp) FROM events WHERE {_ERASED}"
_ERASED_MINUTES = f"SELECT DISTINCT toStartOfMinute(timestamp) FROM events WHERE {_ERASED}"
_ERASED_SESSIONS = (
    f"SELECT DISTINCT toDate(timestamp), session_id FROM events "
    f"WHERE {_ERASED} AND session_id != ''"
)

# The events a view's rows are rebuilt from: those feeding the affected rows, minus the
# erased ones. Each view's SELECT reads its source ``events`` through this instead.
_ROLLUP_SOURCE = (
    f"project_id = %(p)s AND toDate(timestamp) IN ({_ERASED_DAYS}) "
    f"AND toStartOfMinute(timestamp) IN ({_ERASED_MINUTES}) AND NOT {_ERASED}"
)
_SESSION_SOURCE = (
    f"project_id = %(p)s AND toDate(timestamp) IN ({_ERASED_DAYS}) "
    f"AND (toDate(timestamp), session_id) IN ({_ERASED_SESSIONS}) AND NOT {_ERASED}"
)
# ``identities`` rows are per anonymous id: %(linked)s lists the affected ones. An event
# links its anonymous id, and an alias its previous id too.
_LINKED_ROWS = "project_id = %(p)s AND anonymous_id IN %(linked)s"
_IDENTITY_SOURCE = (
    f"project_id = %(p)s AND (anonymous_id IN %(linked)s OR previous_id IN %(linked)s) "
    f"AND NOT {_ERASED}"
)

# The events whose links may involve the user (``identities_mv`` reads them).
_USERS_EVENTS = "project_id = %(p)s AND user_id = %(u)s"
_CANDIDATE_EVENTS = (
    "project_id = %(p)s AND (anonymous_id IN %(cand)s OR previous_id IN %(cand)s)"
)
# ``identities`` rows whose own state names the user: the merged winner of an anonymous id
# is the winner of one of its rows.
_NAMED_ROWS = (
    "SELECT DISTINCT anonymous_id FROM identities "
    "WHERE project_id = %(p)s AND first_link.2 = %(u)s"
)


@dataclass(frozen=True, slots=True)
class _Aggregate:
    """A table filled by a materialized view from ``events``, and its affected rows."""

    table: str
    view: str
    affected: str  # the table's rows that erased events fed (a WHERE over the table)
    source: str  # the events those rows are rebuilt from (a WHERE over events)
    # The view's rows to keep, when its SELECT over ``source`` also makes rows of others.
    keep: str | None = None


AGGREGATES = (
    _Aggregate("rollups_minute", "rollups_minute_mv",
               f"project_id = %(p)s AND minute IN ({_ERASED_MINUTES})", _ROLLUP_SOURCE),
    _Aggregate("sessions", "sessions_mv",
               f"project_id = %(p)s AND (day, session_id) IN ({_ERASED_SESSIONS})",
               _SESSION_SOURCE),
)
IDENTITIES = _Aggregate("identities", "identities_mv", _LINKED_ROWS, _IDENTITY_SOURCE,
                        keep=_LINKED_ROWS)

# "FROM events" in a view's normalized SELECT, with or without a database in front.
_FROM_EVENTS = re.compile(r"\bFROM\s+(?:`?\w+`?\.)?`?events`?(?![\w.`])")


class ErasureError(RuntimeError):
    """The store's views are not what the erasure knows how to rebuild."""


@dataclass(frozen=True, slots=True)
class Erasure:
    erasure_id: str
    project_id: str
    user_hash: str
    requested_at: datetime
    requested_by: str
    events_deleted: int
    anonymous_ids: int
    days_rebuilt: int
    minutes_rebuilt: int
    sessions_rebuilt: int


def erase_user(client: Client, project_id: str, user_id: str, *, requested_by: str,
               requested_at: datetime, audit_key: bytes, fence_timeout_s: float = 20.0) -> Erasure:
    """Erase ``user_id`` from ``project_id`` (see the module docstring); audit and report it.

    A user with no events is not an error: the erasure is audited with zero counts.
    Raises ``ErasureFenceTimeout`` when a live sink did not read the erased ids in
    ``fence_timeout_s``; the ids stay listed, and the same request can be retried.
    """
    if not user_id:
        # '' is every anonymous event's user id.
        raise ValueError("user_id: required")
    with _LOCK:
        params: dict[str, Any] = {"p": project_id, "u": user_id}
        erasure_id = str(uuid.uuid4())
        params["anon"] = _owned_anonymous_ids(client, params)
        seen = erased_ids.record(client, project_id, erasure_id, requested_at, audit_key,
                                 users=[user_id], anonymous_ids=params["anon"])
        erased_ids.wait_for_sinks(client, seen, fence_timeout_s)
        # Events inserted meanwhile may have linked one more anonymous id to the user.
        owned = _owned_anonymous_ids(client, params)
        if more := sorted(set(owned) - set(params["anon"])):
            erased_ids.record(client, project_id, erasure_id, requested_at, audit_key,
                              anonymous_ids=more)
        params["anon"] = owned
        events, days, minutes, sessions = client.query(
            "SELECT count(), uniqExact(toDate(timestamp)), uniqExact(toStartOfMinute(timestamp)),"
            " uniqExactIf((toDate(timestamp), session_id), session_id != '') "
            f"FROM events WHERE {_ERASED}", parameters=params).result_rows[0]
        params["linked"] = _linked_rows(client, params)
        if events:
            for aggregate in AGGREGATES:
                _rebuild(client, aggregate, params, f"erasure-{erasure_id}-{aggregate.table}")
        if params["linked"]:
            _rebuild(client, IDENTITIES, params, f"erasure-{erasure_id}-identities")
            # The dictionary still holds the erased links until it reloads: only rows
            # written since its snapshot are read from the table.
            reload_identity_map(client)
        if events:
            client.command(f"ALTER TABLE events DELETE WHERE {_ERASED}", parameters=params,
                           settings=_MUTATION)
        erasure = Erasure(
            erasure_id=erasure_id, project_id=project_id,
            user_hash=erased_ids.id_hash(user_id, audit_key),
            requested_at=requested_at, requested_by=requested_by, events_deleted=int(events),
            anonymous_ids=len(params["anon"]), days_rebuilt=int(days),
            minutes_rebuilt=int(minutes), sessions_rebuilt=int(sessions),
        )
        client.insert("erasures", [[
            erasure.erasure_id, erasure.project_id, erasure.user_hash, erasure.requested_at,
            erasure.requested_by, erasure.events_deleted, erasure.anonymous_ids,
            erasure.days_rebuilt, erasure.minutes_rebuilt, erasure.sessions_rebuilt,
        ]], column_names=[
            "erasure_id", "project_id", "user_hash", "requested_at", "requested_by",
            "events_deleted", "anonymous_ids", "days_rebuilt", "minutes_rebuilt",
            "sessions_rebuilt",
        ])
        return erasure


def _owned_anonymous_ids(client: Client, params: dict[str, Any]) -> list[str]:
    """The anonymous ids first linked to user %(u)s, sorted.

    The candidates are the ids the user's events link and the ids of ``identities`` rows
    naming the user; an id is the user's when the user wins the merged links of its
    ``identities`` rows and of the events linking it.
    """
    links = rebuild_select(client, "identities_mv", _USERS_EVENTS)
    candidates = sorted({str(r[0]) for r in client.query(
        f"SELECT anonymous_id FROM ({links}) UNION DISTINCT {_NAMED_ROWS}",
        parameters=params).result_rows})
    if not candidates:
        return []
    links = rebuild_select(client, "identities_mv", _CANDIDATE_EVENTS)
    return [str(r[0]) for r in client.query(
        "SELECT anonymous_id FROM ("
        "  SELECT anonymous_id, first_link FROM identities "
        "  WHERE project_id = %(p)s AND anonymous_id IN %(cand)s"
        f"  UNION ALL SELECT anonymous_id, first_link FROM ({links})"
        ") WHERE anonymous_id IN %(cand)s "
        "GROUP BY anonymous_id HAVING min(first_link).2 = %(u)s ORDER BY anonymous_id",
        parameters={**params, "cand": candidates}).result_rows]


def _linked_rows(client: Client, params: dict[str, Any]) -> list[str]:
    """The ``identities`` rows to rebuild: of every anonymous id the erased events link
    (the user's own events among them), of every row naming the user, and of the id
    itself. Whether or not the row is still there: a failed attempt may have dropped it."""
    erased = rebuild_select(client, "identities_mv", _ERASED)
    return [str(r[0]) for r in client.query(
        f"SELECT anonymous_id FROM (SELECT anonymous_id FROM ({erased}) UNION DISTINCT "
        f"{_NAMED_ROWS} UNION DISTINCT SELECT anonymous_id FROM identities "
        "WHERE project_id = %(p)s AND anonymous_id = %(u)s) ORDER BY anonymous_id",
        parameters=params).result_rows]


def _rebuild(client: Client, aggregate: _Aggregate, params: dict[str, Any], token: str) -> None:
    """Replace the affected rows of ``aggregate.table`` with its view's SELECT over the rest."""
    select = rebuild_select(client, aggregate.view, aggregate.source)
    if aggregate.keep is not None:
        select = f"SELECT * FROM ({select}) WHERE {aggregate.keep}"
    columns = ", ".join(f"`{name}`" for name in _columns(client, aggregate.table))
    client.command(f"ALTER TABLE {aggregate.table} DELETE WHERE {aggregate.affected}",
                   parameters=params, settings=_MUTATION)
    client.command(f"INSERT INTO {aggregate.table} ({columns}) SELECT {columns} FROM ({select})",
                   parameters=params,
                   settings={"insert_deduplicate": 0, "insert_deduplication_token": token})


def rebuild_select(client: Client, view: str, source: str) -> str:
    """The live SELECT of materialized ``view``, reading only the events matching ``source``.

    The returned text is a client-side template: ``%`` of the view's own text is escaped
    and ``source`` keeps its ``%(name)s`` parameters.
    """
    rows = client.query(
        "SELECT as_select FROM system.tables WHERE database = currentDatabase() "
        "AND name = %(v)s", parameters={"v": view}).result_rows
    if not rows or not rows[0][0]:
        raise ErasureError(f"materialized view {view} not found")
    text = str(rows[0][0]).replace("%", "%%")
    found = _FROM_EVENTS.findall(text)
    if len(found) != 1:
        raise ErasureError(f"{view}: expected one 'FROM events', found {len(found)}")
    return _FROM_EVENTS.sub(lambda _: f"FROM (SELECT * FROM events WHERE {source}) AS events",
                            text)


def _columns(client: Client, table: str) -> list[str]:
    """The columns a view fills (by name, as the view does), in table order."""
    return [str(r[0]) for r in client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = %(t)s "
        "AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') ORDER BY position",
        parameters={"t": table}).result_rows]
