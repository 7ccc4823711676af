"""Versioned, idempotent migrations: one ``NNNN_name.sql`` file per version."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from clickhouse_connect.driver.client import Client

from store.client import quote_literal
from store.persons import ensure_identity_map

if TYPE_CHECKING:
    from tracklane.projects import Project

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file is malformed or failed to apply."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


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
    for entry in resources.files("store.migrations").iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        text = entry.read_text()
        statements = tuple(s.strip() for s in re.split(r";\s*\n", text) if _has_sql(s))
        found.append(Migration(int(match.group(1)), match.group(2), statements))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions: {versions}")
    return found


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


def migrate(client: Client, retention: RetentionConfig,
            identity_credentials: str = "") -> list[int]:
    """Apply the migrations not yet recorded; return the versions applied now.

    Then apply the retention and (re)create the ``identity_map`` dictionary, whose source
    needs ``identity_credentials`` on a server with a password (``dictionary_credentials``).
    """
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for migration in available_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements:
            try:
                client.command(statement)
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
    ensure_identity_map(client, str(client.command("SELECT currentDatabase()")),
                        identity_credentials)
    return applied


def project_retention(projects: Iterable[Project]) -> dict[str, int]:
    """``RetentionConfig.projects`` from the projects file: those with ``retention_days``."""
    return {p.id: p.retention_days for p in projects if p.retention_days is not None}


def apply_retention(client: Client, retention: RetentionConfig) -> None:
    # Every start runs this: rewriting every part to apply an unchanged TTL would stall
    # the start and queue ahead of any erasure's mutations. Expired rows go as parts
    # merge (OPTIMIZE TABLE ... FINAL forces it).
    lazy = {"materialize_ttl_after_modify": 0}
    client.command(
        f"ALTER TABLE events MODIFY TTL {_ttl('toDateTime(timestamp)', retention)}",
        settings=lazy)
    # Ids are kept a little longer than the window the sink looks back over.
    client.command(
        f"ALTER TABLE event_ids MODIFY TTL toDateTime(received_at) "
        f"+ INTERVAL {int(retention.dedup_window_hours) + 1} HOUR", settings=lazy)
    # A link outlives its events by nothing: it goes with the last event that made it.
    for table, column in (("rollups_minute", "minute"), ("sessions", "day"),
                          ("identities", "toDateTime(last_linked)")):
        client.command(f"ALTER TABLE {table} MODIFY TTL {_ttl(column, retention)}",
                       settings=lazy)


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
