"""``events`` and ``rollups_minute`` partitioned by month instead of by day.

Both are partitioned by event time, and the collector accepts events up to 90 days old,
so one sink batch could touch about 92 daily partitions: ClickHouse refuses an insert
block over ``max_partitions_per_insert_block`` (100), and every partition of a block is a
part of its own to write and merge. By month, a batch touches at most four; the TTL still
drops old rows as parts merge (as Plausible partitions its events).

ClickHouse cannot change a table's partition key in place, so each table is copied into
a new one made from its own ``SHOW CREATE TABLE`` (columns, order, TTL and settings as they
are now) with the monthly key, and the two are exchanged atomically. The views name their
source and target tables, so after the exchange they feed the new ones. Re-run after a
crash, it finishes the job: a table already monthly only loses the copy left beside it.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from tracklane.store.client import quote_name

# table -> (daily key, monthly key)
_KEYS = {
    "events": ("toYYYYMMDD(timestamp)", "toYYYYMM(timestamp)"),
    "rollups_minute": ("toYYYYMMDD(minute)", "toYYYYMM(minute)"),
}


def apply(client: Client) -> None:
    for table, (daily, monthly) in _KEYS.items():
        copy = f"{table}_by_month"
        client.command(f"DROP TABLE IF EXISTS {quote_name(copy)}")
        ddl = str(client.query(f"SHOW CREATE TABLE {quote_name(table)}").result_rows[0][0])
        if f"PARTITION BY {monthly}" in ddl:
            continue
        if f"PARTITION BY {daily}" not in ddl:
            raise RuntimeError(f"{table}: unexpected partition key in {ddl!r}")
        head, _, rest = ddl.partition("\n")
        if not head.rstrip().endswith(f".{table}") and not head.rstrip().endswith(f" {table}"):
            raise RuntimeError(f"{table}: unexpected statement {head!r}")
        created = head.rstrip()[: -len(table)] + copy + "\n" + rest.replace(
            f"PARTITION BY {daily}", f"PARTITION BY {monthly}")
        client.command(created)
        # Not through the views: the rollups are copied as they are, not counted again.
        client.command(f"INSERT INTO {quote_name(copy)} SELECT * FROM {quote_name(table)}",
                       settings={"max_partitions_per_insert_block": 0})
        client.command(f"EXCHANGE TABLES {quote_name(table)} AND {quote_name(copy)}")
        client.command(f"DROP TABLE {quote_name(copy)}")
