"""Run the sink of `tracklane up` (the whole topic, its broker's log new) until it has read
``records`` records of partition 0. A process of its own: one chDB path per process.

    python -m tests.new_log_sink <records>      # settings from TRACKLANE_* as for `stream`
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace

from tracklane.metrics import Metrics
from tracklane.settings import Settings
from tracklane.store.client import create_client
from tracklane.stream.consumer import StreamService


async def main(records: int) -> None:
    settings = Settings()
    assert settings.store_dsn
    client = create_client(settings.store_dsn)
    sink = StreamService(settings.kafka(), replace(settings.sink(assign_all=True),
                                                   log_starts_empty=True), client, Metrics())
    await sink.start()
    task = asyncio.create_task(sink.run())
    try:
        async with asyncio.timeout(60):
            while sink.inserted_offsets().get(0) != records:
                await asyncio.sleep(0.05)
    finally:
        sink.stop()
        await task
        await sink.close()
        client.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
