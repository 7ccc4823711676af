"""The sink after `tracklane up` restarts: its broker's log is new, and journals replay into
it in whatever order they get there. Every record ends up stored once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.stream_process import StreamProcess, migrate_store, store_counts
from tracklane.broker import TansuBroker
from tracklane.collector.producer import ensure_topic
from tracklane.contract import (
    RequestFacts,
    TimeLimits,
    UserAgentInfo,
    envelope_fields,
    envelope_record,
    parse_message,
)
from tracklane.settings import Settings

pytestmark = pytest.mark.anyio

ROUND = 20


def _records(tag: str) -> list[tuple[bytes, bytes]]:
    facts = RequestFacts("demo", datetime.now(UTC), "203.0.113.0", UserAgentInfo())
    return [envelope_record(envelope_fields(parse_message(
        {"type": "track", "event": "replayed", "messageId": f"{tag}-{i}", "anonymousId": "a"},
        None), facts, TimeLimits())) for i in range(ROUND)]


async def _send(broker: TansuBroker, topic: str, *runs: list[tuple[bytes, bytes]]) -> None:
    """Each run in order, one acknowledged send after the other."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for run in runs:
            await asyncio.gather(*[await producer.send(topic, value, key=key)
                                   for key, value in run])
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def _log_of(settings: Settings,
                  *runs: list[tuple[bytes, bytes]]) -> AsyncIterator[TansuBroker]:
    """A broker of its own (its log starts empty) whose topic holds ``runs``, in order."""
    broker = TansuBroker()
    broker.start()
    try:
        await ensure_topic(replace(settings.kafka(), bootstrap_servers=broker.bootstrap_servers))
        await _send(broker, settings.topic, *runs)
        yield broker
    finally:
        broker.stop()


async def _crashed_before_inserting_y(
        tmp_path: Path, x: list[tuple[bytes, bytes]], y: list[tuple[bytes, bytes]],
) -> tuple[Settings, dict[str, str], Path]:
    """A stream process that stored X, wrote Y's intent and was killed before inserting
    it; the settings, its environment and the store's directory."""
    settings = Settings(topic="journals", topic_partitions=1, batch_max_records=ROUND,
                        data_dir=tmp_path, consumer_group="sink")
    store_dir = tmp_path / "chdb"
    async with _log_of(settings, x, y) as old:
        env = {**os.environ, "TRACKLANE_KAFKA_BOOTSTRAP": old.bootstrap_servers,
               "TRACKLANE_TOPIC": settings.topic, "TRACKLANE_TOPIC_PARTITIONS": "1",
               "TRACKLANE_CONSUMER_GROUP": settings.consumer_group,
               "TRACKLANE_DATA_DIR": str(tmp_path),
               "TRACKLANE_STORE_DSN": f"chdb://{store_dir}",
               "TRACKLANE_BATCH_MAX_RECORDS": str(ROUND)}
        migrate_store(env)
        crashed = StreamProcess(env, tmp_path / "stream.log", "after_intent:2")
        assert await crashed.wait_exit(90) == -signal.SIGKILL
    return settings, env, store_dir


async def _replay_and_check(settings: Settings, env: dict[str, str], store_dir: Path,
                            *runs: list[tuple[bytes, bytes]]) -> None:
    """`up`'s sink reads a new log holding ``runs`` to its end; then X, Y and Z are each
    stored once, in the raw events, the rollups and the ids."""
    async with _log_of(settings, *runs) as new:
        await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "tests.new_log_sink",
                             str(sum(len(run) for run in runs))],
            env={**env, "TRACKLANE_KAFKA_BOOTSTRAP": new.bootstrap_servers}, check=True,
            timeout=120)
    counts = store_counts(store_dir)
    assert counts["raw"] == counts["rollup_sum"] == counts["id_rows"] == 3 * ROUND
    assert sorted(counts["message_ids"]) == sorted(
        f"{tag}-{i}" for tag in "xyz" for i in range(ROUND))


async def test_records_ahead_of_an_interrupted_batch_in_a_new_log_are_stored(
        tmp_path: Path) -> None:
    """The old log held X (stored) then Y, whose intent was written before a crash cut its
    insert. Another journal held Z, never forwarded. The new log holds Z then Y: Y at the
    very offsets it had, so it looks like the old log. Z must be stored all the same."""
    x, y, z = _records("x"), _records("y"), _records("z")
    settings, env, store_dir = await _crashed_before_inserting_y(tmp_path, x, y)
    assert store_counts(store_dir)["raw"] == ROUND  # X only

    await _replay_and_check(settings, env, store_dir, z, y)


async def test_a_batch_half_stored_before_a_crash_is_finished_from_the_store(
        tmp_path: Path) -> None:
    """The old log held X (stored) then Y, whose insert a crash cut after its ``events``
    part and before its views'. The new log holds Y interleaved with Z (two journals'
    replays), so Y is nowhere as it was: the sink finishes Y from its rows in ``events``,
    then drops Y's ids read again as duplicates. Without that, ``event_ids`` would not know
    Y and every Y event would be stored twice."""
    x, y, z = _records("x"), _records("y"), _records("z")
    settings, env, store_dir = await _crashed_before_inserting_y(tmp_path, x, y)
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tests.partial_insert", f"chdb://{store_dir}",
                         settings.consumer_group, settings.topic],
        input="\n".join(value.hex() for _, value in y), text=True, check=True, timeout=120)
    half = store_counts(store_dir)
    assert (half["raw"], half["id_rows"], half["rollup_sum"]) == (2 * ROUND, ROUND, ROUND)

    half_y = ROUND // 2
    await _replay_and_check(settings, env, store_dir, y[:half_y], z, y[half_y:])
