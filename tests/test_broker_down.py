"""With the broker stopped, nothing is accepted or counted; after it is back, sends succeed."""

from __future__ import annotations

from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from tests.pipeline import now_utc, pipeline_settings, poll, running_pipeline
from tracklane.broker import TansuBroker
from tracklane.collector.producer import ensure_topic

pytestmark = pytest.mark.anyio




def event(name: str, message_id: str) -> dict[str, str]:
    return {"type": "track", "event": name, "messageId": message_id, "anonymousId": "a"}


async def test_broker_down_gives_503_and_nothing_counted_then_recovers(
    own_broker: TansuBroker, store: Client, tmp_path: Path,
) -> None:
    settings = pipeline_settings(own_broker.bootstrap_servers, produce_timeout_s=2.0)
    async with running_pipeline(settings, store) as p:
        auth = p.auth
        now = now_utc()
        ok = await p.http.post("/v1/batch", headers=auth, json={
            "batch": [event("before_down", f"b{i}") for i in range(3)]})
        assert ok.status_code == 200
        await p.wait_inserted(3)

        own_broker.stop()
        for path, body in (("/v1/batch", {"batch": [event("while_down", "d1")]}),
                           ("/v1/track", event("while_down", "d2"))):
            response = await p.http.post(
                path, headers={**auth, "Origin": "https://shop.example"}, json=body)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "7"
            # The browser SDK honours Retry-After only if it may read it cross-origin.
            assert response.headers["access-control-expose-headers"] == "Retry-After"
            assert response.json()["error"] == "broker_unavailable"
        pixel = await p.http.get("/p.gif", params={"k": p.write_key, "e": "while_down"})
        assert pixel.status_code == 503
        ready = await p.http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "kafka": False, "store": True}

        # Same port, empty log: what Kafka never acknowledged is simply not there.
        own_broker.start()
        await ensure_topic(p.kafka)

        async def send_after_up() -> bool:
            response = await p.http.post("/v1/track", headers=auth,
                                         json=event("after_up", "u1"))
            assert response.status_code in (200, 503), response.text
            return response.status_code == 200

        await poll(send_after_up, 30.0, "sends did not succeed after the broker came back",
                   interval_s=0.5)

        async def after_up_counted() -> bool:
            return await p.total("after_up", now) == 1

        await poll(after_up_counted, 20.0, "event sent after recovery was not counted")
        assert await p.total("before_down", now) == 3
        assert await p.total("while_down", now) == 0
        assert (await p.http.get("/readyz")).status_code == 200
