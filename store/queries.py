"""Every SQL statement the services run, as small typed functions over a client."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from tracklane.contract import EVENT_COLUMNS


@dataclass(frozen=True, slots=True)
class BatchIntent:
    """The range and token of the batch a sink was inserting, written before the insert."""

    partition: int
    seq: int
    start_offset: int
    end_offset: int
    first_key: str
    batch_token: str


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    partition: int
    next_offset: int
    highwater: int
    lag: int
    watermark: datetime


@dataclass(frozen=True, slots=True)
class MinuteStats:
    minute: datetime
    count: int
    unique_users: int
    revenue: Decimal


def insert_events(client: Client, rows: Sequence[Sequence[Any]], token: str) -> None:
    """Insert raw events; the rollup and id views follow in the same insert.

    A replay with the same ``token`` is dropped by ClickHouse, in the table and, through
    ``deduplicate_blocks_in_dependent_materialized_views``, in every view.
    """
    client.insert(
        "events", rows, column_names=list(EVENT_COLUMNS),
        settings={
            "insert_deduplicate": 1,
            "insert_deduplication_token": token,
            "deduplicate_blocks_in_dependent_materialized_views": 1,
        },
    )


def remember_message_ids(client: Client, rows: Sequence[tuple[str, str, datetime]],
                         token: str) -> None:
    """Record (project, message id, received at) as seen without an event row: a resend
    of it inside the dedup window is then a duplicate."""
    client.insert("event_ids", [[p, m, at, token] for p, m, at in rows],
                  column_names=["project_id", "message_id", "received_at", "batch_token"])


def batch_rows(client: Client, token: str) -> list[list[Any]]:
    """The ``events`` rows one sink batch stored under ``token``, in ``EVENT_COLUMNS`` order
    and the batch's own (its records' partition and offset).

    ``batch_token`` is in no key: this reads the column whole, once, when a sink recovers a
    batch the log no longer holds (see stream/consumer.py)."""
    # Times as the sink inserts them (epoch milliseconds, contract._ms): read back as
    # datetimes, a client in another time zone would shift them.
    columns = ", ".join(f"toUnixTimestamp64Milli({c})" if c in _TIMES else c
                        for c in EVENT_COLUMNS)
    return [list(row) for row in client.query(
        f"SELECT {columns} FROM events WHERE batch_token = %(t)s "
        "ORDER BY kafka_partition, kafka_offset", parameters={"t": token}).result_rows]


_TIMES = frozenset({"timestamp", "received_at", "sent_at"})


def stored_message_ids(
    client: Client, pairs: Iterable[tuple[str, str]], since: datetime
) -> dict[tuple[str, str], str]:
    """Which (project, message id) pairs are stored since ``since``, and under which batch token."""
    pairs = set(pairs)
    if not pairs:
        return {}
    # The ids travel as one hex literal of RowBinary read by format(): ClickHouse parses a
    # literal array of 5,000 strings in about 10 ms and clickhouse-connect escapes it in
    # Python for as long (the sink's GIL), while a hex literal costs next to nothing and
    # cannot be broken out of. The project condition only narrows the primary key; the
    # caller never looks up a pair it did not ask for.
    ids = _row_binary_strings(m for _, m in pairs).hex()
    projects = ", ".join(f"x'{p.encode().hex()}'" for p in sorted({p for p, _ in pairs}))
    query = (
        "SELECT project_id, message_id, batch_token FROM event_ids "
        f"WHERE project_id IN ({projects}) "
        f"AND message_id IN (SELECT m FROM format(RowBinary, 'm String', x'{ids}')) "
        f"AND received_at >= fromUnixTimestamp64Milli({int(since.timestamp() * 1000)}, 'UTC')"
    )
    result = client.query(query, settings={"max_query_size": len(query) + 1024})
    return {(str(p), str(m)): str(t) for p, m, t in result.result_rows if (p, m) in pairs}


def _row_binary_strings(values: Iterable[str]) -> bytes:
    """``values`` in ClickHouse's RowBinary, one String column: each as its LEB128 length
    and its UTF-8 bytes. Hand-written: clickhouse-connect's writers are not public."""
    out = bytearray()
    for value in values:
        data = value.encode()
        size = len(data)
        while size >= 0x80:
            out.append((size & 0x7F) | 0x80)
            size >>= 7
        out.append(size)
        out += data
    return bytes(out)


