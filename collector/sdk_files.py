"""Serves the built browser SDK at stable paths, e.g. ``/sdk/tracklane.min.js``.

Stable URLs let a site paste one script tag and get fixes without editing it, so the
cache is short and revalidated by ETag rather than long-lived.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, Request, Response

from tracklane.collector import openapi
from tracklane.collector.body import RequestError
from tracklane.errors import ErrorCode

SERVED = ("tracklane.min.js", "tracklane.esm.js", "outbound.min.js")
CACHE_CONTROL = "public, max-age=300, stale-while-revalidate=86400"


def default_sdk_dir() -> Path:
    """The SDK built in a checkout (``npm run build`` in sdk_js/)."""
    return Path(__file__).resolve().parent.parent / "sdk_js" / "dist"


def sdk_router(sdk_dir: Path) -> APIRouter:
    router = APIRouter()
    cache: dict[str, tuple[float, bytes, str]] = {}

    def load(name: str) -> tuple[bytes, str]:
        path = sdk_dir / name
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise RequestError(ErrorCode.SDK_NOT_BUILT, f"{name} is not built: run "
                               "'npm ci && npm run build' in sdk_js/") from None
        found = cache.get(name)
        if found is None or found[0] != mtime:
            body = path.read_bytes()
            found = (mtime, body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
            cache[name] = found
        return found[1], found[2]

    @router.get("/sdk/{name}", response_class=Response, responses=openapi.SDK_RESPONSES)
    async def sdk(name: str, request: Request) -> Response:
        if name not in SERVED:
            raise RequestError(ErrorCode.NOT_FOUND, f"no SDK file {name!r}")
        body, etag = load(name)
        headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag,
                   "Access-Control-Allow-Origin": "*"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)

    return router
