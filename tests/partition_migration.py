"""Run by tests/test_migrate_partitions.py in a process of its own (one chDB path per
process): a store at schema 0014 (daily partitions) with events over 45 days, then
``migrate``; prints what the test checks, as JSON."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from tracklane.collector.enrich import parse_user_agent
from tracklane.contract import (
    EVENT_COLUMNS,
    RequestFacts,
    TimeLimits,
    build_envelope,
    envelope_to_row,
    parse_message,
)
from tracklane.store.client import create_client
from tracklane.store.migrate import RetentionConfig, migrate
from tracklane.store.queries import insert_events

START = datetime(2026, 10, 20, 12, tzinfo=UTC)
DAYS = 45


def load(client: Client, days: range) -> None:
    rows = []
    for offset, day in enumerate(days):
        at = START + timedelta(days=day)
        facts = RequestFacts(project_id="p", received_at=at, anonymized_ip="192.0.2.0",
                             user_agent=parse_user_agent("curl/8"))
        message = {"type": "track", "event": "bought", "anonymousId": f"a-{day}",
                   "messageId": f"m-{day}", "timestamp": at.isoformat()}
        env = build_envelope(parse_message(message), facts,
                             TimeLimits(max_past=timedelta(days=3650)))
        rows.append(envelope_to_row(env, 0, offset, "p"))
    # At schema 0014 the table has not every column of today's contract yet.
    have = {str(r[0]) for r in client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() "
        "AND table = 'events'").result_rows}
    keep = [i for i, column in enumerate(EVENT_COLUMNS) if column in have]
    if len(keep) == len(EVENT_COLUMNS):
        insert_events(client, rows, uuid.uuid4().hex)
    else:
        client.insert("events", [[row[i] for i in keep] for row in rows],
                      column_names=[EVENT_COLUMNS[i] for i in keep])


def state(c: Client) -> dict[str, object]:
    return {
        "keys": {str(k): str(v) for k, v in c.query(
            "SELECT name, partition_key FROM system.tables WHERE database = currentDatabase() "
            "AND name IN ('events', 'rollups_minute')").result_rows},
        "partitions": c.query(
            "SELECT DISTINCT partition FROM system.parts WHERE active AND table = 'events' "
            "AND database = currentDatabase() ORDER BY partition").result_rows,
        "events": c.command("SELECT count() FROM events"),
        "rollups": c.command(
            "SELECT sum(events) FROM rollups_minute"),
        "tables": [r[0] for r in c.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND name LIKE '%by_month%'").result_rows],
    }


def main(dsn: str) -> None:
    client = create_client(dsn)
    retention = RetentionConfig(events_days=3650, dedup_window_hours=48)
    migrate(client, retention, until=14)
    load(client, range(DAYS))
    before = state(client)
    applied = migrate(client, retention)
    after = state(client)
    load(client, range(DAYS, DAYS + 3))  # the views still feed the new tables
    print(json.dumps({"before": before, "applied": applied, "after": after,
                      "later": state(client), "again": migrate(client, retention)},
                     default=str))


if __name__ == "__main__":
    main(sys.argv[1])