def latest_intent(client: Client, group: str, topic: str, partition: int) -> BatchIntent | None:
    rows = client.query(
        "SELECT partition, seq, start_offset, end_offset, first_key, batch_token "
        "FROM stream_offsets WHERE consumer_group = %(g)s AND topic = %(t)s "
        "AND partition = %(p)s ORDER BY seq DESC LIMIT 1",
        parameters={"g": group, "t": topic, "p": partition},
    ).result_rows
    if not rows:
        return None
    p, seq, start, end, first_key, token = rows[0]
    return BatchIntent(int(p), int(seq), int(start), int(end), str(first_key), str(token))


def write_intent(client: Client, group: str, topic: str, intent: BatchIntent) -> None:
    client.insert(
        "stream_offsets",
        [[group, topic, intent.partition, intent.seq, intent.start_offset, intent.end_offset,
          intent.first_key, intent.batch_token, datetime.now(UTC)]],
        column_names=["consumer_group", "topic", "partition", "seq", "start_offset",
                      "end_offset", "first_key", "batch_token", "written_at"],
    )


def write_progress(
    client: Client, group: str, topic: str, progress: Sequence[PartitionProgress], now: datetime,
    erasures_seen: int = 0,
) -> None:
    if not progress:
        return
    client.insert(
        "stream_progress",
        [[group, topic, p.partition, p.next_offset, p.highwater, p.lag, p.watermark, now,
          erasures_seen] for p in progress],
        column_names=["consumer_group", "topic", "partition", "next_offset", "highwater",
                      "lag", "watermark", "updated_at", "erasures_seen"],
    )


def forget_partitions(client: Client, group: str, topic: str, keep: Sequence[int]) -> None:
    """Drop the progress of partitions the topic no longer has (it was recreated with
    fewer): their last report would otherwise hold the pipeline's watermark back forever."""
    client.command(
        "DELETE FROM stream_progress WHERE consumer_group = %(g)s AND topic = %(t)s "
        "AND partition NOT IN %(keep)s",
        parameters={"g": group, "t": topic, "keep": list(keep)},
    )


def read_progress(client: Client, group: str, topic: str) -> list[PartitionProgress]:
    rows = client.query(
        "SELECT partition, argMax(next_offset, updated_at), argMax(highwater, updated_at), "
        "argMax(lag, updated_at), argMax(watermark, updated_at) FROM stream_progress "
        "WHERE consumer_group = %(g)s AND topic = %(t)s GROUP BY partition ORDER BY partition",
        parameters={"g": group, "t": topic},
    ).result_rows
    return [PartitionProgress(int(r[0]), int(r[1]), int(r[2]), int(r[3]), _utc(r[4])) for r in rows]


def minute_stats(
    client: Client, project_id: str, event: str, start: datetime, end: datetime
) -> list[MinuteStats]:
    """Per-minute count, unique users and revenue of one event over [start, end), zero-filled."""
    start, end = _floor_minute(start), _floor_minute(end)
    result = client.query(
        "SELECT minute, sum(events), uniqMerge(users), sum(revenue) FROM rollups_minute "
        "WHERE project_id = %(p)s AND event = %(e)s AND minute >= %(s)s AND minute < %(t)s "
        "GROUP BY minute ORDER BY minute",
        parameters={"p": project_id, "e": event, "s": start, "t": end},
    ).result_rows
    found = {_utc(r[0]): MinuteStats(_utc(r[0]), int(r[1]), int(r[2]), Decimal(r[3]))
             for r in result}
    out = []
    minute = start
    while minute < end:
        out.append(found.get(minute) or MinuteStats(minute, 0, 0, Decimal(0)))
        minute += timedelta(minutes=1)
    return out


def _floor_minute(ts: datetime) -> datetime:
    return _utc(ts).replace(second=0, microsecond=0)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def ingest_totals(client: Client, project_id: str, since: datetime) -> dict[str, int]:
    """Events the collectors accepted and rejected for a project since ``since``, by outcome."""
    rows = client.query(
        "SELECT outcome, sum(events) FROM ingest_minute WHERE project_id = %(p)s "
        "AND minute >= %(s)s GROUP BY outcome",
        parameters={"p": project_id, "s": _floor_minute(since)},
    ).result_rows
    return {str(outcome): int(n) for outcome, n in rows}
