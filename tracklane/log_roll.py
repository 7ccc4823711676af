"""`tracklane up`'s log, replaced by a new one when it has grown.

Tansu keeps its log in memory, and for every fetch it lists every batch the partition
ever received: its memory, the cost of each of the sink's fetches and the wait of the
produce requests behind them all grow with everything ever sent (after a few minutes at
1,000 single-event requests/s, Tansu took a whole core and a keep-alive client's p99
doubled). Apache Kafka drops old segments by retention; Tansu's memory engine has neither
retention nor DeleteRecords, but it deletes topics. So `up` rolls its log over to a new
topic, a new *generation* (``tracklane.events``, ``tracklane.events.1``, ...), once the
sink has inserted ``RollConfig.max_records`` of the current one:

1. the next generation's topic is created and announced: each journal forwards there from
   its next batch on, and says so, with the last offsets it got in the old topic, when it
   next asks for the sink's progress (collector/delivery.py);
2. once every live journal has moved, and the sink has inserted everything they got in the
   old topic, the sink moves to the new topic (read from its start, as a new epoch: see
   ``SinkConfig.fresh_log``) and the old topic is deleted.

The journals keep every event until the sink has inserted it, so an event is never only in
a deleted topic: a journal that went silent (its worker died) replays from its checkpoint
at its next start, into the generation of the day. One sink at a time reads the log, in
order, so a message id sent twice around the roll is still stored once. The sink's
offsets and progress stay under the log's own name, so nothing that reads them sees the
generations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from clickhouse_connect.driver.client import Client

from tracklane.collector.delivery import LogProgress, LogReport
from tracklane.collector.producer import delete_topic, ensure_topic, generation_topic
from tracklane.kafka import KafkaConfig
from tracklane.metrics import Metrics
from tracklane.stream.config import SinkConfig
from tracklane.stream.consumer import StreamService

log = logging.getLogger(__name__)

# A journal that has not reported for this long is taken for dead (workers report every
# quarter second): its next incarnation replays from its checkpoint instead.
_SILENT_S = 5.0
# Ended generations whose final offsets are still answered, for journals slow to trim.
_KEEP_ENDED = 4


@dataclass(frozen=True)
class RollConfig:
    # Roll once the sink has inserted this many records of the current log; 0: never.
    max_records: int
    # And not sooner than this after the last roll (each costs the sink about a second).
    min_interval_s: float = 30.0
    check_s: float = 0.5


class RollingSink:
    """The sink of `up`, over a log it rolls over (see the module docstring); the
    ``StreamService`` surface that `up` uses, plus the journals' side of the protocol."""

    def __init__(self, kafka: KafkaConfig, config: SinkConfig, client: Client, metrics: Metrics,
                 roll: RollConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._kafka = kafka
        self._config = config
        self._client = client
        self._metrics = metrics
        self._roll = roll
        self._clock = clock
        self._generation = 0  # the sink's
        self._announced = 0  # the journals'
        self._final: dict[int, dict[int, int]] = {}
        self._reports: dict[str, tuple[float, LogReport]] = {}
        self._local: dict[str, Callable[[], LogReport]] = {}
        self._rolled_at = clock()
        self._may_roll = True
        self._stopping = asyncio.Event()
        self._service = self._sink(0)

    def _sink(self, generation: int) -> StreamService:
        kafka = replace(self._kafka, topic=generation_topic(self._kafka.topic, generation))
        config = replace(self._config, fresh_log=True) if generation else self._config
        self._metrics.log_generation.set(generation)
        return StreamService(kafka, config, self._client, self._metrics,
                             log_name=self._kafka.topic)

    # -- the journals' side ----------------------------------------------------------------

    def add_local(self, name: str, report: Callable[[], LogReport]) -> None:
        """A journal in this process (``up --workers 1``), asked directly."""
        self._local[name] = report

    def reported(self, journal: str, report: LogReport) -> LogProgress:
        """A journal's report (``POST /internal/inserted``); the progress it may trim by."""
        self._reports[journal] = (self._clock(), report)
        return self.progress()

    def progress(self) -> LogProgress:
        return LogProgress(self._announced, {
            **self._final, self._generation: self._service.inserted_offsets()})

    def hold(self) -> None:
        """Start no new roll (`up` is stopping: its journals stop reporting)."""
        self._may_roll = False

    # -- the sink ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._service.start()

    def stop(self) -> None:
        self._stopping.set()
        self._service.stop()

    async def close(self) -> None:
        await self._service.close()

    async def drain(self, timeout_s: float) -> bool:
        return await self._service.drain(timeout_s)

    async def run(self) -> None:
        """Run the sink until stopped, moving it to each new generation."""
        while not self._stopping.is_set():
            service = self._service
            task = asyncio.create_task(service.run())
            if not await self._wait_for_roll(task):
                await task
                return
            service.stop()
            await task
            final = service.inserted_offsets()
            await service.close()
            self._final[self._generation] = final
            for old in sorted(self._final)[:-_KEEP_ENDED]:
                del self._final[old]
            old_topic = generation_topic(self._kafka.topic, self._generation)
            self._service = self._sink(self._announced)
            self._generation = self._announced
            await self._service.start()
            if self._stopping.is_set():
                self._service.stop()
            try:
                await delete_topic(self._kafka, old_topic)
            except Exception:
                # Only memory is at stake: the topic is not read again.
                log.exception("could not delete an old generation of the log",
                              extra={"topic": old_topic})
            self._rolled_at = self._clock()
            log.info("log rolled over", extra={
                "generation": self._generation, "deleted": old_topic,
                "inserted": sum(final.values())})

    async def _wait_for_roll(self, task: asyncio.Task[None]) -> bool:
        """True once the sink may move to the announced generation; False if it stopped."""
        while not task.done() and not self._stopping.is_set():
            if self._announced == self._generation:
                if self._due():
                    self._announced = self._generation + 1
                    await ensure_topic(replace(self._kafka, topic=generation_topic(
                        self._kafka.topic, self._announced)))
                    log.info("log rolling over", extra={
                        "generation": self._announced,
                        "records": sum(self._service.inserted_offsets().values())})
            elif self._old_log_inserted():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._roll.check_s)
        return False

    def _due(self) -> bool:
        return (self._may_roll and self._roll.max_records > 0
                and self._clock() - self._rolled_at >= self._roll.min_interval_s
                and sum(self._service.inserted_offsets().values()) >= self._roll.max_records)

    def _old_log_inserted(self) -> bool:
        """Whether every live journal forwards to the announced generation, and the sink
        has inserted all they got in the current one."""
        now = self._clock()
        reports = [report for at, report in self._reports.values() if now - at <= _SILENT_S]
        reports += [report() for report in self._local.values()]
        if any(report.generation != self._announced for report in reports):
            return False
        ends: dict[int, int] = {}
        for report in reports:
            for partition, offset in report.acked.get(self._generation, {}).items():
                ends[partition] = max(ends.get(partition, -1), offset)
        return _covers(self._service.inserted_offsets(), ends) and all(
            p.lag == 0 for p in self._service.progress())


def _covers(inserted: Mapping[int, int], ends: Mapping[int, int]) -> bool:
    return all(inserted.get(partition, 0) > offset for partition, offset in ends.items())
