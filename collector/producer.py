"""The Kafka producer: an event is accepted only once Kafka has acknowledged it."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError

from tracklane.collector.partitioner import KeyPartitioner, key_partition
from tracklane.kafka import KafkaConfig

log = logging.getLogger(__name__)

# From this many records, a request's records are sent at once, in batches of their own;
# fewer (a pixel hit is one record) share a send with the other small requests.
_BATCH_FROM = 16


class BrokerUnavailable(RuntimeError):
    """Kafka did not acknowledge in time; nothing may be reported as accepted."""


@dataclass
class _Waiter:
    records: Sequence[tuple[bytes, bytes]]
    done: asyncio.Future[dict[int, int]]
    deadline: bool  # gives up with the shared send's deadline (see send_records)


@dataclass
class _Shared:
    """Small requests' records going out in one send, and the one timer that ends the
    wait of those that asked for a deadline."""

    waiters: list[_Waiter] = field(default_factory=list)
    expiry: asyncio.TimerHandle | None = None

    def expire(self) -> None:
        for waiter in self.waiters:
            if waiter.deadline and not waiter.done.done():
                waiter.done.set_exception(TimeoutError())


def generation_topic(topic: str, generation: int) -> str:
    """The topic of a generation of ``topic``'s log (see tracklane/log_roll.py)."""
    return topic if generation == 0 else f"{topic}.{generation}"


class EventProducer:
    """Sends envelopes with ``acks=all`` and waits for every acknowledgement."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        # Where records go; a journal moves it to each new generation of the log.
        self._topic = config.topic
        self._producer: AIOKafkaProducer | None = None
        # Small requests' records waiting for this turn's shared send, and their waiters.
        self._pending = _Shared()
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        timeout_ms = int(self._config.produce_timeout_s * 1000)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._config.bootstrap_servers,
            acks="all",
            # Duplicates from retries are removed downstream by message id; the idempotent
            # producer is not available on every Kafka-compatible broker.
            enable_idempotence=False,
            linger_ms=0,
            max_batch_size=1024 * 1024,
            max_request_size=2 * 1024 * 1024,
            request_timeout_ms=timeout_ms,
            retry_backoff_ms=100,
            partitioner=KeyPartitioner(),
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def topic(self) -> str:
        return self._topic

    def follow(self, topic: str) -> None:
        """Send to ``topic`` from now on, and stop asking the broker about the last one:
        Tansu creates a topic a metadata request names, so a deleted one would be back."""
        self._topic = topic
        if self._producer is not None:
            self._producer.client.set_topics([topic])

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def send_records(self, records: Sequence[tuple[bytes, bytes]],
                           wait_s: float | None = None) -> dict[int, int]:
        """Return once Kafka has acknowledged every (key, value) record, with the offset of
        the last one per partition (of the shared send, for a small request: never below
        its own); else raise ``BrokerUnavailable``. With ``wait_s``, stop waiting after
        about that long with ``TimeoutError`` (the send goes on): a small request's
        deadline is its shared send's, counted from the first request of it that asked
        for one, so never later than its own. One timer per shared send instead of one
        per request: a pixel hit's own timer cost it a twenty-fifth of its time."""
        if self._producer is None:
            raise BrokerUnavailable("producer not started")
        if len(records) >= _BATCH_FROM:
            if wait_s is None:
                return await self._send(records)
            async with asyncio.timeout(wait_s):
                return await self._send(records)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict[int, int]] = loop.create_future()
        shared = self._pending
        shared.waiters.append(_Waiter(records, done, wait_s is not None))
        if wait_s is not None and shared.expiry is None:
            shared.expiry = loop.call_later(wait_s, shared.expire)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_pending())
        return await done

    async def _send_pending(self) -> None:
        """Small requests' records go out together, one shared send at a time: those that
        arrive while one is in flight make the next. A ``send`` per record makes a future,
        a metadata wait and a partitioner call each, which cost a pixel hit about a fifth
        of its time; the batch grows with the load, as a group commit's does."""
        while self._pending.waiters:
            shared, self._pending = self._pending, _Shared()
            try:
                await self._send_shared(shared.waiters)
            finally:
                if shared.expiry is not None:
                    shared.expiry.cancel()

    async def _send_shared(self, waiters: list[_Waiter]) -> None:
        try:
            offsets = await self._send([r for waiter in waiters for r in waiter.records])
        except BrokerUnavailable as exc:
            for waiter in waiters:
                if not waiter.done.done():
                    waiter.done.set_exception(exc)
            return
        for waiter in waiters:
            if not waiter.done.done():  # past its deadline, or its request cancelled
                waiter.done.set_result(offsets)

    async def _send(self, records: Sequence[tuple[bytes, bytes]]) -> dict[int, int]:
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("producer not started")
        try:
            # aiokafka fails a batch it could not deliver within request_timeout_ms and then
            # drops it. Waiting for that verdict, instead of cancelling earlier, means an
            # event answered 503 is not delivered later behind the client's back. The outer
            # timeout is only a safety net.
            async with asyncio.timeout(2 * self._config.produce_timeout_s + 1):
                pending = await self._send_batches(producer, records)
                acked = await asyncio.gather(*(future for future, _ in pending))
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable(f"kafka did not acknowledge: {exc!r}") from exc
        last: dict[int, int] = {}
        for meta, (_, count) in zip(acked, pending, strict=True):
            # A batch's metadata names its first record's offset.
            last[meta.partition] = max(last.get(meta.partition, -1), meta.offset + count - 1)
        return last

    async def _send_batches(
        self, producer: AIOKafkaProducer, records: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[asyncio.Future[Any], int]]:
        """One record batch per partition, built here, instead of a ``send`` per record
        (each of which looks the topic up and makes a future). Partitions are chosen as
        ``send`` chooses them
        (murmur2 of the key over the sorted partitions), so a spooled copy of an event
        lands where the first copy did."""
        topic = self._topic
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        for key, value in records:
            by_partition[key_partition(key, partitions)].append((key, value))
        futures: list[tuple[asyncio.Future[Any], int]] = []
        for partition, own in by_partition.items():
            batch = producer.create_batch()
            count = 0
            for key, value in own:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    # Full (max_batch_size): send it, and go on in a new one.
                    futures.append(
                        (await producer.send_batch(batch, topic, partition=partition), count))
                    batch, count = producer.create_batch(), 0
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise MessageSizeTooLargeError(f"a record of {len(value)} bytes")
                count += 1
            futures.append((await producer.send_batch(batch, topic, partition=partition), count))
        return futures

    async def ping(self, timeout_s: float = 2.0) -> bool:
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                return bool(await self._producer.client.force_metadata_update())
        except (KafkaError, TimeoutError):
            return False


async def ensure_topic(config: KafkaConfig) -> None:
    """Create the events topic if it does not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(config.topic, num_partitions=config.partitions, replication_factor=1)]
        )
        log.info("topic created", extra={"topic": config.topic, "partitions": config.partitions})
    except TopicAlreadyExistsError:
        pass
    except KafkaError as exc:
        # Some brokers answer a duplicate create with a generic error; a topic that
        # really cannot be created shows up at the first produce.
        log.info("topic create skipped", extra={"topic": config.topic, "error": repr(exc)})
    finally:
        await admin.close()


async def delete_topic(config: KafkaConfig, topic: str) -> None:
    """Delete ``topic`` (an old generation of `up`'s log; see tracklane/log_roll.py)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        log.info("topic deleted", extra={"topic": topic})
    finally:
        await admin.close()
