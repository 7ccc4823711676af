"""The collector's FastAPI application: Segment-compatible ingestion, the pixel, health."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Route

from tracklane.clock import Clock, utc_now
from tracklane.collector import openapi
from tracklane.collector.alerts_api import alerts_router
from tracklane.collector.body import (
    RequestError,
    basic_username,
    decode_json,
    read_body,
)
from tracklane.collector.client_address import client_ip
from tracklane.collector.client_config import client_config_router
from tracklane.collector.config import CollectorConfig
from tracklane.collector.dashboard_files import dashboard_router, default_dashboard_dir
from tracklane.collector.delivery import Delivery, NotAccepted
from tracklane.collector.enrich import anonymize_ip, parse_user_agent
from tracklane.collector.fastpath import Handler, IngestApp
from tracklane.collector.geoip import GeoIP
from tracklane.collector.ingest_log import IngestLog
from tracklane.collector.limits import ClientSlots, InflightLimit, RateLimiter
from tracklane.collector.persons_api import persons_router
from tracklane.collector.pixel import PIXEL_GIF, pixel_message
from tracklane.collector.query_api import query_router
from tracklane.collector.read_api import read_router
from tracklane.collector.sdk_files import default_sdk_dir, sdk_router
from tracklane.collector.traffic import (
    end_user_agent,
    end_user_ip,
    exclusion_reason,
    is_browser_request,
    message_source,
)
from tracklane.collector.upstream import Upstream
from tracklane.collector.users_api import users_router
from tracklane.contract import (
    MESSAGE_TYPES,
    ContractError,
    RequestFacts,
    envelope_fields,
    envelope_record,
    parse_message,
)
from tracklane.errors import ErrorCode
from tracklane.metrics import EXPOSITION_TYPE, Metrics
from tracklane.projects import Project, Projects

log = logging.getLogger(__name__)

@dataclass
class CollectorDeps:
    """Everything the app needs, created and closed by whoever runs it."""

    config: CollectorConfig
    projects: Projects
    delivery: Delivery
    metrics: Metrics
    store: Client | None = None
    clock: Clock = utc_now
    monotonic: Callable[[], float] = time.monotonic  # for rate limits
    sdk_dir: Path | None = None  # where the built browser SDK is; default: the checkout's
    dashboard_dir: Path | None = None  # the built dashboard; default: the package's
    ingest_log: IngestLog | None = None  # per-minute outcomes in ClickHouse, when there is one
    # A worker of `up --workers`: the process that owns the store answers the routes that
    # need it (collector/upstream.py).
    upstream: Upstream | None = None
    # Salt for the cookieless anonymous id of pixel hits that carry none.
    pixel_salt: bytes = field(default_factory=lambda: secrets.token_bytes(32))


MAX_BATCH_EVENTS = 2500
_SINGLE_ROUTES = MESSAGE_TYPES
# analytics.js (Segment's browser library) posts each call to /v1/ + its type's first
# letter, and batches to /v1/b as Segment's mobile libraries do.
_SEGMENT_PATHS = {kind[0]: kind for kind in _SINGLE_ROUTES} | {"b": "batch"}
# What the libraries send. A preflight naming others gets them too: RudderStack's SDK adds
# AnonymousId and Rsa-Retry-* headers, and a library's next version may add more. These
# routes take no cookies, so allowing a header costs nothing, and refusing one loses events.
_CORS_HEADERS = "Content-Type, Authorization, X-Write-Key, Content-Encoding, X-Retry-Count"
_HTTP_ERRORS = {400: ErrorCode.INVALID_JSON, 404: ErrorCode.NOT_FOUND,
                405: ErrorCode.METHOD_NOT_ALLOWED}


def error_response(err: RequestError, headers: dict[str, str] | None = None) -> JSONResponse:
    if err.retry_after is not None:
        headers = {**(headers or {}), "Retry-After": str(err.retry_after)}
    return JSONResponse(
        {"success": False, "error": err.code, "message": err.message},
        status_code=err.status, headers=headers,
    )


def create_app(deps: CollectorDeps) -> FastAPI:
    app = IngestApp(title="Tracklane collector", version="0.1.0",
                    description=openapi.API_DESCRIPTION,
                    responses=openapi.COMMON_RESPONSES)
    ingest = _Ingest(deps)

    @app.exception_handler(RequestValidationError)
    async def _invalid_query(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only the query API declares typed bodies; name the bad field, plainly, as a 400.
        detail = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'] if part != 'body') or 'body'}: "
            f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        return await _request_error(request, RequestError(ErrorCode.INVALID_QUERY, detail))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Unknown paths and methods, and bodies FastAPI could not parse (the query API's),
        # answer in the same shape as every other error.
        if exc.status_code == 405 and (exc.headers or {}).get("Allow") == "OPTIONS":
            # Only the CORS preflight, which answers every /v1/ path, knows the path.
            exc = HTTPException(404, "Not Found")
        error = _HTTP_ERRORS.get(exc.status_code, ErrorCode.HTTP_ERROR)
        return error_response(RequestError(error, str(exc.detail), status=exc.status_code),
                              {**(exc.headers or {}), **_cors(request)})

    def reject(request: Request, err: RequestError) -> JSONResponse:
        deps.metrics.rejected.labels(err.code).inc()
        route = _ingest_route(request.url.path)
        if deps.ingest_log is not None and route is not None:
            # The project is unknown here: a refused request may carry no valid key.
            deps.ingest_log.rejected("", route, err.code)
        # A browser SDK that cannot read the status sees a network error and retries a
        # request that can never succeed, so errors are readable from any origin.
        return error_response(err, _cors(request))

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        return reject(request, err)

    routes: dict[tuple[str, str], Handler] = {
        ("POST", "/v1/batch"): _body_route(ingest, "batch", None),
        ("POST", "/v1/b"): _body_route(ingest, "batch", None),
        # RudderStack's beacon delivery: {batch, sentAt} as text/plain, the key in the query.
        ("POST", "/beacon/v1/batch"): _body_route(ingest, "batch", None),
        ("GET", "/p.gif"): ingest.handle_pixel,
    }
    app.add_api_route("/v1/batch", routes["POST", "/v1/batch"], methods=["POST"], name="batch",
                      responses=openapi.INGEST_RESPONSES,
                      openapi_extra=openapi.ingest_extra(None))
    app.add_api_route("/beacon/v1/batch", routes["POST", "/beacon/v1/batch"], methods=["POST"],
                      name="rudderstack_beacon", responses=openapi.INGEST_RESPONSES,
                      openapi_extra=openapi.ingest_extra(None),
                      description="RudderStack's beacon path: as /v1/batch, with the write "
                      "key in the writeKey query parameter.")
    for kind in _SINGLE_ROUTES:
        routes["POST", f"/v1/{kind}"] = _body_route(ingest, kind, kind)
        app.add_api_route(f"/v1/{kind}", routes["POST", f"/v1/{kind}"], methods=["POST"],
                          name=kind, responses=openapi.INGEST_RESPONSES,
                          openapi_extra=openapi.ingest_extra(kind))
    for short, kind in _SEGMENT_PATHS.items():
        routes["POST", f"/v1/{short}"] = routes["POST", f"/v1/{kind}"]
        app.add_api_route(f"/v1/{short}", routes["POST", f"/v1/{kind}"], methods=["POST"],
                          name=f"segment_{kind}", responses=openapi.INGEST_RESPONSES,
                          openapi_extra=openapi.ingest_extra(None if kind == "batch" else kind),
                          description=f"Segment's path for {kind}: as /v1/{kind}.")

    @app.post("/v1/m", status_code=200)
    async def client_metrics(request: Request) -> JSONResponse:
        """analytics.js's reports about itself: accepted, counted in a metric, dropped."""
        deps.metrics.client_metrics.inc()
        return JSONResponse({"success": True}, headers=_cors(request))

    app.ingest_routes.update(routes)
    app.ingest_error = reject

    @app.options("/v1/{path:path}", status_code=204, response_class=Response,
                 responses=openapi.PREFLIGHT_RESPONSES)
    async def preflight(request: Request) -> Response:
        # A preflight carries no key, so the project's origin list is enforced on the POST.
        origin = request.headers.get("origin", "*")
        return Response(status_code=204, headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
            "Access-Control-Allow-Headers":
                request.headers.get("access-control-request-headers") or _CORS_HEADERS,
            "Access-Control-Max-Age": "86400",
            "Vary": "Origin, Access-Control-Request-Headers",
        })

    app.add_api_route("/p.gif", ingest.handle_pixel, methods=["GET"], name="pixel",
                      response_class=Response, responses=openapi.PIXEL_RESPONSES,
                      openapi_extra=openapi.PIXEL_EXTRA)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses=openapi.READY_RESPONSES)
    async def readyz() -> JSONResponse:
        kafka = await deps.delivery.kafka_reachable()
        store = (await deps.upstream.store_ready() if deps.upstream is not None
                 else await _store_ok(deps.store))
        spool = deps.delivery.spool
        # With Kafka away, events are still accepted while the spool has room.
        accepting = kafka or (spool is not None and spool.has_room)
        ok = accepting and store is not False
        body: dict[str, Any] = {"status": "ready" if ok else "unavailable", "kafka": kafka,
                                "store": store}
        if spool is not None:
            body["spool_events"] = spool.backlog
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=Response, responses=openapi.METRICS_RESPONSES)
    async def metrics() -> Response:
        return Response(deps.metrics.exposition(), media_type=EXPOSITION_TYPE)

    store_routers = (read_router(deps.projects, deps.store, deps.metrics, deps.clock,
                                 deps.config.pipeline),
                     alerts_router(deps.projects, deps.store, deps.clock),
                     query_router(deps.projects, deps.store),
                     users_router(deps.projects, deps.store, deps.clock, deps.config.audit_key),
                     persons_router(deps.projects, deps.store))
    for router in store_routers:
        app.include_router(router)
    if deps.upstream is not None:
        # The store's routes, and the sum of every process's metrics, are the owner's.
        # Matched ahead of the local ones, which stay for the OpenAPI document.
        owned = [route for router in store_routers for route in router.routes
                 if isinstance(route, APIRoute)]
        owned += [route for route in app.router.routes
                  if isinstance(route, APIRoute) and route.path == "/metrics"]
        app.router.routes[:0] = [
            Route(route.path, deps.upstream, methods=list(route.methods or ()),
                  include_in_schema=False) for route in owned]
    app.include_router(client_config_router(deps.projects, deps.config))
    app.include_router(sdk_router(deps.sdk_dir or default_sdk_dir()))
    app.include_router(dashboard_router(deps.dashboard_dir or default_dashboard_dir()))
    return app


