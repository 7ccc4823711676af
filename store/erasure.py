"""Erasing one user from one project: their raw events and their share of every aggregate.

What is erased, within the project only:

- every event whose ``user_id`` is the id, or whose ``previous_id`` is (an alias away from
  it: the row holds the raw id);
- every *anonymous* event (no user id) of the anonymous ids linked to the user, that is
  the ``anonymous_id`` values of the user's own events: what they did before identifying.
  Events of a linked anonymous id that carry *another* user id belong to that other
  person (a shared device) and are kept.

Aggregates keep no trace of the user: ``uniq`` states cannot be subtracted from, so the
rows a deleted event fed are rebuilt from the events that remain, with the very SELECT of
the materialized view that filled them (read from the live view definition, its source
narrowed to the affected rows). ``rollups_minute`` is rebuilt per affected minute of the
project (every event and bot flag of that minute), ``sessions`` per affected (day,
session id). The rebuild runs *before* the raw events are deleted, reading the remaining
events as "the affected ones minus the erased ones": a failure at any step leaves the raw
events in place, so the same request can simply be retried and redoes everything.

``event_ids`` rows are kept: they hold only the project, an opaque message id, the
receive time and a batch token, and expire with the deduplication window. Keeping them
means a client retry or a sink replay of an erased message inside that window is dropped
as a duplicate instead of bringing the erased event back.

Deletes are ``ALTER TABLE ... DELETE`` mutations run with ``mutations_sync = 2``: the rows
are physically rewritten away, not just masked, when :func:`erase_user` returns.
The tables keep an insert deduplication window, and a rebuilt block may equal an earlier
one (a retried erasure rebuilds the very rows of the failed attempt): re-inserts run with
``insert_deduplicate = 0`` and, for servers where ``deduplicate_insert`` supersedes that, a
deduplication token unique to the attempt, so they are never dropped as replays.

One audit row per request goes to ``erasures`` (migration 0011): a SHA-256 of the user id,
never the id, and the counts, never the affected days.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

# One erasure at a time in this process: two rebuilding the same minute at once could
# each delete the old rows and each insert the new ones.
_LOCK = threading.Lock()

# Physically rewrite the rows away and wait for it, on every replica there may be.
_MUTATION = {"mutations_sync": 2}

_LINKED_ANONYMOUS_IDS = (
    "SELECT DISTINCT anonymous_id FROM events "
    "WHERE project_id = %(p)s AND user_id = %(u)s AND anonymous_id != ''"
)
# The erased events. %(anon)s is the list of linked anonymous ids, read once up front: a
# mutation may evaluate a subquery over the table it is rewriting more than once.
_ERASED = (
    "(project_id = %(p)s AND (user_id = %(u)s OR previous_id = %(u)s "
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


@dataclass(frozen=True, slots=True)
class _Aggregate:
    """A table filled by a materialized view from ``events``, and its affected rows."""

    table: str
    view: str
    affected: str  # the table's rows that erased events fed (a WHERE over the table)
    source: str  # the events those rows are rebuilt from (a WHERE over events)


AGGREGATES = (
    _Aggregate("rollups_minute", "rollups_minute_mv",
               f"project_id = %(p)s AND minute IN ({_ERASED_MINUTES})", _ROLLUP_SOURCE),
    _Aggregate("sessions", "sessions_mv",
               f"project_id = %(p)s AND (day, session_id) IN ({_ERASED_SESSIONS})",
               _SESSION_SOURCE),
)

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


def user_hash(user_id: str) -> str:
    """What the audit keeps instead of the user id: its SHA-256, in hex."""
    return hashlib.sha256(user_id.encode()).hexdigest()


def erase_user(client: Client, project_id: str, user_id: str, *, requested_by: str,
               requested_at: datetime) -> Erasure:
    """Erase ``user_id`` from ``project_id`` (see the module docstring); audit and report it.

    A user with no events is not an error: the erasure is audited with zero counts.
    """
    if not user_id:
        # '' is every anonymous event's user id.
        raise ValueError("user_id: required")
    with _LOCK:
        anon = [str(r[0]) for r in client.query(
            _LINKED_ANONYMOUS_IDS, parameters={"p": project_id, "u": user_id}).result_rows]
        params: dict[str, Any] = {"p": project_id, "u": user_id, "anon": anon}
        events, days, minutes, sessions = client.query(
            "SELECT count(), uniqExact(toDate(timestamp)), uniqExact(toStartOfMinute(timestamp)),"
            " uniqExactIf((toDate(timestamp), session_id), session_id != '') "
            f"FROM events WHERE {_ERASED}", parameters=params).result_rows[0]
        erasure_id = str(uuid.uuid4())
        if events:
            for aggregate in AGGREGATES:
                _rebuild(client, aggregate, params, f"erasure-{erasure_id}-{aggregate.table}")
            client.command(f"ALTER TABLE events DELETE WHERE {_ERASED}", parameters=params,
                           settings=_MUTATION)
        erasure = Erasure(
            erasure_id=erasure_id, project_id=project_id, user_hash=user_hash(user_id),
            requested_at=requested_at, requested_by=requested_by, events_deleted=int(events),
            anonymous_ids=len(anon), days_rebuilt=int(days), minutes_rebuilt=int(minutes),
            sessions_rebuilt=int(sessions),
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


def _rebuild(client: Client, aggregate: _Aggregate, params: dict[str, Any], token: str) -> None:
    """Replace the affected rows of ``aggregate.table`` with its view's SELECT over the rest."""
    select = rebuild_select(client, aggregate.view, aggregate.source)
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
