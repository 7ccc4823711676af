"""The child processes of ``bench.throughput``; each prints one JSON object on stdout.

    python -m bench.throughput_workers bare --port P
    python -m bench.throughput_workers pixel-minimal '{"bootstrap": ..., "topic": ...}' --port P
    python -m bench.throughput_workers kafka-raw '<spec>'    # raw aiokafka, send_batch
    python -m bench.throughput_workers kafka-fill '<spec>'   # N unique records for the sink
    python -m bench.throughput_workers sink '<spec>'         # the real StreamService
    python -m bench.throughput_workers raw-insert '<spec>'   # the same rows, one insert each

The baselines here are what the collector and the sink are compared with: the same broker,
topic settings and producer settings; the same table, client and rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI

from bench.loadgen import CpuWindow, batch_template, fill
from tracklane.cli import run_loop
from tracklane.collector.enrich import anonymize_ip, parse_user_agent
from tracklane.collector.partitioner import KeyPartitioner
from tracklane.collector.pixel import PIXEL_GIF
from tracklane.collector.producer import ensure_topic
from tracklane.contract import (
    EVENT_COLUMNS,
    Envelope,
    RequestFacts,
    TimeLimits,
    build_envelope,
    envelope_to_row,
    parse_message,
)
from tracklane.kafka import KafkaConfig
from tracklane.logs import setup_logging
from tracklane.metrics import Metrics
from tracklane.runner import HttpServer, open_store
from tracklane.settings import Settings
from tracklane.stream.consumer import StreamService

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the bare ASGI server ------------------------------------------------------------------


async def bare_app(
    scope: Scope, receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Answers every request 204, reading nothing: the server stack's own ceiling."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def serve_until_signalled(app: Any, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The collector's own server wrapper, so the uvicorn config is the same by construction
    # (HttpServer is typed for FastAPI but hands the app to uvicorn as any ASGI app).
    http = HttpServer(cast(FastAPI, app), host, port)
    await http.start()
    await stop.wait()
    await http.stop()


async def serve_bare(host: str, port: int) -> None:
    await serve_until_signalled(bare_app, host, port)


async def serve_minimal_pixel(host: str, port: int, spec: dict[str, Any]) -> None:
    """The least a Python pixel can do: per hit, one keyed aiokafka ``send`` of the query
    string, awaited with acks=all and the collector's partitioner, then the 43-byte GIF.
    What the collector's pixel is compared with."""
    kafka = KafkaConfig(spec["bootstrap"], spec["topic"], int(spec.get("partitions", 4)), 5.0)
    await ensure_topic(kafka)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all",
                                enable_idempotence=False, linger_ms=0,
                                partitioner=KeyPartitioner())
    await producer.start()

    async def app(scope: Scope, receive: Callable[[], Awaitable[Message]],
                  send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        query: bytes = scope["query_string"]
        await (await producer.send(kafka.topic, query, key=query))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"image/gif"),
                                (b"content-length", str(len(PIXEL_GIF)).encode())]})
        await send({"type": "http.response.body", "body": PIXEL_GIF})

    try:
        await serve_until_signalled(app, host, port)
    finally:
        await producer.stop()


# -- records -------------------------------------------------------------------------------


def envelope_records(project_id: str, requests: int, batch_size: int = 100,
                     ) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    """Kafka (key, value) pairs exactly as the collector builds them for the batch load.

    Returns the records and the per-request tokens they contain (to vary message ids).
    """
    template = batch_template(batch_size)
    limits = TimeLimits()
    out: list[tuple[bytes, bytes]] = []
    tokens = []
    for n in range(requests):
        token = f"T{n:07d}"
        tokens.append(token)
        body = json.loads(fill(template, token))
        received_at = datetime.now(UTC)
        for raw in body["batch"]:
            msg = parse_message({**raw, "sentAt": body["sentAt"]})
            facts = RequestFacts(project_id=project_id, received_at=received_at,
                                 anonymized_ip=anonymize_ip(msg.context.ip or "127.0.0.1"),
                                 user_agent=parse_user_agent(msg.context.userAgent or ""))
            env = build_envelope(msg, facts, limits)
            out.append((env.kafka_key, env.to_kafka_value()))
    return out, tokens


