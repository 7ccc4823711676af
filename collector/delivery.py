"""Getting accepted events to Kafka: directly when it answers, through the spool when not.

An event is accepted (2xx) once Kafka acknowledged it or once it is fsynced in the spool.
While the spool holds anything, new events queue behind it, so replay keeps their order.
An event that timed out towards Kafka and was then spooled may reach Kafka twice; the sink
drops the second copy by message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka.errors import KafkaError

from collector.producer import BrokerUnavailable, EventProducer, ensure_topic
from collector.spool import Spool, SpoolFailed, SpoolFull
from tracklane.metrics import Metrics
from tracklane.settings import DeliveryConfig

log = logging.getLogger(__name__)


class NotAccepted(RuntimeError):
    """Neither Kafka nor the spool took the events; answer 503 with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Delivery:
    """Owns the producer and the spool, and replays the spool while running."""

    def __init__(self, config: DeliveryConfig, producer: EventProducer, spool: Spool | None,
                 metrics: Metrics) -> None:
        self._config = config
        self._producer = producer
        self._spool = spool
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._replayer: asyncio.Task[None] | None = None
        if spool is not None:
            metrics.spool_backlog.set_function(lambda: spool.backlog)
            metrics.spool_bytes.set_function(lambda: spool.used_bytes)
            metrics.spool_age.set_function(lambda: spool.oldest_age(time.time()))

    @property
    def spool(self) -> Spool | None:
        return self._spool

    async def start(self, stop: asyncio.Event | None = None) -> None:
        """Open the spool and connect to Kafka.

        With a spool, Kafka may be down: events are spooled and the replayer keeps trying.
        Without one, wait for Kafka (until ``stop``), as nothing could be accepted anyway.
        """
        if self._spool is not None:
            self._spool.open()
            # Kafka being away must not keep the collector from taking events: the
            # replayer goes on trying.
            await self._connect_once(self._config.spool_after_s)
            self._replayer = asyncio.create_task(self._replay())
            return
        while not await self._connect_once():
            if stop is None:
                raise BrokerUnavailable("kafka is not reachable")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
            if stop.is_set():
                raise BrokerUnavailable("stopped while waiting for kafka")

    async def stop(self) -> None:
        """Stop replaying, let spool appends in flight finish, flush the producer."""
        self._stopping.set()
        self._wake.set()
        if self._replayer is not None:
            await self._replayer
        if self._spool is not None:
            await self._spool.close()
        await self._producer.stop()

    async def kafka_reachable(self) -> bool:
        return await self._producer.ping()

    async def deliver(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Return once the (key, value) records are acknowledged by Kafka or durable in the
        spool."""
        spool = self._spool
        if spool is None:
            try:
                await self._producer.send_records(records)
            except BrokerUnavailable as exc:
                raise NotAccepted("broker_unavailable", str(exc)) from exc
            self._metrics.produced.inc(len(records))
            return
        if spool.backlog == 0 and self._producer.started:
            try:
                async with asyncio.timeout(self._config.spool_after_s):
                    await self._producer.send_records(records)
                self._metrics.produced.inc(len(records))
                return
            except (BrokerUnavailable, TimeoutError) as exc:
                log.warning("kafka did not ack in time: spooling", extra={
                    "events": len(records), "error": repr(exc)})
        try:
            await spool.append(records)
        except SpoolFull as exc:
            raise NotAccepted("spool_full", str(exc)) from exc
        except SpoolFailed as exc:
            raise NotAccepted("spool_failed", str(exc)) from exc
        self._metrics.spooled.inc(len(records))
        self._wake.set()

    async def _connect_once(self, timeout_s: float | None = None) -> bool:
        if self._producer.started:
            return True
        kafka = self._config.kafka
        try:
            # A frozen broker accepts the TCP connection and never answers: bound the wait.
            async with asyncio.timeout(timeout_s or 2 * kafka.produce_timeout_s):
                await ensure_topic(kafka)
                await self._producer.start()
            return True
        except (KafkaError, TimeoutError, OSError) as exc:
            await self._producer.stop()
            log.warning("kafka not reachable", extra={"bootstrap": kafka.bootstrap_servers,
                                                      "error": repr(exc)})
            return False

    async def _replay(self) -> None:
        spool = self._spool
        assert spool is not None
        backoff = 0.2
        while not self._stopping.is_set():
            if spool.backlog == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            batch = await spool.read(self._config.replay_batch)
            if not batch.records:  # an append is still being fsynced
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.05)
                continue
            ok = await self._connect_once()
            if ok:
                try:
                    await self._producer.send_records([(r.key, r.value) for r in batch.records])
                except BrokerUnavailable as exc:
                    log.warning("spool replay: kafka unavailable", extra={"error": str(exc)})
                    ok = False
            if not ok:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, self._config.replay_backoff_max_s)
                continue
            backoff = 0.2
            await spool.commit(batch)
            self._metrics.produced.inc(len(batch.records))
            self._metrics.replayed.inc(len(batch.records))
            if spool.backlog == 0:
                log.info("spool replayed: kafka is back")
