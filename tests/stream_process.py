"""``tracklane stream`` as a subprocess with its own chDB store, watched through /metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.pipeline import poll
from tracklane.broker import free_port
from tracklane.processes import Child


def migrate_store(env: dict[str, str]) -> None:
    """``tracklane migrate`` on the store of ``env``, as compose runs it before the sink
    (which only checks the schema)."""
    subprocess.run([sys.executable, "-m", "tracklane.cli", "migrate"], env=env, check=True,
                   capture_output=True, timeout=120)


class StreamProcess:
    """One run of ``tracklane stream``; its /metrics is how the test watches it."""

    def __init__(self, env: dict[str, str], log: Path, fault: str = "") -> None:
        self.metrics_port = free_port()
        run_env = {**env, "TRACKLANE_METRICS_PORT": str(self.metrics_port),
                   "TRACKLANE_STREAM_FAULT": fault}
        self.child = Child([sys.executable, "-m", "tracklane.cli", "stream"], stdout=log,
                           stderr=log, env=run_env)
        self.process = self.child.process

    async def metrics(self) -> dict[str, float]:
        try:
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{self.metrics_port}/metrics")).text
        except httpx.TransportError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = sample.name + "".join(f",{v}" for v in sample.labels.values())
                out[key] = sample.value
        return out

    async def wait_exit(self, timeout_s: float) -> int:
        await poll(lambda: self.process.poll() is not None, timeout_s, "stream did not exit")
        self.child.close()
        return int(self.process.returncode)


def store_counts(store_dir: Path) -> dict[str, Any]:
    """What the stream's store holds; read in a subprocess (one chDB path per process)."""
    out = subprocess.run([sys.executable, "-m", "tests.store_counts", str(store_dir)],
                         check=True, capture_output=True).stdout
    counts: dict[str, Any] = orjson.loads(out)
    return counts
