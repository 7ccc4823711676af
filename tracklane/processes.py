"""Child processes, started and stopped one way: the embedded broker, and the commands the
tests and the benchmarks run (``tracklane up``, ``collector``, ``stream``, load servers).

A child gets a session of its own (a signal to our process group does not reach it, and a
test can stop its whole group), its output in files, and optionally a parent-death signal;
it is stopped by its PID: a signal, a bounded wait, then SIGKILL. (``tracklane up``'s
worker pool supervises its asyncio subprocesses itself: tracklane/workers.py.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO


def die_with_parent(signal_name: str = "KILL") -> list[str]:
    """A command prefix that makes a child get ``signal_name`` when the process that
    started it ends, however it ends (SIGKILL included): util-linux's setpriv sets the
    parent-death signal and execs the command, so the PID stays the child's. Linux only;
    elsewhere, nothing.

    Not ``preexec_fn`` with prctl: that runs Python between fork and exec, which can
    deadlock in a process with threads (chDB's, aiokafka's).
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", signal_name, "--"] if setpriv else []


# Where a child's output goes: a file (appended to), a descriptor or file of ours
# (subprocess.PIPE included), or nowhere (None).
Target = Path | int | IO[bytes] | None


class Child:
    """One started process and the files its output goes to."""

    def __init__(self, args: Sequence[str], *, stdout: Target = None, stderr: Target = None,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 death_signal: str | None = None) -> None:
        """``death_signal``: what the child gets when this process ends, however it ends."""
        self._files: list[IO[bytes]] = []
        self.process = subprocess.Popen(
            [*(die_with_parent(death_signal) if death_signal else []), *args],
            stdout=self._open(stdout), stderr=self._open(stderr),
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)

    def _open(self, target: Target) -> int | IO[bytes]:
        if target is None:
            return subprocess.DEVNULL
        if not isinstance(target, Path):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        file = target.open("ab")
        self._files.append(file)
        return file

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def send(self, sig: int) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig``, wait up to ``timeout_s``, then SIGKILL; its exit code."""
        self.send(signal.SIGCONT)  # a stopped (paused) process cannot act on the signal
        self.send(sig)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.process.wait()
        self.close()
        return int(self.process.returncode)

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def close(self) -> None:
        for file in self._files:
            file.close()
        self._files.clear()
