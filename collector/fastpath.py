"""The ingest routes served straight from ASGI, ahead of FastAPI's routing and dependencies.

A pixel hit costs the collector a few hundred microseconds of its own work; FastAPI's
per-request machinery (route matching over every route, dependency solving, exception
middleware) about doubled that. The routes stay declared on the FastAPI app too, so the
OpenAPI document and anything that reaches them another way behave the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from collector.body import RequestError

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
        await response(scope, receive, send)