def unique_records(project_id: str, count: int, batch_size: int = 100,
                   ) -> list[tuple[bytes, bytes]]:
    """``count`` records with distinct message ids: a pool, copied with fresh tokens."""
    pool_requests = max(1, min(100, -(-count // batch_size)))
    pool, tokens = envelope_records(project_id, pool_requests, batch_size)
    out: list[tuple[bytes, bytes]] = []
    copy = 0
    while len(out) < count:
        for i, (key, value) in enumerate(pool):
            if len(out) >= count:
                break
            old = tokens[i // batch_size].encode()
            new = f"C{copy:03x}{old.decode()[1:]}".encode()
            out.append((key.replace(old, new), value.replace(old, new)))
        copy += 1
    return out


def _watch(spec: dict[str, Any]) -> dict[str, int | None]:
    return {k: int(v) for k, v in spec.get("watch_pids", {}).items()}


def _producer(bootstrap: str, produce_timeout_s: float) -> AIOKafkaProducer:
    # The collector's producer settings (collector/producer.py EventProducer.start).
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=2,
        max_batch_size=1024 * 1024, max_request_size=2 * 1024 * 1024,
        request_timeout_ms=int(produce_timeout_s * 1000), retry_backoff_ms=100,
    )


async def _send_batches(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes]],
    until: float | None, inflight_max: int,
) -> list[tuple[float, int]]:
    """Send records in full batches (create_batch/send_batch) round-robin over partitions,
    ``inflight_max`` batches in flight; cycle through ``records`` until ``until`` (else once).
    Returns (ack time, records) per batch."""
    partitions = sorted(await producer.partitions_for(topic))
    acks: list[tuple[float, int]] = []
    inflight: set[asyncio.Future[Any]] = set()
    sizes: dict[asyncio.Future[Any], int] = {}
    i = 0
    k = 0

    def reap(done: set[asyncio.Future[Any]]) -> None:
        now = time.monotonic()
        for fut in done:
            fut.result()
            acks.append((now, sizes.pop(fut)))

    while (until is not None and time.monotonic() < until) or (until is None and i < len(records)):
        batch = producer.create_batch()
        count = 0
        while until is not None or i < len(records):
            key, value = records[i % len(records)]
            if batch.append(key=key, value=value, timestamp=None) is None:
                break
            i += 1
            count += 1
        batch.close()
        fut = await producer.send_batch(batch, topic, partition=partitions[k % len(partitions)])
        k += 1
        inflight.add(fut)
        sizes[fut] = count
        if len(inflight) >= inflight_max:
            done, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            reap(done)
    if inflight:
        done, _ = await asyncio.wait(inflight)
        reap(done)
    return acks


async def kafka_raw(spec: dict[str, Any]) -> dict[str, Any]:
    kafka = KafkaConfig(spec["bootstrap"], spec["topic"], int(spec["partitions"]), 5.0)
    await ensure_topic(kafka)
    records, _ = envelope_records(spec["project"], 100)
    producer = _producer(kafka.bootstrap_servers, kafka.produce_timeout_s)
    await producer.start()
    try:
        warmup, duration = float(spec["warmup_s"]), float(spec["duration_s"])
        t0 = time.monotonic()
        start, end = t0 + warmup, t0 + warmup + duration
        cpu: dict[str, float] = {}

        async def mark_cpu() -> None:
            await asyncio.sleep(warmup)
            window = CpuWindow(_watch(spec), me="producer")
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            cpu.update(window.stop())

        marks = asyncio.create_task(mark_cpu())
        acks = await _send_batches(producer, kafka.topic, records, end,
                                   int(spec.get("inflight", 8)))
        await marks
    finally:
        await producer.stop()
    acked = sum(n for at, n in acks if start <= at < end)
    return {"events_per_s": round(acked / duration, 1), "seconds": duration,
            "records_per_batch_avg": round(sum(n for _, n in acks) / max(1, len(acks)), 1),
            "value_bytes_avg": round(sum(len(v) for _, v in records) / len(records), 1),
            "cpu": cpu}


async def kafka_fill(spec: dict[str, Any]) -> dict[str, Any]:
    kafka = KafkaConfig(spec["bootstrap"], spec["topic"], int(spec["partitions"]), 5.0)
    await ensure_topic(kafka)
    records = unique_records(spec["project"], int(spec["events"]))
    producer = _producer(kafka.bootstrap_servers, 10.0)
    await producer.start()
    started = time.monotonic()
    try:
        acks = await _send_batches(producer, kafka.topic, records, None, 8)
    finally:
        await producer.stop()
    return {"events": sum(n for _, n in acks), "seconds": round(time.monotonic() - started, 2)}


# -- the sink and its baseline ---------------------------------------------------------------


def _store_settings(spec: dict[str, Any], data_dir: Path) -> Settings:
    return Settings(kafka_bootstrap=spec["bootstrap"], topic=spec["topic"],
                    topic_partitions=int(spec["partitions"]), data_dir=data_dir,
                    store_dsn=f"chdb://{data_dir / 'chdb'}",
                    batch_max_records=int(spec["round_records"]))


async def sink(spec: dict[str, Any]) -> dict[str, Any]:
    """The real StreamService (as ``tracklane up`` runs it) draining ``events`` records."""
    events = int(spec["events"])
    settings = _store_settings(spec, Path(spec["data_dir"]))
    client = open_store(settings, migrations=True)
    metrics = Metrics()
    service = StreamService(settings.kafka(), settings.sink(assign_all=True), client, metrics)
    await service.start()
    registry = metrics.registry

    def inserted() -> float:
        return registry.get_sample_value("tracklane_stream_inserted_total") or 0.0

    log("sink: measuring")  # bench.throughput starts a profiler on this line
    started = time.monotonic()
    window = CpuWindow(_watch(spec), me="sink")
    task = asyncio.create_task(service.run())
    deadline = started + float(spec.get("timeout_s", 600))
    while inserted() < events and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.05)  # polling the registry costs the sink GIL time
    seconds = time.monotonic() - started
    cpu = window.stop()
    service.stop()
    await task
    await service.close()
    done = inserted()
    stored = client.query("SELECT count() FROM events").result_rows[0][0]
    rolled = client.query("SELECT sum(events) FROM rollups_minute").result_rows[0][0]
    inserts = registry.get_sample_value("tracklane_stream_insert_seconds_count") or 0.0
    insert_s = registry.get_sample_value("tracklane_stream_insert_seconds_sum") or 0.0
    client.close()
    return {"events_per_s": round(done / seconds, 1), "events": int(done),
            "seconds": round(seconds, 2), "stored": int(stored), "rolled_up": int(rolled or 0),
            "inserts": int(inserts), "rows_per_insert_avg": round(done / max(1.0, inserts), 1),
            "insert_seconds_share": round(insert_s / seconds, 3), "cpu": cpu}


