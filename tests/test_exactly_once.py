"""Exactly once through crashes: 50,000 events while the stream process is SIGKILLed.

The collector runs here; ``tracklane stream`` runs as a subprocess in a consumer group with
its own chDB store, and is killed four times: after an insert before its commit, after its
batch intent before the insert, from outside at an arbitrary moment, and once more after an
insert. Resends of already-accepted batches run throughout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.pipeline import Pipeline, pipeline_settings, poll, running_pipeline
from tests.stream_process import StreamProcess, migrate_store, store_counts
from tracklane.broker import TansuBroker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOTAL = 50_000
BATCH = 500
RESEND_EVERY = 7  # every 7th batch is sent twice


async def send_all(p: Pipeline, accepted: set[str]) -> int:
    """Send TOTAL distinct events (plus resends); return how many records Kafka acked."""
    auth = p.auth
    acked = 0
    for n in range(TOTAL // BATCH):
        batch = [{"type": "track", "event": "load", "messageId": f"m-{n}-{i}",
                  "anonymousId": f"a-{i % 97}"} for i in range(BATCH)]
        for _ in range(2 if n % RESEND_EVERY == 0 else 1):
            response = await p.http.post("/v1/batch", json={"batch": batch}, headers=auth)
            assert response.status_code == 200, response.text
            acked += response.json()["accepted"]
        accepted.update(e["messageId"] for e in batch)
        await asyncio.sleep(0.02)  # spread the load over the stream's lifecycles
    return acked


async def test_sigkilled_stream_counts_every_accepted_event_once(
    broker: TansuBroker, tmp_path: Path,
) -> None:
    # One test client sends the whole load as fast as it can: a backend replaying a
    # backlog, which the per-client rate limit would (rightly) slow down.
    settings = pipeline_settings(broker.bootstrap_servers, topic_partitions=4,
                                 client_rate_limit_events_per_s=0)
    store_dir = tmp_path / "chdb"
    env = {**os.environ,
           "TRACKLANE_KAFKA_BOOTSTRAP": broker.bootstrap_servers,
           "TRACKLANE_TOPIC": settings.topic,
           "TRACKLANE_TOPIC_PARTITIONS": "4",
           "TRACKLANE_CONSUMER_GROUP": settings.consumer_group,
           "TRACKLANE_STORE_DSN": f"chdb://{store_dir}",
           "TRACKLANE_BATCH_MAX_RECORDS": "700",
           "TRACKLANE_SESSION_TIMEOUT_MS": "6000",
           "TRACKLANE_CONSUMER_INSTANCE_ID": "sink-0",
           "TRACKLANE_PROGRESS_INTERVAL_S": "0.2"}
    migrate_store(env)
    log = tmp_path / "stream.log"
    accepted: set[str] = set()
    started = time.monotonic()
    async with running_pipeline(settings, None) as p:
        sender = asyncio.create_task(send_all(p, accepted))
        exits: list[int] = []
        # Crash points inside the sink: after an insert (before any commit), and after the
        # batch intent (before the insert).
        for fault in ("after_insert:3", "after_intent:2"):
            exits.append(await StreamProcess(env, log, fault).wait_exit(90))
        # An arbitrary moment, from outside.
        run = StreamProcess(env, log)

        async def inserted_some() -> bool:
            return (await run.metrics()).get("tracklane_stream_consumed_total", 0) >= 2000

        await poll(inserted_some, 60, "third run never consumed", interval_s=0.02)
        run.process.send_signal(signal.SIGKILL)
        exits.append(await run.wait_exit(10))
        exits.append(await StreamProcess(env, log, "after_insert:5").wait_exit(90))
        assert exits == [-signal.SIGKILL] * 4

        acked = await sender
        final = StreamProcess(env, log)

        async def caught_up() -> bool:
            m = await final.metrics()
            offsets = [v for k, v in m.items() if k.startswith("tracklane_stream_next_offset,")]
            lags = [v for k, v in m.items() if k.startswith("tracklane_stream_lag,")]
            return len(offsets) == 4 and sum(offsets) == acked and all(x == 0 for x in lags)

        await poll(caught_up, 120, "final stream run did not catch up", interval_s=0.2)
        replayed = (await final.metrics()).get("tracklane_stream_replayed_batches_total", 0)
        final.process.send_signal(signal.SIGTERM)
        assert await final.wait_exit(30) == 0

    counts = store_counts(store_dir)
    print(f"\n{TOTAL} events, {acked} records acked, 4 SIGKILLs, "
          f"{time.monotonic() - started:.1f}s, final run replayed {replayed} batch(es)")
    assert len(accepted) == TOTAL
    assert acked > TOTAL  # the resends really were accepted again
    assert counts["raw"] == counts["rollup_sum"] == counts["id_rows"] == len(accepted)
    assert set(counts["message_ids"]) == accepted
