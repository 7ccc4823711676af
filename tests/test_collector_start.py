"""A collector whose start fails half-way stops what had started: no task left running,
its spool released, its Kafka producer closed."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import pytest

from tracklane.broker import TansuBroker
from tracklane.collector.spool import Spool, SpoolConfig
from tracklane.projects import write_default_projects
from tracklane.runner import HttpStartError, run_collector
from tracklane.settings import Settings

pytestmark = pytest.mark.anyio


async def test_a_collector_that_cannot_listen_stops_what_it_started(
        broker: TansuBroker, tmp_path: Path) -> None:
    projects = tmp_path / "projects.toml"
    write_default_projects(projects)
    before = asyncio.all_tasks()
    loop = asyncio.get_running_loop()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(kafka_bootstrap=broker.bootstrap_servers, data_dir=tmp_path,
                            projects_file=projects, port=taken.getsockname()[1],
                            topic="start-failure")
        try:
            # Kafka answers and the spool opens; the port is the part that fails.
            with pytest.raises(HttpStartError):
                await run_collector(settings)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    await asyncio.sleep(0.1)  # whatever was cancelled has finished by now
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set(), [t.get_coro() for t in left]
    # The spool's directory was released: the next collector claims the same one.
    spool = Spool(SpoolConfig(directory=settings.resolved_spool_dir(), max_bytes=1 << 20))
    spool.open()
    try:
        assert spool.directory == settings.resolved_spool_dir() / "0"
    finally:
        await spool.close()
