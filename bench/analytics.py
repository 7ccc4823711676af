"""How fast the analytics queries answer on the embedded store with 10 million events.

    python -m bench.analytics [--events 10000000] [--days 30] [--repeat 5]

Fills a fresh chDB store (a temporary directory) for one project with `--events` events
spread over `--days` days, through the same materialized views as the sink (rollups,
sessions and identities), plus 10% noise in another project. The traffic is shaped like a
shop's: a seventh as many anonymous ids as events, four in five of them logged in on
some event (two devices per user), so about a million identities link them; a third of
the orders come from the backend with only a user id.

Each query runs twice: with the identities table emptied (every id its own person: what
the queries cost before persons were merged) and with it full. Both are printed with
their ratio, which must stay within 2x, beside the times measured before the merge on
the same machine (:data:`BEFORE`). The target for the per-minute time series over 30
days is 300 ms.
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

from tracklane.store import analytics
from tracklane.store.client import create_client
from tracklane.store.migrate import RetentionConfig, migrate
from tracklane.store.persons import RECENT_LINKS, reload_identity_map

PROJECT = "bench"
END = datetime(2026, 11, 1, tzinfo=UTC)
# Medians of this benchmark at 371d6f7, before persons were merged (10M events, 200k ids).
BEFORE = {"kpis: one day": 264.0, "breakdown: utm_source, one day": 495.0,
          "funnel: 3 steps, 1 h window, one day": 101.0, "kpis: 30 days": 1900.0}
CEILING = 2.0

# One statement generates the events in ClickHouse: far faster than building rows in
# Python, and the materialized views fill the rollups and sessions as the sink's inserts do.
_FILL = """
INSERT INTO events (project_id, message_id, type, event, timestamp, received_at,
                    anonymous_id, user_id, distinct_id, session_id, path, referrer_domain,
                    utm_source, device_type, browser, os, is_bot, source, revenue)
SELECT
    %(p)s, toString(number), if(r %% 10 < 7, 'page', 'track'),
    multiIf(r %% 10 < 7, 'page_view', r %% 10 < 9, 'add_to_cart', 'purchase'),
    ts, ts, if(backend, '', anon), user, if(user != '', user, anon),
    if(backend, '', concat('s', toString(u), '-', toString(intDiv(toUnixTimestamp(ts), 3600)))),
    ['/', '/pricing', '/docs', '/blog', '/product'][r %% 5 + 1],
    ['', 'google.com', 'news.example'][r %% 3 + 1], ['', 'google', 'newsletter'][r %% 3 + 1],
    ['desktop', 'mobile'][u %% 2 + 1], ['Chrome', 'Firefox', 'Safari'][u %% 3 + 1],
    ['Windows', 'macOS', 'iOS', 'Android'][u %% 4 + 1], toUInt8(u %% 100 = 0),
    if(backend, 'server', 'browser'), if(r %% 10 = 9, toDecimal64(49.9, 4), toDecimal64(0, 4))
FROM
(
    SELECT i + %(offset)s AS number, cityHash64(number) AS r,
           cityHash64(number, 1) %% %(users)s AS u,
           concat('a', toString(u)) AS anon,
           -- Four in five anonymous ids log in, on a quarter of their events; two ids
           -- (two devices) per user.
           if(u %% 5 != 4 AND r %% 4 = 0, concat('u', toString(intDiv(u, 2))), '') AS user,
           -- A third of a logged-in person's orders come from the backend.
           user != '' AND r %% 10 = 9 AND r %% 3 = 0 AS backend,
           toDateTime64(%(start)s, 3, 'UTC') + toIntervalMillisecond(
               intDiv(i * %(span_ms)s, %(n)s)) AS ts
    FROM (SELECT number AS i FROM numbers(%(n)s))
)
"""


def fill(client: Client, project: str, n: int, days: int, offset: int = 0) -> float:
    """``n`` events over the ``days`` before END; message ids from ``offset``."""
    started = time.perf_counter()
    chunk = 2_000_000
    users = max((offset or n) // 7, 1)
    for done in range(0, n, chunk):
        size = min(chunk, n - done)
        span = timedelta(days=days)
        start = END - span + span * done / n
        client.command(_FILL, parameters={
            "p": project, "n": size, "offset": offset + done, "users": users, "start": start,
            "span_ms": int(span.total_seconds() * 1000 * size / n)})
    return time.perf_counter() - started


def settle(client: Client, limit_s: float = 120) -> None:
    """Wait for the background merges an insert started: they would take the timed CPU."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and client.query(
            "SELECT count() FROM system.merges").result_rows[0][0]:
        time.sleep(0.5)


