"""The disk spool: order, durability across reopen, torn tails, bounds, the journal, and
records too old to replay."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from tests.pipeline import pipeline_settings, poll, read_topic
from tracklane.broker import TansuBroker
from tracklane.collector.delivery import Delivery
from tracklane.collector.producer import EventProducer
from tracklane.collector.spool import Spool, SpoolConfig, SpoolFull, read_records
from tracklane.metrics import Metrics

pytestmark = pytest.mark.anyio


def records(start: int, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"k{i}".encode(), f"value-{i}".encode() * 3) for i in range(start, start + n)]


def opened(path: Path, max_bytes: int = 1 << 20, segment_bytes: int = 1 << 20,
           journal: bool = False) -> Spool:
    spool = Spool(SpoolConfig(path, max_bytes, segment_bytes, journal))
    spool.open()
    return spool


async def drain(spool: Spool, batch: int = 7) -> list[bytes]:
    out: list[bytes] = []
    while spool.backlog:
        read = await spool.read(batch)
        out += [r.key for r in read.records]
        await spool.commit(read)
    return out


async def test_replays_in_append_order_across_segments_and_deletes_them(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=300)
    for start in range(0, 60, 6):
        await spool.append(records(start, 6))
    assert spool.backlog == 60
    assert len(list(spool.directory.glob("*.seg"))) > 3
    assert await drain(spool) == [f"k{i}".encode() for i in range(60)]
    assert spool.backlog == 0 and spool.used_bytes <= 300
    # Only the tail segment, which is still being written, is left.
    assert len(list(spool.directory.glob("*.seg"))) == 1
    await spool.close()


async def test_a_new_process_replays_what_was_not_committed(tmp_path: Path) -> None:
    first = opened(tmp_path, segment_bytes=200)
    await first.append(records(0, 20))
    read = await first.read(8)
    await first.commit(read)
    # Read but not committed: Kafka may have it, but nothing says so.
    await first.read(5)
    await first.close()

    second = opened(tmp_path, segment_bytes=200)
    assert second.backlog == 12
    assert await drain(second) == [f"k{i}".encode() for i in range(8, 20)]
    await second.append(records(20, 2))
    assert await drain(second) == [b"k20", b"k21"]
    await second.close()


async def test_a_torn_tail_is_cut_and_what_was_acknowledged_stays(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    await spool.append(records(0, 5))
    await spool.close()
    segment = next(spool.directory.glob("*.seg"))
    whole = segment.stat().st_size
    # A crash in the middle of a write: half a header and a record cut short.
    with segment.open("ab") as f:
        f.write(b"\x00\x00\x01\x00\xde\xad\xbe\xef\x00\x00")

    again = opened(tmp_path)
    assert segment.stat().st_size == whole
    assert again.backlog == 5
    await again.append(records(5, 1))
    assert await drain(again) == [f"k{i}".encode() for i in range(6)]
    await again.close()


async def test_a_corrupt_record_ends_the_segment_where_it_starts(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    await spool.append(records(0, 3))
    await spool.close()
    segment = next(spool.directory.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF  # the last record's value, under its CRC
    segment.write_bytes(bytes(data))
    again = opened(tmp_path)
    assert await drain(again) == [b"k0", b"k1"]
    await again.close()


async def test_full_spool_refuses_and_then_takes_again_once_replayed(tmp_path: Path) -> None:
    spool = opened(tmp_path, max_bytes=400)
    await spool.append(records(0, 5))
    with pytest.raises(SpoolFull):
        await spool.append(records(5, 5))
    assert spool.backlog == 5
    assert not spool.has_room or spool.used_bytes > 200
    assert await drain(spool) == [f"k{i}".encode() for i in range(5)]
    await spool.append(records(5, 5))
    assert spool.backlog == 5
    await spool.close()


async def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    await asyncio.gather(*(spool.append(records(i, 1)) for i in range(200)))
    assert spool.backlog == 200
    assert spool.flushes < 200
    keys = await drain(spool, batch=64)
    assert sorted(keys) == sorted(f"k{i}".encode() for i in range(200))
    await spool.close()


async def test_age_of_the_oldest_record(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    assert spool.oldest_age(1e12) == 0.0
    await spool.append(records(0, 1))
    read = await spool.read(1)
    appended = read.records[0].appended_at
    assert spool.oldest_age(appended + 42) == pytest.approx(42, abs=0.01)
    await spool.commit(read)
    assert spool.oldest_age(appended + 42) == 0.0
    await spool.close()


async def test_processes_sharing_a_root_claim_their_own_spool(tmp_path: Path) -> None:
    first = opened(tmp_path)
    second = opened(tmp_path)
    assert first.directory != second.directory
    await first.append(records(0, 3))
    await first.close()  # the process is gone; its spool is free to take over
    third = opened(tmp_path)
    assert third.directory == first.directory and third.backlog == 3
    await second.close()
    await third.close()


async def test_a_journal_keeps_replayed_records_until_trimmed(tmp_path: Path) -> None:
    journal = opened(tmp_path, segment_bytes=300, journal=True)
    for start in range(0, 30, 5):
        await journal.append(records(start, 5))
    first = await journal.read(10)
    await journal.commit(first)
    rest = await journal.read(100)
    await journal.commit(rest)
    assert journal.backlog == 0
    segments = len(list(journal.directory.glob("*.seg")))
    assert segments > 2  # replayed, and all still there
    await journal.trim(first.end)  # the sink stored the first ten
    assert len(list(journal.directory.glob("*.seg"))) < segments
    await journal.close()

    # A crash: the broker that got the other twenty is gone, so they are replayed.
    again = opened(tmp_path, segment_bytes=300, journal=True)
    assert again.backlog == 20
    assert await drain(again) == [f"k{i}".encode() for i in range(10, 30)]
    await again.close()
    assert opened(tmp_path, segment_bytes=300, journal=True).backlog == 20


async def test_set_aside_records_are_kept_readable(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    await spool.append(records(0, 3))
    read = await spool.read(3)
    path = await spool.set_aside(read.records[:2], "expired.seg")
    await spool.set_aside(read.records[2:], "expired.seg")
    assert [r.key for r in read_records(path)] == [b"k0", b"k1", b"k2"]
    await spool.close()


async def test_records_older_than_the_dedup_window_are_set_aside_not_replayed(
    tmp_path: Path, broker: TansuBroker,
) -> None:
    """Past the sink's dedup window a replayed copy could be counted twice: such records
    are kept in expired.seg, counted and logged, and the young ones still go to Kafka."""
    config = SpoolConfig(tmp_path, 1 << 20)
    old = Spool(config)
    old.open()
    await old.append(records(0, 5))
    await old.close()
    await asyncio.sleep(0.3)  # the five are now older than the 0.2 s window below

    settings = pipeline_settings(broker.bootstrap_servers)
    kafka = settings.kafka()
    metrics = Metrics()
    delivery = Delivery(replace(settings.delivery(kafka), max_replay_age_s=0.2),
                        EventProducer(kafka), Spool(config), metrics)
    await delivery.start()
    try:
        await delivery.deliver(records(5, 3))  # young: spooled behind the old ones
        await poll(lambda: delivery.spool is not None and delivery.spool.backlog == 0, 20,
                   "the spool was not replayed")
    finally:
        await delivery.stop()
    assert delivery.spool is not None
    aside = read_records(delivery.spool.directory / "expired.seg")
    assert [r.key for r in aside] == [f"k{i}".encode() for i in range(5)]
    assert metrics.registry.get_sample_value("tracklane_spool_expired_total") == 5
    # Three records are expected; a fourth would be an old one replayed after all.
    got = await read_topic(broker.bootstrap_servers, kafka.topic, 4, timeout_s=2.0)
    assert sorted(r.key for r in got) == [b"k5", b"k6", b"k7"]
