"""A worker's forwarding to the owner of the store (collector/upstream.py), at its edges:
a real owner on a real Unix socket, one that is gone, and a body too large to forward."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tracklane.collector.delivery import LogProgress, LogReport
from tracklane.collector.ingest_log import CountRow
from tracklane.collector.upstream import Upstream, UpstreamConfig, owner_router
from tracklane.runner import HttpServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def owner(tmp_path: Path) -> AsyncIterator[tuple[Path, list[CountRow]]]:
    """An owner app on a Unix socket: echoes what it got, takes ingest counts, and answers
    a journal's report with the sink's progress (a worker's report, as the count row)."""
    counts: list[CountRow] = []

    def reported(worker: str, report: LogReport) -> LogProgress:
        counts.append((datetime(2026, 1, 1), worker, str(report.generation),
                       str(dict(report.acked)), "", 0))
        return LogProgress(2, {1: {0: 7}, 2: {0: 42}})

    app = FastAPI()
    app.include_router(owner_router(reported, counts.extend))

    @app.api_route("/echo", methods=["GET", "POST"])
    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse({"method": request.method, "query": request.url.query,
                             "auth": request.headers.get("authorization"),
                             "length": len(body)}, status_code=207,
                            headers={"x-from-owner": "yes"})

    path = tmp_path / "owner.sock"
    server = HttpServer(app, "127.0.0.1", 0, graceful_s=1, uds=path)
    await server.start()
    try:
        yield path, counts
    finally:
        await server.stop()


def _through(upstream: Upstream) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream),
                             base_url="http://worker")


async def test_requests_and_answers_pass_unchanged(owner: tuple[Path, list[CountRow]]) -> None:
    path, counts = owner
    upstream = Upstream(UpstreamConfig(path, max_body_bytes=1000, worker="3"))
    await upstream.start()
    try:
        async with _through(upstream) as http:
            answer = await http.post("/echo?a=1&b=%20x", content=b"x" * 1000,
                                     headers={"Authorization": "Bearer rk_1"})
        assert answer.status_code == 207
        assert answer.headers["x-from-owner"] == "yes"
        assert answer.json() == {"method": "POST", "query": "a=1&b=%20x",
                                 "auth": "Bearer rk_1", "length": 1000}
        # What the sink inserted, for the journal, in answer to its report; counts, for
        # ingest_minute.
        await upstream.refresh_inserted()
        assert upstream.inserted() == LogProgress(2, {1: {0: 7}, 2: {0: 42}})
        row: CountRow = (datetime(2026, 12, 5, 17, 0), "p", "pixel", "accepted", "", 3)
        await asyncio.to_thread(upstream.write_counts, [row])
        assert counts == [(datetime(2026, 1, 1), "3", "None", "{}", "", 0), row]
    finally:
        await upstream.stop()


async def test_a_body_too_large_is_refused_before_forwarding(
        owner: tuple[Path, list[CountRow]]) -> None:
    upstream = Upstream(UpstreamConfig(owner[0], max_body_bytes=1000))
    try:
        async with _through(upstream) as http:
            answer = await http.post("/echo", content=b"x" * 1001)
        assert answer.status_code == 413
        assert answer.json()["error"] == "body_too_large"
    finally:
        await upstream.stop()


async def test_an_owner_that_is_gone_answers_503(tmp_path: Path) -> None:
    # A socket file nobody listens on: what a killed owner leaves.
    path = tmp_path / "owner.sock"
    socket.socket(socket.AF_UNIX).bind(str(path))
    upstream = Upstream(UpstreamConfig(path, max_body_bytes=1000))
    try:
        async with _through(upstream) as http:
            answer = await http.get("/v1/stats/minutes")
        assert answer.status_code == 503
        assert answer.json() == {"success": False, "error": "store_unavailable",
                                 "message": "the store is not reachable; retry later"}
        with pytest.raises(httpx.HTTPError):
            await upstream.refresh_inserted()
    finally:
        await upstream.stop()
