"""What Segment's and RudderStack's libraries fetch when they load.

- Segment: analytics.js (its ``cdnURL``, or the snippet's ``analytics._cdn``) and the
  mobile libraries (their ``cdnHost``) read ``/v1/projects/<writeKey>/settings``.
- RudderStack's JavaScript SDK reads ``<configUrl>/sourceConfig/?writeKey=...``.
- analytics.js loaded by Segment's snippet takes its code-split bundles from the host its
  settings came from (``analytics._cdn``): those requests are sent on to Segment's CDN
  (``TRACKLANE_SEGMENT_CDN``), where the snippet loads analytics.js itself from, so the
  bundles match its version.

Each answer is the smallest one that turns on the library's own delivery to this collector
and nothing more: no destinations, no device-mode integrations, no remote plugins or
middleware, no reports back to either vendor. A site that switches over stops depending on
the vendor's CDN or control plane at load time.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from tracklane.collector import openapi
from tracklane.collector.body import RequestError, basic_username
from tracklane.collector.client_address import client_scheme
from tracklane.collector.config import CollectorConfig
from tracklane.errors import ErrorCode
from tracklane.projects import Project, Projects

# Long enough to spare a collector one fetch per page view, short enough that a revoked
# key stops loading within minutes.
CACHE_CONTROL = "public, max-age=300"
_PREFLIGHT_HEADERS = "Authorization, Content-Type, Accept"
# A bundle's file name: its chunk name and content hash, e.g. "auto-track.bundle.<hash>.js".
_BUNDLE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.js")


def public_base(request: Request, config: CollectorConfig) -> str:
    """The collector's address as the client reached it: ``scheme://host[:port]``."""
    if config.public_url:
        return config.public_url
    # Behind a TLS-terminating proxy the browser spoke https, whatever reached us.
    scheme = client_scheme(request, config.trusted_proxies)
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{scheme}://{host}"


def segment_settings(project: Project, write_key: str, base: str) -> dict[str, Any]:
    """Segment's project settings, as its CDN serves them, for one write key.

    ``Segment.io`` is the only integration, so analytics.js loads no destination code and
    sends only to ``apiHost``. The mobile libraries prefix ``https://`` to ``apiHost``
    themselves; analytics.js reads ``protocol``.
    """
    scheme, _, host = base.partition("://")
    return {
        "integrations": {"Segment.io": {
            "apiKey": write_key, "apiHost": f"{host}/v1", "protocol": scheme,
            "unbundledIntegrations": [], "addBundledMetadata": True,
            "maybeBundledConfigIds": {},
        }},
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}},
                 "identify": {"__default": {"enabled": True}},
                 "group": {"__default": {"enabled": True}}},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
        "consentSettings": {"allCategories": [], "hasUnmappedDestinations": False},
        # Names the project, for whoever reads the settings while debugging a site.
        "tracklane": {"project": project.id},
    }


def rudderstack_source_config(project: Project, write_key: str) -> dict[str, Any]:
    """RudderStack's source configuration: an enabled source with no destinations.

    The SDK checks ``source.id``, ``source.config`` and ``source.destinations``;
    ``statsCollection`` off keeps it from reporting errors and metrics to RudderStack.
    """
    return {
        "isHosted": False,
        "source": {
            "id": project.id, "name": project.id, "writeKey": write_key,
            "workspaceId": "tracklane", "enabled": True,
            "config": {"statsCollection": {"errors": {"enabled": False},
                                           "metrics": {"enabled": False}}},
            "destinations": [],
        },
    }


def client_config_router(projects: Projects, config: CollectorConfig) -> APIRouter:
    router = APIRouter()

    def project_of(write_key: str | None, status: int) -> Project:
        if not write_key:
            raise RequestError(ErrorCode.MISSING_WRITE_KEY, "no write key: send it as the "
                               "writeKey query parameter or the Basic auth username",
                               status=400)
        project = projects.by_write_key(write_key)
        if project is None:
            # Segment's settings CDN answers an unknown key 404; RudderStack's, 401.
            raise RequestError(ErrorCode.INVALID_WRITE_KEY, "unknown write key", status=status)
        return project

    @router.get("/v1/projects/{write_key}/settings", responses=openapi.CLIENT_CONFIG_RESPONSES)
    async def segment(write_key: str, request: Request) -> JSONResponse:
        """Segment's settings for a write key (analytics.js ``cdnURL``, mobile ``cdnHost``)."""
        # Segment's CDN answers 404 for a key it does not know; the libraries expect that.
        project = project_of(write_key, 404)
        return _answer(segment_settings(project, write_key, public_base(request, config)),
                       request)

    async def rudderstack(request: Request) -> JSONResponse:
        """RudderStack's source configuration for a write key (the JS SDK's ``configUrl``)."""
        key = (request.query_params.get("writeKey")
               or basic_username(request.headers.get("authorization")))
        project = project_of(key, 401)
        return _answer(rudderstack_source_config(project, key or ""), request)

    async def preflight(request: Request) -> Response:
        # The SDK sends the key as Basic auth, which makes its GET need a preflight.
        return Response(status_code=204, headers={
            "Access-Control-Allow-Origin": request.headers.get("origin", "*"),
            "Access-Control-Allow-Methods": "GET, OPTIONS",
            "Access-Control-Allow-Headers": _PREFLIGHT_HEADERS,
            "Access-Control-Max-Age": "86400",
            "Vary": "Origin",
        })

    @router.get("/analytics-next/bundles/{name}", status_code=302,
                responses=openapi.BUNDLE_RESPONSES)
    async def analytics_js_bundle(name: str) -> RedirectResponse:
        """analytics.js's code-split bundles, on Segment's CDN.

        The snippet loads analytics.js from Segment's CDN; pointed at this collector for its
        settings, it asks here for the bundles it loads on demand (the query-string and
        link-tracking ones). They are static files tied to that analytics.js version, so
        they are fetched from where it came from.
        """
        if not _BUNDLE.fullmatch(name):
            raise RequestError(ErrorCode.NOT_FOUND, f"no analytics.js bundle {name!r}")
        return RedirectResponse(f"{config.segment_cdn}/analytics-next/bundles/{name}",
                                status_code=302,
                                headers={"Cache-Control": "public, max-age=86400"})

    # The SDK asks for /sourceConfig/ (with the slash); a configUrl typed without it too.
    for path in ("/sourceConfig/", "/sourceConfig"):
        router.add_api_route(path, rudderstack, methods=["GET"],
                             responses=openapi.RUDDERSTACK_CONFIG_RESPONSES,
                             include_in_schema=path.endswith("/"))
        router.add_api_route(path, preflight, methods=["OPTIONS"], status_code=204,
                             response_class=Response, include_in_schema=False)
    return router


def _answer(body: dict[str, Any], request: Request) -> JSONResponse:
    return JSONResponse(body, headers={
        "Cache-Control": CACHE_CONTROL,
        "Access-Control-Allow-Origin": request.headers.get("origin", "*"),
        "Vary": "Origin",
    })
