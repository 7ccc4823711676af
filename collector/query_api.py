"""The analytics API: ``POST /v1/query/<name>`` with a JSON body, behind a read key.

Bodies are validated by the pydantic models below (also the OpenAPI schema at
``/openapi.json``); a bad parameter is a 400 naming it. Ranges are limited to
:data:`MAX_RANGE`. The commerce answers (``kpis``, ``customers``) are the models of
:mod:`collector.query_answers`. Orders are the authenticated project's ``order_events``
unless the body names others.
"""

# No `from __future__ import annotations`: FastAPI must see the local Authed alias as a type.
import asyncio
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tracklane.collector import openapi
from tracklane.collector.body import RequestError
from tracklane.collector.query_answers import CustomersAnswer, KpisAnswer
from tracklane.collector.read_api import check_year, read_project, to_utc
from tracklane.errors import ErrorCode
from tracklane.projects import Project, Projects
from tracklane.store import analytics, attribution, customers, retention, vitals
from tracklane.store.analytics_errors import QueryError
from tracklane.store.filters import DIMENSIONS as FILTER_DIMENSIONS
from tracklane.store.filters import MAX_VALUE as MAX_FILTER_VALUE
from tracklane.store.filters import Filters

MAX_RANGE = timedelta(days=400)
_T = TypeVar("_T")


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: datetime = Field(alias="from", description="range start (ISO 8601), inclusive")
    end: datetime = Field(alias="to", description="range end (ISO 8601), exclusive")

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return to_utc(v)

    @model_validator(mode="after")
    def _range(self) -> "_Query":
        if self.end <= self.start:
            raise ValueError("to: must be after from")
        if self.end - self.start > MAX_RANGE:
            raise ValueError(f"range: at most {MAX_RANGE.days} days")
        return self


EventName = Annotated[str, Field(min_length=1, max_length=200)]
FilterValue = Annotated[str, Field(max_length=MAX_FILTER_VALUE)]


class _Filtered(BaseModel):
    filters: dict[Literal[FILTER_DIMENSIONS], FilterValue] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description="dimension -> value: only the events with that value, and the sessions "
                    "with such an event (docs/analytics.md#filters)")

    @property
    def where(self) -> Filters:
        return Filters(dict(self.filters))


class _Orders(_Query, _Filtered):
    order_events: list[EventName] | None = Field(
        None, min_length=1, max_length=analytics.MAX_ORDER_EVENTS,
        description="the events that count as orders; default the project's order_events")

    def orders(self, project: Project) -> list[str]:
        return self.order_events or list(project.order_events)


class KpisQuery(_Orders):
    order_event: str | None = Field(
        None, max_length=200, json_schema_extra={"deprecated": True},
        description="deprecated: one order event, as order_events with one name")

    @model_validator(mode="after")
    def _one_way(self) -> "KpisQuery":
        if self.order_event is not None:
            if self.order_events is not None:
                raise ValueError("order_event: deprecated; give order_events only")
            self.order_events = [self.order_event]
        return self


class CustomersQuery(_Orders):
    tz: str = Field("UTC", description="IANA time zone of the CLV cohort months")


class TimeseriesQuery(_Query, _Filtered):
    event: str | None = Field(None, min_length=1, max_length=200,
                              description="one event; omitted: every event")
    grain: Literal["minute", "hour", "day"] = "hour"
    tz: str = Field("UTC", description="IANA time zone for hour and day buckets")
    visitors: bool = Field(True, description="also unique persons (slower over long ranges)")


class SeriesQuery(_Orders):
    metric: Literal[analytics.METRICS]  # type: ignore[valid-type]
    grain: Literal["minute", "hour", "day"] = "hour"
    tz: str = Field("UTC", description="IANA time zone for hour and day buckets")


class BreakdownQuery(_Query, _Filtered):
    dimension: Literal[analytics.DIMENSIONS] = Field(  # type: ignore[valid-type]
        description="page (by page views); source: browser, server, pixel or mobile, event "
                    "names, country, region and city (by persons); entry_page, exit_page, "
                    "referrer_domain, utm_*, device, browser, os (by sessions)")
    limit: int = Field(100, ge=1, le=1000)


