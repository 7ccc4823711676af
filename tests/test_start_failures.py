"""A failure at the start of any part of ``tracklane up`` or ``tracklane collector`` stops
what had started: no asyncio task, Python thread or child process is left, and the port is
free again (tests/start_failure.py injects each failure, in a process of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.start_failure import COLLECTOR_PARTS, UP_PARTS


@pytest.mark.parametrize(("command", "parts"), [("up", UP_PARTS),
                                                ("collector", COLLECTOR_PARTS)])
def test_a_failed_start_leaves_nothing_running(
        tmp_path: Path, command: str, parts: dict[str, tuple[str, bool]]) -> None:
    out = subprocess.run([sys.executable, "-m", "tests.start_failure", command, str(tmp_path)],
                         check=True, capture_output=True, text=True, timeout=600).stdout
    found = json.loads(out.splitlines()[-1])
    assert set(found) == set(parts)
    for part, left in found.items():
        assert left == {"error": "injected", "tasks": [], "threads": [], "children": [],
                        "port_free": True}, part
