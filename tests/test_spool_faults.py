"""Nothing answered 2xx is lost: the broker frozen for 30 s, the collector SIGKILLed mid-outage.

The collector runs as a real ``tracklane collector`` process with its disk spool; the broker
is a real Tansu, frozen with SIGSTOP (a hung or partitioned broker: connections open, nothing
answered), which keeps its in-memory log, unlike a restart. The sink runs in this process
on the session store. Senders keep posting through the whole outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from tests.collector_process import CollectorProcess, collector_env
from tests.pipeline import Sink, pipeline_settings, poll
from tracklane.broker import TansuBroker, free_port
from tracklane.collector.producer import ensure_topic
from tracklane.collector.spool import Spool, SpoolConfig
from tracklane.metrics import Metrics

pytestmark = pytest.mark.anyio

OUTAGE_S = 30.0


@dataclass
class Ledger:
    """What the senders were told: ids answered 2xx, and the other answers."""

    acked: set[str] = field(default_factory=set)
    acked_in_outage: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    in_outage: bool = False


async def sender(port: int, key: str, tag: str, ledger: Ledger, stop: asyncio.Event) -> None:
    n = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", auth=(key, "")) as http:
        while not stop.is_set():
            ids = [f"{tag}-{n}-{i}" for i in range(20)]
            n += 1
            body = {"batch": [{"type": "track", "event": "spooled", "messageId": mid,
                               "anonymousId": f"a-{tag}"} for mid in ids]}
            outage = ledger.in_outage
            try:
                r = await http.post("/v1/batch", json=body, timeout=15.0)
            except httpx.TransportError as exc:
                ledger.statuses[type(exc).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            ledger.statuses[str(r.status_code)] += 1
            if r.status_code == 200:
                ledger.acked.update(ids)
                if outage and ledger.in_outage:
                    ledger.acked_in_outage.update(ids)
            await asyncio.sleep(0.02)




async def test_every_2xx_is_counted_once_through_outage_and_sigkill(
    own_broker: TansuBroker, store: Client, tmp_path: Path,
) -> None:
    project = f"spool_{uuid.uuid4().hex[:8]}"
    key = f"wk_{project}"
    projects = tmp_path / "projects.toml"
    projects.write_text(f'[[project]]\nid = "{project}"\nwrite_keys = ["{key}"]\n'
                        f'read_keys = ["rk_{project}"]\n')
    settings = pipeline_settings(own_broker.bootstrap_servers, produce_timeout_s=2.0)
    kafka = settings.kafka()
    await ensure_topic(kafka)
    port = free_port()
    env = collector_env(own_broker.bootstrap_servers, settings.topic, projects, port,
                        tmp_path / "data", topic_partitions=2, spool_dir=tmp_path / "spool",
                        spool_after_s=1, produce_timeout_s=2)
    sink = Sink(kafka, settings, store, Metrics())
    await sink.start()
    collector = CollectorProcess(env, port, tmp_path / "collector.log")
    ledger = Ledger()
    stop = asyncio.Event()
    senders: list[asyncio.Task[None]] = []
    try:
        await collector.wait_healthy()
        senders = [asyncio.create_task(sender(port, key, f"s{i}", ledger, stop))
                   for i in range(3)]
        await poll(lambda: len(ledger.acked) >= 300, 30, "no sends before the outage")

        own_broker.pause()
        ledger.in_outage = True
        paused_at = time.monotonic()
        await asyncio.sleep(OUTAGE_S / 3)
        collector.kill()
        acked_before_kill = len(ledger.acked_in_outage)
        collector = CollectorProcess(env, port, tmp_path / "collector.log")
        await collector.wait_healthy()
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - paused_at)))
        ledger.in_outage = False
        own_broker.resume()
        await asyncio.sleep(5)
        stop.set()
        await asyncio.gather(*senders)

        # Accepted while Kafka was frozen, before and after the kill.
        assert acked_before_kill > 0, ledger.statuses
        assert len(ledger.acked_in_outage) > acked_before_kill, ledger.statuses

        def stored() -> Counter[str]:
            rows = store.query("SELECT message_id FROM events WHERE project_id = %(p)s",
                               parameters={"p": project}).result_rows
            return Counter(r[0] for r in rows)

        await poll(lambda: ledger.acked <= set(stored()), 120,
                   "not every acknowledged event reached the store", interval_s=0.5)
        counts = stored()
        missing = ledger.acked - set(counts)
        twice = {mid: n for mid, n in counts.items() if n > 1}
        assert not missing and not twice
        rollup = store.query(
            "SELECT sum(events) FROM rollups_minute WHERE project_id = %(p)s",
            parameters={"p": project}).result_rows[0][0]
        assert rollup == len(counts)

        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        assert "tracklane_spool_events 0.0" in text
    finally:
        stop.set()
        for task in senders:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        own_broker.resume()
        collector.terminate()
        await sink.stop()


async def test_sigterm_finishes_requests_in_flight_and_exits_in_time(
    own_broker: TansuBroker, tmp_path: Path,
) -> None:
    settings = pipeline_settings(own_broker.bootstrap_servers)
    await ensure_topic(settings.kafka())
    projects = tmp_path / "projects.toml"
    projects.write_text('[[project]]\nid = "term"\nwrite_keys = ["wk_term"]\n')
    port = free_port()
    env = collector_env(own_broker.bootstrap_servers, settings.topic, projects, port,
                        tmp_path / "data", spool_after_s=1, shutdown_timeout_s=6)
    collector = CollectorProcess(env, port, tmp_path / "collector.log")
    await collector.wait_healthy()
    # Frozen Kafka: each request waits its full second for an ack before being spooled,
    # so these are surely in flight when SIGTERM arrives.
    own_broker.pause()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", auth=("wk_term", ""),
                                 timeout=15.0) as http:
        pending = [asyncio.create_task(http.post("/v1/track", json={
            "type": "track", "event": "term", "anonymousId": "a", "messageId": f"t{i}"}))
            for i in range(5)]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        collector.process.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*pending)
        code = await asyncio.to_thread(collector.process.wait, 30)
        elapsed = time.monotonic() - started
    own_broker.resume()
    assert [a.status_code for a in answers] == [200] * 5
    assert code == 0 and elapsed < 6 + 2, elapsed
    spool = Spool(SpoolConfig(tmp_path / "data" / "spool", 1 << 30))
    spool.open()
    assert spool.backlog == 5  # accepted, kept for the next start to replay
    await spool.close()
    collector.terminate()
