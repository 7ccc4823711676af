"""The browser SDK's node tooling, as the tests run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.up_process import tracklane_up, wait_for
from tracklane.broker import free_port

SDK = Path(__file__).resolve().parent.parent / "sdk_js"
DIST = SDK / "dist"


class SdkToolingMissing(RuntimeError):
    """node, the SDK's node packages or Debian's chromium are not installed."""


def require_tooling(*, browser: bool = False) -> None:
    """Fail with what to install; `.ci/run` installs all of it."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (apt-get install nodejs npm)")
    if not (SDK / "node_modules" / ".package-lock.json").exists():
        missing.append("the SDK's node packages (cd sdk_js && npm ci)")
    if browser and not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists():
        missing.append("chromium (apt-get install chromium)")
    if missing:
        raise SdkToolingMissing("missing: " + "; ".join(missing) + ". .ci/run installs them.")


def node(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", *args], cwd=SDK, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def build(outdir: Path) -> str:
    """Build the SDK into outdir; the build's size report."""
    result = node("build.mjs", "--outdir", str(outdir))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def scenario(name: str, config: dict[str, Any], script: str = "e2e/scenarios.mjs",
             ) -> dict[str, Any]:
    """Run one scenario of an e2e script (in chromium, most); its JSON report."""
    result = node(script, name, json.dumps(config))
    assert result.returncode == 0, f"scenario {name} failed:\n{result.stdout}\n{result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@dataclass(frozen=True)
class Site:
    """A running `tracklane up` with one project per scenario.

    The topic has one partition: once a sentinel sent after a scenario is counted,
    everything the scenario sent before it has been consumed too, so "exactly" is checked,
    not "at least".
    """

    base: str
    started: datetime

    @staticmethod
    def keys(project: str) -> tuple[str, str]:
        return f"wk_{project}", f"rk_{project}"

    def config(self, project: str, **extra: Any) -> dict[str, Any]:
        write_key, read_key = self.keys(project)
        return {"collector": self.base, "writeKey": write_key, "readKey": read_key, **extra}

    def count(self, project: str, event: str) -> int:
        rows = httpx.get(f"{self.base}/v1/stats/minutes", params={
            "event": event, "from": self.started.isoformat(),
            "to": (datetime.now(UTC) + timedelta(minutes=2)).isoformat(),
        }, headers={"Authorization": f"Bearer {self.keys(project)[1]}"}).json()["rows"]
        return sum(int(r["count"]) for r in rows)

    def counts_after_sentinel(self, project: str, events: list[str]) -> dict[str, int]:
        """Counts once everything sent so far for the project has been consumed."""
        sentinel = f"sentinel-{uuid.uuid4()}"
        response = httpx.post(f"{self.base}/v1/track", json={
            "event": sentinel, "anonymousId": "test", "writeKey": self.keys(project)[0]})
        assert response.status_code == 200, response.text
        wait_for(lambda: self.count(project, sentinel) == 1, 30, "sentinel not counted")
        return {event: self.count(project, event) for event in events}


@contextmanager
def up_site(workdir: Path, projects: list[str],
            env: dict[str, str] | None = None) -> Iterator[Site]:
    """`tracklane up` from a fresh data directory, serving one project per name."""
    require_tooling(browser=True)
    (workdir / "data").mkdir()
    (workdir / "data" / "projects.toml").write_text("".join(
        f'[[project]]\nid = "{name}"\nwrite_keys = ["{Site.keys(name)[0]}"]\n'
        f'read_keys = ["{Site.keys(name)[1]}"]\nallowed_origins = ["*"]\n'
        for name in projects))
    # No TRACKLANE_SDK_DIR: up serves the checkout's sdk_js/dist by default.
    env = {"TRACKLANE_TOPIC_PARTITIONS": "1", **(env or {})}
    started = datetime.now(UTC) - timedelta(minutes=1)
    port = free_port()
    with tracklane_up(workdir, port, env):
        yield Site(f"http://127.0.0.1:{port}", started)


@contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """Python's http.server over ``directory`` on a free loopback port: its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _serving(base), 10, "static server did not start")
        yield base
    finally:
        server.terminate()
        server.wait(10)


def _serving(url: str) -> bool:
    try:
        return httpx.get(url).status_code < 500
    except httpx.TransportError:
        return False
