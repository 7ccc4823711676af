"""The producer: Kafka's key partitioning, and on a real broker, a request's own batches and
the send small requests share put a key in one partition."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2 as kafka_murmur2

from tracklane.broker import TansuBroker
from tracklane.collector.partitioner import murmur2
from tracklane.collector.producer import EventProducer, ensure_topic
from tracklane.kafka import KafkaConfig


def test_murmur2_is_kafkas_for_every_length_and_byte() -> None:
    rng = random.Random(6)
    keys = [rng.randbytes(n) for n in range(70) for _ in range(20)]
    keys += [b"\xff" * 13, b"demo:" + uuid.UUID(int=rng.getrandbits(128)).hex.encode()]
    assert [murmur2(k) for k in keys] == [kafka_murmur2(k) for k in keys]


@pytest.mark.anyio
async def test_batched_and_single_sends_agree_on_partitions(broker: TansuBroker) -> None:
    config = KafkaConfig(broker.bootstrap_servers, f"producer-{uuid.uuid4().hex[:8]}", 4, 5.0)
    await ensure_topic(config)
    records = [(f"demo:m{i}".encode(), f'{{"i":{i}}}'.encode()) for i in range(200)]
    producer = EventProducer(config)
    await producer.start()
    try:
        await producer.send_records(records)  # one batch per partition
        # Forty one-record requests at once: one shared send, each told its offsets.
        answers = await asyncio.gather(*(producer.send_records([r]) for r in records[:40]))
        assert all(answers) and all(a == answers[0] for a in answers)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(config.topic, bootstrap_servers=config.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen: dict[bytes, set[int]] = {}
    values: list[bytes] = []
    try:
        while len(values) < 240:
            got = await consumer.getmany(timeout_ms=5000)
            assert got, f"only {len(values)} of 240 records came back"
            for tp, batch in got.items():
                for r in batch:
                    assert r.key is not None and r.value is not None
                    seen.setdefault(r.key, set()).add(tp.partition)
                    values.append(r.value)
    finally:
        await consumer.stop()
    assert sorted(values) == sorted([v for _, v in records] + [v for _, v in records[:40]])
    assert all(len(parts) == 1 for parts in seen.values())
    assert len({p for parts in seen.values() for p in parts}) == 4  # spread over the topic


@pytest.mark.anyio
async def test_small_requests_give_up_at_their_shared_deadline_and_are_sent_anyway(
    own_broker: TansuBroker,
) -> None:
    """With the broker stalled, requests that asked for a deadline get TimeoutError at
    about it (one timer for the shared send), one without waits on; once the broker is
    back, every record is in the topic: giving up the wait does not take a record back."""
    config = KafkaConfig(own_broker.bootstrap_servers, f"deadline-{uuid.uuid4().hex[:8]}", 1,
                         5.0)
    await ensure_topic(config)
    producer = EventProducer(config)
    await producer.start()
    loop = asyncio.get_running_loop()
    try:
        await producer.send_records([(b"demo:warm", b"{}")])
        own_broker.pause()
        started = loop.time()
        patient = asyncio.ensure_future(producer.send_records([(b"demo:patient", b"{}")]))
        waits = [producer.send_records([(f"demo:d{i}".encode(), b"{}")], wait_s=0.5)
                 for i in range(10)]
        answers = await asyncio.gather(*waits, return_exceptions=True)
        took = loop.time() - started
        assert all(isinstance(a, TimeoutError) for a in answers), answers
        assert took < 3.0, took  # the deadline's order of magnitude, not the send's 5 s
        assert not patient.done()
        own_broker.resume()
        assert await asyncio.wait_for(patient, 30)
    finally:
        own_broker.resume()
        await producer.stop()
    consumer = AIOKafkaConsumer(config.topic, bootstrap_servers=config.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    keys: set[bytes] = set()
    try:
        while len(keys) < 12:
            got = await consumer.getmany(timeout_ms=5000)
            assert got, f"only {sorted(keys)} came back"
            keys |= {r.key for batch in got.values() for r in batch if r.key is not None}
    finally:
        await consumer.stop()
    assert keys == {b"demo:warm", b"demo:patient", *(f"demo:d{i}".encode() for i in range(10))}
