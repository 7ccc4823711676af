"""The ingest routes served straight from ASGI, ahead of FastAPI's routing and middleware.

A pixel hit costs the collector a few hundred microseconds of its own work; FastAPI's
per-request machinery (route matching over every route, dependency solving, and each
middleware layer: server errors, telemetry, body limits) about doubled that. So
:class:`IngestApp` puts :class:`IngestRoutes` outside the whole stack. The routes stay
declared on the FastAPI app too, so the OpenAPI document and anything that reaches them
another way behave the same.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from collector.body import RequestError

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, RequestError], Response]


class IngestRoutes:
    """ASGI middleware: ``(method, path)`` pairs in ``routes`` skip the framework."""

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Handler],
                 on_error: ErrorHandler) -> None:
        self._app = app
        self._routes = dict(routes)
        self._on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (self._routes.get((scope["method"], scope["path"]))
                   if scope["type"] == "http" else None)
        if handler is None:
            await self._app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except RequestError as err:
            response = self._on_error(request, err)
        except Exception:
            # What Starlette's server-error middleware would do, in the answers' own shape.
            log.exception("ingest request failed", extra={"path": scope["path"]})
            response = JSONResponse({"success": False, "error": "internal_error",
                                     "message": "the collector failed; retry later"}, 500)
        await response(scope, receive, send)


class IngestApp(FastAPI):
    """FastAPI that hands its ingest routes to :class:`IngestRoutes` before anything else,
    its per-request telemetry and middleware included."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest_routes: dict[tuple[str, str], Handler] = {}
        self.ingest_error: ErrorHandler | None = None
        self._ingest: IngestRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ingest_error is not None and scope["type"] == "http" and \
                (scope["method"], scope["path"]) in self.ingest_routes:
            if self._ingest is None:
                self._ingest = IngestRoutes(super().__call__, self.ingest_routes,
                                            self.ingest_error)
            await self._ingest(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
