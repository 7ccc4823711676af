"""The alert engine as a running service: a fixed cadence, ClickHouse, real notifiers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry

from tracklane.alerts.clickhouse_rollups import ClickHouseRollups, pipeline_progress
from tracklane.alerts.clickhouse_state import ClickHouseAlertStore
from tracklane.alerts.dispatch import Dispatcher, NotifyMetrics
from tracklane.alerts.engine import AlertEngine, TickReport
from tracklane.alerts.metrics import AlertMetrics
from tracklane.alerts.model import Notification, PipelineProgress
from tracklane.alerts.report_service import ReportScheduler
from tracklane.alerts.rules import AlertsFile, RulesFileError
from tracklane.clock import Clock, utc_now

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    rules: AlertsFile
    consumer_group: str  # whose stream progress tells the watermark
    topic: str
    # Each project's order events, for the reports' orders, revenue and conversion.
    order_events: Mapping[str, Sequence[str]] = field(default_factory=dict)


def check_projects(rules: AlertsFile, known: set[str]) -> None:
    """Every rule and report must name a project that exists ('*' for pipeline rules)."""
    named = [("rule", r.name, r.project) for r in rules.rules]
    named += [("report", r.name, r.project) for r in rules.reports]
    for what, name, project in named:
        if project != "*" and project not in known:
            raise RulesFileError(
                f"{what} {name!r}: project: no project {project!r} "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )


class _LoopOutbox:
    """Hands notifications from the evaluation thread to the dispatcher's event loop."""

    def __init__(self, dispatcher: Dispatcher, loop: asyncio.AbstractEventLoop) -> None:
        self._dispatcher = dispatcher
        self._loop = loop

    def submit(
        self, notifier: str, notification: Notification, on_done: Callable[[bool], None]
    ) -> None:
        self._loop.call_soon_threadsafe(self._dispatcher.submit, notifier, notification, on_done)


class AlertService:
    """Evaluates every ``evaluation.interval``; ClickHouse calls run off the event loop."""

    def __init__(
        self,
        config: AlertsConfig,
        client: Client,
        registry: CollectorRegistry,
        clock: Clock = utc_now,
    ) -> None:
        self._config = config
        self._client = client
        self._registry = registry
        self._clock = clock
        self._rollups = ClickHouseRollups(client)
        self._dispatcher = Dispatcher(config.rules.notifiers, clock,
                                      NotifyMetrics(registry))
        self._engine: AlertEngine | None = None
        self._reports = (ReportScheduler(config.rules.reports, config.rules.notifiers, client,
                                         clock, config.order_events)
                         if config.rules.reports else None)
        self._stop = asyncio.Event()

    def _progress(self) -> PipelineProgress:
        return pipeline_progress(self._client, self._config.consumer_group, self._config.topic)

    async def start(self) -> None:
        await self._dispatcher.start()
        outbox = _LoopOutbox(self._dispatcher, asyncio.get_running_loop())
        store = ClickHouseAlertStore(self._client)
        self._engine = await asyncio.to_thread(
            AlertEngine, self._config.rules, self._rollups, self._progress, store, outbox,
            self._clock, AlertMetrics(self._registry),
        )
        log.info("alerts started", extra={"rules": len(self._config.rules.rules),
                                          "notifiers": len(self._config.rules.notifiers)})

    @property
    def engine(self) -> AlertEngine:
        if self._engine is None:
            raise RuntimeError("AlertService.start() first")
        return self._engine

    @property
    def reports(self) -> ReportScheduler | None:
        return self._reports

    async def tick(self) -> TickReport:
        self._rollups.begin_tick(self._clock())
        report = await asyncio.to_thread(self.engine.tick)
        if self._reports is not None:
            try:
                await self._reports.tick()
            except Exception:
                # A report must never hold up alerting.
                log.exception("reports failed; retrying on the next tick")
        return report

    async def run(self) -> None:
        interval = self._config.rules.evaluation.interval.total_seconds()
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("alert evaluation failed; retrying on the next tick")
            next_at += interval
            # A slow tick skips the ticks it overran rather than running them back to back.
            if next_at < loop.time():
                next_at = loop.time() + interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), next_at - loop.time())

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        if self._engine is not None:
            # Let sends in flight finish, so their delivery is stored before stopping.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dispatcher.idle(), _STOP_TIMEOUT_S)
            await asyncio.to_thread(self._engine.flush)
        await self._dispatcher.stop(_STOP_TIMEOUT_S)
        if self._reports is not None:
            await self._reports.close()
