"""Background delivery: each notification its own task, retried with backoff.

``submit`` returns at once, so a slow or dead receiver never holds up evaluation, and one
slow receiver does not delay another. A send that keeps failing is given up after the
notifier's ``max_retry``; the engine offers it again on a later evaluation.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram

from alerts.model import Notification
from alerts.notifiers import NotifyError, send
from alerts.rules import NotifierSpec
from tracklane.clock import Clock

log = logging.getLogger(__name__)

_FIRST_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 60.0
_CONCURRENCY = 16

Sleep = Callable[[float], Awaitable[None]]


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.sent = Counter("tracklane_notifications_sent", "Notifications delivered.",
                            ["notifier", "status"], registry=r)
        self.failures = Counter("tracklane_notification_failures",
                                "Failed delivery attempts (each retry counts).", ["notifier"],
                                registry=r)
        self.dropped = Counter("tracklane_notifications_dropped",
                               "Notifications given up after retrying for max_retry.",
                               ["notifier"], registry=r)
        self.seconds = Histogram("tracklane_notification_seconds", "Time of one send attempt.",
                                 ["notifier"], registry=r)


class Dispatcher:
    """Implements ``alerts.model.Outbox``; call from the event loop's thread."""

    def __init__(
        self,
        specs: list[NotifierSpec],
        clock: Clock,
        metrics: NotifyMetrics,
        alertmanager_validity: timedelta = timedelta(minutes=5),
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._specs = {s.name: s for s in specs}
        self._clock = clock
        self._metrics = metrics
        self._validity = alertmanager_validity
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(_CONCURRENCY)

    async def start(self) -> None:
        self._client = httpx.AsyncClient()

    def submit(
        self, notifier: str, notification: Notification, on_done: Callable[[bool], None]
    ) -> None:
        spec = self._specs.get(notifier)
        if spec is None or self._client is None:
            log.error("cannot notify", extra={"notifier": notifier, "id": notification.id,
                                              "reason": "unknown notifier or not started"})
            on_done(False)
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(self._client, spec, notification, on_done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, client: httpx.AsyncClient, spec: NotifierSpec, n: Notification,
        on_done: Callable[[bool], None],
    ) -> None:
        started = time.monotonic()
        backoff = _FIRST_BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._slots:
                    with self._metrics.seconds.labels(spec.name).time():
                        await send(client, spec, n, self._clock(), self._validity)
            except NotifyError as exc:
                self._metrics.failures.labels(spec.name).inc()
                # Full jitter: many alerts failing together do not retry in lockstep.
                wait = self._rng.uniform(0, backoff)
                if time.monotonic() - started + wait > spec.max_retry.total_seconds():
                    self._metrics.dropped.labels(spec.name).inc()
                    log.error("notification dropped after retries", extra={
                        "notifier": spec.name, "id": n.id, "attempts": attempt,
                        "error": str(exc)})
                    on_done(False)
                    return
                log.warning("notification failed; retrying", extra={
                    "notifier": spec.name, "id": n.id, "attempt": attempt, "error": str(exc),
                    "retry_in_s": round(wait, 2)})
                await self._sleep(wait)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            self._metrics.sent.labels(spec.name, n.status.value).inc()
            log.info("notification sent", extra={"notifier": spec.name, "id": n.id,
                                                 "status": n.status.value, "rule": n.rule})
            on_done(True)
            return

    async def idle(self) -> None:
        """Wait until nothing is in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self, timeout_s: float) -> None:
        """Let sends in flight finish for up to ``timeout_s``, then cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
