"""Versioned, idempotent migrations: one ``NNNN_name.sql`` file per version."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.client import Client

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


def migrate(client: Client, retention: RetentionConfig) -> list[int]:
    """Apply the migrations not yet recorded; return the versions applied now."""
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
    return applied


def apply_retention(client: Client, retention: RetentionConfig) -> None:
    client.command(
        f"ALTER TABLE events MODIFY TTL toDateTime(timestamp) "
        f"+ INTERVAL {int(retention.events_days)} DAY"
    )
    # Ids are kept a little longer than the window the sink looks back over.
    client.command(
        f"ALTER TABLE event_ids MODIFY TTL toDateTime(received_at) "
        f"+ INTERVAL {int(retention.dedup_window_hours) + 1} HOUR"
    )
    for table, column in (("rollups_minute", "minute"), ("sessions", "day")):
        client.command(
            f"ALTER TABLE {table} MODIFY TTL {column} "
            f"+ INTERVAL {int(retention.events_days)} DAY"
        )
