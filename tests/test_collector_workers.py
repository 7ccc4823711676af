"""``tracklane collector --workers N``: processes sharing one port, their metrics summed, a
dead one restarted, all of them stopped together."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.collector_process import CollectorProcess, collector_env
from tests.pipeline import poll, read_topic
from tracklane.broker import TansuBroker, free_port
from tracklane.cli import main
from tracklane.collector.spool import Spool, SpoolConfig

pytestmark = pytest.mark.anyio


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _received(exposition: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
               if line.startswith("tracklane_events_received_total"))


def _received_by(metrics_dir: Path, pid: int, scratch: Path) -> float:
    """What one worker counted: its own counter file, read alone."""
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.copy(metrics_dir / f"counter_{pid}.db", scratch / f"counter_{pid}.db")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(scratch))  # type: ignore[no-untyped-call]
    return sum(s.value for m in registry.collect() for s in m.samples
               if s.name == "tracklane_events_received_total")


async def _hits(port: int, key: str, tag: str, count: int) -> None:
    """``count`` pixel hits, each on a new connection (so the kernel spreads them)."""
    for i in range(count):
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://127.0.0.1:{port}/p.gif",
                               params={"k": key, "e": "page_view", "id": f"{tag}-{i}",
                                       "u": f"https://shop.example/{tag}/{i}"})
            assert r.status_code == 200, r.text


async def _scrape(port: int) -> str:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert r.status_code == 200
    return r.text


async def test_workers_share_the_port_sum_their_metrics_and_one_that_dies_comes_back(
    broker: TansuBroker, tmp_path: Path,
) -> None:
    topic = f"workers-{uuid.uuid4().hex[:8]}"
    projects = tmp_path / "projects.toml"
    projects.write_text('[[project]]\nid = "workers"\nwrite_keys = ["wk_workers"]\n')
    port = free_port()
    env = collector_env(broker.bootstrap_servers, topic, projects, port, tmp_path / "data",
                        workers=2)
    env["TMPDIR"] = str(tmp_path)  # where the supervisor makes its metrics directory
    collector = CollectorProcess(env, port, tmp_path / "collector.log")
    try:
        await collector.wait_healthy()
        workers = _children(collector.process.pid)
        assert len(workers) == 2
        [metrics_dir] = tmp_path.glob("tracklane-metrics-*")

        await _hits(port, "wk_workers", "a", 120)
        records = await read_topic(broker.bootstrap_servers, topic, 120)
        assert len({r.key for r in records}) == 120
        # Whichever worker answers the scrape, it tells the sum of both.
        for _ in range(6):
            assert _received(await _scrape(port)) == 120
        served = [_received_by(metrics_dir, pid, tmp_path / f"one-{pid}") for pid in workers]
        assert sum(served) == 120 and all(n > 0 for n in served), served

        # A worker killed outright is started again; its counts stay in the sums.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            now = _children(collector.process.pid)
            return len(now) == 2 and victim not in now

        await poll(replaced, 20, "the dead worker was not restarted", interval_s=0.1)
        await collector.wait_healthy()
        await _hits(port, "wk_workers", "b", 40)
        assert len(await read_topic(broker.bootstrap_servers, topic, 160)) == 160
        for _ in range(4):
            assert _received(await _scrape(port)) == 160
        workers = _children(collector.process.pid)
    finally:
        code = collector.terminate()
    assert code == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    assert not list(tmp_path.glob("tracklane-metrics-*"))


async def test_a_former_workers_spool_is_forwarded_before_the_workers_start(
    broker: TansuBroker, tmp_path: Path,
) -> None:
    """Run with three workers, then with two: what worker 2 had spooled still reaches
    Kafka, and its directory goes once empty."""
    topic = f"orphans-{uuid.uuid4().hex[:8]}"
    spool_dir = tmp_path / "spool"
    orphan = Spool(SpoolConfig(spool_dir / "worker-2", max_bytes=1 << 20))
    orphan.open()
    await orphan.append([(f"workers:left-{i}".encode(), b"{}") for i in range(5)])
    await orphan.close()
    projects = tmp_path / "projects.toml"
    projects.write_text('[[project]]\nid = "workers"\nwrite_keys = ["wk_workers"]\n')
    port = free_port()
    env = collector_env(broker.bootstrap_servers, topic, projects, port, tmp_path / "data",
                        workers=2, spool_dir=spool_dir)
    collector = CollectorProcess(env, port, tmp_path / "collector.log")
    try:
        await collector.wait_healthy()
        records = await read_topic(broker.bootstrap_servers, topic, 5)
        assert sorted(r.key for r in records) == [f"workers:left-{i}".encode()
                                                  for i in range(5)]
        assert not (spool_dir / "worker-2").exists()
    finally:
        assert collector.terminate() == 0


def test_workers_refuse_a_chdb_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["collector", "--workers", "2", "--store", f"chdb://{tmp_path / 'chdb'}"])
    assert code == 2
    assert "chDB opens its store in one process" in capsys.readouterr().err
