"""The built browser SDK is served at a stable path with revalidating cache headers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tracklane.collector.app import error_response
from tracklane.collector.body import RequestError
from tracklane.collector.sdk_files import sdk_router


def app_for(sdk_dir: Path) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(RequestError)
    async def _error(request: Request, err: RequestError) -> JSONResponse:
        return error_response(err)

    app.include_router(sdk_router(sdk_dir))
    return app


@pytest.mark.anyio
async def test_sdk_is_served_with_etag_and_a_clear_error_when_not_built(tmp_path: Path) -> None:
    transport = httpx.ASGITransport(app=app_for(tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://c") as http:
        missing = await http.get("/sdk/tracklane.min.js")
        assert missing.status_code == 404
        assert missing.json()["error"] == "sdk_not_built"
        assert "npm run build" in missing.json()["message"]

        (tmp_path / "tracklane.min.js").write_text("window.tracklane={};")
        first = await http.get("/sdk/tracklane.min.js")
        assert first.status_code == 200 and first.text == "window.tracklane={};"
        assert first.headers["content-type"].startswith("text/javascript")
        assert "max-age=300" in first.headers["cache-control"]
        again = await http.get("/sdk/tracklane.min.js",
                               headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""

        (tmp_path / "secrets.txt").write_text("no")
        assert (await http.get("/sdk/secrets.txt")).status_code == 404
        assert (await http.get("/sdk/..%2Fsecrets.txt")).status_code == 404
