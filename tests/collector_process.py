"""``tracklane collector`` as a real process: killed, restarted and measured by tests."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx

from tests.pipeline import poll
from tracklane.processes import Child


def collector_env(bootstrap: str, topic: str, projects: Path, port: int, data_dir: Path,
                  **settings: object) -> dict[str, str]:
    """The environment of a storeless ``tracklane collector``; ``settings`` by field name."""
    env = {**os.environ, "TRACKLANE_KAFKA_BOOTSTRAP": bootstrap, "TRACKLANE_TOPIC": topic,
           "TRACKLANE_PROJECTS_FILE": str(projects), "TRACKLANE_PORT": str(port),
           "TRACKLANE_HOST": "127.0.0.1", "TRACKLANE_DATA_DIR": str(data_dir),
           **{f"TRACKLANE_{name.upper()}": str(value) for name, value in settings.items()}}
    env.pop("TRACKLANE_STORE_DSN", None)
    return env


class CollectorProcess:
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.child = Child([sys.executable, "-m", "tracklane.cli", "collector"], stdout=log,
                           stderr=log, env=env)
        self.process = self.child.process

    async def wait_healthy(self, timeout_s: float = 30.0) -> None:
        async def healthy() -> bool:
            assert self.process.poll() is None, "collector exited"
            try:
                async with httpx.AsyncClient() as http:
                    r = await http.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1.0)
                return r.status_code == 200
            except httpx.TransportError:
                return False

        await poll(healthy, timeout_s, "collector did not come up", interval_s=0.1)

    def kill(self) -> None:
        self.child.kill()

    def terminate(self) -> int:
        return self.child.stop(signal.SIGTERM, 30)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")