class ConversionQuery(_Query, _Filtered):
    goal: str = Field(min_length=1, max_length=200)


class FunnelQuery(_Query, _Filtered):
    steps: list[str] = Field(min_length=analytics.FUNNEL_STEPS[0],
                             max_length=analytics.FUNNEL_STEPS[1])
    window_s: float = Field(3600, gt=0, le=90 * 86400,
                            description="each person's time from step 1 to the last step")
    breakdown: Literal[analytics.FUNNEL_BREAKDOWNS] | None = None  # type: ignore[valid-type]


class RetentionQuery(_Filtered):
    model_config = ConfigDict(extra="forbid")

    from_day: date = Field(description="first cohort day (local date in tz)")
    to_day: date = Field(description="last cohort day, inclusive")
    tz: str = "UTC"
    cohort_event: str | None = Field(None, max_length=200,
                                     description="cohort by first of this event; default any")
    return_event: str | None = Field(None, max_length=200,
                                     description="what counts as returning; default any event")
    max_day: int = Field(30, ge=0, le=retention.MAX_DAY)

    @field_validator("from_day", "to_day")
    @classmethod
    def _year(cls, v: date) -> date:
        check_year(v.year)
        return v

    @model_validator(mode="after")
    def _range(self) -> "RetentionQuery":
        if self.to_day < self.from_day:
            raise ValueError("to_day: must not be before from_day")
        if (self.to_day - self.from_day).days > MAX_RANGE.days:
            raise ValueError(f"range: at most {MAX_RANGE.days} days")
        return self


class VitalsQuery(_Query):
    property: Literal[vitals.METRICS]  # type: ignore[valid-type]
    stat: Literal["quantile", "avg", "sum", "max"] = "quantile"
    q: float = Field(0.75, ge=0, le=1, description="the quantile, for stat quantile")
    path_prefix: str = Field("", max_length=1000,
                             description="only the paths that start with this")


class AttributionQuery(_Query, _Filtered):
    conversion_event: str = Field(min_length=1, max_length=200)
    model: Literal[attribution.MODELS]  # type: ignore[valid-type]
    lookback_days: float = Field(30, ge=0, le=365)
    half_life_days: float = Field(7, gt=0, le=365, description="time_decay only")


