"""Alert history and silences over HTTP, behind a project's read key.

GET /v1/alerts lists transitions (newest first) and the current state of each alert;
silences are created, listed and expired like Alertmanager's, scoped to the project.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tracklane.alerts import clickhouse_state as alert_queries
from tracklane.alerts.clickhouse_state import ClickHouseAlertStore
from tracklane.alerts.codec import finding_to_dict, iso
from tracklane.alerts.silences import Silence, new_silence_id
from tracklane.clock import Clock
from tracklane.collector import openapi
from tracklane.collector.body import RequestError, decode_json, read_body
from tracklane.collector.read_api import check_year, parse_instant, read_project
from tracklane.errors import ErrorCode
from tracklane.projects import Projects

DEFAULT_RANGE = timedelta(days=7)
MAX_LIMIT = 1000
MAX_SILENCE = timedelta(days=90)
_MAX_SILENCE_BYTES = 64 * 1024


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matchers: dict[str, str] = Field(min_length=1)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    duration_minutes: float | None = Field(default=None, gt=0,
                                           le=MAX_SILENCE.total_seconds() / 60)
    created_by: str = Field(min_length=1, max_length=200)
    comment: str = Field(default="", max_length=2000)

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _year(cls, v: datetime | None) -> datetime | None:
        if v is not None:
            check_year(v.year)
        return v


def alerts_router(projects: Projects, store: Client | None, clock: Clock) -> APIRouter:
    router = APIRouter()

    def need_store() -> Client:
        if store is None:
            raise RequestError(ErrorCode.STORE_UNAVAILABLE)
        return store

    @router.get("/v1/alerts", responses=openapi.ALERTS_RESPONSES,
                openapi_extra=openapi.ALERTS_EXTRA)
    async def list_alerts(request: Request) -> dict[str, Any]:
        project = read_project(request, projects)
        client = need_store()
        params = request.query_params
        now = clock()
        until = parse_instant(params["to"], "to") if "to" in params else now
        since = parse_instant(params["from"], "from") if "from" in params else until - DEFAULT_RANGE
        limit = _limit(params.get("limit"))
        rule = params.get("rule") or None
        transitions = await asyncio.to_thread(
            alert_queries.list_transitions, client, project.id, since, until, limit, rule)
        states = await asyncio.to_thread(alert_queries.current_states, client, project.id)
        return {
            "alerts": [{
                "rule": s.rule, "fingerprint": s.fingerprint, "status": s.status.value,
                "labels": s.labels, "incident": s.incident, "flapping": s.flapping,
                "fired_at": iso(s.fired_at), "resolved_at": iso(s.resolved_at),
                "finding": finding_to_dict(s.finding) if s.finding else None,
            } for s in states if rule is None or s.rule == rule],
            "transitions": transitions,
        }

    @router.get("/v1/silences", responses=openapi.SILENCES_RESPONSES)
    async def list_silences(request: Request) -> dict[str, Any]:
        project = read_project(request, projects)
        found = await asyncio.to_thread(ClickHouseAlertStore(need_store()).silences,
                                        project.id, clock())
        return {"silences": [_silence_json(s, clock()) for s in found]}

    @router.post("/v1/silences", status_code=201, responses=openapi.CREATE_SILENCE_RESPONSES,
                 openapi_extra=openapi.json_body(SilenceRequest))
    async def create_silence(request: Request) -> dict[str, Any]:
        project = read_project(request, projects)
        alert_store = ClickHouseAlertStore(need_store())
        try:
            raw = decode_json(await read_body(request, _MAX_SILENCE_BYTES),
                              request.headers.get("content-encoding"), _MAX_SILENCE_BYTES)
            body = SilenceRequest.model_validate(raw)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                               for e in exc.errors(include_url=False))
            raise RequestError(ErrorCode.INVALID_SILENCE, detail) from None
        now = clock()
        silence = _new_silence(body, project.id, now)
        await asyncio.to_thread(alert_store.save_silence, silence)
        return _silence_json(silence, now)

    @router.delete("/v1/silences/{silence_id}", status_code=204, response_class=Response,
                   responses=openapi.EXPIRE_SILENCE_RESPONSES)
    async def expire_silence(request: Request, silence_id: str) -> Response:
        project = read_project(request, projects)
        alert_store = ClickHouseAlertStore(need_store())
        now = clock()
        found = await asyncio.to_thread(alert_store.silences, project.id, now)
        match = next((s for s in found if s.id == silence_id), None)
        if match is None:
            raise RequestError(ErrorCode.SILENCE_NOT_FOUND, f"no active silence {silence_id!r}")
        expired = Silence(match.id, match.project, match.matchers, min(match.starts_at, now),
                          now, match.created_by, match.comment, match.created_at)
        await asyncio.to_thread(alert_store.save_silence, expired)
        return Response(status_code=204)

    return router


def _new_silence(body: SilenceRequest, project: str, now: datetime) -> Silence:
    starts = _utc(body.starts_at) if body.starts_at else now
    if body.ends_at is not None and body.duration_minutes is not None:
        raise RequestError(ErrorCode.INVALID_SILENCE, "give ends_at or duration_minutes, not both")
    if body.ends_at is not None:
        ends = _utc(body.ends_at)
    elif body.duration_minutes is not None:
        ends = starts + timedelta(minutes=body.duration_minutes)
    else:
        raise RequestError(ErrorCode.INVALID_SILENCE, "ends_at or duration_minutes: required")
    if ends <= max(starts, now):
        raise RequestError(ErrorCode.INVALID_SILENCE, "ends_at: must be in the future and after "
                                                   "starts_at")
    if ends - starts > MAX_SILENCE:
        raise RequestError(ErrorCode.INVALID_SILENCE, f"at most {MAX_SILENCE.days} days")
    return Silence(new_silence_id(), project, dict(body.matchers), starts, ends,
                   body.created_by, body.comment, now)


def _silence_json(s: Silence, now: datetime) -> dict[str, Any]:
    return {"id": s.id, "matchers": s.matchers, "starts_at": iso(s.starts_at),
            "ends_at": iso(s.ends_at), "created_by": s.created_by, "comment": s.comment,
            "created_at": iso(s.created_at), "state": "active" if s.active(now) else "pending"}


def _limit(raw: str | None) -> int:
    if raw is None:
        return 100
    # isdigit() alone admits "²" and 5000-digit strings, which int() refuses.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and 1 <= int(raw) <= MAX_LIMIT):
        raise RequestError(ErrorCode.INVALID_QUERY, f"limit: an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _utc(ts: datetime) -> datetime:
    return parse_instant(ts.isoformat(), "time")
