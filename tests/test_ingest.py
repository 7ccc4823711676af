"""The collector's HTTP contract, end to end through real Tansu and chDB."""

from __future__ import annotations

import gzip
import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from tests.pipeline import (
    Pipeline,
    basic_auth,
    now_utc,
    pipeline_settings,
    poll,
    running_pipeline,
)
from tracklane.broker import TansuBroker

pytestmark = pytest.mark.anyio

CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/120.0.0.0 Safari/537.36")


def track(event: str = "signup", **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "messageId": str(uuid.uuid4()),
            "anonymousId": "anon-1", **fields}


async def post_batch(p: Pipeline, events: list[Any], **kw: Any) -> Any:
    return await p.http.post("/v1/batch", json={"batch": events}, headers=p.auth, **kw)


async def test_bad_input_gets_documented_answers_and_server_keeps_serving(
    broker: TansuBroker, store: Client,
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        auth = basic_auth(p.write_key)
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"content": b'{"batch": [', "headers": auth}, 400, "invalid_json"),
            ({"content": b'{"batch": ["\xff\xfe"]}', "headers": auth}, 400, "invalid_utf8"),
            ({"content": b"", "headers": auth}, 400, "empty_body"),
            ({"content": b"[1, 2]", "headers": auth}, 400, "invalid_body"),
            ({"content": b'{"batch": {}}', "headers": auth}, 400, "invalid_body"),
            ({"content": b"not gzip", "headers": {**auth, "Content-Encoding": "gzip"}},
             400, "invalid_gzip"),
            ({"content": b'{"batch": []}', "headers": basic_auth("wk_nope")},
             401, "invalid_write_key"),
            ({"content": b'{"batch": []}'}, 401, "missing_write_key"),
            ({"content": b'{"batch": []}', "headers": {**auth, "Origin": "https://evil.example"}},
             403, "origin_not_allowed"),
            ({"content": b"x" * (500 * 1024 + 1), "headers": auth}, 413, "body_too_large"),
            # A small gzip body that inflates past the limit is refused the same way.
            ({"content": gzip.compress(b'{"batch": [' + b" " * (600 * 1024) + b"]}"),
              "headers": {**auth, "Content-Encoding": "gzip"}}, 413, "body_too_large"),
        ]
        for kwargs, status, code in cases:
            response = await p.http.post("/v1/batch", **kwargs)
            assert response.status_code == status, (code, response.text)
            assert response.json()["error"] == code
            assert response.json()["message"]
        # A browser must be able to read an error, or its SDK would retry it forever.
        refused = await p.http.post("/v1/batch", content=b'{"batch": []}', headers={
            **basic_auth("wk_nope"), "Origin": "https://shop.example"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://shop.example"

        now = now_utc()
        good = [track("mixed_ok", messageId=f"ok-{i}") for i in range(5)]
        bad: list[tuple[Any, str]] = [
            (track("mixed_ok", properties={"blob": "x" * (33 * 1024)}), "32 KB"),
            ({"type": "track", "messageId": "m1", "anonymousId": "a"}, "event: required"),
            (track("mixed_ok", properties="not an object"), "properties"),
            (track("mixed_ok", timestamp="2100-01-01T00:00:00Z"), "in the future"),
            (track("mixed_ok", timestamp="1999-01-01T00:00:00Z"), "in the past"),
            (track("mixed_ok", timestamp="yesterday"), "timestamp"),
            ({"type": "track", "event": "mixed_ok", "messageId": "m2"}, "anonymousId or userId"),
            ({"type": "purchase", "event": "x", "anonymousId": "a"}, "type"),
            (track("mixed_ok", properties={"revenue": "lots"}), "revenue"),
            ("just a string", "JSON object"),
        ]
        events: list[Any] = []
        bad_indexes: list[int] = []
        for i, (event, _) in enumerate(bad):
            if i < len(good):
                events.append(good[i])
            bad_indexes.append(len(events))
            events.append(event)
        response = await post_batch(p, events)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True and body["accepted"] == len(good)
        errors = body["errors"]
        assert [e["index"] for e in errors] == bad_indexes
        for error, (_, expected) in zip(errors, bad, strict=True):
            assert expected in error["message"], error
        assert errors[0]["error"] == "event_too_large"

        # A single-event route with a bad event answers 400 with the same per-event detail.
        response = await p.http.post("/v1/track", json={"type": "track", "anonymousId": "a"},
                                     headers=auth)
        assert response.status_code == 400
        assert response.json()["errors"][0]["message"].startswith("event: required")

        # The server still serves, and exactly the valid events of the mixed batch count.
        response = await post_batch(p, [track("after_bad")])
        assert response.status_code == 200
        await p.wait_inserted(len(good) + 1)
        assert await p.total("mixed_ok", now) == len(good)
        assert await p.total("after_bad", now) == 1
        rejected = p.metrics.registry.get_sample_value(
            "tracklane_events_rejected_total", {"reason": "invalid_event"})
        assert rejected == len(bad) - 1 + 1  # nine per-event rejections plus the /v1/track one


async def test_every_route_and_key_location_is_accepted(broker: TansuBroker, store: Client) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        wk = p.write_key
        now = now_utc()
        sends = [
            ("/v1/track", {"event": "route_track", "anonymousId": "a"}, basic_auth(wk)),
            ("/v1/page", {"name": "Home", "anonymousId": "a"}, {"X-Write-Key": wk}),
            ("/v1/screen", {"name": "Main", "userId": 42, "writeKey": wk}, {}),
            ("/v1/identify", {"userId": "u1", "traits": {"plan": "pro"}}, basic_auth(wk)),
            ("/v1/group", {"userId": "u1", "groupId": "g1"}, basic_auth(wk)),
            ("/v1/alias", {"userId": "u1", "previousId": "anon-1"}, basic_auth(wk)),
        ]
        for path, body, headers in sends:
            response = await p.http.post(path, json=body, headers=headers)
            assert response.status_code == 200, (path, response.text)
            assert response.json() == {"success": True, "accepted": 1}
        # text/plain JSON (beacons) and gzip bodies.
        response = await p.http.post(
            "/v1/batch", content=orjson.dumps({"writeKey": wk, "batch": [track("route_text")]}),
            headers={"Content-Type": "text/plain;charset=UTF-8",
                     "Origin": "https://shop.example"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        response = await p.http.post(
            "/v1/batch", content=gzip.compress(orjson.dumps({"batch": [track("route_gzip")]})),
            headers={**p.auth, "Content-Encoding": "gzip", "Content-Type": "application/json"})
        assert response.status_code == 200
        await p.wait_inserted(8)
        for event in ("route_track", "page_view", "screen_view", "identify", "group", "alias",
                      "route_text", "route_gzip"):
            assert await p.total(event, now) == 1, event


async def test_pixel_answers_a_gif_and_counts(broker: TansuBroker, store: Client) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        now = now_utc()
        params = {"k": p.write_key, "mid": "px-1", "aid": "anon-px",
                  "url": "https://shop.example/a?utm_source=news&gclid=G1", "ref": "https://www.google.com/",
                  "ts": str(int(now.timestamp() * 1000)), "p": '{"plan": "pro"}', "p.color": "red"}
        response = await p.http.get("/p.gif", params=params, headers={"User-Agent": CHROME_UA})
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.headers["cache-control"].startswith("no-store")
        assert len(response.content) == 43 and response.content.startswith(b"GIF89a")
        response = await p.http.get("/p.gif", params={"k": p.write_key, "e": "signup"})
        assert response.status_code == 200
        response = await p.http.get("/p.gif", params={"k": "wk_nope"})
        assert response.status_code == 401
        await p.wait_inserted(2)
        assert await p.total("page_view", now) == 1
        assert await p.total("signup", now) == 1


async def test_enrichment_is_stored_and_the_raw_ip_is_not(
    broker: TansuBroker, store: Client,
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        sent = now_utc()
        event = track(
            "purchase", userId="u-9", timestamp=(sent - timedelta(hours=1)).isoformat(),
            sentAt=sent.isoformat(),
            properties={"revenue": "19.99", "currency": "eur", "sku": "A1"},
            context={"ip": "203.0.113.77", "userAgent": CHROME_UA, "sessionId": 1700000000000,
                     "locale": "de-DE", "library": {"name": "analytics-python", "version": "2.3"},
                     "page": {"url": "https://shop.example/p?utm_source=news&utm_medium=mail"
                                     "&fbclid=F1", "referrer": "https://www.bing.com/search",
                              "title": "Product"}},
        )
        response = await post_batch(p, [event])
        assert response.status_code == 200
        await p.wait_inserted(1)
        row = store.query(
            "SELECT event, user_id, distinct_id, session_id, path, referrer_domain, utm_source,"
            " utm_medium, click_id_type, browser, os, device_type, is_bot, ip, locale,"
            " library_name, revenue, currency, JSONExtractString(properties, 'sku'),"
            " timestamp, received_at FROM events WHERE project_id = %(p)s",
            parameters={"p": p.project.id},
        ).result_rows
        assert len(row) == 1
        (name, user, distinct, session, path, ref_domain, utm_source, utm_medium, click_type,
         browser, os_, device, is_bot, ip, locale, library, revenue, currency, sku, ts,
         received) = row[0]
        assert (name, user, distinct, session) == ("purchase", "u-9", "u-9", "1700000000000")
        assert (path, ref_domain, utm_source, utm_medium, click_type) == (
            "/p", "bing.com", "news", "mail", "fbclid")
        assert (browser, os_, device, is_bot) == ("Chrome", "Windows", "desktop", 0)
        assert ip == "203.0.113.0"
        assert (locale, library, str(revenue), currency, sku) == (
            "de-DE", "analytics-python", "19.9900", "EUR", "A1")
        # No sentAt skew here, so event time sits one hour before arrival.
        assert abs((received - ts).total_seconds() - 3600) < 1
        raw_ip = store.query("SELECT count() FROM events WHERE project_id = %(p)s AND "
                             "(ip = '203.0.113.77' OR position(properties, '203.0.113.77') > 0)",
                             parameters={"p": p.project.id}).result_rows[0][0]
        assert raw_ip == 0


async def test_health_readiness_and_metrics(broker: TansuBroker, store: Client) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        assert (await p.http.get("/healthz")).json() == {"status": "ok"}
        ready = await p.http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "kafka": True, "store": True}
        await post_batch(p, [track("metered"), {"type": "track"}])
        await p.http.post("/v1/batch", content=b"{", headers=basic_auth(p.write_key))
        await p.wait_inserted(1)
        text = (await p.http.get("/metrics")).text
        for line in (
            'tracklane_events_received_total{route="batch"} 2.0',
            'tracklane_events_rejected_total{reason="invalid_event"} 1.0',
            'tracklane_events_rejected_total{reason="invalid_json"} 1.0',
            "tracklane_events_produced_total 1.0",
            'tracklane_ingest_request_seconds_count{route="batch"} 1.0',
            "tracklane_stream_consumed_total 1.0",
            "tracklane_stream_inserted_total 1.0",
        ):
            assert line in text, line

        async def progress_published() -> bool:
            text = (await p.http.get("/metrics")).text
            return ('tracklane_stream_lag{partition="0"} 0.0' in text
                    and 'tracklane_stream_lag{partition="1"} 0.0' in text
                    and 'tracklane_stream_watermark_seconds{partition="1"}' in text)

        await poll(progress_published, 10, "lag and watermark were not published")


async def test_accepted_and_refused_events_are_counted_per_minute_in_the_store(
    broker: TansuBroker, store: Client,
) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store) as p:
        assert p.ingest_log is not None
        mixed = [track("counted"), track("counted"), {"type": "track", "anonymousId": "a"}]
        assert (await post_batch(p, mixed)).status_code == 200
        assert (await p.http.get("/p.gif", params={"k": p.write_key})).status_code == 200
        refused = await p.http.post("/v1/track", json=track("x"), headers=basic_auth("wk_no"))
        assert refused.status_code == 401
        assert p.ingest_log.flush() > 0
        rows = store.query(
            "SELECT project_id, route, outcome, reason, sum(events) FROM ingest_minute "
            "WHERE project_id IN (%(p)s, '') AND minute >= %(m)s "
            "GROUP BY project_id, route, outcome, reason",
            parameters={"p": p.project.id, "m": now_utc() - timedelta(minutes=2)},
        ).result_rows
        got = {tuple(r[:4]): r[4] for r in rows}
        assert got[(p.project.id, "batch", "accepted", "")] == 2
        assert got[(p.project.id, "batch", "rejected", "invalid_event")] == 1
        assert got[(p.project.id, "pixel", "accepted", "")] == 1
        assert got[("", "track", "rejected", "invalid_write_key")] >= 1
