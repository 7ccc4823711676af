"""The ingest routes served straight from ASGI, ahead of FastAPI's routing and middleware.

A pixel hit costs the collector a few hundred microseconds of its own work; FastAPI's
per-request machinery (route matching over every route, dependency solving, and each
middleware layer: server errors, telemetry, body limits) about doubled that. So
:class:`IngestApp` serves them outside the whole stack. The routes stay
declared on the FastAPI app too, so the OpenAPI document and anything that reaches them
another way behave the same.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from collector.body import RequestError

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, RequestError], Response]


class IngestApp(FastAPI):
    """FastAPI that serves its ``ingest_routes`` itself, before anything else (its
    per-request telemetry and middleware included); ``ingest_error`` answers their
    ``RequestError``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest_routes: dict[tuple[str, str], Handler] = {}
        self.ingest_error: ErrorHandler | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (self.ingest_routes.get((scope["method"], scope["path"]))
                   if scope["type"] == "http" else None)
        if handler is None or self.ingest_error is None:
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except RequestError as err:
            response = self.ingest_error(request, err)
        except Exception:
            # What Starlette's server-error middleware would do, in the answers' own shape.
            log.exception("ingest request failed", extra={"path": scope["path"]})
            response = JSONResponse({"success": False, "error": "internal_error",
                                     "message": "the collector failed; retry later"}, 500)
        await response(scope, receive, send)
