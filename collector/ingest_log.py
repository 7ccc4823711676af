"""Per-minute counts of what the collector accepted and refused, kept in ClickHouse.

Prometheus has the same numbers per process; these are per project and minute next to
the data, for the pipeline-health dashboard. Counts are buffered in memory and added to
``ingest_minute`` every few seconds (rows for one key are summed by the table). A failed
write keeps the counts for the next try: they are operational numbers, so at worst a
crash loses the last few seconds of them, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime

from clickhouse_connect.driver.client import Client

from tracklane.clock import Clock

log = logging.getLogger(__name__)

_Key = tuple[datetime, str, str, str, str]  # minute, project, route, outcome, reason
# A key and its count: one row of ``ingest_minute``.
CountRow = tuple[datetime, str, str, str, str, int]
# Writes rows where they are kept; raises if it could not.
CountsWriter = Callable[[Sequence[CountRow]], None]
COLUMNS = ("minute", "project_id", "route", "outcome", "reason", "events")


def store_writer(store: Client) -> CountsWriter:
    """Rows inserted into ``ingest_minute`` (rows of one key are summed by the table)."""
    def write(rows: Sequence[CountRow]) -> None:
        store.insert("ingest_minute", [list(row) for row in rows], column_names=list(COLUMNS))

    return write


class IngestLog:
    """Buffers accepted/rejected counts and flushes them to ``ingest_minute`` through
    ``write`` (the store, or the process that owns it)."""

    def __init__(self, write: CountsWriter, clock: Clock, interval_s: float = 5.0) -> None:
        self._write_rows = write
        self._clock = clock
        self._interval_s = interval_s
        self._counts: Counter[_Key] = Counter()
        self._task: asyncio.Task[None] | None = None

    def accepted(self, project: str, route: str, n: int) -> None:
        self._add(project, route, "accepted", "", n)

    def rejected(self, project: str, route: str, reason: str, n: int = 1) -> None:
        self._add(project, route, "rejected", reason, n)

    def _add(self, project: str, route: str, outcome: str, reason: str, n: int) -> None:
        minute = self._clock().replace(second=0, microsecond=0, tzinfo=None)
        self._counts[(minute, project, route, outcome, reason)] += n

    def flush(self) -> int:
        """Write the buffered counts; the number of rows written (0 on failure: kept)."""
        counts, self._counts = self._counts, Counter()
        written = self._write(counts)
        if not written:
            self._counts.update(counts)
        return written

    def _write(self, counts: Counter[_Key]) -> int:
        if not counts:
            return 0
        rows = [(*key, n) for key, n in counts.items()]
        try:
            self._write_rows(rows)
        except Exception as exc:
            log.warning("ingest counts not written; kept for the next try",
                        extra={"error": str(exc)})
            return 0
        return len(rows)

    async def _flush_soon(self) -> None:
        # Swap on the event loop, which is the only writer of the counts; write in a thread.
        counts, self._counts = self._counts, Counter()
        if not await asyncio.to_thread(self._write, counts):
            self._counts.update(counts)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._flush_soon()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush_soon()
