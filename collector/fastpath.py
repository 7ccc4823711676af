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
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from tracklane.collector.body import RequestError
from tracklane.errors import ErrorCode

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, RequestError], Response]


class IndexedHeaders(Headers):
    """Starlette's request headers, looked up through a dict made once. An ingest request
    reads about ten of them (agent, origin, write key, fetch metadata, proxies...), and
    ``Headers`` scans the raw list for each: a twentieth of a pixel hit's time, more with
    a browser's dozen headers. The first of repeated headers wins, as in ``Headers``."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        self._index: dict[str, str] = {}
        for key, value in self.raw:
            self._index.setdefault(key.decode("latin-1"), value.decode("latin-1"))

    def __getitem__(self, key: str) -> str:
        return self._index[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        return self._index.get(key.lower(), default)

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower() in self._index


class IngestRequest(Request):
    """A request whose headers are :class:`IndexedHeaders`."""

    @property
    def headers(self) -> Headers:
        indexed = self.__dict__.get("_indexed_headers")
        if indexed is None:
            indexed = self.__dict__["_indexed_headers"] = IndexedHeaders(self.scope)
        return indexed


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
        request = IngestRequest(scope, receive, send)
        try:
            response = await handler(request)
        except RequestError as err:
            response = self.ingest_error(request, err)
        except Exception:
            # What Starlette's server-error middleware would do, in the answers' own shape.
            log.exception("ingest request failed", extra={"path": scope["path"]})
            response = JSONResponse({"success": False, "error": ErrorCode.INTERNAL_ERROR.code,
                                     "message": "the collector failed; retry later"},
                                    ErrorCode.INTERNAL_ERROR.status)
        await response(scope, receive, send)