def timed(query: Callable[[], Any], repeat: int) -> tuple[float, int]:
    """Median milliseconds over ``repeat`` runs after a warm one, and the result's size."""
    query()  # warm: the first run also loads marks and primary keys
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = query()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs), len(result) if isinstance(result, list) else 1


def queries(client: Client, days: int, repeat: int) -> list[tuple[str, Callable[[], Any], int]]:
    start, end = END - timedelta(days=days), END
    last_day = (end - timedelta(days=1), end)
    return [
        ("timeseries: page_view per minute, 30 days",
         lambda: analytics.timeseries(client, PROJECT, "page_view", start, end, "minute",
                                      visitors=False), repeat),
        ("  ... with unique visitors per minute",
         lambda: analytics.timeseries(client, PROJECT, "page_view", start, end, "minute"),
         repeat),
        ("timeseries: purchase per day (Europe/Paris)",
         lambda: analytics.timeseries(client, PROJECT, "purchase", start, end, "day",
                                      "Europe/Paris"), repeat),
        ("kpis: one day", lambda: analytics.kpis(client, PROJECT, *last_day), repeat),
        ("breakdown: utm_source, one day",
         lambda: analytics.breakdown(client, PROJECT, *last_day, "utm_source"), repeat),
        ("funnel: 3 steps, 1 h window, one day",
         lambda: analytics.funnel(client, PROJECT, *last_day,
                                  ["page_view", "add_to_cart", "purchase"],
                                  timedelta(hours=1)), repeat),
        ("conversion: purchase, one day",
         lambda: analytics.conversion(client, PROJECT, *last_day, "purchase"), repeat),
        ("kpis: 30 days", lambda: analytics.kpis(client, PROJECT, start, end),
         max(1, repeat // 2)),
    ]


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
        client.command("OPTIMIZE TABLE identities FINAL")
        settle(client)
        stored, ids, persons = client.query(
            "SELECT count(), uniqExact(anonymous_id), "
            "(SELECT count() FROM identities WHERE project_id = %(p)s) "
            "FROM events WHERE project_id = %(p)s", parameters={"p": PROJECT}).result_rows[0]
        print(f"filled {stored:,} events for one project (+10% in another) in {seconds:.1f} s "
              f"({stored / seconds:,.0f} events/s, through the views); {ids:,} anonymous ids, "
              f"{persons:,} of them linked to a user (identities)")
        # Steady state: the dictionary holds the links written up to its last reload,
        # minutes ago; only the links since then are read from the table.
        client.command("ALTER TABLE identities UPDATE inserted_at = inserted_at - "
                       "INTERVAL 1 HOUR WHERE 1", settings={"mutations_sync": 2})
        client.command("CREATE TABLE identities_saved AS identities")
        client.command("INSERT INTO identities_saved SELECT * FROM identities")
        # The run without links: every id its own person, as before the merge.
        client.command("TRUNCATE TABLE identities")
        reload_identity_map(client)
        todo = queries(client, args.days, args.repeat)
        unmerged = [timed(query, repeat)[0] for _, query, repeat in todo]
        client.command("INSERT INTO identities SELECT * FROM identities_saved")
        reload_identity_map(client)
        fill(client, PROJECT, args.events // 200, 1, offset=args.events)
        settle(client)
        recent = client.query(
            f"SELECT count() FROM ({RECENT_LINKS})", parameters={"p": PROJECT}).result_rows[0][0]
        print(f"then {args.events // 200:,} events in the last day, after the dictionary's "
              f"load: {recent:,} links read from the table")
        print(f"{'query':<44} {'before':>8} {'unmerged':>9} {'merged':>9} {'ratio':>6}  rows")
        worst = 0.0
        for (name, query, repeat), alone in zip(todo, unmerged, strict=True):
            merged, size = timed(query, repeat)
            before = f"{BEFORE[name]:.0f}" if name in BEFORE else "-"
            ratio = merged / alone
            worst = max(worst, ratio) if not name.startswith(("timeseries", "  ")) else worst
            print(f"{name:<44} {before:>8} {alone:9.1f} {merged:9.1f} {ratio:5.2f}x  {size}")
        print(f"milliseconds (medians); before: this benchmark at 371d6f7. Worst merged/unmerged "
              f"ratio of the person-level queries: {worst:.2f}x (ceiling {CEILING:.0f}x): "
              f"{'OK' if worst <= CEILING else 'OVER'}")
        client.close()


if __name__ == "__main__":
    main()
