"""Sends each scheduled report once per period, on the alert service's clock.

Each tick, for each report, the latest period whose time has come (alerts/reports.py) is
looked up in ``report_runs``: every notifier it has not gone to yet gets it, and each
delivery is recorded. So a report is sent once per notifier and period; a restart that
spans a report's time sends that period's report when it is back, marked late, and a
report down for several periods sends only the latest (the older ones would be news no
one acts on). A report never sent before starts with the first period due after the
service started, rather than a late one for yesterday.

A delivery that fails is tried again at the next ticks, backing off up to 10 minutes. A
crash between a receiver's acceptance and its record sends that one again: receivers
can drop it by the report's id (``webhook-id``, the email's ``Message-ID``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import httpx
from clickhouse_connect.driver.client import Client

from tracklane.alerts import clickhouse_state
from tracklane.alerts.notifiers import NotifyError, deliver, deliver_mail
from tracklane.alerts.report_render import report_email, report_request
from tracklane.alerts.reports import ON_TIME, Report, build_report, latest_due
from tracklane.alerts.rules import NotifierSpec, ReportSpec
from tracklane.clock import Clock
from tracklane.projects import DEFAULT_ORDER_EVENTS

log = logging.getLogger(__name__)

_BACKOFF = (timedelta(seconds=30), timedelta(minutes=10))


class ReportScheduler:
    def __init__(self, reports: Sequence[ReportSpec], notifiers: Sequence[NotifierSpec],
                 client: Client, clock: Clock,
                 order_events: Mapping[str, Sequence[str]] | None = None) -> None:
        self._reports = list(reports)
        self._notifiers = {n.name: n for n in notifiers}
        self._client = client
        self._clock = clock
        self._order_events = dict(order_events or {})
        self._started = clock()
        # (report, notifier) -> (next try, current backoff) after a failed delivery.
        self._retry: dict[tuple[str, str], tuple[datetime, timedelta]] = {}
        self._http = httpx.AsyncClient()

    async def close(self) -> None:
        await self._http.aclose()

    async def tick(self) -> list[tuple[str, str, bool]]:
        """Send what is due; the (report, notifier, late) deliveries made."""
        now = self._clock()
        sent: list[tuple[str, str, bool]] = []
        for spec in self._reports:
            period = latest_due(spec, now)
            done = await asyncio.to_thread(clickhouse_state.report_deliveries, self._client,
                                           spec.name, period.start)
            if not done and period.due < self._started and not await asyncio.to_thread(
                    clickhouse_state.report_ever_sent, self._client, spec.name):
                continue  # a new report: its first period is the next one due
            todo = [name for name in spec.notify if name not in done
                    and self._retry.get((spec.name, name), (now, _BACKOFF[0]))[0] <= now]
            if not todo:
                continue
            late = now - period.due > ON_TIME
            report = await asyncio.to_thread(self.build, spec, period.due, late)
            for name in todo:
                if await self._deliver(spec, name, report, now):
                    await asyncio.to_thread(
                        clickhouse_state.record_report_delivery, self._client, spec.name,
                        period.start, period.end, name, late, now)
                    sent.append((spec.name, name, late))
        return sent

    def build(self, spec: ReportSpec, at: datetime, late: bool = False) -> Report:
        """The report of the latest period due at ``at``."""
        events = spec.order_events or self._order_events.get(spec.project, DEFAULT_ORDER_EVENTS)
        return build_report(self._client, spec, latest_due(spec, at), late, list(events))

    async def send_now(self, spec: ReportSpec, report: Report) -> list[str]:
        """Send ``report`` to every notifier of ``spec`` now, unrecorded; raises the first
        NotifyError."""
        for name in spec.notify:
            await self._send(self._notifiers[name], report, self._clock())
        return list(spec.notify)

    async def _send(self, notifier: NotifierSpec, report: Report, now: datetime) -> None:
        if notifier.kind == "email":
            await deliver_mail(notifier, report_email(notifier, report))
        else:
            await deliver(self._http, notifier, report_request(notifier, report, now))

    async def _deliver(self, spec: ReportSpec, name: str, report: Report,
                       now: datetime) -> bool:
        try:
            await self._send(self._notifiers[name], report, now)
        except NotifyError as exc:
            _, backoff = self._retry.get((spec.name, name), (now, _BACKOFF[0]))
            self._retry[(spec.name, name)] = (now + backoff, min(backoff * 2, _BACKOFF[1]))
            log.warning("report not delivered", extra={
                "report": spec.name, "notifier": name, "error": str(exc),
                "retry_in_s": backoff.total_seconds()})
            return False
        self._retry.pop((spec.name, name), None)
        log.info("report sent", extra={"report": spec.name, "notifier": name,
                                       "period_start": report.period.start.isoformat(),
                                       "late": report.late})
        return True
