"""The browser SDK's node tooling, as the tests run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

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


def scenario(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run one e2e/scenarios.mjs scenario in chromium; its JSON report."""
    result = node("e2e/scenarios.mjs", name, json.dumps(config))
    assert result.returncode == 0, f"scenario {name} failed:\n{result.stdout}\n{result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report
