"""A collector worker's link to the process that owns the store, in ``tracklane up --workers``.

chDB opens its store in one process, so in ``up`` with workers one process (the owner)
keeps Tansu, the sink, the store and the alerts, and serves its app on a Unix socket in
a private (0700) temporary directory. The workers serve the public port, send
events to Kafka themselves, and reach the owner for the rest:

* requests to the routes that read or change the store (stats, queries, alerts and
  silences, users, persons) and ``/metrics`` are forwarded to it unchanged, and its answer
  is streamed back unchanged;
* a worker's journal tells it which generation of the log it forwards to and asks it what
  the sink has inserted (``POST /internal/inserted``), to know what it may forget;
* the per-minute ingest counts go to it (``POST /internal/ingest-counts``), which adds
  them to ``ingest_minute``.

Forwarding is hand-written over httpx rather than a proxy library: it is one request
and one streamed answer on a local socket, with no rewriting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, TypeAdapter
from starlette.types import Message, Receive, Scope, Send

from tracklane.collector.delivery import LogProgress, LogReport
from tracklane.collector.ingest_log import CountRow, CountsWriter
from tracklane.errors import ErrorCode

log = logging.getLogger(__name__)

INSERTED_PATH = "/internal/inserted"
COUNTS_PATH = "/internal/ingest-counts"
# Meaningful for one connection only (RFC 9110, 7.6.1), and the length httpx sets itself.
_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"content-length",
})


class Report(BaseModel):
    """``POST /internal/inserted``: a worker's journal (see ``LogReport``)."""

    worker: str
    generation: int | None
    acked: dict[int, dict[int, int]] = {}


class Progress(BaseModel):
    """Its answer (see ``LogProgress``)."""

    generation: int
    inserted: dict[int, dict[int, int]]


# The owner's side: a worker's report in, the sink's progress out.
Reported = Callable[[str, LogReport], LogProgress]


_COUNT_ROWS = TypeAdapter(list[CountRow])


@dataclass(frozen=True)
class UpstreamConfig:
    socket: Path
    max_body_bytes: int
    worker: str = "0"
    poll_s: float = 0.25
    timeout_s: float = 30.0


class Upstream:
    """The owner over its socket. Called as an ASGI app, it forwards the request."""

    def __init__(self, config: UpstreamConfig) -> None:
        self._config = config
        base = "http://tracklane-up"
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(config.socket)), base_url=base,
            timeout=config.timeout_s)
        # Forwarded requests carry their client's headers, and only those.
        self._client.headers.clear()
        # The ingest counts are written from a thread (see IngestLog).
        self._sync = httpx.Client(transport=httpx.HTTPTransport(uds=str(config.socket)),
                                  base_url=base, timeout=config.timeout_s)
        self._progress: LogProgress | None = None
        self._report: Callable[[], LogReport] | None = None
        self._poller: asyncio.Task[None] | None = None

    async def start(self, report: Callable[[], LogReport] | None = None) -> None:
        """With a journal's ``report``, tell the owner about it and keep ``inserted()``
        current (without one, nothing reads it)."""
        if report is not None:
            self._report = report
            with contextlib.suppress(httpx.HTTPError):
                await self.refresh_inserted()
            self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._client.aclose()
        self._sync.close()

    def inserted(self) -> LogProgress | None:
        """The sink's progress at the last answer (a journal's ``Inserted``)."""
        return self._progress

    async def refresh_inserted(self) -> None:
        report = self._report() if self._report is not None else LogReport(None)
        body = Report(worker=self._config.worker, generation=report.generation,
                      acked={g: dict(offsets) for g, offsets in report.acked.items()})
        answer = await self._client.post(INSERTED_PATH, content=body.model_dump_json(),
                                         headers={"content-type": "application/json"})
        answer.raise_for_status()
        progress = Progress.model_validate_json(answer.content)
        self._progress = LogProgress(progress.generation, progress.inserted)

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh_inserted()
            except httpx.HTTPError as exc:
                # The journal keeps everything meanwhile; nothing is lost by waiting.
                log.debug("owner not answering", extra={"error": repr(exc)})
            await asyncio.sleep(self._config.poll_s)

    async def store_ready(self) -> bool:
        """Whether the owner answers and its store does (its ``/readyz``)."""
        try:
            answer = await self._client.get("/readyz", timeout=2.0)
            return bool(answer.json().get("store") is True)
        except (httpx.HTTPError, ValueError):
            return False

    def write_counts(self, rows: Sequence[CountRow]) -> None:
        """An ``IngestLog`` writer: the rows go to the owner, which inserts them."""
        body = orjson.dumps([[row[0].isoformat(), *row[1:]] for row in rows])
        self._sync.post(COUNTS_PATH, content=body,
                        headers={"content-type": "application/json"}).raise_for_status()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._body(receive)
        if body is None:
            await _error(send, ErrorCode.BODY_TOO_LARGE,
                         f"the body exceeds {self._config.max_body_bytes} bytes")
            return
        path = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}"
                                if scope["query_string"] else "")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        request = self._client.build_request(scope["method"], path, headers=headers,
                                             content=body)
        try:
            answer = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.error("owner of the store not reachable", extra={"error": repr(exc)})
            await _error(send, ErrorCode.STORE_UNAVAILABLE,
                         "the store is not reachable; retry later")
            return
        try:
            await send({"type": "http.response.start", "status": answer.status_code,
                        "headers": [(k, v) for k, v in answer.headers.raw
                                    if k.lower() not in _HOP_BY_HOP - {b"content-length"}]})
            async for chunk in answer.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await answer.aclose()

    async def _body(self, receive: Receive) -> bytes | None:
        """The request body; None past ``max_body_bytes``."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._config.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


async def _error(send: Send, error: ErrorCode, message: str) -> None:
    body = orjson.dumps({"success": False, "error": error.code, "message": message})
    await send({"type": "http.response.start", "status": error.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def owner_router(reported: Reported, write: CountsWriter) -> APIRouter:
    """The owner's side: the routes its workers call, on its socket only."""
    router = APIRouter(include_in_schema=False)

    @router.post(INSERTED_PATH)
    async def inserted_now(report: Report) -> Progress:
        progress = reported(report.worker, LogReport(report.generation, report.acked))
        return Progress(generation=progress.generation,
                        inserted={g: dict(offsets) for g, offsets in progress.inserted.items()})

    @router.post(COUNTS_PATH, status_code=204, response_class=Response)
    async def add_counts(request: Request) -> Response:
        rows = _COUNT_ROWS.validate_json(await request.body())
        # A failure answers 500 and the worker keeps its counts for the next try.
        await asyncio.to_thread(write, rows)
        return Response(status_code=204)

    return router
