"""`tracklane up` as a real process, the way README's first command runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
    out = (workdir / "up.out").open("ab")
    err = (workdir / "up.err").open("ab")
    process = subprocess.Popen(
        # The installed console script, as README's first command runs it.
        [str(Path(sys.executable).parent / "tracklane"), "up", "--port", str(port),
         "--data-dir", "data"], cwd=workdir, stdout=out, stderr=err,
        env={**os.environ, **(env or {})},
        # Its own process group, as a service manager starts it: a test can kill the group.
        start_new_session=True,
    )

    try:
        wait_for(lambda: (workdir / "up.out").read_bytes().count(b"Tracklane is up.") > started
                 or process.poll() is not None, 60, "tracklane up did not start")
        assert process.poll() is None, (workdir / "up.err").read_text()
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(30)
        out.close()
        err.close()


def stored_message_ids(workdir: Path, event: str) -> list[str]:
    """Every stored message id of ``event`` under workdir/data, one per row, read by a
    process of its own (chDB opens a path from one process only; up must be stopped)."""
    script = (
        "import sys\n"
        "from store.client import create_client\n"
        "client = create_client(sys.argv[1])\n"
        "rows = client.query('SELECT message_id FROM events WHERE event = %(e)s',"
        " parameters={'e': sys.argv[2]}).result_rows\n"
        "print('\\n'.join(r[0] for r in rows))\n"
    )
    dsn = f"chdb://{(workdir / 'data' / 'chdb').resolve()}"
    out = subprocess.run([sys.executable, "-c", script, dsn, event], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return [line for line in out.splitlines() if line]
