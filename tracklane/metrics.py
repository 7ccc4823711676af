"""Prometheus metrics for every stage: received, rejected, produced, consumed, inserted, lag.

All metrics hang off one ``CollectorRegistry`` passed in, so a process (or a test) owns its
own set and nothing is registered at import time.

Collector worker processes (``tracklane collector --workers N``) share their metrics
through prometheus-client's multiprocess mode: each writes its values to files in one
directory, and whichever worker answers a scrape sums them all. prometheus-client reads
``PROMETHEUS_MULTIPROC_DIR`` when it is imported, so the supervisor sets it in each
worker's environment; ``Metrics(multiprocess_dir=...)`` checks that it did.

In ``tracklane up --workers N`` the process that owns the sink and the store is no
worker: it keeps its own registry and merges the workers' directory into its scrape
(``Metrics(workers_dir=...)``), each family from whichever side has it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXPOSITION_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None,
                 multiprocess_dir: Path | None = None, workers_dir: Path | None = None) -> None:
        if multiprocess_dir is not None and os.environ.get(MULTIPROC_ENV) != str(multiprocess_dir):
            raise RuntimeError(f"{MULTIPROC_ENV} must be {multiprocess_dir} before "
                               "prometheus_client is imported")
        self.registry = registry or CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self.workers_dir = workers_dir
        # Gauges read from a function at scrape time; in multiprocess mode, set from it
        # by refresh() (another worker may answer the scrape).
        self._live: list[tuple[Gauge, Callable[[], float]]] = []
        r = self.registry
        self.received = Counter(
            "tracklane_events_received", "Events received by the collector.", ["route"], registry=r)
        self.rejected = Counter(
            "tracklane_events_rejected", "Events or requests rejected, by reason.", ["reason"],
            registry=r)
        self.client_metrics = Counter(
            "tracklane_client_metrics", "Requests of analytics.js's own client metrics "
            "(/v1/m), accepted and dropped.", registry=r)
        self.produced = Counter(
            "tracklane_events_produced", "Events acknowledged by Kafka.", registry=r)
        self.produce_failures = Counter(
            "tracklane_produce_failures", "Requests answered 503 because Kafka did not ack.",
            registry=r)
        self.spooled = Counter(
            "tracklane_events_spooled", "Events accepted into the disk spool (Kafka was down or "
            "slow).", registry=r)
        self.replayed = Counter(
            "tracklane_events_replayed", "Spooled events replayed to Kafka.", registry=r)
        self.spool_backlog = Gauge(
            "tracklane_spool_events", "Events in the spool not yet replayed to Kafka.",
            registry=r, multiprocess_mode="livesum")
        self.spool_bytes = Gauge(
            "tracklane_spool_bytes", "Bytes the spool holds on disk: not yet replayed (in a "
            "journal, as in `tracklane up`: not yet known stored).", registry=r,
            multiprocess_mode="livesum")
        self.spool_expired = Counter(
            "tracklane_spool_expired", "Spooled events older than the sink's dedup window, set "
            "aside in expired.seg instead of replayed.", registry=r)
        self.spool_age = Gauge(
            "tracklane_spool_oldest_age_seconds",
            "Age of the oldest spooled event not yet replayed; 0 when the spool is empty.",
            registry=r, multiprocess_mode="livemax")
        self.request_seconds = Histogram(
            "tracklane_ingest_request_seconds", "Ingest request latency, including the Kafka ack.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.consumed = Counter(
            "tracklane_stream_consumed", "Records read from Kafka by the sink.", registry=r)
        self.inserted = Counter(
            "tracklane_stream_inserted", "Events inserted into ClickHouse.", registry=r)
        self.duplicates = Counter(
            "tracklane_stream_duplicates", "Records dropped as already-stored message ids.",
            registry=r)
        self.erased = Counter(
            "tracklane_stream_erased", "Events of erased users dropped by the sink (sent or "
            "replayed after the erasure started).", registry=r)
        self.undecodable = Counter(
            "tracklane_stream_undecodable", "Records that are not a contract envelope.", registry=r)
        self.sink_errors = Counter(
            "tracklane_stream_errors", "Sink rounds that failed and were retried.", registry=r)
        self.replayed_batches = Counter(
            "tracklane_stream_replayed_batches", "Interrupted batches replayed after a restart.",
            registry=r)
        self.insert_seconds = Histogram(
            "tracklane_stream_insert_seconds", "Time to insert one batch.",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.log_generation = Gauge(
            "tracklane_log_generation", "Generation of `up`'s in-memory log the sink reads "
            "(a new one replaces it when it has grown).", registry=r,
            multiprocess_mode="livemax")
        self.lag = Gauge(
            "tracklane_stream_lag", "Records in Kafka not yet inserted.", ["partition"], registry=r)
        self.next_offset = Gauge(
            "tracklane_stream_next_offset", "Next offset the sink will read.", ["partition"],
            registry=r)
        self.watermark = Gauge(
            "tracklane_stream_watermark_seconds",
            "Unix time up to which every received event is inserted.", ["partition"], registry=r)

    def live(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Let ``gauge`` show ``read()``."""
        if self.multiprocess_dir is None:
            gauge.set_function(read)
        else:
            self._live.append((gauge, read))

    def refresh(self) -> None:
        """Write the live gauges' values for the other workers' scrapes."""
        for gauge, read in self._live:
            gauge.set(read())

    def exposition(self) -> bytes:
        """The text format of every metric: this process's, or all workers' summed (with
        this process's own families where the workers have none of theirs)."""
        if self.multiprocess_dir is None and self.workers_dir is None:
            return generate_latest(self.registry)
        self.refresh()
        registry = CollectorRegistry(auto_describe=False)
        path = self.multiprocess_dir or self.workers_dir
        workers = MultiProcessCollector(None, path=str(path))  # type: ignore[no-untyped-call]
        own = self.registry if self.multiprocess_dir is None else None
        registry.register(_Merged(workers, own))
        return generate_latest(registry)


class _Merged(Collector):
    """The workers' families with ``own``'s samples added: every worker also registers the
    sink's counters (at 0) and the owner the collector's, and the text format allows one
    family per name. Summing is right for every family here: counters, histograms, the
    spool gauges (the owner has no spool, so its are 0) and the gauges only one side sets."""

    def __init__(self, workers: MultiProcessCollector, own: CollectorRegistry | None) -> None:
        self._workers = workers
        self._own = own

    def collect(self) -> Iterable[Metric]:
        families = {family.name: family
                    for family in self._workers.collect()}  # type: ignore[no-untyped-call]
        for family in self._own.collect() if self._own is not None else ():
            summed = families.get(family.name)
            if summed is None:
                families[family.name] = family
                continue
            values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
            # A sum of creation times means nothing; the workers' files keep none.
            for sample in (*summed.samples,
                           *(s for s in family.samples if not s.name.endswith("_created"))):
                key = (sample.name, tuple(sorted(sample.labels.items())))
                values[key] = values.get(key, 0.0) + sample.value
            merged = Metric(summed.name, summed.documentation, summed.type, summed.unit)
            for (name, labels), value in values.items():
                merged.add_sample(name, dict(labels), value)
            families[family.name] = merged
        yield from families.values()
