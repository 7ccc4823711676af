"""Versioned, idempotent migrations: one ``NNNN_name.sql`` file per version.

Only ``tracklane migrate`` and ``tracklane up`` migrate, one at a time (``migration_lock``);
the other processes check that the store's schema is not behind (``check_schema``) and
run no DDL. After the migrations come the retention TTLs and the ``identity_map``
dictionary, each changed only when its statement differs from the one applied last
(``schema_settings`` keeps a digest of each): a second ``migrate`` changes nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from clickhouse_connect.driver.client import Client

from tracklane.store.client import quote_literal
from tracklane.store.persons import identity_map_ddl, reload_identity_map

if TYPE_CHECKING:
    from tracklane.projects import Project

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sql|py)$")


class MigrationError(RuntimeError):
    """A migration file is malformed or failed to apply."""


class SchemaBehind(MigrationError):
    """The store's schema is older than this Tracklane's; ``tracklane migrate`` first."""


@dataclass(frozen=True, slots=True)
class Migration:
    """SQL statements, or (a ``.py`` file, for what SQL cannot say, like moving a table to
    another partition key) its ``apply(client)``."""

    version: int
    name: str
    statements: tuple[str, ...] = ()
    apply: Callable[[Client], None] | None = None


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Retention applied after the migrations; changing it needs no new migration."""

    events_days: int
    dedup_window_hours: int
    # Project id -> days: a project's own retention of events, rollups and sessions, in
    # place of events_days (see project_retention).
    projects: Mapping[str, int] = field(default_factory=dict)


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("tracklane.store.migrations").iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        version, name = int(match.group(1)), match.group(2)
        if match.group(3) == "py":
            module = importlib.import_module(f"tracklane.store.migrations.{entry.name[:-3]}")
            found.append(Migration(version, name, apply=module.apply))
            continue
        text = entry.read_text()
        statements = tuple(s.strip() for s in re.split(r";\s*\n", text) if _has_sql(s))
        found.append(Migration(version, name, statements))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions: {versions}")
    return found


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


_BOOKKEEPING = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = MergeTree ORDER BY version",
    # A digest of the last statement applied per setting (a TTL, the dictionary).
    "CREATE TABLE IF NOT EXISTS schema_settings "
    "(name String, digest String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = ReplacingMergeTree(applied_at) ORDER BY name",
    # Leases of migrate runs, taken and released by rows (no mutation): the earliest one
    # neither released nor expired migrates, the others wait.
    "CREATE TABLE IF NOT EXISTS schema_lock "
    "(holder String, released UInt8, at DateTime64(6, 'UTC') DEFAULT now64(6)) "
    "ENGINE = MergeTree ORDER BY (holder, at) TTL toDateTime(at) + INTERVAL 1 DAY",
)
# A lease older than this is a migrate that died: it no longer holds the lock.
_LEASE_S = 600


def schema_version(client: Client) -> int | None:
    """The newest migration the store has applied; None for a store never migrated."""
    exists = client.command("EXISTS TABLE schema_migrations")
    if str(exists).strip() != "1":
        return None
    version = str(client.command("SELECT max(version) FROM schema_migrations")).strip()
    return int(version) if version.isdigit() and int(version) > 0 else None


def check_schema(client: Client) -> int:
    """Refuse a store whose schema is behind this Tracklane's migrations (this process
    does not migrate: ``tracklane migrate`` does); its version otherwise."""
    latest = available_migrations()[-1].version
    version = schema_version(client)
    if version is None or version < latest:
        raise SchemaBehind(
            f"the store's schema is at version {version or 0:04d}, this Tracklane needs "
            f"{latest:04d}: run `tracklane migrate` (or start `tracklane up`) first")
    return version


