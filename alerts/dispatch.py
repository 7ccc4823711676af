"""Background delivery: each submission its own task, retried with backoff.

``submit`` returns at once, so a slow or dead receiver never holds up evaluation, and one
slow receiver does not delay another. A send that keeps failing is given up once the
notifier's ``max_retry`` is spent; the engine offers it again on a later evaluation.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram

from tracklane.alerts.model import Notification
from tracklane.alerts.notifiers import DEFAULT_VALIDITY, NotifyError, send
from tracklane.alerts.rules import NotifierSpec
from tracklane.clock import Clock

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
DEFAULT_CONCURRENCY = 16

Sleep = Callable[[float], Awaitable[None]]
OnDone = Callable[[bool], None]


class NotifyMetrics:
    """Delivery counters and send latency, registered on the given registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sent = Counter(
            "tracklane_notifications_sent", "Notifications delivered, by notifier and status.",
            ["notifier", "status"], registry=r)
        self.failures = Counter(
            "tracklane_notification_failures", "Failed send attempts (each retry counts).",
            ["notifier"], registry=r)
        self.dropped = Counter(
            "tracklane_notifications_dropped", "Notifications given up on.",
            ["notifier"], registry=r)
        self.seconds = Histogram(
            "tracklane_notification_send_seconds", "Time of one send attempt.",
            ["notifier"], registry=r)


class Dispatcher:
    """The engine's ``Outbox``: sends in the background. Use from the event loop's thread."""

    def __init__(
        self,
        specs: Iterable[NotifierSpec],
        clock: Clock,
        metrics: NotifyMetrics | CollectorRegistry | None = None,
        alertmanager_validity: timedelta = DEFAULT_VALIDITY,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._specs = {s.name: s for s in specs}
        self._clock = clock
        self._metrics = metrics if isinstance(metrics, NotifyMetrics) else NotifyMetrics(metrics)
        self._validity = alertmanager_validity
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._monotonic = monotonic
        self._slots = asyncio.Semaphore(concurrency)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def metrics(self) -> NotifyMetrics:
        return self._metrics

    async def start(self) -> None:
        """Open the shared HTTP client; ``submit`` refuses work before this."""
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        self._loop = asyncio.get_running_loop()
        self._closing = False

    def submit(self, notifier: str, notification: Notification, on_done: OnDone) -> None:
        """Queue one send and return at once; never raises (failures go to ``on_done``)."""
        try:
            spec = self._specs.get(notifier)
            if spec is None or self._client is None or self._loop is None or self._closing:
                reason = "unknown notifier" if spec is None else "dispatcher not running"
                log.error("notification refused", extra={
                    "notifier": notifier, "notification_id": notification.id,
                    "rule": notification.rule, "reason": reason})
                self._metrics.dropped.labels(notifier).inc()
                _report(on_done, False, notifier, notification)
                return
            task = self._loop.create_task(self._run(self._client, spec, notification, on_done))
        except Exception:
            # The engine must never see an exception from submit; report the loss instead.
            log.exception("notification submit failed", extra={
                "notifier": notifier, "notification_id": notification.id})
            _report(on_done, False, notifier, notification)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, client: httpx.AsyncClient, spec: NotifierSpec, n: Notification, on_done: OnDone
    ) -> None:
        ok = False
        try:
            ok = await self._deliver(client, spec, n)
        except asyncio.CancelledError:
            log.warning("notification cancelled at shutdown", extra={
                "notifier": spec.name, "notification_id": n.id, "rule": n.rule})
            raise
        except Exception:
            # A bug in rendering must cost one notification, not the dispatcher.
            log.exception("notification failed unexpectedly", extra={
                "notifier": spec.name, "notification_id": n.id, "rule": n.rule})
            self._metrics.dropped.labels(spec.name).inc()
        finally:
            _report(on_done, ok, spec.name, n)

    async def _deliver(
        self, client: httpx.AsyncClient, spec: NotifierSpec, n: Notification
    ) -> bool:
        budget = spec.max_retry.total_seconds()
        started = self._monotonic()
        # Backoff waits count at their planned length, so an injected fake sleep still
        # spends the retry budget (real sleeps are about as long as planned anyway).
        skew = 0.0
        backoff = FIRST_BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._slots:
                    with self._metrics.seconds.labels(spec.name).time():
                        await send(client, spec, n, self._clock(), self._validity)
            except NotifyError as exc:
                self._metrics.failures.labels(spec.name).inc()
                spent = self._monotonic() - started + skew
                if not exc.retryable or spent >= budget:
                    self._metrics.dropped.labels(spec.name).inc()
                    log.error("notification dropped", extra={
                        "notifier": spec.name, "notification_id": n.id, "rule": n.rule,
                        "attempts": attempt, "elapsed_s": round(spent, 3), "error": str(exc),
                        "retryable": exc.retryable})
                    return False
                # Full jitter: alerts failing together do not retry in lockstep. The last
                # wait is cut short so one final attempt lands at the end of the budget.
                wait = min(self._rng.uniform(0, backoff), budget - spent)
                log.warning("notification failed; retrying", extra={
                    "notifier": spec.name, "notification_id": n.id, "rule": n.rule,
                    "attempt": attempt, "error": str(exc), "retry_in_s": round(wait, 3)})
                slept_from = self._monotonic()
                await self._sleep(wait)
                skew += wait - (self._monotonic() - slept_from)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self._metrics.sent.labels(spec.name, n.status.value).inc()
            log.info("notification sent", extra={
                "notifier": spec.name, "notification_id": n.id, "rule": n.rule,
                "status": n.status.value, "attempts": attempt})
            return True

    @property
    def in_flight(self) -> int:
        """Submissions queued, sending or waiting to retry."""
        return len(self._tasks)

    async def idle(self) -> None:
        """Wait until nothing is queued or in flight (sends submitted meanwhile included)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def stop(self, timeout: float = 10.0) -> None:
        """Refuse new work, let sends in flight finish for up to ``timeout`` seconds, cancel
        the rest (their ``on_done(False)``), and close the HTTP client."""
        self._closing = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _report(on_done: OnDone, ok: bool, notifier: str, n: Notification) -> None:
    try:
        on_done(ok)
    except Exception:
        # The callback is the engine's; its failure must not take delivery down with it.
        log.exception("notification callback failed", extra={
            "notifier": notifier, "notification_id": n.id, "delivered": ok})
