"""Pipeline throughput on real components: collector → Tansu → sink → chDB.

    python bench/pipeline.py [--events 100000] [--batch 500] [--concurrency 4]

Prints ingest rate and request latency (collector in-process, real Kafka acks), then the
sink's insert rate draining the topic into a fresh chDB store.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tracklane.broker import TansuBroker
from tracklane.collector.app import CollectorDeps, create_app
from tracklane.collector.delivery import Delivery
from tracklane.collector.producer import EventProducer, ensure_topic
from tracklane.metrics import Metrics
from tracklane.projects import Project, Projects
from tracklane.settings import Settings
from tracklane.store.client import create_client
from tracklane.store.migrate import RetentionConfig, migrate
from tracklane.stream.consumer import StreamService


async def main(events: int, batch: int, concurrency: int) -> None:
    broker = TansuBroker()
    broker.start()
    data = Path(tempfile.mkdtemp(prefix="tracklane-bench-"))
    settings = Settings(kafka_bootstrap=broker.bootstrap_servers, topic="bench",
                        topic_partitions=4, store_dsn=f"chdb://{data / 'chdb'}")
    project = Project(id="bench", write_keys=["wk_bench"], read_keys=["rk_bench"])
    kafka = settings.kafka()
    await ensure_topic(kafka)
    metrics = Metrics()
    delivery = Delivery(settings.delivery(), EventProducer(kafka), None, metrics)
    await delivery.start()
    app = create_app(CollectorDeps(settings.collector(), Projects((project,)), delivery, metrics))
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(events // batch):
        queue.put_nowait(n)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            body = {"writeKey": "wk_bench", "batch": [
                {"type": "track", "event": "bench", "messageId": f"{n}-{i}",
                 "anonymousId": f"a{i % 1000}", "properties": {"revenue": 1}}
                for i in range(batch)]}
            started = time.perf_counter()
            response = await http.post("/v1/batch", json=body)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text

    transport = httpx.ASGITransport(app=app)
    started = time.perf_counter()
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    ingest_s = time.perf_counter() - started
    await delivery.stop()
    latencies.sort()
    print(f"ingest: {events} events in {ingest_s:.2f}s = {events / ingest_s:,.0f} events/s; "
          f"request of {batch}: p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms")

    client = create_client(settings.resolved_store_dsn())
    migrate(client, RetentionConfig(395, 48))
    service = StreamService(kafka, settings.sink(assign_all=True), client, metrics)
    await service.start()
    started = time.perf_counter()
    assert await service.drain(300)
    sink_s = time.perf_counter() - started
    inserted = client.query("SELECT count() FROM events").result_rows[0][0]
    print(f"sink: {inserted} events inserted in {sink_s:.2f}s = {inserted / sink_s:,.0f} events/s "
          f"(batches of up to {settings.batch_max_records})")
    await service.close()
    client.close()
    broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.batch, args.concurrency))