@contextmanager
def migration_lock(client: Client, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold the store's migration lock: a lease row, the earliest live one holding it."""
    holder = uuid.uuid4().hex
    client.insert("schema_lock", [[holder, 0]], column_names=["holder", "released"])
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            first = client.query(
                "SELECT holder FROM schema_lock GROUP BY holder HAVING max(released) = 0 "
                f"AND min(at) > now64(6) - INTERVAL {_LEASE_S} SECOND "
                "ORDER BY min(at), holder LIMIT 1").result_rows
            if first and first[0][0] == holder:
                break
            if time.monotonic() > deadline:
                raise MigrationError("another `tracklane migrate` holds the store's migration "
                                     f"lock (for at most {_LEASE_S} s); try again later")
            time.sleep(0.5)
        yield
    finally:
        client.insert("schema_lock", [[holder, 1]], column_names=["holder", "released"])


def migrate(client: Client, retention: RetentionConfig,
            identity_credentials: str = "", until: int | None = None) -> list[int]:
    """Apply the migrations not yet recorded, under the migration lock; return the
    versions applied now.

    Then apply the retention and (re)create the ``identity_map`` dictionary, whose source
    needs ``identity_credentials`` on a server with a password (``dictionary_credentials``),
    each only if it changed. ``until``: the last version to apply (a test of a migration
    path starts from an older schema).
    """
    for statement in _BOOKKEEPING:
        client.command(statement)
    with migration_lock(client):
        return _migrate(client, retention, identity_credentials, until)


def _migrate(client: Client, retention: RetentionConfig, identity_credentials: str,
             until: int | None) -> list[int]:
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for migration in available_migrations():
        if migration.version in done or (until is not None and migration.version > until):
            continue
        try:
            for statement in migration.statements:
                client.command(statement)
            if migration.apply is not None:
                migration.apply(client)
        except Exception as exc:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} failed: {exc}"
            ) from exc
        client.insert(
            "schema_migrations", [[migration.version, migration.name]],
            column_names=["version", "name"],
        )
        log.info("migration applied",
                 extra={"version": migration.version, "migration": migration.name})
        applied.append(migration.version)
    apply_retention(client, retention)
    database = str(client.command("SELECT currentDatabase()"))
    changed = _changed(client, {"dictionary.identity_map": identity_map_ddl(
        database, identity_credentials)})
    for name, statement in changed.items():
        client.command(statement)
        _record(client, name, statement)
    reload_identity_map(client)
    return applied


def _digest(statement: str) -> str:
    # A digest, not the text: the dictionary's statement holds the store's password.
    return hashlib.sha256(statement.encode()).hexdigest()


def _changed(client: Client, statements: Mapping[str, str]) -> dict[str, str]:
    """The statements whose digest differs from the one recorded last."""
    applied = {str(name): str(digest) for name, digest in client.query(
        "SELECT name, argMax(digest, applied_at) FROM schema_settings GROUP BY name"
    ).result_rows}
    return {name: statement for name, statement in statements.items()
            if applied.get(name) != _digest(statement)}


def _record(client: Client, name: str, statement: str) -> None:
    client.insert("schema_settings", [[name, _digest(statement)]],
                  column_names=["name", "digest"])


def project_retention(projects: Iterable[Project]) -> dict[str, int]:
    """``RetentionConfig.projects`` from the projects file: those with ``retention_days``."""
    return {p.id: p.retention_days for p in projects if p.retention_days is not None}


def apply_retention(client: Client, retention: RetentionConfig) -> None:
    """Set each table's TTL, where it differs from the one applied last."""
    # Ids are kept a little longer than the window the sink looks back over. A link
    # outlives its events by nothing: it goes with the last event that made it.
    ttls = {"events": _ttl("toDateTime(timestamp)", retention),
            "event_ids": f"toDateTime(received_at) "
                         f"+ INTERVAL {int(retention.dedup_window_hours) + 1} HOUR",
            **{table: _ttl(column, retention) for table, column in (
                ("rollups_minute", "minute"), ("sessions", "day"),
                ("identities", "toDateTime(last_linked)"))}}
    client.command(_BOOKKEEPING[1])
    changed = _changed(client, {f"ttl.{table}": f"ALTER TABLE {table} MODIFY TTL {ttl}"
                                for table, ttl in ttls.items()})
    for name, statement in changed.items():
        # Rewriting every part to apply the new TTL at once would stall the migration and
        # queue ahead of any erasure's mutations: expired rows go as parts merge
        # (OPTIMIZE TABLE ... FINAL forces it).
        client.command(statement, settings={"materialize_ttl_after_modify": 0})
        _record(client, name, statement)


_PROJECT_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def _ttl(column: str, retention: RetentionConfig) -> str:
    """TTL rules: one per distinct project retention, then the default for all the others.

    ClickHouse deletes a row when any rule matches, so the default excludes the projects
    that have their own: a project may keep its data longer than the default, too.
    """
    default = f"{column} + INTERVAL {int(retention.events_days)} DAY"
    if not retention.projects:
        return default
    by_days: dict[int, list[str]] = {}
    for project_id, days in sorted(retention.projects.items()):
        by_days.setdefault(_days(days), []).append(_quoted_project(project_id))
    rules = [f"{column} + INTERVAL {days} DAY DELETE WHERE project_id IN ({', '.join(ids)})"
             for days, ids in sorted(by_days.items())]
    others = ", ".join(_quoted_project(p) for p in sorted(retention.projects))
    return ", ".join([*rules, f"{default} DELETE WHERE project_id NOT IN ({others})"])


def _days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
        raise ValueError(f"retention: {days!r} days is not a whole number of days in 1..3650")
    return days


def _quoted_project(project_id: str) -> str:
    # Project ids are validated by the projects file already; TTL text takes no bound
    # parameters, so check again and quote.
    if not _PROJECT_ID.fullmatch(project_id):
        raise ValueError(f"retention: invalid project id {project_id!r}")
    return quote_literal(project_id)
