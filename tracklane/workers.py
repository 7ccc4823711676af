"""``tracklane collector --workers N``: N collector processes serving one port.

One Python process serves a pixel hit in about 160 µs of CPU, nearly all of it under the
GIL, so one process uses one core. Each worker is ``tracklane collector --worker K``:

* it binds the port with ``SO_REUSEPORT``, and the kernel spreads new connections over the
  workers (a keep-alive connection stays with the worker that accepted it);
* it has its own Kafka producer and its own spool: worker 0 the configured directory,
  worker K its ``worker-K`` subdirectory, each with an Nth of the spool's bytes;
* it writes its metrics to one shared directory, and whichever worker answers a scrape of
  ``/metrics`` sums every worker's (``tracklane.metrics``);
* its rate limits are its own: a client spread over many connections may get up to N
  times the configured rate.

The supervisor (this module) reserves the port, hands spools of workers that no longer
exist (a smaller N than last time) to Kafka, starts the workers, restarts one that dies,
and on SIGTERM or SIGINT stops them all, each draining its requests and its producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from tracklane.processes import die_with_parent

log = logging.getLogger(__name__)

_MIN_RESTART_S = 1.0
_MAX_RESTART_S = 30.0
# A worker that ran this long before dying is restarted after the shortest wait again.
_STABLE_S = 60.0


READY_ENV = "TRACKLANE_READY_FILE"


class WorkerStartError(RuntimeError):
    """A worker exited, or did not listen in time, while the pool was starting."""


@dataclass(frozen=True)
class WorkerPoolConfig:
    """``command`` starts worker K with ``--worker K`` appended and ``envs[K]``; a worker
    creates the file named by its ``TRACKLANE_READY_FILE`` once it listens."""

    count: int
    command: Sequence[str]
    envs: Sequence[Mapping[str, str]]
    metrics_dir: str
    shutdown_timeout_s: float
    # What a worker gets when the supervisor dies (SIGKILL included): TERM drains it, KILL
    # ends it at once (in `up`, where a 2xx means on disk and Kafka dies with the owner).
    death_signal: str = "TERM"


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restart_wait_s: float = _MIN_RESTART_S


def worker_env(config: WorkerPoolConfig, index: int) -> dict[str, str]:
    """Worker ``index``'s environment, with where it says it listens."""
    return {READY_ENV: str(Path(config.metrics_dir) / f"ready-{index}"),
            **config.envs[index]}


class WorkerPool:
    """The worker processes, with a clear start, supervision until stopped, and stop."""

    def __init__(self, config: WorkerPoolConfig) -> None:
        if len(config.envs) != config.count:
            raise ValueError("one environment per worker")
        self._config = config
        self._workers = [_Worker(k) for k in range(config.count)]

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process is not None]

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start every worker and return once each listens."""
        for worker in self._workers:
            await self._spawn(worker)
        deadline = asyncio.get_running_loop().time() + timeout_s
        for worker in self._workers:
            ready = Path(worker_env(self._config, worker.index)[READY_ENV])
            while not ready.exists():
                assert worker.process is not None
                if worker.process.returncode is not None:
                    raise WorkerStartError(f"collector worker {worker.index} exited with "
                                           f"{worker.process.returncode} while starting")
                if asyncio.get_running_loop().time() > deadline:
                    raise WorkerStartError(f"collector worker {worker.index} did not listen "
                                           f"within {timeout_s:.0f} s")
                await asyncio.sleep(0.02)
        log.info("collector workers listening", extra={"workers": self._config.count,
                                                       "pids": self.pids})

    async def _spawn(self, worker: _Worker) -> None:
        # A worker outliving a killed supervisor would serve alone, unsupervised: it gets
        # the death signal then.
        env = worker_env(self._config, worker.index)
        Path(env[READY_ENV]).unlink(missing_ok=True)
        worker.process = await asyncio.create_subprocess_exec(
            *die_with_parent(self._config.death_signal), *self._config.command,
            "--worker", str(worker.index), env=env)
        worker.started_at = asyncio.get_running_loop().time()

    async def run(self, stop: asyncio.Event) -> None:
        """Restart workers that exit, until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        waits = {asyncio.ensure_future(self._exit_of(w)): w for w in self._workers}
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                done, _ = await asyncio.wait({*waits, stopped},
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done - {stopped}:
                    worker = waits.pop(task)
                    code = task.result()
                    if stop.is_set():
                        break
                    ran_s = loop.time() - worker.started_at
                    if ran_s >= _STABLE_S:
                        worker.restart_wait_s = _MIN_RESTART_S
                    log.error("collector worker exited; restarting it", extra={
                        "worker": worker.index, "exit_code": code, "ran_s": round(ran_s, 1),
                        "restart_in_s": worker.restart_wait_s})
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), worker.restart_wait_s)
                    if stop.is_set():
                        break
                    worker.restart_wait_s = min(worker.restart_wait_s * 2, _MAX_RESTART_S)
                    await self._spawn(worker)
                    waits[asyncio.ensure_future(self._exit_of(worker))] = worker
        finally:
            stopped.cancel()
            for task in waits:
                task.cancel()

    async def _exit_of(self, worker: _Worker) -> int:
        process = worker.process
        assert process is not None
        code = await process.wait()
        # Its live gauges (spool size) no longer count in the sums.
        mark_process_dead(process.pid, self._config.metrics_dir)  # type: ignore[no-untyped-call]
        return code

    async def stop(self) -> None:
        """SIGTERM every worker (each drains its requests and its producer), then SIGKILL
        the ones still there after the shutdown timeout."""
        running = [w.process for w in self._workers
                   if w.process is not None and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self._config.shutdown_timeout_s):
                await asyncio.gather(*(p.wait() for p in running))
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.error("collector worker did not stop in time; killing it",
                              extra={"pid": process.pid})
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in running))
        for process in running:
            mark_process_dead(process.pid, self._config.metrics_dir)  # type: ignore[no-untyped-call]
