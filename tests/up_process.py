"""`tracklane up` as a real process, the way README's first command runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tracklane.processes import Child


def wait_for(check: Any, timeout_s: float, message: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s: {message}")


@contextmanager
def tracklane_up(
    workdir: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`tracklane up` in workdir (data under ./data), stopped with Ctrl-C at the end."""
    banners = (workdir / "up.out").read_bytes() if (workdir / "up.out").exists() else b""
    started = banners.count(b"Tracklane is up.")
    # The installed console script, as README's first command runs it, in a session of its
    # own, as a service manager starts it: a test can kill the group.
    child = Child([str(Path(sys.executable).parent / "tracklane"), "up", "--port", str(port),
                   "--data-dir", "data"], stdout=workdir / "up.out", stderr=workdir / "up.err",
                  cwd=workdir, env={**os.environ, **(env or {})})
    process = child.process

    try:
        wait_for(lambda: (workdir / "up.out").read_bytes().count(b"Tracklane is up.") > started
                 or process.poll() is not None, 60, "tracklane up did not start")
        assert process.poll() is None, (workdir / "up.err").read_text()
        yield process
    finally:
        child.stop(signal.SIGINT, 30)


def stored_rows(workdir: Path, sql: str, **parameters: str) -> list[tuple[str, ...]]:
    """The rows of ``sql`` in the store under workdir/data, as text, read by a process of
    its own (chDB opens a path from one process only; up must be stopped)."""
    script = (
        "import json, sys\n"
        "from store.client import create_client\n"
        "client = create_client(sys.argv[1])\n"
        "rows = client.query(sys.argv[2], parameters=json.loads(sys.argv[3])).result_rows\n"
        "print(json.dumps([[str(v) for v in r] for r in rows]))\n"
    )
    dsn = f"chdb://{(workdir / 'data' / 'chdb').resolve()}"
    out = subprocess.run([sys.executable, "-c", script, dsn, sql, json.dumps(parameters)],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return [tuple(row) for row in json.loads(out)]


def stored_message_ids(workdir: Path, event: str) -> list[str]:
    """Every stored message id of ``event`` under workdir/data, one per row."""
    rows = stored_rows(workdir, "SELECT message_id FROM events WHERE event = %(e)s", e=event)
    return [row[0] for row in rows]


def stats(base: str, read_key: str, event: str) -> int:
    now = datetime.now(UTC)
    response = httpx.get(f"{base}/v1/stats/minutes", params={
        "event": event, "from": (now - timedelta(minutes=10)).isoformat(),
        "to": (now + timedelta(minutes=2)).isoformat()},
        headers={"Authorization": f"Bearer {read_key}"})
    assert response.status_code == 200, response.text
    return sum(row["count"] for row in response.json()["rows"])


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: pid -> command name."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        state, ppid = rest.split()[:2]
        if int(ppid) == pid and state != "Z":
            found[int(entry.name)] = name
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
