"""What Segment's and RudderStack's libraries fetch at load, RudderStack's beacon route, and
a recorded analytics-kotlin upload: through a real collector socket, Tansu and the sink.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from tests.pipeline import basic_auth, now_utc, pipeline_settings, poll, running_pipeline
from tests.recorded import analytics_kotlin_upload
from tracklane.broker import TansuBroker, free_port
from tracklane.runner import HttpServer

pytestmark = pytest.mark.anyio



async def test_segment_settings_point_the_libraries_at_the_collector(
        broker: TansuBroker) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), None) as p:
        response = await p.http.get(f"/v1/projects/{p.write_key}/settings",
                                    headers={"Origin": "https://shop.example"})
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        settings = response.json()
        # Only Segment.io: analytics.js loads no destination and sends only here.
        assert list(settings["integrations"]) == ["Segment.io"]
        segment = settings["integrations"]["Segment.io"]
        assert (segment["apiKey"], segment["apiHost"], segment["protocol"]) == (
            p.write_key, "collector/v1", "http")
        assert settings["remotePlugins"] == [] and settings["enabledMiddleware"] == {}

        response = await p.http.get("/v1/projects/wk_nobody/settings")
        assert response.status_code == 404
        assert response.json()["error"] == "invalid_write_key"

    # Behind a proxy the request's host is not the public one: TRACKLANE_PUBLIC_URL is.
    settings_ = pipeline_settings(broker.bootstrap_servers,
                                  public_url="https://t.shop.example/")
    async with running_pipeline(settings_, None) as p:
        segment = (await p.http.get(f"/v1/projects/{p.write_key}/settings")).json()[
            "integrations"]["Segment.io"]
        assert (segment["apiHost"], segment["protocol"]) == ("t.shop.example/v1", "https")


async def test_analytics_js_bundles_are_sent_on_to_segments_cdn(broker: TansuBroker) -> None:
    settings = pipeline_settings(broker.bootstrap_servers,
                                 segment_cdn="https://mirror.shop.example/segment/")
    async with running_pipeline(settings, None) as p:
        name = "queryString.bundle.34b193ada8fe288d1bd1.js"
        response = await p.http.get(f"/analytics-next/bundles/{name}")
        assert response.status_code == 302
        assert response.headers["location"] == (
            f"https://mirror.shop.example/segment/analytics-next/bundles/{name}")
        for bad in ("..%2Fsecret.js", "bundle.css", ".js"):
            response = await p.http.get(f"/analytics-next/bundles/{bad}")
            assert response.status_code == 404, (bad, response.text)
            assert response.json()["error"] == "not_found"


async def test_rudderstack_source_config_has_the_source_and_no_destinations(
        broker: TansuBroker) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), None) as p:
        # As the JS SDK v3 asks: the key in the query and as Basic auth.
        response = await p.http.get("/sourceConfig/", params={
            "p": "npm", "v": "3.34.1", "build": "modern", "writeKey": p.write_key,
            "lockIntegrationsVersion": "false", "lockPluginsVersion": "false",
        }, headers={**basic_auth(p.write_key), "Origin": "https://shop.example"})
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        source = response.json()["source"]
        assert source["id"] == p.project.id and source["enabled"] is True
        assert source["destinations"] == [] and isinstance(source["config"], dict)

        # Basic auth alone, and the path without its slash.
        response = await p.http.get("/sourceConfig", headers=basic_auth(p.write_key))
        assert response.status_code == 200 and response.json()["source"]["id"] == p.project.id

        # Its GET carries Authorization, so the browser asks first.
        response = await p.http.options("/sourceConfig/", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert response.status_code == 204
        assert "authorization" in response.headers["access-control-allow-headers"].lower()

        for params, status, code in (({}, 400, "missing_write_key"),
                                     ({"writeKey": "wk_nobody"}, 401, "invalid_write_key")):
            response = await p.http.get("/sourceConfig/", params=params)
            assert response.status_code == status, response.text
            assert response.json()["error"] == code


async def test_rudderstack_beacon_and_a_recorded_kotlin_upload_are_counted(
        broker: TansuBroker, store: Client) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store) as p:
        collector_port = free_port()
        server = HttpServer(p.app, "127.0.0.1", collector_port)
        await server.start()
        try:
            base = f"http://127.0.0.1:{collector_port}"
            now = now_utc().isoformat().replace("+00:00", "Z")
            # One keep-alive connection for both, as a phone's HTTP stack keeps one.
            async with httpx.AsyncClient(base_url=base) as http:
                # RudderStack's BeaconQueue: a text/plain Blob, the key in the query.
                beacon = ('{"batch":[{"type":"track","event":"Beaconed","anonymousId":"rs-1",'
                          f'"messageId":"{uuid.uuid4()}","originalTimestamp":"{now}",'
                          '"channel":"web","context":{"library":{"name":'
                          '"RudderLabs JavaScript SDK","version":"3.34.1"}},'
                          f'"properties":{{}}}}],"sentAt":"{now}"}}')
                response = await http.post(
                    f"/beacon/v1/batch?writeKey={p.write_key}", content=beacon,
                    headers={"Content-Type": "text/plain;charset=UTF-8",
                             "Origin": "https://shop.example"})
                assert response.status_code == 200, response.text
                assert response.json() == {"success": True, "accepted": 1}

                # analytics-kotlin's upload: its batch file as is, gzipped, streamed
                # (chunked, no Content-Length), the key only in the body, no auth header.
                body = analytics_kotlin_upload(p.write_key, now)

                async def stream() -> AsyncIterator[bytes]:
                    for at in range(0, len(body), 512):
                        yield body[at:at + 512]

                response = await http.post("/v1/b", content=stream(), headers={
                    "Content-Type": "text/plain", "Content-Encoding": "gzip",
                    "User-Agent": "analytics-kotlin/1.16.3"})
                assert response.status_code == 200, response.text
                assert response.json() == {"success": True, "accepted": 3}
        finally:
            await server.stop()

        def stored() -> list[tuple[str, ...]]:
            return [tuple(str(v) for v in row) for row in store.query(
                "SELECT event, source, user_id, library_name FROM events "
                "WHERE project_id = %(p)s ORDER BY event", parameters={"p": p.project.id},
            ).result_rows]

        await poll(lambda: len(stored()) >= 4, 30, "events stored")
        assert stored() == [
            ("Application Opened", "mobile", "", "analytics-kotlin"),
            ("Beaconed", "browser", "", "RudderLabs JavaScript SDK"),
            ("identify", "mobile", "user-42", "analytics-kotlin"),
            ("screen_view", "mobile", "", "analytics-kotlin"),
        ]
