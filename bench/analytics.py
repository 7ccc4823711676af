"""How fast the analytics queries answer on the embedded store with 10 million events.

    python -m bench.analytics [--events 10000000] [--days 30] [--repeat 5]

Fills a fresh chDB store (a temporary directory) for one project with `--events` events
spread over `--days` days, through the same materialized views as the sink (rollups and
sessions), plus 10% noise in another project. Then it times each query several times and
prints the median and the slowest, in milliseconds. The target for the per-minute time
series over 30 days is 300 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from store import analytics
from store.client import create_client
from store.migrate import RetentionConfig, migrate

PROJECT = "bench"
END = datetime(2026, 11, 1, tzinfo=UTC)

# One statement generates the events in ClickHouse: far faster than building rows in
# Python, and the materialized views fill the rollups and sessions as the sink's inserts do.
_FILL = """
INSERT INTO events (project_id, message_id, type, event, timestamp, received_at,
                    anonymous_id, distinct_id, session_id, path, referrer_domain, utm_source,
                    device_type, browser, os, is_bot, revenue)
SELECT
    %(p)s, toString(number), if(r %% 10 < 7, 'page', 'track'),
    multiIf(r %% 10 < 7, 'page_view', r %% 10 < 9, 'add_to_cart', 'purchase'),
    ts, ts, concat('a', toString(u)), concat('a', toString(u)),
    concat('s', toString(u), '-', toString(intDiv(toUnixTimestamp(ts), 3600))),
    ['/', '/pricing', '/docs', '/blog', '/product'][r %% 5 + 1],
    ['', 'google.com', 'news.example'][r %% 3 + 1], ['', 'google', 'newsletter'][r %% 3 + 1],
    ['desktop', 'mobile'][u %% 2 + 1], ['Chrome', 'Firefox', 'Safari'][u %% 3 + 1],
    ['Windows', 'macOS', 'iOS', 'Android'][u %% 4 + 1], toUInt8(u %% 100 = 0),
    if(r %% 10 = 9, toDecimal64(49.9, 4), toDecimal64(0, 4))
FROM
(
    SELECT number, cityHash64(number) AS r, cityHash64(number, 1) %% %(users)s AS u,
           toDateTime64(%(start)s, 3, 'UTC') + toIntervalMillisecond(
               intDiv(number * %(span_ms)s, %(n)s)) AS ts
    FROM numbers(%(n)s)
)
"""


def fill(client: Client, project: str, n: int, days: int) -> float:
    started = time.perf_counter()
    chunk = 2_000_000
    for offset in range(0, n, chunk):
        size = min(chunk, n - offset)
        span = timedelta(days=days)
        start = END - span + span * offset / n
        client.command(_FILL, parameters={
            "p": project, "n": size, "users": max(n // 50, 1), "start": start,
            "span_ms": int(span.total_seconds() * 1000 * size / n)})
    return time.perf_counter() - started


def timed(name: str, query: Callable[[], Any], repeat: int) -> None:
    query()  # warm: the first run also loads marks and primary keys
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = query()
        runs.append((time.perf_counter() - started) * 1000)
    size = len(result) if isinstance(result, list) else 1
    print(f"{name:<44} median {statistics.median(runs):8.1f} ms   max {max(runs):8.1f} ms"
          f"   ({size} rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        client = create_client(f"chdb://{tmp}/store")
        migrate(client, RetentionConfig(events_days=3650, dedup_window_hours=48))
        seconds = fill(client, PROJECT, args.events, args.days)
        fill(client, "other", args.events // 10, args.days)
        client.command("OPTIMIZE TABLE rollups_minute FINAL")
        stored = client.query("SELECT count() FROM events WHERE project_id = %(p)s",
                              parameters={"p": PROJECT}).result_rows[0][0]
        print(f"filled {stored:,} events for one project (+10% in another) in {seconds:.1f} s "
              f"({stored / seconds:,.0f} events/s, through the views)")
        start, end = END - timedelta(days=args.days), END
        r = args.repeat
        timed("timeseries: page_view per minute, 30 days",
              lambda: analytics.timeseries(client, PROJECT, "page_view", start, end, "minute",
                                           visitors=False), r)
        timed("  ... with unique visitors per minute",
              lambda: analytics.timeseries(client, PROJECT, "page_view", start, end, "minute"), r)
        timed("timeseries: page_view per hour, 30 days",
              lambda: analytics.timeseries(client, PROJECT, "page_view", start, end, "hour"), r)
        timed("timeseries: purchase per day (Europe/Paris)",
              lambda: analytics.timeseries(client, PROJECT, "purchase", start, end, "day",
                                           "Europe/Paris"), r)
        last_day = (end - timedelta(days=1), end)
        timed("kpis: one day (raw events + sessions)",
              lambda: analytics.kpis(client, PROJECT, *last_day), r)
        timed("breakdown: utm_source, one day",
              lambda: analytics.breakdown(client, PROJECT, *last_day, "utm_source"), r)
        timed("funnel: 3 steps, 1 h window, one day",
              lambda: analytics.funnel(client, PROJECT, *last_day,
                                       ["page_view", "add_to_cart", "purchase"],
                                       timedelta(hours=1)), r)
        timed("kpis: 30 days (raw events + sessions)",
              lambda: analytics.kpis(client, PROJECT, start, end), max(1, r // 2))
        client.close()


if __name__ == "__main__":
    main()