async def _read_topic(spec: dict[str, Any], events: int) -> list[tuple[int, int, bytes]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=spec["bootstrap"], enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    out: list[tuple[int, int, bytes]] = []
    try:
        await consumer.topics()
        partitions = sorted(consumer.partitions_for_topic(spec["topic"]) or [])
        tps = [TopicPartition(spec["topic"], p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 300
        while len(out) < events and time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in got.items():
                out.extend((tp.partition, r.offset, r.value or b"") for r in records)
    finally:
        await consumer.stop()
    return out


async def raw_insert(spec: dict[str, Any]) -> dict[str, Any]:
    """The same rows the sink builds, inserted with one plain ``client.insert`` per block."""
    events = int(spec["events"])
    block = int(spec["round_records"])  # the sink's largest round
    records = await _read_topic(spec, events)
    rows = [envelope_to_row(Envelope.from_kafka_value(value), partition, offset,
                            f"raw:{partition}:{offset // block}")
            for partition, offset, value in records]
    settings = _store_settings(spec, Path(spec["data_dir"]))
    client = open_store(settings, migrations=True)
    columns = list(EVENT_COLUMNS)
    started = time.monotonic()
    window = CpuWindow(_watch(spec), me="insert")
    for at in range(0, len(rows), block):
        client.insert("events", rows[at:at + block], column_names=columns)
    seconds = time.monotonic() - started
    cpu = window.stop()
    stored = client.query("SELECT count() FROM events").result_rows[0][0]
    rolled = client.query("SELECT sum(events) FROM rollups_minute").result_rows[0][0]
    client.close()
    return {"events_per_s": round(len(rows) / seconds, 1), "events": len(rows),
            "seconds": round(seconds, 2), "stored": int(stored), "rolled_up": int(rolled or 0),
            "rows_per_insert": block, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["bare", "pixel-minimal", "kafka-raw", "kafka-fill",
                                         "sink", "raw-insert"])
    parser.add_argument("spec", nargs="?", default="{}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # As `tracklane` does before running anything.
    setup_logging(Settings().log_level)
    spec: dict[str, Any] = json.loads(args.spec)
    if args.mode == "bare":
        run_loop(serve_bare(args.host, args.port))  # the loop `tracklane` runs on
        return
    if args.mode == "pixel-minimal":
        run_loop(serve_minimal_pixel(args.host, args.port, spec))
        return
    jobs = {"kafka-raw": kafka_raw, "kafka-fill": kafka_fill, "sink": sink,
            "raw-insert": raw_insert}
    if args.mode in ("sink", "raw-insert") and "data_dir" not in spec:
        parser.error(f"{args.mode}: the spec needs a data_dir (a fresh directory)")
    result = run_loop(jobs[args.mode](spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
