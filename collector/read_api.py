"""The read API: per-minute stats from the rollups, behind a project's read key."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Request

from tracklane.alerts.clickhouse_rollups import pipeline_progress
from tracklane.clock import Clock
from tracklane.collector import openapi
from tracklane.collector.body import RequestError
from tracklane.collector.query_answers import PipelineAnswer, RealtimeAnswer
from tracklane.contract import MAX_ID_LENGTH
from tracklane.errors import ErrorCode
from tracklane.metrics import Metrics
from tracklane.projects import Project, Projects
from tracklane.store import analytics, queries

MAX_RANGE = timedelta(days=7)
# The years ClickHouse's DateTime64 holds. Refusing others also keeps range arithmetic
# (time zones, look-backs) clear of Python's year 1..9999 limits.
YEARS = (1900, 2299)


def read_router(projects: Projects, store: Client | None, metrics: Metrics, clock: Clock,
                pipeline: tuple[str, str]) -> APIRouter:
    """``pipeline``: the consumer group and topic of the sink whose progress is reported."""
    router = APIRouter()

    def need_store(request: Request) -> tuple[Project, Client]:
        project = read_project(request, projects)
        if store is None:
            raise RequestError(ErrorCode.STORE_UNAVAILABLE)
        return project, store

    @router.get("/v1/stats/realtime", response_model=RealtimeAnswer,
                responses=openapi.READ_RESPONSES)
    async def stats_realtime(request: Request) -> dict[str, Any]:
        """Persons and page views of the last 5 minutes, and the pages they are on."""
        project, client = need_store(request)
        now = clock()
        got = await asyncio.to_thread(analytics.realtime, client, project.id, now)
        return {"visitors": got.visitors, "pageviews": got.pageviews,
                "window_s": int(analytics.REALTIME_WINDOW.total_seconds()),
                "pages": [asdict(p) for p in got.pages], "as_of": _iso(now)}

    @router.get("/v1/stats/pipeline", response_model=PipelineAnswer,
                responses=openapi.READ_RESPONSES)
    async def stats_pipeline(request: Request) -> dict[str, Any]:
        """How fresh the numbers are: the sink's watermark delay and lag (for the whole
        pipeline), and the project's accepted and rejected events of the last hour."""
        project, client = need_store(request)
        now = clock()
        progress = await asyncio.to_thread(pipeline_progress, client, *pipeline)
        totals = await asyncio.to_thread(queries.ingest_totals, client, project.id,
                                         now - timedelta(hours=1))
        delay = (now - progress.watermark).total_seconds() if progress.watermark else None
        return {"watermark_delay_s": None if delay is None else max(delay, 0.0),
                "lag": progress.lag if progress.watermark else None,
                "accepted_last_hour": totals.get("accepted", 0),
                "rejected_last_hour": totals.get("rejected", 0), "as_of": _iso(now)}

    @router.get("/v1/stats/minutes", responses=openapi.STATS_RESPONSES,
                openapi_extra=openapi.STATS_EXTRA)
    async def stats_minutes(request: Request) -> dict[str, Any]:
        project = read_project(request, projects)
        if store is None:
            raise RequestError(ErrorCode.STORE_UNAVAILABLE)
        params = request.query_params
        event = params.get("event")
        if not event:
            raise RequestError(ErrorCode.INVALID_QUERY, "event: required")
        start = parse_instant(params.get("from"), "from")
        end = parse_instant(params.get("to"), "to")
        if end <= start:
            raise RequestError(ErrorCode.INVALID_QUERY, "to: must be after from")
        if end - start > MAX_RANGE:
            raise RequestError(ErrorCode.INVALID_QUERY, f"range: at most {MAX_RANGE.days} days")
        rows = await asyncio.to_thread(queries.minute_stats, store, project.id, event, start, end)
        return {"rows": [
            {"minute": r.minute.strftime("%Y-%m-%dT%H:%M:%SZ"), "count": r.count,
             "unique_users": r.unique_users, "revenue": float(r.revenue)}
            for r in rows
        ]}

    return router


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def read_project(request: Request, projects: Projects) -> Project:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RequestError(
            ErrorCode.MISSING_READ_KEY, "send the read key as 'Authorization: Bearer <key>'"
        )
    project = projects.by_read_key(token.strip())
    if project is None:
        raise RequestError(ErrorCode.INVALID_READ_KEY, "unknown read key")
    return project


def path_id(value: str, name: str, code: ErrorCode, store: Client | None) -> Client:
    """Check an id taken from the path (users, persons) and that there is a store to ask."""
    if not value:
        raise RequestError(code, f"{name}: required")
    if len(value) > MAX_ID_LENGTH:
        raise RequestError(code, f"{name}: longer than {MAX_ID_LENGTH} characters")
    if store is None:
        raise RequestError(ErrorCode.STORE_UNAVAILABLE)
    return store


def parse_instant(raw: str | None, name: str) -> datetime:
    if not raw:
        raise RequestError(ErrorCode.INVALID_QUERY, f"{name}: required (ISO 8601)")
    try:
        ts = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        raise RequestError(ErrorCode.INVALID_QUERY, f"{name}: not an ISO 8601 time") from None
    try:
        return to_utc(ts)
    except ValueError as exc:
        raise RequestError(ErrorCode.INVALID_QUERY, f"{name}: {exc}") from None


def to_utc(ts: datetime) -> datetime:
    """``ts`` in UTC (naive means UTC); ValueError outside :data:`YEARS`."""
    check_year(ts.year)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def check_year(year: int) -> None:
    if not YEARS[0] <= year <= YEARS[1]:
        raise ValueError(f"outside the years {YEARS[0]} to {YEARS[1]}")
