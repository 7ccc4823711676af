"""The read API: per-minute stats from the rollups, behind a project's read key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Request

from collector import openapi
from collector.body import RequestError
from store import queries
from tracklane.contract import MAX_ID_LENGTH
from tracklane.metrics import Metrics
from tracklane.projects import Project, Projects

MAX_RANGE = timedelta(days=7)
# The years ClickHouse's DateTime64 holds. Refusing others also keeps range arithmetic
# (time zones, look-backs) clear of Python's year 1..9999 limits.
YEARS = (1900, 2299)


def read_router(projects: Projects, store: Client | None, metrics: Metrics) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/stats/minutes", responses=openapi.STATS_RESPONSES,
                openapi_extra=openapi.STATS_EXTRA)
    async def stats_minutes(request: Request) -> dict[str, Any]:
        project = read_project(request, projects)
        if store is None:
            raise RequestError(503, "store_unavailable", "this collector has no store configured")
        params = request.query_params
        event = params.get("event")
        if not event:
            raise RequestError(400, "invalid_query", "event: required")
        start = parse_instant(params.get("from"), "from")
        end = parse_instant(params.get("to"), "to")
        if end <= start:
            raise RequestError(400, "invalid_query", "to: must be after from")
        if end - start > MAX_RANGE:
            raise RequestError(400, "invalid_query", f"range: at most {MAX_RANGE.days} days")
        rows = await asyncio.to_thread(queries.minute_stats, store, project.id, event, start, end)
        return {"rows": [
            {"minute": r.minute.strftime("%Y-%m-%dT%H:%M:%SZ"), "count": r.count,
             "unique_users": r.unique_users, "revenue": float(r.revenue)}
            for r in rows
        ]}

    return router


def read_project(request: Request, projects: Projects) -> Project:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RequestError(
            401, "missing_read_key", "send the read key as 'Authorization: Bearer <key>'"
        )
    project = projects.by_read_key(token.strip())
    if project is None:
        raise RequestError(401, "invalid_read_key", "unknown read key")
    return project


def path_id(value: str, name: str, code: str, store: Client | None) -> Client:
    """Check an id taken from the path (users, persons) and that there is a store to ask."""
    if not value:
        raise RequestError(400, code, f"{name}: required")
    if len(value) > MAX_ID_LENGTH:
        raise RequestError(400, code, f"{name}: longer than {MAX_ID_LENGTH} characters")
    if store is None:
        raise RequestError(503, "store_unavailable", "this collector has no store configured")
    return store


def parse_instant(raw: str | None, name: str) -> datetime:
    if not raw:
        raise RequestError(400, "invalid_query", f"{name}: required (ISO 8601)")
    try:
        ts = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        raise RequestError(400, "invalid_query", f"{name}: not an ISO 8601 time") from None
    try:
        return to_utc(ts)
    except ValueError as exc:
        raise RequestError(400, "invalid_query", f"{name}: {exc}") from None


def to_utc(ts: datetime) -> datetime:
    """``ts`` in UTC (naive means UTC); ValueError outside :data:`YEARS`."""
    check_year(ts.year)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def check_year(year: int) -> None:
    if not YEARS[0] <= year <= YEARS[1]:
        raise ValueError(f"outside the years {YEARS[0]} to {YEARS[1]}")