def query_router(projects: Projects, store: Client | None) -> APIRouter:
    router = APIRouter(prefix="/v1/query", tags=["query"], responses=openapi.QUERY_RESPONSES)

    def auth(request: Request) -> Project:
        # A dependency runs before the body is validated: no key, no details about the body.
        return read_project(request, projects)

    Authed = Annotated[Project, Depends(auth)]

    async def run(project: Project, query: Callable[[Client, str], _T]) -> _T:
        if store is None:
            raise RequestError(ErrorCode.STORE_UNAVAILABLE)
        try:
            return await asyncio.to_thread(query, store, project.id)
        except QueryError as exc:
            raise RequestError(ErrorCode.INVALID_QUERY, str(exc)) from None

    @router.post("/kpis", response_model=KpisAnswer)
    async def kpis(project: Authed, q: KpisQuery) -> KpisAnswer:
        """PV, UV (approximate and exact), sessions, bounce rate, visit duration, and the
        orders with their revenue and AOV per currency."""
        events = q.orders(project)
        got = await run(project, lambda c, p: analytics.kpis(
            c, p, q.start, q.end, events, q.where))
        return KpisAnswer.of(got, events)

    @router.post("/customers", response_model=CustomersAnswer)
    async def customers_(project: Authed, q: CustomersQuery) -> CustomersAnswer:
        """Repurchase rate, customer lifetime value (per currency and first-order month),
        new and returning visitors, and the median time from first visit to first order."""
        events = q.orders(project)
        got = await run(project, lambda c, p: customers.customers(
            c, p, q.start, q.end, events, q.tz))
        return CustomersAnswer.of(got, events, q.tz)

    @router.post("/timeseries")
    async def timeseries(project: Authed, q: TimeseriesQuery) -> dict[str, Any]:
        """One event (or every event) per minute, hour or local day, from the rollups
        (from the raw events when filtered)."""
        points = await run(project, lambda c, p: analytics.timeseries(
            c, p, q.event, q.start, q.end, q.grain, q.tz, q.visitors, q.where))
        return {"points": [_json(asdict(pt)) for pt in points]}

    @router.post("/series")
    async def series(project: Authed, q: SeriesQuery) -> dict[str, Any]:
        """One KPI (page views, visitors, sessions, bounce rate, duration, orders, revenue,
        conversion rate) per minute, hour or local day; buckets without traffic left out."""
        events = q.orders(project)
        points = await run(project, lambda c, p: analytics.series(
            c, p, q.metric, q.start, q.end, q.grain, q.tz, events, q.where))
        return {"metric": q.metric, "points": [_json(asdict(pt)) for pt in points]}

    @router.post("/breakdown")
    async def breakdown(project: Authed, q: BreakdownQuery) -> dict[str, Any]:
        """Top pages, entry and exit pages, sources, campaigns, devices, browsers, OSes."""
        rows = await run(project, lambda c, p: analytics.breakdown(
            c, p, q.start, q.end, q.dimension, q.limit, q.where))
        return {"rows": [asdict(r) for r in rows]}

    @router.post("/conversion")
    async def conversion(project: Authed, q: ConversionQuery) -> dict[str, Any]:
        """Share of persons who did the goal event."""
        got = await run(project, lambda c, p: analytics.conversion(
            c, p, q.start, q.end, q.goal, q.where))
        return asdict(got)

    @router.post("/funnel")
    async def funnel(project: Authed, q: FunnelQuery) -> dict[str, Any]:
        """Persons reaching each step in order within the window, optionally by segment."""
        funnels = await run(project, lambda c, p: analytics.funnel(
            c, p, q.start, q.end, q.steps, timedelta(seconds=q.window_s), q.breakdown,
            q.where))
        return {"funnels": [asdict(f) for f in funnels]}

    @router.post("/retention")
    async def retention_(project: Authed, q: RetentionQuery) -> dict[str, Any]:
        """Cohorts by first-seen day (or first cohort_event), returning on day N."""
        got = await run(project, lambda c, p: retention.retention(
            c, p, start=q.from_day, end=q.to_day, tz=q.tz, cohort_event=q.cohort_event,
            return_event=q.return_event, max_day=q.max_day, filters=q.where))
        # A day-N rate only counts cohorts that have had N days to come back.
        as_of = datetime.now(UTC).date()
        rates = {f"d{n}": got.rate(n, as_of) for n in (1, 7, 30) if n <= q.max_day}
        return {"cohorts": [{"day": c.day.isoformat(), "size": c.size, "retained": c.retained}
                            for c in got.cohorts], "rates": rates, "as_of": as_of.isoformat()}

    @router.post("/attribution")
    async def attribution_(project: Authed, q: AttributionQuery) -> dict[str, Any]:
        """Credit for conversions by channel, under one attribution model."""
        credits = await run(project, lambda c, p: attribution.attribution(
            c, p, conversion_event=q.conversion_event, start=q.start, end=q.end,
            model=q.model, lookback=timedelta(days=q.lookback_days),
            half_life=timedelta(days=q.half_life_days), filters=q.where))
        return {"channels": [asdict(c) for c in credits]}

    @router.post("/vitals")
    async def vitals_(project: Authed, q: VitalsQuery) -> dict[str, Any]:
        """Page speed from the Web Vitals add-on: a quantile (exact), the average, sum or
        maximum of one property (lcp, inp, cls, fcp, ttfb) over the range."""
        got = await run(project, lambda c, p: vitals.vital_stat(
            c, p, q.property, q.stat, q.start, q.end, q.q, q.path_prefix))
        return {"property": q.property, "stat": q.stat, "q": q.q, "value": got.value,
                "samples": got.samples}

    return router


def _json(row: dict[str, Any]) -> dict[str, Any]:
    """Decimals as numbers and times as ISO 8601, for JSON clients."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, Decimal):
            out[key] = float(value)
        else:
            out[key] = value
    return out
