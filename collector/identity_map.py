"""Reloading the ``identity_map`` dictionary the person queries read (store/persons.py).

A ClickHouse server reloads a dictionary on its own every few minutes; embedded chDB never
does, and the links written since the last load are read from the table by every query,
a cost that grows with them. The process that answers queries reloads it on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from clickhouse_connect.driver.client import Client

from tracklane.store.persons import reload_identity_map

log = logging.getLogger(__name__)


class IdentityMapReloader:
    """Reloads ``identity_map`` every ``interval_s``; a failed reload is logged and retried."""

    def __init__(self, store: Client, interval_s: float) -> None:
        self._store = store
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await asyncio.to_thread(reload_identity_map, self._store)
            except Exception as exc:
                # The queries stay right on an old dictionary, only slower.
                log.warning("identity map not reloaded", extra={"error": str(exc)})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
