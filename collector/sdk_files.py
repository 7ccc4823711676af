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

SERVED = ("tracklane.min.js", "tracklane.esm.js", "outbound.min.js", "webvitals.min.js")
CACHE_CONTROL = "public, max-age=300, stale-while-revalidate=86400"


def default_sdk_dir() -> Path:
    """The SDK built in a checkout (``npm run build`` in sdk_js/)."""
    return Path(__file__).resolve().parent.parent / "sdk_js" / "dist"


class BuiltFiles:
    """Files a build step made (the SDK's, the dashboard's), read when they change on disk
    and answered with an ETag, so a client revalidates instead of downloading again."""

    def __init__(self, directory: Path, build_hint: str) -> None:
        self._dir = directory
        self._hint = build_hint
        self._cache: dict[str, tuple[float, bytes, str]] = {}

    def load(self, name: str) -> tuple[bytes, str]:
        path = self._dir / name
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise RequestError(ErrorCode.SDK_NOT_BUILT,
                               f"{name} is not built: {self._hint}") from None
        found = self._cache.get(name)
        if found is None or found[0] != mtime:
            body = path.read_bytes()
            found = (mtime, body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
            self._cache[name] = found
        return found[1], found[2]

    def answer(self, name: str, request: Request, media_type: str,
               headers: dict[str, str]) -> Response:
        body, etag = self.load(name)
        headers = {**headers, "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)


def sdk_router(sdk_dir: Path) -> APIRouter:
    router = APIRouter()
    files = BuiltFiles(sdk_dir, "run 'npm ci && npm run build' in sdk_js/")

    @router.get("/sdk/{name}", response_class=Response, responses=openapi.SDK_RESPONSES)
    async def sdk(name: str, request: Request) -> Response:
        if name not in SERVED:
            raise RequestError(ErrorCode.NOT_FOUND, f"no SDK file {name!r}")
        return files.answer(name, request, "text/javascript; charset=utf-8",
                            {"Cache-Control": CACHE_CONTROL, "Access-Control-Allow-Origin": "*"})

    return router
