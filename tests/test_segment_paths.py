"""Segment's own paths: analytics.js posts each call to /v1/<type's first letter>, batches
(its batching delivery, and the mobile libraries) to /v1/b, and reports about itself to
/v1/m. Bodies as those libraries send them, through the real collector, Tansu and sink.
"""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from tests.pipeline import now_utc, pipeline_settings, poll, running_pipeline
from tracklane.broker import TansuBroker

pytestmark = pytest.mark.anyio

CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")


def analytics_js(kind: str, anon: str, write_key: str, **fields: object) -> bytes:
    """One call as analytics-next's fetch dispatcher sends it: text/plain JSON, key inside."""
    return orjson.dumps({
        "type": kind, "anonymousId": anon, "messageId": f"ajs-next-{uuid.uuid4().hex}",
        "timestamp": now_utc().isoformat(), "sentAt": now_utc().isoformat(),
        "writeKey": write_key, "integrations": {},
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
        "context": {"page": {"path": "/", "url": "https://shop.example/", "title": "Shop",
                             "referrer": "", "search": ""},
                    "userAgent": CHROME, "locale": "en-US",
                    "library": {"name": "analytics.js", "version": "npm:next-1.84.0"}},
        **fields,
    })


async def test_analytics_js_paths_count_each_call_once(broker: TansuBroker,
                                                       store: Client) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store) as p:
        anon = f"ajs-{uuid.uuid4().hex[:8]}"
        browser = {"Content-Type": "text/plain", "Origin": "https://shop.example",
                   "User-Agent": CHROME}
        sends = [("/v1/p", analytics_js("page", anon, p.write_key, name="Home"))]
        sends += [("/v1/t", analytics_js("track", anon, p.write_key, event=f"click-{n}"))
                  for n in range(5)]
        sends += [("/v1/i", analytics_js("identify", anon, p.write_key, userId="u-ajs",
                                         traits={"plan": "pro"}))]
        for path, body in sends:
            response = await p.http.post(path, content=body, headers=browser)
            assert response.status_code == 200, (path, response.text)
            assert response.json() == {"success": True, "accepted": 1}

        # Batching delivery and the mobile libraries: {batch, sentAt} to /v1/b, Basic auth.
        basic = base64.b64encode(f"{p.write_key}:".encode()).decode()
        batch = orjson.dumps({"batch": [
            orjson.loads(analytics_js("track", anon, p.write_key, event="batched")),
            {"type": "screen", "name": "Cart", "anonymousId": "kotlin-1",
             "messageId": f"kt-{uuid.uuid4().hex}", "timestamp": now_utc().isoformat(),
             "context": {"library": {"name": "analytics-kotlin", "version": "1.16.3"},
                         "app": {"name": "Shop", "version": "2.1"},
                         "os": {"name": "Android", "version": "14"}},
             "integrations": {}, "_metadata": {"bundled": [], "unbundled": []}}],
            "sentAt": now_utc().isoformat(), "writeKey": p.write_key})
        response = await p.http.post("/v1/b", content=batch, headers={
            **browser, "Authorization": f"Basic {basic}", "X-Retry-Count": "0"})
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True, "accepted": 2}

        # Its metrics are taken and dropped.
        response = await p.http.post("/v1/m", content=b'{"series":[]}', headers=browser)
        assert response.status_code == 200 and response.json() == {"success": True}
        assert p.metric("tracklane_client_metrics_total") == 1

        def stored() -> list[tuple[str, str]]:
            return [(str(t), str(s)) for t, s in store.query(
                "SELECT event, source FROM events WHERE project_id = %(p)s ORDER BY event",
                parameters={"p": p.project.id}).result_rows]

        want = sorted([("page_view", "browser"), ("identify", "browser"),
                       ("batched", "browser"), ("screen_view", "mobile")]
                      + [(f"click-{n}", "browser") for n in range(5)])
        await poll(lambda: len(stored()) >= len(want), 30, "events stored")
        assert stored() == want


async def test_unknown_paths_are_404_and_wrong_methods_405_with_allow(
        broker: TansuBroker) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), None) as p:
        for path in ("/v1/nope", "/v1/x", "/v1/tt", "/v2/batch"):
            response = await p.http.post(path, content=b"{}")
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"] == "not_found"
        for path in ("/v1/t", "/v1/b", "/v1/batch", "/v1/track"):
            response = await p.http.get(path)
            assert response.status_code == 405, (path, response.text)
            assert response.json()["error"] == "method_not_allowed"
            assert response.headers["allow"] == "POST"
        # The preflight still answers every ingest path.
        response = await p.http.options("/v1/b", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-retry-count"})
        assert response.status_code == 204
        # analytics.js's batching delivery sends X-Retry-Count: the browser must be let.
        allowed = {h.strip().lower() for h in
                   response.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "x-retry-count"} <= allowed
