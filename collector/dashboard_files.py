"""Serves the dashboard: ``/`` and its two built files under ``/dashboard/``.

The app (collector/dashboard/, built with esbuild into dist/, which is committed so no
node is needed to run) reads only the query API, with a read key the browser keeps in
``sessionStorage``. The page may load nothing but its own files and talk to nothing but
this origin: the Content-Security-Policy says so, and a page that cannot reach another
origin cannot send the key there either.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response

from tracklane.collector.body import RequestError
from tracklane.collector.sdk_files import BuiltFiles
from tracklane.errors import ErrorCode

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # The fragment never leaves the browser; the path and query should not either.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


def default_dashboard_dir() -> Path:
    return Path(__file__).resolve().parent / "dashboard" / "dist"


def dashboard_router(directory: Path) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = BuiltFiles(directory, "run 'npm ci && npm run build' in collector/dashboard/")

    @router.get("/", response_class=Response)
    async def index(request: Request) -> Response:
        # Always revalidated: a new build's page must name its new files at once.
        return files.answer("index.html", request, "text/html; charset=utf-8",
                            {**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @router.get("/dashboard/{name}", response_class=Response)
    async def asset(name: str, request: Request) -> Response:
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise RequestError(ErrorCode.NOT_FOUND, f"no dashboard file {name!r}")
        return files.answer(name, request, media_type,
                            {**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    return router
