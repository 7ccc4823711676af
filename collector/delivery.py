"""Getting accepted events to Kafka: directly when it answers, through the spool when not.

An event is accepted (2xx) once Kafka acknowledged it or once it is fsynced in the spool.
While the spool holds anything, new events queue behind it, so replay keeps their order.
An event that timed out towards Kafka and was then spooled may reach Kafka twice; the sink
drops the second copy by message id.

With a journal (``tracklane up``, whose broker keeps its log in memory), Kafka's
acknowledgement is worth nothing after a crash. Every event is then accepted once it is
fsynced in the spool, forwarded from there, and kept until the sink reports it inserted
(the ``inserted`` callback, a :class:`LogProgress`: per partition, the next offset to
insert); a restart replays the rest. Kafka and the journal are both logs in one order, so
the offsets Kafka gave each forwarded batch say when all of it is in the store.

That broker's log is replaced by a new one (a new *generation*, a new topic) when it has
grown, since it is all kept in memory: the progress names the generation to forward to,
and the offsets are compared within the generation that gave them. ``log_report`` tells
the owner which generation this journal forwards to and how far it got in the earlier
ones, so that the old log is dropped only once all of it is inserted.

A replay must not bring back a record older than the sink's dedup window: the sink could
no longer tell whether it was stored already. Such records are set aside in the spool
directory (``expired.seg``) with an error in the log, never forwarded and never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from aiokafka.errors import KafkaError

from tracklane.collector.config import DeliveryConfig
from tracklane.collector.producer import (
    BrokerUnavailable,
    EventProducer,
    ensure_topic,
    generation_topic,
)
from tracklane.collector.spool import Position, Record, Spool, SpoolFailed, SpoolFull
from tracklane.errors import ErrorCode
from tracklane.metrics import Metrics

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class LogProgress:
    """What the sink has stored: per log generation, per partition, the next offset it will
    insert (everything before is stored); and the generation to forward to now."""

    generation: int
    inserted: Mapping[int, Mapping[int, int]]

    @classmethod
    def single(cls, inserted: Mapping[int, int]) -> LogProgress:
        """A log that is never replaced (generation 0)."""
        return cls(0, {0: inserted})


@dataclass(frozen=True)
class LogReport:
    """What a journal tells the owner: the generation it forwards to (None until it knows),
    and per earlier generation, per partition, the last offset Kafka gave it there."""

    generation: int | None
    acked: Mapping[int, Mapping[int, int]] = field(default_factory=dict)


# The sink's progress; None while it is not known yet (nothing is forwarded meanwhile).
Inserted = Callable[[], LogProgress | None]


class NotAccepted(RuntimeError):
    """Neither Kafka nor the spool took the events; answer 503 with ``code`` and ``answer``
    (what the client is told: no more of the cause than the operator's log needs)."""

    def __init__(self, error: ErrorCode, message: str, answer: str) -> None:
        super().__init__(message)
        self.error = error
        self.code = error.code
        self.answer = answer


class Delivery:
    """Owns the producer and the spool, and replays the spool while running."""

    def __init__(self, config: DeliveryConfig, producer: EventProducer, spool: Spool | None,
                 metrics: Metrics, inserted: Inserted | None = None) -> None:
        self._config = config
        self._producer = producer
        self._spool = spool
        self._metrics = metrics
        self._journal = spool is not None and spool.journal
        if self._journal and inserted is None:
            raise ValueError("a journal needs the sink's inserted offsets")
        self._inserted = inserted
        # Forwarded journal batches not yet known stored: where each ends, the generation
        # of the log it went to, and the last offset Kafka gave it per partition there.
        self._unstored: deque[tuple[Position, int, dict[int, int]]] = deque()
        # The generation forwarded to (None: not known yet), and per generation the last
        # offset acknowledged per partition.
        self._generation: int | None = None if self._journal else 0
        self._acked: dict[int, dict[int, int]] = {}
        self._reported: set[int] = set()
        self._last_trim = 0.0
        self._last_forward = 0.0
        # The replayer and settle() both trim; one at a time keeps the checkpoint moving
        # forward only.
        self._trimming = asyncio.Lock()
        # Records of the batch being replayed already set aside, should its send be retried.
        self._aside: set[tuple[bytes, float]] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._replayer: asyncio.Task[None] | None = None
        if spool is not None:
            metrics.live(metrics.spool_backlog, lambda: spool.backlog)
            metrics.live(metrics.spool_bytes, lambda: spool.used_bytes)
            metrics.live(metrics.spool_age, lambda: spool.oldest_age(time.time()))

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
            # replayer goes on trying (a journal, once it knows the log's generation).
            if self._follow_generation():
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
                raise NotAccepted(ErrorCode.BROKER_UNAVAILABLE, str(exc),
                                  "Kafka did not acknowledge the events; retry later") from exc
            self._metrics.produced.inc(len(records))
            return
        if not self._journal and spool.backlog == 0 and self._producer.started:
            try:
                await self._producer.send_records(records, wait_s=self._config.spool_after_s)
                self._metrics.produced.inc(len(records))
                return
            except (BrokerUnavailable, TimeoutError) as exc:
                log.warning("kafka did not ack in time: spooling", extra={
                    "events": len(records), "error": repr(exc)})
        try:
            await spool.append(records)
        except SpoolFull as exc:
            raise NotAccepted(ErrorCode.SPOOL_FULL, str(exc),
                              "the collector's disk spool is full; retry later") from exc
        except SpoolFailed as exc:
            raise NotAccepted(ErrorCode.SPOOL_FAILED, str(exc), "the collector could not write the "
                              f"events to its disk ({exc.reason}); retry later") from exc
        self._metrics.spooled.inc(len(records))
        self._wake.set()

    async def _connect_once(self, timeout_s: float | None = None) -> bool:
        if self._producer.started:
            return True
        kafka = self._config.kafka
        try:
            # A frozen broker accepts the TCP connection and never answers: bound the wait.
            async with asyncio.timeout(timeout_s or 2 * kafka.produce_timeout_s):
                await ensure_topic(replace(kafka, topic=self._producer.topic))
                await self._producer.start()
            return True
        except (KafkaError, TimeoutError, OSError) as exc:
            await self._producer.stop()
            log.warning("kafka not reachable", extra={"bootstrap": kafka.bootstrap_servers,
                                                      "error": repr(exc)})
            return False

    def log_report(self) -> LogReport:
        return LogReport(self._generation, {
            generation: dict(offsets) for generation, offsets in self._acked.items()
            if self._generation is not None and generation < self._generation})

    def _follow_generation(self) -> bool:
        """Forward to the generation the sink's progress names (between two sends only);
        False while it is not known."""
        if not self._journal:
            return True
        assert self._inserted is not None
        progress = self._inserted()
        if progress is None:
            return False
        if progress.generation != self._generation:
            if self._generation is not None:
                log.info("journal: forwarding to a new log", extra={
                    "generation": progress.generation, "previous": self._generation})
            self._generation = progress.generation
            self._producer.follow(generation_topic(self._config.kafka.topic,
                                                   progress.generation))
            # The owner needs the last one's ends until it has moved on.
            for old in [g for g in self._acked if g < progress.generation - 1]:
                del self._acked[old]
        return True

    async def _replay(self) -> None:
        spool = self._spool
        assert spool is not None
        backoff = 0.2
        while not self._stopping.is_set():
            if self._journal and time.monotonic() - self._last_trim >= self._config.trim_every_s:
                await self.trim()
            if not self._follow_generation():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.05)
                continue
            if spool.backlog == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._config.trim_every_s)
                continue
            linger = self._last_forward + self._config.forward_every_s - time.monotonic()
            if self._journal and linger > 0 and spool.backlog < self._config.replay_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), linger)
            batch = await spool.read(self._config.replay_batch)
            if not batch.records:  # an append is still being fsynced
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.05)
                continue
            records = await self._set_aside_expired(spool, batch.records)
            ok = await self._connect_once()
            offsets: dict[int, int] = {}
            if ok and records:
                try:
                    offsets = await self._producer.send_records(
                        [(r.key, r.value) for r in records])
                except BrokerUnavailable as exc:
                    log.warning("spool replay: kafka unavailable", extra={"error": str(exc)})
                    ok = False
            if not ok:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, self._config.replay_backoff_max_s)
                continue
            backoff = 0.2
            self._last_forward = time.monotonic()
            if self._journal:
                generation = self._generation or 0
                self._unstored.append((batch.end, generation, offsets))
                acked = self._acked.setdefault(generation, {})
                for partition, offset in offsets.items():
                    acked[partition] = max(acked.get(partition, -1), offset)
            await spool.commit(batch)
            self._aside.clear()
            self._metrics.produced.inc(len(records))
            if not self._journal:
                self._metrics.replayed.inc(len(records))
                if spool.backlog == 0:
                    log.info("spool replayed: kafka is back")

    async def _set_aside_expired(self, spool: Spool, records: list[Record]) -> list[Record]:
        """The records young enough to replay; the others go to ``expired.seg``."""
        horizon = time.time() - self._config.max_replay_age_s
        if all(r.appended_at >= horizon for r in records):
            return records
        old = [r for r in records if r.appended_at < horizon
               and (r.key, r.appended_at) not in self._aside]
        if not old:
            return [r for r in records if r.appended_at >= horizon]
        path = await spool.set_aside(old, "expired.seg")
        self._aside.update((r.key, r.appended_at) for r in old)
        self._metrics.spool_expired.inc(len(old))
        log.error("spool: records older than the sink's dedup window set aside, not "
                  "replayed (the sink could not tell whether they are stored already)", extra={
                      "events": len(old), "path": str(path),
                      "max_replay_age_s": self._config.max_replay_age_s})
        return [r for r in records if r.appended_at >= horizon]

    async def trim(self) -> None:
        """Let the journal forget what the sink has inserted."""
        spool = self._spool
        self._last_trim = time.monotonic()
        if spool is None or self._inserted is None:
            return
        async with self._trimming:
            progress = self._inserted()
            end: Position | None = None
            while self._unstored and progress is not None:
                position, generation, offsets = self._unstored[0]
                stored = progress.inserted.get(generation, {})
                if not all(stored.get(p, 0) > offset for p, offset in offsets.items()):
                    ended = generation < max(progress.inserted, default=0)
                    if ended and generation not in self._reported:
                        # The owner moves on only once every journal's part of the old
                        # log is inserted, so this is a bug; the journal keeps the events
                        # for the next start.
                        self._reported.add(generation)
                        log.error("journal: forwarded events of an earlier log are not "
                                  "inserted", extra={"generation": generation})
                    break
                self._unstored.popleft()
                end = position
            if end is None:
                return
            try:
                # ClickHouse does not fsync the parts it writes: flush them (and everything
                # else) to disk before the journal's copy of their events goes.
                await asyncio.to_thread(os.sync)
                await spool.trim(end)
            except OSError as exc:
                log.error("journal: trim failed", extra={"error": repr(exc)})

    async def settle(self, timeout_s: float) -> bool:
        """Once drained: wait until the sink has inserted everything forwarded, letting the
        journal forget it (a restart then replays nothing); True if it did in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.trim()
            if not self._unstored or time.monotonic() >= deadline:
                return not self._unstored
            await asyncio.sleep(0.05)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until the spool has forwarded everything to Kafka; True if it did in time."""
        spool = self._spool
        deadline = time.monotonic() + timeout_s
        while spool is not None and spool.backlog and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.02)
        return spool is None or spool.backlog == 0
