"""An in-process pipeline for tests: collector app, real Kafka producer, real sink."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from clickhouse_connect.driver.client import Client
from fastapi import FastAPI

from tracklane.collector.app import CollectorDeps, create_app
from tracklane.collector.delivery import Delivery
from tracklane.collector.ingest_log import IngestLog, store_writer
from tracklane.collector.producer import EventProducer, ensure_topic
from tracklane.collector.spool import Spool, SpoolConfig
from tracklane.kafka import KafkaConfig
from tracklane.metrics import Metrics
from tracklane.projects import Project, Projects
from tracklane.settings import Settings
from tracklane.stream.consumer import StreamService


def basic_auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def new_project(prefix: str = "p") -> Project:
    tag = uuid.uuid4().hex[:10]
    return Project(id=f"{prefix}_{tag}", write_keys=[f"wk_{tag}"], read_keys=[f"rk_{tag}"],
                   allowed_origins=["https://shop.example"])


# The install secret of in-process test collectors (keys the erasure audit).
TEST_SECRET = "test-install-secret"


def pipeline_settings(bootstrap: str, **overrides: Any) -> Settings:
    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "kafka_bootstrap": bootstrap, "topic": f"events-{tag}", "topic_partitions": 2,
        "consumer_group": f"sink-{tag}", "batch_max_wait_ms": 50, "progress_interval_s": 0.2,
        "produce_timeout_s": 3.0, "retry_after_s": 7, "secret": TEST_SECRET,
    }
    return Settings(**{**base, **overrides})


class Sink:
    """The in-process sink, which a test may stop (a stalled pipeline) and start again."""

    def __init__(self, kafka: KafkaConfig, settings: Settings, store: Client,
                 metrics: Metrics) -> None:
        self._args = (kafka, settings.sink(assign_all=True), store, metrics)
        self._service: StreamService | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._service = StreamService(*self._args)
        await self._service.start()
        self._task = asyncio.create_task(self._service.run())

    async def stop(self) -> None:
        if self._service is None or self._task is None:
            return
        self._service.stop()
        await self._task
        await self._service.close()
        self._service = self._task = None


@dataclass
class Pipeline:
    app: FastAPI
    http: httpx.AsyncClient
    project: Project
    metrics: Metrics
    kafka: KafkaConfig
    sink: Sink | None
    ingest_log: IngestLog | None = None

    @property
    def write_key(self) -> str:
        return self.project.write_keys[0]

    @property
    def auth(self) -> dict[str, str]:
        """The write key as Segment libraries send it: the Basic-auth username."""
        return basic_auth(self.write_key)

    async def stats(self, event: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        response = await self.http.get(
            "/v1/stats/minutes",
            params={"event": event, "from": start.isoformat(), "to": end.isoformat()},
            headers={"Authorization": f"Bearer {self.project.read_keys[0]}"},
        )
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["rows"]
        return rows

    async def total(self, event: str, around: datetime) -> int:
        rows = await self.stats(event, around - timedelta(hours=1), around + timedelta(hours=1))
        return sum(int(r["count"]) for r in rows)

    def metric(self, name: str) -> float:
        value = self.metrics.registry.get_sample_value(name)
        return float(value or 0.0)

    async def wait_inserted(self, consumed: float, timeout_s: float = 20.0) -> None:
        """Wait until the sink has read ``consumed`` records in total."""
        await poll(lambda: self.metric("tracklane_stream_consumed_total") >= consumed, timeout_s,
                   f"sink did not consume {consumed} records")


async def poll(check: Any, timeout_s: float, message: str, interval_s: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s: {message}")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def running_pipeline(
    settings: Settings, store: Client | None, project: Project | None = None, clock: Any = None,
    spool: SpoolConfig | None = None, monotonic: Any = None, others: tuple[Project, ...] = (),
) -> AsyncIterator[Pipeline]:
    """Collector plus producer, and an in-process sink when ``store`` is given.

    The collector serves ``project`` and any ``others``; the pipeline's helpers use
    ``project``'s keys.
    """
    project = project or new_project()
    metrics = Metrics()
    kafka = settings.kafka()
    await ensure_topic(kafka)
    delivery = Delivery(settings.delivery(), EventProducer(kafka),
                        Spool(spool) if spool is not None else None, metrics)
    await delivery.start()
    sink = None
    if store is not None:
        sink = Sink(kafka, settings, store, metrics)
        await sink.start()
    deps = CollectorDeps(settings.collector(), Projects((project, *others)), delivery, metrics,
                         store)
    if clock is not None:
        deps = replace(deps, clock=clock)
    if monotonic is not None:
        deps = replace(deps, monotonic=monotonic)
    if store is not None:
        # Flushed by the tests that read it, so no background task.
        deps = replace(deps, ingest_log=IngestLog(store_writer(store), deps.clock))
    app = create_app(deps)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.23", 4711))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as http:
            yield Pipeline(app, http, project, metrics, kafka, sink, deps.ingest_log)
    finally:
        if sink is not None:
            await sink.stop()
        await delivery.stop()


async def read_topic(bootstrap: str, topic: str, count: int,
                     timeout_s: float = 10.0) -> list[ConsumerRecord[bytes, bytes]]:
    """The first ``count`` records of ``topic`` (or fewer, once ``timeout_s`` has passed
    with none arriving)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        while len(records) < count:
            got = await consumer.getmany(timeout_ms=int(timeout_s * 1000))
            if not got:
                break
            records += [r for batch in got.values() for r in batch]
    finally:
        await consumer.stop()
    return records


def now_utc() -> datetime:
    return datetime.now(UTC)
