"""Run by tests/test_start_failures.py in a process of its own (chDB opens one path per
process): for each part of ``tracklane up`` (or of ``tracklane collector``), make its start
fail, run the command in a fresh event loop, and report as JSON what the failure left:
asyncio tasks, Python threads, child processes, and whether the port is free again."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from unittest import mock

from tests.up_process import children
from tracklane import runner
from tracklane.broker import TansuBroker, free_port
from tracklane.cli import run_loop
from tracklane.projects import write_default_projects
from tracklane.settings import Settings


class Injected(RuntimeError):
    """The failure a part's start was made to raise."""


def _fail(*_: Any, **__: Any) -> Any:
    raise Injected("injected at start")


async def _afail(*_: Any, **__: Any) -> Any:
    raise Injected("injected at start")


# Part name -> (what to patch, a coroutine function or not).
UP_PARTS: dict[str, tuple[str, bool]] = {
    "broker": ("tracklane.broker.TansuBroker.start", False),
    "store": ("tracklane.runner.migrate", False),
    "sink": ("tracklane.log_roll.RollingSink.start", True),
    "journal": ("tracklane.collector.delivery.Delivery.start", True),
    "http": ("tracklane.runner.HttpServer.start", True),
    "ingest_log": ("tracklane.collector.ingest_log.IngestLog.start", True),
    "identities": ("tracklane.collector.identity_map.IdentityMapReloader.start", True),
    "workers": ("tracklane.workers.WorkerPool.start", True),
    "alerts": ("tracklane.alerts.service.AlertService.start", True),
}
COLLECTOR_PARTS: dict[str, tuple[str, bool]] = {
    "kafka": ("tracklane.collector.producer.EventProducer.start", True),
    "spool": ("tracklane.collector.spool.Spool.open", False),
    "http": ("tracklane.runner.HttpServer.start", True),
}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _attempt(run: Callable[[], Coroutine[Any, Any, None]]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        try:
            await run()
            error = "started"
        except Injected:
            error = "injected"
        except Exception as exc:  # the part's failure, wrapped by whatever called it
            error = repr(exc)
        await asyncio.sleep(0.1)  # cancelled tasks finish
        return {"error": error, "tasks": sorted(
            repr(t.get_coro()) for t in asyncio.all_tasks() if t is not asyncio.current_task())}

    found = run_loop(main())
    found["threads"] = sorted(t.name for t in threading.enumerate()
                              if t is not threading.main_thread())
    found["children"] = sorted(children(os.getpid()).values())
    return found


def main(command: str, workdir: Path) -> None:
    parts = UP_PARTS if command == "up" else COLLECTOR_PARTS
    out: dict[str, Any] = {}
    broker = None
    if command == "collector":
        broker = TansuBroker(workdir / "tansu.log")
        broker.start()
    try:
        for name, (target, is_async) in parts.items():
            port = free_port()
            data = workdir / name
            if command == "collector":
                write_default_projects(data / "projects.toml")
            (workdir / "alerts.yaml").write_text("rules: []\n")
            settings = Settings(data_dir=data, port=port, workers=2 if name == "workers" else 1,
                                alerts_file=workdir / "alerts.yaml" if command == "up" else None,
                                kafka_bootstrap=broker.bootstrap_servers if broker else "",
                                shutdown_timeout_s=10)
            with mock.patch(target, _afail if is_async else _fail):
                found = _attempt(functools.partial(runner.run_up, settings, {})
                                 if command == "up"
                                 else functools.partial(runner.run_collector, settings))
            found["children"] = [c for c in found["children"] if broker is None
                                 or not c.startswith("tansu")]
            found["port_free"] = _port_free(port)
            out[name] = found
    finally:
        if broker is not None:
            broker.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
