"""The exactly-once ClickHouse sink for one topic.

For each partition the sink handles batches of consecutive offsets [s, e], in order:

1. decode the envelopes and drop repeats of a message id inside the batch, and the
   events of erased people (:mod:`store.erased_ids`);
2. drop message ids already stored (``event_ids``), looking back ``dedup_window`` from the
   batch's earliest arrival, except those stored under this batch's own token;
3. write the batch's *intent* (range, first key, token) to ``stream_offsets``;
4. insert the rows with ``insert_deduplication_token = token``; the rollup and id views
   are deduplicated with it too.

The intent row is the offset of record. After a crash anywhere, the new owner of the
partition reads it, re-reads exactly [s, e] and repeats steps 1-4 with the same token.
Step 2 gives the same answer as the first time (it ignores the batch's own rows), so the
block is the same, and ClickHouse drops whatever part of it already landed, in the table
and in each view. Then the sink goes on from e + 1. Kafka offset commits are informative
only.

Every copy of a message id has the same Kafka key, so it sits in one partition and this
per-partition order is enough to count it once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from tracklane.contract import Envelope, envelope_to_row
from tracklane.metrics import Metrics
from tracklane.store import erased_ids, queries
from tracklane.store.erased_ids import ErasedIds
from tracklane.store.queries import BatchIntent
from tracklane.stream.config import SinkConfig
from tracklane.stream.faults import FaultPoint

log = logging.getLogger(__name__)


class SourceRecord(Protocol):
    """A Kafka record as the sink reads it; aiokafka's ``ConsumerRecord`` is one (copying
    each record into our own type cost a twentieth of the sink's time)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A batch's envelopes with their ``events`` rows (made for ``token``), repeats of a
    message id inside it dropped."""

    token: str
    envelopes: list[tuple[Envelope, list[Any]]]
    undecodable: int
    idents: set[tuple[str, str]]

    def for_token(self, token: str) -> DecodedBatch:
        """The same rows, made for ``token``: a batch is decoded before it is complete,
        and its token names all of its records."""
        for _, row in self.envelopes:
            row[-1] = token  # EVENT_COLUMNS ends with batch_token
        return replace(self, token=token)


@dataclass(frozen=True, slots=True)
class BatchResult:
    inserted: int
    duplicates: int
    undecodable: int
    # Latest collector arrival time in the batch: the partition's watermark once inserted.
    last_received_at: datetime | None


def batch_token(topic: str, partition: int, records: Sequence[SourceRecord],
                epoch: int = 0) -> str:
    """A token naming exactly these records of one incarnation of the partition's log: same
    range, same keys and same ``epoch`` give the same token.

    The epoch grows each time the sink finds the log reset (an in-memory broker restarted).
    A new log can hold the very same records at the very same offsets (``tracklane up``
    replays its journal in order), and its batch must not pass for the old one's, whose
    rows would then be kept as "landed by an interrupted attempt" and stored twice.
    """
    span = f"{records[0].offset}-{records[-1].offset}"
    token = f"{topic}:{partition}:{span}:{_keys_digest(records)}"
    return f"{token}:epoch={epoch}" if epoch else token


def _keys_digest(records: Sequence[SourceRecord]) -> str:
    digest = hashlib.sha1()
    for record in records:
        digest.update(record.key or b"")
        digest.update(b"\x00")
    return digest.hexdigest()[:20]


def token_epoch(token: str) -> int:
    """The log epoch a token was made in (Kafka topic names cannot hold "=")."""
    _, found, epoch = token.rpartition(":epoch=")
    return int(epoch) if found and epoch.isdigit() else 0


def first_key(records: Sequence[SourceRecord]) -> str:
    return (records[0].key or b"").decode(errors="replace")


class EventSink:
    """Writes batches of one topic's records to ClickHouse, each message id once.

    All methods block on ClickHouse; the consumer calls them from a worker thread.
    """

    def __init__(
        self, client: Client, topic: str, config: SinkConfig, metrics: Metrics,
        faults: FaultPoint | None = None,
    ) -> None:
        self._client = client
        self._topic = topic
        self._config = config
        self._metrics = metrics
        self._faults = faults or FaultPoint()
        self._seq: dict[int, int] = {}
        self._erased = ErasedIds(config.erasure_key)
        self._erased_version = -1

    def refresh_erased(self) -> int:
        """Read the erased ids again if the list grew; return its size, the erasures this
        sink now honours."""
        seen = erased_ids.version(self._client)
        if seen != self._erased_version:
            self._erased = ErasedIds.load(self._client, self._config.erasure_key)
            self._erased_version = seen
        return seen

    def last_intent(self, partition: int) -> BatchIntent | None:
        intent = queries.latest_intent(self._client, self._config.group_id, self._topic, partition)
        self._seq[partition] = intent.seq if intent else 0
        return intent

    def finish_from_store(self, intent: BatchIntent) -> int:
        """Finish an interrupted batch from the rows it left in ``events``; how many there were.

        A crash can land an insert's ``events`` part and not every view's (``event_ids``,
        the rollups, sessions, identities: ClickHouse writes the table's part first, then
        each view's). Replaying the batch with its token completes it: the table and the
        views that have the block skip it, the others take it. When the log no longer
        holds the batch as it was (`up`'s broker restarts empty, and several journals
        replay into it interleaved), its rows are read back from ``events`` instead; then
        ``event_ids`` knows every message id it stored, and the same ids read again from
        the new log are dropped as duplicates. Without ``events`` rows nothing landed.
        """
        rows = queries.batch_rows(self._client, intent.batch_token)
        if rows:
            queries.insert_events(self._client, rows, intent.batch_token)
        return len(rows)

    def matches(self, intent: BatchIntent, records: Sequence[SourceRecord]) -> bool:
        """Whether ``records`` are the very batch ``intent`` describes (the log was not reset)."""
        return (
            bool(records)
            and records[0].offset == intent.start_offset
            and records[-1].offset == intent.end_offset
            and batch_token(self._topic, intent.partition, records,
                            token_epoch(intent.batch_token)) == intent.batch_token
        )

    def same_records(self, intent: BatchIntent, records: Sequence[SourceRecord]) -> bool:
        """Whether ``records`` hold the keys of ``intent``'s batch, in order, wherever they
        sit in the log (a new log that a journal filled again)."""
        # token: topic:partition:start-end:digest[:epoch=N]; topics cannot hold ":".
        parts = intent.batch_token.split(":")
        return (len(records) == intent.end_offset - intent.start_offset + 1
                and len(parts) >= 4 and _keys_digest(records) == parts[3])

    def write_batch(
        self, partition: int, records: Sequence[SourceRecord], replay: BatchIntent | None = None,
        epoch: int = 0, decoded: DecodedBatch | None = None,
    ) -> BatchResult:
        """Insert one batch of consecutive records of ``partition``, read from log ``epoch``;
        see the module docstring. ``decoded``: ``decode``'s answer for them, if made."""
        if not records:
            return BatchResult(0, 0, 0, None)
        # A replay keeps its batch's token, also when a new log holds the batch elsewhere.
        token = (replay.batch_token if replay is not None
                 else batch_token(self._topic, partition, records, epoch))
        if decoded is None:
            decoded = self.decode(partition, records, token)
        elif decoded.token != token:
            decoded = decoded.for_token(token)
        envelopes, undecodable = decoded.envelopes, decoded.undecodable
        duplicates = len(records) - undecodable - len(envelopes)
        erased = [env for env, _ in envelopes if self._erased.covers(env)]
        if erased:
            dropped = {id(env) for env in erased}
            envelopes = [(env, row) for env, row in envelopes if id(env) not in dropped]
        fresh: list[list[Any]] = []
        landed = 0  # rows of this very batch stored by an interrupted earlier attempt
        if envelopes:
            since = min(env.received_at for env, _ in envelopes) - self._config.dedup_window
            stored = queries.stored_message_ids(
                self._client, ((env.project_id, env.message_id) for env, _ in envelopes), since,
            )
            # Rows stored under this batch's own token are not duplicates: keeping them makes
            # a replay build the first attempt's exact block, which the token then recognises.
            for env, row in envelopes:
                found = stored.get((env.project_id, env.message_id))
                if found is None or found == token:
                    fresh.append(row)
                    landed += found == token
            duplicates += len(envelopes) - len(fresh)
        if replay is None:
            seq = self._seq.get(partition, 0) + 1
            queries.write_intent(self._client, self._config.group_id, self._topic, BatchIntent(
                partition, seq, records[0].offset, records[-1].offset, first_key(records), token,
            ))
            self._seq[partition] = seq
        self._faults.reached("after_intent")
        if fresh:
            started = time.perf_counter()
            queries.insert_events(self._client, fresh, token)
            self._metrics.insert_seconds.observe(time.perf_counter() - started)
        if erased:
            # Their ids, so that a client's resend of one (with no timestamp of its own, it
            # would look new) is dropped as a duplicate.
            queries.remember_message_ids(self._client, [
                (env.project_id, env.message_id, env.received_at) for env in erased], "erased")
        self._faults.reached("after_insert")
        self._metrics.consumed.inc(len(records))
        self._metrics.inserted.inc(len(fresh) - landed)
        self._metrics.duplicates.inc(duplicates)
        self._metrics.undecodable.inc(undecodable)
        self._metrics.erased.inc(len(erased))
        if replay is not None:
            self._metrics.replayed_batches.inc()
        last = max((env.received_at for env, _ in envelopes), default=None)
        return BatchResult(len(fresh) - landed, duplicates, undecodable, last)

    def decode(self, partition: int, records: Sequence[SourceRecord], token: str = "",
               after: DecodedBatch | None = None) -> DecodedBatch:
        """Step 1 without the erasures, rows included: work on the records alone, which the
        consumer does for its next batch while ClickHouse inserts the current one.
        ``after``: the batch these records continue, whose list and set grow in place (a
        round grows chunk by chunk; copying them, or a second pass, would cost the round's
        size for every chunk)."""
        seen: set[tuple[str, str]] = after.idents if after is not None else set()
        out: list[tuple[Envelope, list[Any]]] = after.envelopes if after is not None else []
        bad = after.undecodable if after is not None else 0
        for record in records:
            try:
                env = Envelope.from_kafka_value(record.value or b"")
            except ValidationError as exc:
                bad += 1
                # Not ours (or a future envelope version): keep going, but loudly.
                log.error("undecodable record skipped", extra={
                    "topic": self._topic, "partition": partition, "offset": record.offset,
                    "error": str(exc.errors()[0]["msg"]),
                })
                continue
            ident = (env.project_id, env.message_id)
            if ident in seen:
                continue
            seen.add(ident)
            out.append((env, envelope_to_row(env, partition, record.offset, token)))
        return DecodedBatch(after.token if after is not None else token, out, bad, seen)