def _ingest_route(path: str) -> str | None:
    """The ingest route a path belongs to (as in the route metrics), else None."""
    if path == "/p.gif":
        return "pixel"
    if path == "/beacon/v1/batch":
        return "batch"
    name = path.removeprefix("/v1/")
    name = _SEGMENT_PATHS.get(name, name)
    return name if name in ("batch", *_SINGLE_ROUTES) and path != name else None


def _body_route(ingest: _Ingest, route: str, single: str | None) -> Handler:
    async def handle(request: Request) -> Response:
        return await ingest.handle_body(request, route, single)

    return handle


async def _store_ok(store: Client | None) -> bool | None:
    if store is None:
        return None
    try:
        await asyncio.to_thread(store.command, "SELECT 1")
        return True
    except Exception:
        return False


class _Ingest:
    """Turns requests into acknowledged Kafka records, and reports what it refused."""

    def __init__(self, deps: CollectorDeps) -> None:
        self._deps = deps
        cfg = deps.config
        self._limiter = RateLimiter(deps.monotonic)
        self._inflight = InflightLimit(cfg.max_inflight_requests, cfg.max_inflight_bytes,
                                       cfg.retry_after_s)
        self._clients = ClientSlots(cfg.max_requests_per_client)
        self._geo = GeoIP(cfg.geo)
        # A metric's child per label value, looked up once: ``labels()`` costs a pixel hit
        # a few percent.
        self._received = functools.cache(deps.metrics.received.labels)
        self._seconds = functools.cache(deps.metrics.request_seconds.labels)

    async def handle_body(self, request: Request, route: str, single: str | None) -> Response:
        cfg = self._deps.config
        # A key in the headers is checked before a byte of the body is read.
        project = (self._authenticate(request, None)
                   if _header_key(request) is not None else None)
        with (self._clients.admit(client_ip(request, cfg.trusted_proxies)),
              self._inflight.holding() as charge):
            return await self._handle_body(request, route, single, project, charge)

    async def handle_pixel(self, request: Request) -> Response:
        return await self._handle_pixel(request)

    async def _read(self, request: Request, charge: Callable[[int], None]) -> bytes:
        cfg = self._deps.config
        try:
            async with asyncio.timeout(cfg.read_timeout_s):
                return await read_body(request, cfg.max_body_bytes, charge)
        except TimeoutError:
            raise RequestError(ErrorCode.REQUEST_TIMEOUT, "request body not received within "
                               f"{cfg.read_timeout_s:g} s") from None

    async def _handle_body(self, request: Request, route: str, single: str | None,
                           project: Project | None, charge: Callable[[int], None]) -> Response:
        started = time.perf_counter()
        cfg = self._deps.config
        data = decode_json(await self._read(request, charge),
                           request.headers.get("content-encoding"), cfg.max_body_bytes)
        if not isinstance(data, dict):
            raise RequestError(ErrorCode.INVALID_BODY, "body must be a JSON object")
        project = project or self._authenticate(request, data.get("writeKey"))
        if single is not None:
            raw_events: list[Any] = [data]
        else:
            batch = data.get("batch")
            if not isinstance(batch, list):
                raise RequestError(ErrorCode.INVALID_BODY, "batch: must be an array of events")
            if len(batch) > MAX_BATCH_EVENTS:
                # 500 KB of "{}" is 100k events: validating them all, and listing every
                # error, would hold the event loop for seconds.
                raise RequestError(ErrorCode.TOO_MANY_EVENTS,
                                   f"batch: over {MAX_BATCH_EVENTS} events; split it")
            raw_events = [_merge_batch_level(e, data) for e in batch]
        with self._inflight.admit():
            response = await self._accept(request, project, route, raw_events, single)
        self._seconds(route).observe(time.perf_counter() - started)
        return response

    async def _handle_pixel(self, request: Request) -> Response:
        started = time.perf_counter()
        params = request.query_params
        project = self._authenticate(request, params.get("k"))
        message = pixel_message(params)
        if "anonymousId" not in message and "userId" not in message:
            message["anonymousId"] = self._cookieless_id(request, project)
        with self._inflight.admit():
            outcome = await self._deliver(request, project, "pixel", [message], None)
        self._seconds("pixel").observe(time.perf_counter() - started)
        if isinstance(outcome, Response):  # refused, or its one event rejected
            return outcome
        return Response(PIXEL_GIF, media_type="image/gif", headers={
            "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
            **_cors(request),
        })

    def _authenticate(self, request: Request, body_key: Any) -> Project:
        key = _header_key(request) or (
            body_key if isinstance(body_key, str) else None
        ) or request.query_params.get("writeKey")  # a beacon cannot set headers
        if not key:
            raise RequestError(ErrorCode.MISSING_WRITE_KEY, "no write key: send it as the Basic "
                               "auth username, an X-Write-Key header, or writeKey in the "
                               "body or the query")
        project = self._deps.projects.by_write_key(key)
        if project is None:
            raise RequestError(ErrorCode.INVALID_WRITE_KEY, "unknown write key")
        origin = request.headers.get("origin")
        if origin and not project.allows_origin(origin):
            raise RequestError(ErrorCode.ORIGIN_NOT_ALLOWED, f"origin {origin} is not allowed")
        return project

    async def _accept(
        self, request: Request, project: Project, route: str, raw_events: list[Any],
        single: str | None,
    ) -> Response:
        """Deliver the events; the JSON answer of the body routes."""
        outcome = await self._deliver(request, project, route, raw_events, single)
        if isinstance(outcome, Response):
            return outcome
        accepted, errors = outcome
        body: dict[str, Any] = {"success": True, "accepted": accepted}
        if errors:
            body["errors"] = errors
        return JSONResponse(body, headers=_cors(request))

    async def _deliver(
        self, request: Request, project: Project, route: str, raw_events: list[Any],
        single: str | None,
    ) -> Response | tuple[int, list[dict[str, Any]]]:
        """Validate, enrich and deliver; a refusal's answer, or (accepted, errors)."""
        deps = self._deps
        metrics = deps.metrics
        self._received(route).inc(len(raw_events))
        received_at = deps.clock()
        request_ip = client_ip(request, deps.config.trusted_proxies)
        request_ua = request.headers.get("user-agent", "")
        browser = is_browser_request(route, request.headers)
        records: list[tuple[bytes, bytes]] = []
        errors: list[dict[str, Any]] = []
        for index, raw in enumerate(raw_events):
            try:
                records.append(self._record(raw, single, project, received_at, route,
                                            browser, request_ip, request_ua))
            except ContractError as exc:
                code = exc.code
                metrics.rejected.labels(code).inc()
                if deps.ingest_log is not None:
                    deps.ingest_log.rejected(project.id, route, code)
                errors.append({"index": index, "error": code, "message": str(exc)})
        cors = _cors(request)
        if not records:
            if not errors:
                return JSONResponse({"success": True, "accepted": 0}, headers=cors)
            first = errors[0]
            return JSONResponse(
                {"success": False, "error": first["error"], "message": first["message"],
                 "accepted": 0, "errors": errors},
                status_code=400, headers=cors,
            )
        try:
            self._limiter.check(project.id, project.rate_limit(deps.config.default_rate_limit),
                                len(records), request_ip, deps.config.client_rate_limit)
        except RequestError as err:
            metrics.rejected.labels(err.code).inc(len(records))
            if deps.ingest_log is not None:
                deps.ingest_log.rejected(project.id, route, err.code, len(records))
            return error_response(err, cors)
        try:
            await deps.delivery.deliver(records)
        except NotAccepted as exc:
            metrics.produce_failures.inc()
            metrics.rejected.labels(exc.code).inc(len(records))
            if deps.ingest_log is not None:
                deps.ingest_log.rejected(project.id, route, exc.code, len(records))
            log.warning("events refused", extra={
                "project": project.id, "events": len(records), "reason": exc.code,
                "error": str(exc)})
            return JSONResponse(
                {"success": False, "error": exc.code, "message": exc.answer},
                status_code=exc.error.status,
                headers={"Retry-After": str(deps.config.retry_after_s), **cors},
            )
        if deps.ingest_log is not None:
            deps.ingest_log.accepted(project.id, route, len(records))
        return len(records), errors

    def _record(
        self, raw: Any, single: str | None, project: Project, received_at: datetime,
        route: str, browser: bool, request_ip: str, request_ua: str,
    ) -> tuple[bytes, bytes]:
        """One event's Kafka record; raises ``ContractError``."""
        limit = self._deps.config.max_event_bytes
        try:
            size = len(orjson.dumps(raw))
        except orjson.JSONEncodeError:  # orjson writes at most 255 levels of nesting
            raise ContractError("event: nested too deeply") from None
        if size > limit:
            raise ContractError(f"event: over the {limit // 1024} KB event limit",
                                ErrorCode.EVENT_TOO_LARGE)
        msg = parse_message(raw, default_type=single)
        if single is not None and msg.type != single:
            raise ContractError(f"type: this route takes {single!r} messages")
        # A server-side library reports its end user's IP and agent in context; a
        # browser sending directly is the end user itself.
        raw_ip = msg.context.ip or request_ip
        facts = RequestFacts(
            project_id=project.id,
            received_at=received_at,
            anonymized_ip=anonymize_ip(raw_ip),
            geo=self._geo.lookup(raw_ip),
            user_agent=parse_user_agent(end_user_agent(msg, request_ua, browser)),
            source=message_source(msg, route, browser),
            # The backend's own address is no person's: a backend inside an excluded
            # network would otherwise leave out every order it reports.
            excluded=exclusion_reason(project.exclude, msg,
                                      end_user_ip(msg, request_ip, browser)),
        )
        return envelope_record(envelope_fields(msg, facts, self._deps.config.time_limits))

    def _cookieless_id(self, request: Request, project: Project) -> str:
        """A daily-rotating id from IP and user agent, for pixel hits without an anonymous id."""
        day = self._deps.clock().date().isoformat()
        ip = client_ip(request, self._deps.config.trusted_proxies)
        ua = request.headers.get("user-agent", "")
        digest = hashlib.sha256(
            b"|".join([self._deps.pixel_salt, day.encode(), project.id.encode(), ip.encode(),
                       ua.encode()])
        ).hexdigest()
        return f"px_{digest[:24]}"


def _merge_batch_level(event: Any, batch: dict[str, Any]) -> Any:
    """Segment batches may carry ``context`` and ``sentAt`` once for all their events."""
    if not isinstance(event, dict):
        return event
    merged = dict(event)
    if "sentAt" not in merged and "sentAt" in batch:
        merged["sentAt"] = batch["sentAt"]
    shared = batch.get("context")
    if isinstance(shared, dict):
        own = merged.get("context")
        merged["context"] = {**shared, **own} if isinstance(own, dict) else shared
    return merged


def _header_key(request: Request) -> str | None:
    """The write key a request carries in its headers (Basic auth or X-Write-Key)."""
    return (basic_username(request.headers.get("authorization"))
            or request.headers.get("x-write-key") or None)


def _cors(request: Request) -> dict[str, str]:
    origin = request.headers.get("origin")
    if not origin:
        return {}
    # Retry-After must be readable cross-origin, or the SDK cannot honour it.
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin"}
