"""The Kafka side of the sink: fetch batches, recover partitions, publish progress."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from clickhouse_connect.driver.client import Client

from tracklane.clock import Clock, utc_now
from tracklane.kafka import KafkaConfig
from tracklane.metrics import Metrics
from tracklane.store import queries
from tracklane.store.queries import PartitionProgress
from tracklane.stream.config import SinkConfig
from tracklane.stream.faults import FaultPoint
from tracklane.stream.sink import DecodedBatch, EventSink, SourceRecord, token_epoch

log = logging.getLogger(__name__)

# How long to wait for the records of an interrupted batch before deciding that the log
# no longer holds them (the broker lost its data, e.g. an in-memory broker restarted).
_REPLAY_FETCH_TIMEOUT_S = 5.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
# How often the next round is topped up while an insert runs.
_TOP_UP_POLL_S = 0.005
# Records per fetch. aiokafka unpacks them on the event loop, about 6 µs each, and in
# `tracklane up` that loop serves HTTP too: 500 keep each stall near 3 ms (5,000 made the
# keep-alive p99 10 ms); the top-up joins chunks into rounds of batch_max_records.
_FETCH_CHUNK = 500


@dataclass
class _PartitionState:
    needs_recovery: bool = True
    # None until the first batch after a reset: then any offset is the right next one.
    next_offset: int | None = None
    last_received_at: datetime | None = None
    # Key of the record at next_offset - 1, to check the log is still the one we read.
    last_key: bytes | None = None
    # Incarnation of the partition's log, part of every batch token (see batch_token).
    epoch: int = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: StreamService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._service.release([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._service.own([tp.partition for tp in assigned])


class StreamService:
    """Consumes the events topic into ClickHouse until stopped.

    With ``SinkConfig.assign_all`` it owns every partition without a consumer group (one
    process owns the topic, as in ``tracklane up``); otherwise partitions are balanced
    across the members of ``SinkConfig.group_id``. ``log_name``: the name its offsets and
    progress are stored under, when the topic is one generation of a log that is
    replaced (see tracklane/log_roll.py); the topic's own name by default.
    """

    def __init__(
        self, kafka: KafkaConfig, config: SinkConfig, client: Client, metrics: Metrics,
        clock: Clock = utc_now, log_name: str | None = None,
    ) -> None:
        self._kafka = kafka
        self._log_name = log_name or kafka.topic
        self._config = config
        self._client = client
        self._metrics = metrics
        self._clock = clock
        self._sink = EventSink(client, self._log_name, config, metrics,
                               FaultPoint.parse(config.fault))
        self._partitions: dict[int, _PartitionState] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._writing = asyncio.Lock()
        self._last_progress = 0.0
        self._erasures_seen = 0  # the erased ids of the last round (see store/erased_ids.py)
        # The next round, fetched and decoded while ClickHouse inserted the last one (chDB
        # and the HTTP client release the GIL): per partition, its records and their
        # decoding. A seek of a partition drops its entry (see _seek).
        self._prefetched: dict[int, tuple[list[SourceRecord], DecodedBatch]] = {}

    async def start(self) -> None:
        assign = self._config.assign_all
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap_servers,
            group_id=None if assign else self._config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._config.session_timeout_ms,
            group_instance_id=None if assign else self._config.instance_id,
            heartbeat_interval_ms=max(500, self._config.session_timeout_ms // 5),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=self._config.fetch_max_wait_ms,
            fetch_min_bytes=self._config.fetch_min_bytes,
        )
        await consumer.start()
        self._consumer = consumer
        if assign:
            partitions = await self._topic_partitions(consumer)
            consumer.assign([TopicPartition(self._kafka.topic, p) for p in partitions])
            self.own(partitions)
            # Owning the whole topic, this process knows which partitions exist.
            await asyncio.to_thread(queries.forget_partitions, self._client,
                                    self._config.group_id, self._log_name, partitions)
        else:
            consumer.subscribe([self._kafka.topic], listener=_Rebalance(self))
        log.info("stream started", extra={
            "topic": self._kafka.topic, "mode": "assign" if assign else "group",
            "group": self._config.group_id,
        })

    async def _topic_partitions(self, consumer: AIOKafkaConsumer) -> list[int]:
        for _ in range(50):
            await consumer.topics()
            found = consumer.partitions_for_topic(self._kafka.topic)
            if found:
                return sorted(found)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {self._kafka.topic!r} has no partitions")

    def own(self, partitions: list[int]) -> None:
        """Take partitions over; each is recovered from its stored intent before use."""
        for partition in partitions:
            self._partitions[partition] = _PartitionState()
        log.info("partitions assigned", extra={"partitions": sorted(partitions)})

    async def release(self, partitions: list[int]) -> None:
        # Let an insert in flight finish before the partition's next owner reads its intent.
        async with self._writing:
            for partition in partitions:
                self._partitions.pop(partition, None)

    def stop(self) -> None:
        """Ask ``run`` to finish its current batch and return."""
        self._stopping.set()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def run(self) -> None:
        assert self._consumer is not None, "start() first"
        loop = asyncio.get_running_loop()
        backoff = _MIN_BACKOFF_S
        while not self._stopping.is_set():
            try:
                await self.step()
                backoff = _MIN_BACKOFF_S
            except Exception:
                # Store or broker trouble: start over from the stored intents, which replay
                # the failed batch with its token, once things answer again.
                log.exception("sink step failed; recovering", extra={"retry_in_s": backoff})
                self._metrics.sink_errors.inc()
                for state in self._partitions.values():
                    state.needs_recovery = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            if loop.time() - self._last_progress >= self._config.progress_interval_s:
                await self._verify_logs()
                await self.publish_progress()
                self._last_progress = loop.time()
        await self.publish_progress()

    async def step(self) -> int:
        """Recover newly owned partitions, then fetch and insert one round of batches."""
        consumer = self._consumer
        assert consumer is not None
        # Every batch of this round honours the erasures recorded so far; once the round
        # is reported, an erasure waiting for it may delete.
        seen = await asyncio.to_thread(self._sink.refresh_erased)
        for partition, pending in list(self._partitions.items()):
            if pending.needs_recovery:
                self._prefetched.pop(partition, None)
                await self._recover(partition, pending)
        if not self._prefetched:
            await self._add(await consumer.getmany(
                timeout_ms=self._config.max_batch_wait_ms,
                max_records=min(self._config.max_batch_records, _FETCH_CHUNK)))
            await self._top_up(None)
        fetched, self._prefetched = self._prefetched, {}
        self._detect_log_resets()
        handled = 0
        rounds = [(p, batch) for p, batch in fetched.items()
                  if (state := self._partitions.get(p)) is not None and not state.needs_recovery]
        for n, (partition, (records, decoded)) in enumerate(rounds):
            state = self._partitions.get(partition)
            if state is None or state.needs_recovery:
                continue  # revoked meanwhile, or failed its log check
            if state.next_offset is not None and records[0].offset < state.next_offset:
                # The fetch position only moves back when the consumer found its offset out
                # of range: the broker lost its log. These records are a new log.
                log.warning("partition log reset detected", extra={
                    "partition": partition, "expected": state.next_offset,
                    "got": records[0].offset,
                })
            await self._write(TopicPartition(self._kafka.topic, partition), state, records,
                              decoded=decoded, prefetch=n == len(rounds) - 1)
            handled += len(records)
        self._erasures_seen = seen
        return handled

    async def _top_up(self, insert: asyncio.Future[Any] | None) -> None:
        """Fill the next round up to ``max_batch_records`` with what the consumer holds, in
        chunks, decoded as they come; while ``insert`` (the current round) runs, wait for
        more (ClickHouse prefers fewer, larger inserts)."""
        consumer = self._consumer
        assert consumer is not None
        limit = self._config.max_batch_records
        taken = sum(len(records) for records, _ in self._prefetched.values())
        while taken < limit:
            got = await consumer.getmany(timeout_ms=0,
                                         max_records=min(limit - taken, _FETCH_CHUNK))
            if any(got.values()):
                taken += await self._add(got)
            elif insert is None or insert.done():
                return
            else:
                await asyncio.wait([insert], timeout=_TOP_UP_POLL_S)

    async def _add(self, got: Mapping[TopicPartition, list[SourceRecord]]) -> int:
        """Decode fetched records and append them to the next round; how many there were."""
        chunk = {tp.partition: records for tp, records in got.items() if records}
        if not chunk:
            return 0
        decoded = await asyncio.to_thread(self._decode_all, chunk)
        for partition, records in chunk.items():
            before = self._prefetched.get(partition)
            if before is None:
                self._prefetched[partition] = (list(records), decoded[partition])
            else:
                before[0].extend(records)  # this round's own list (see the first chunk)
                self._prefetched[partition] = (before[0], decoded[partition])
        return sum(len(records) for records in chunk.values())

    def _decode_all(self, batches: dict[int, list[SourceRecord]]) -> dict[int, DecodedBatch]:
        """Each partition's records decoded onto the round's batch so far (extended)."""
        return {p: self._sink.decode(p, records, after=(self._prefetched[p][1]
                                                        if p in self._prefetched else None))
                for p, records in batches.items()}

    async def _seek(self, partition: int, offset: int | None) -> None:
        """Move the fetch position (None: the log's start) and forget what was prefetched
        from the old one."""
        consumer = self._consumer
        assert consumer is not None
        self._prefetched.pop(partition, None)
        tp = TopicPartition(self._kafka.topic, partition)
        if offset is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)

    def _detect_log_resets(self) -> None:
        """A highwater below our position means the broker lost its log (e.g. an in-memory
        broker restarted): recover the partition, which re-checks the stored batch range."""
        consumer = self._consumer
        assert consumer is not None
        for partition, state in self._partitions.items():
            highwater = consumer.highwater(TopicPartition(self._kafka.topic, partition))
            if (highwater is not None and state.next_offset is not None
                    and highwater < state.next_offset):
                log.warning("partition log reset detected", extra={
                    "partition": partition, "position": state.next_offset,
                    "highwater": highwater,
                })
                state.needs_recovery = True

    async def _verify_logs(self) -> None:
        """Re-read the last record of each partition and compare its key.

        A broker that lost its log (an in-memory broker restarted) can grow a new log back
        to our position; the highwater then looks normal, but the records are not the ones
        we read. A changed key at next_offset - 1 gives it away.
        """
        consumer = self._consumer
        assert consumer is not None
        for partition, state in self._partitions.items():
            tp = TopicPartition(self._kafka.topic, partition)
            # Only caught-up partitions: there the check is one cheap fetch, and a busy
            # partition's reset mostly shows as a highwater below our position.
            if (state.needs_recovery or not state.next_offset or state.last_key is None
                    or consumer.highwater(tp) != state.next_offset
                    or partition in self._prefetched):
                continue
            await self._seek(partition, state.next_offset - 1)
            got = (await consumer.getmany(tp, timeout_ms=200, max_records=1)).get(tp, [])
            await self._seek(partition, state.next_offset)
            if not got or (got[0].offset == state.next_offset - 1
                           and got[0].key == state.last_key):
                continue  # the same log, or no evidence either way
            log.warning("partition log changed under the sink", extra={
                "partition": partition, "position": state.next_offset,
                "found": [(r.offset, r.key) for r in got], "expected": state.last_key,
                "highwater": consumer.highwater(tp)})
            state.needs_recovery = True

    async def _write(
        self, tp: TopicPartition, state: _PartitionState, records: list[SourceRecord],
        replay: queries.BatchIntent | None = None, decoded: DecodedBatch | None = None,
        prefetch: bool = False,
    ) -> None:
        async with self._writing:
            if self._partitions.get(tp.partition) is not state:
                return  # revoked while waiting: the next owner replays from the intent
            insert = asyncio.ensure_future(asyncio.to_thread(
                self._sink.write_batch, tp.partition, records, replay, state.epoch, decoded))
            try:
                if prefetch:
                    await self._top_up(insert)
            finally:
                result = await insert
        state.next_offset = records[-1].offset + 1
        state.last_key = records[-1].key
        if result.last_received_at is not None:
            state.last_received_at = result.last_received_at
        if not self._config.assign_all and self._consumer is not None:
            try:
                await self._consumer.commit({tp: state.next_offset})
            except KafkaError as exc:
                # Offsets of record live in ClickHouse; this commit only informs Kafka tools.
                log.info("kafka offset commit skipped", extra={"error": repr(exc)})

    async def _recover(self, partition: int, state: _PartitionState) -> None:
        consumer = self._consumer
        assert consumer is not None
        tp = TopicPartition(self._kafka.topic, partition)
        intent = await asyncio.to_thread(self._sink.last_intent, partition)
        state.needs_recovery = False
        if intent is None:
            await self._seek(partition, None)
            state.next_offset = None
            return
        if self._config.fresh_log:
            # The stored batch is of an earlier log, inserted whole before this one began.
            state.epoch = token_epoch(intent.batch_token)
            await self._read_from_start(partition, state)
            return
        await self._seek(partition, intent.start_offset)
        records = await self._fetch_range(tp, intent.start_offset, intent.end_offset)
        state.epoch = token_epoch(intent.batch_token)
        if self._sink.matches(intent, records):
            log.info("replaying interrupted batch", extra={
                "partition": partition, "start": intent.start_offset, "end": intent.end_offset,
            })
            await self._write(tp, state, records, replay=intent)
            if self._config.log_starts_empty:
                # The same records at the same offsets, but a new log all the same: what
                # precedes them may be another journal's, never stored.
                await self._read_from_start(partition, state)
                return
            await self._seek(partition, intent.end_offset + 1)
        else:
            # Expected after `tracklane up` restarts: its in-memory broker starts empty.
            state.epoch += 1  # a new log: its batches are not the old one's
            await self._seek(partition, None)
            state.next_offset = None
            # The batch may have landed in some tables and not others. `up`'s journals
            # replay the old log from before it: finish it from there, with its own
            # token, then read the new log from its start.
            again = await self._find_batch(tp, intent)
            if again:
                log.warning("the log was reset; replaying the interrupted batch from the "
                            "new log", extra={"partition": partition,
                                              "old": [intent.start_offset, intent.end_offset],
                                              "new": [again[0].offset, again[-1].offset]})
                await self._write(tp, state, again, replay=intent)
                await self._read_from_start(partition, state)
                return
            finished = await asyncio.to_thread(self._sink.finish_from_store, intent)
            log.warning(
                "the log no longer holds the stored batch; finished it from the store and "
                "reading the log from the start",
                extra={"partition": partition, "start": intent.start_offset,
                       "end": intent.end_offset, "rows": finished},
            )
            await self._seek(partition, None)

    async def _read_from_start(self, partition: int, state: _PartitionState) -> None:
        """Go on from the log's first record, as a new epoch. With several journals (`up
        --workers`) a new log interleaves them, so any record may be one never stored;
        those stored already are dropped by message id. Nothing is reported inserted
        until read again (a journal must not forget what precedes the batch)."""
        state.next_offset = None
        state.epoch += 1
        await self._seek(partition, None)

    async def _find_batch(self, tp: TopicPartition,
                          intent: queries.BatchIntent) -> list[SourceRecord]:
        """The run of records of ``intent``'s batch in a new log, read from its start, or []
        once the log has stopped growing without it (or after the replay timeout)."""
        consumer = self._consumer
        assert consumer is not None
        size = intent.end_offset - intent.start_offset + 1
        first = intent.first_key.encode()
        seen: list[SourceRecord] = []  # from the first record that may start the batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REPLAY_FETCH_TIMEOUT_S
        quiet_since = loop.time()
        while loop.time() < deadline:
            got = (await consumer.getmany(tp, timeout_ms=200, max_records=size)).get(tp, [])
            if not got:
                if loop.time() - quiet_since > 1.0:
                    return []  # nothing more is coming: the batch is not in this log
                continue
            quiet_since = loop.time()
            seen += got
            while seen:
                start = next((i for i, r in enumerate(seen) if r.key == first), None)
                if start is None:
                    seen = []
                    break
                seen = seen[start:]
                if len(seen) < size:
                    break
                if self._sink.same_records(intent, seen[:size]):
                    return seen[:size]
                seen = seen[1:]
        return []

    async def _fetch_range(self, tp: TopicPartition, start: int, end: int) -> list[SourceRecord]:
        consumer = self._consumer
        assert consumer is not None
        out: list[SourceRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REPLAY_FETCH_TIMEOUT_S
        while loop.time() < deadline:
            got = await consumer.getmany(tp, timeout_ms=200, max_records=end - start + 1)
            for raw in got.get(tp, []):
                if raw.offset < start or (out and raw.offset <= out[-1].offset):
                    return []  # the log restarted below our range
                if raw.offset > end:
                    return out
                out.append(raw)
            if out and out[-1].offset >= end:
                return out
            highwater = consumer.highwater(tp)
            if highwater is not None and highwater <= end:
                return out  # the log ends before the range does: it is not our log
        return out

    def inserted_offsets(self) -> dict[int, int]:
        """Per owned partition, the offset below which every record is inserted (or was
        dropped as a duplicate or as undecodable): the journal's trim point."""
        return {partition: state.next_offset for partition, state in self._partitions.items()
                if state.next_offset is not None}

    def progress(self) -> list[PartitionProgress]:
        """Lag and watermark per owned partition, as of now."""
        consumer = self._consumer
        now = self._clock()
        out = []
        for partition, state in sorted(self._partitions.items()):
            tp = TopicPartition(self._kafka.topic, partition)
            # Tansu's ListOffsets answers are not the log end; the fetch highwater is.
            highwater = consumer.highwater(tp) if consumer is not None else None
            next_offset = state.next_offset or 0
            lag = max(0, (highwater or 0) - next_offset) if not state.needs_recovery else -1
            watermark = state.last_received_at or _EPOCH
            if lag == 0:
                # Caught up: everything acknowledged before now is inserted, except what a
                # producer may still have in flight.
                inflight = timedelta(seconds=self._kafka.produce_timeout_s)
                watermark = max(watermark, now - inflight)
            out.append(PartitionProgress(partition, next_offset, highwater or 0, lag, watermark))
        return out

    async def publish_progress(self) -> list[PartitionProgress]:
        progress = self.progress()
        for p in progress:
            label = str(p.partition)
            self._metrics.lag.labels(label).set(p.lag)
            self._metrics.next_offset.labels(label).set(p.next_offset)
            self._metrics.watermark.labels(label).set(p.watermark.timestamp())
        try:
            await asyncio.to_thread(
                queries.write_progress, self._client, self._config.group_id, self._log_name,
                progress, self._clock(), self._erasures_seen,
            )
        except Exception:
            log.exception("could not store stream progress")
        return progress

    async def drain(self, timeout_s: float) -> bool:
        """Insert until every owned partition is caught up; True if it got there in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            handled = await self.step()
            if handled == 0 and all(p.lag == 0 for p in self.progress()):
                return True
        return False

