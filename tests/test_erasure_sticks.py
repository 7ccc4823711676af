"""An erasure sticks: the erased person's events still on their way are never counted.

The real collector app, Kafka (Tansu) and sink, on the session's chDB. Events sent just
before ``DELETE /v1/users/<id>``, retried or sent late after it, or replayed from Kafka
once the dedup window has forgotten their ids, are dropped by the sink.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.client import Client

from tests.pipeline import (
    Pipeline,
    new_project,
    now_utc,
    pipeline_settings,
    read_topic,
    running_pipeline,
)
from tracklane.broker import TansuBroker

pytestmark = [pytest.mark.anyio, pytest.mark.waits_on_mutations]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def person_rows(store: Client, project_id: str, user_id: str, device: str) -> int:
    """The person's rows, as the erasure defines them: naming the user id, or anonymous
    events of their device."""
    return int(store.command(
        "SELECT count() FROM events WHERE project_id = %(p)s AND (user_id = %(u)s OR "
        "previous_id = %(u)s OR anonymous_id = %(u)s OR (user_id = '' AND anonymous_id = %(d)s))",
        parameters={"p": project_id, "u": user_id, "d": device}))  # type: ignore[arg-type]


async def send(p: Pipeline, batch: list[dict[str, Any]]) -> None:
    response = await p.http.post("/v1/batch", json={"batch": batch}, headers=p.auth)
    assert response.status_code == 200, response.text


def earlier_life(user: str, device: str) -> list[dict[str, Any]]:
    return [
        {"type": "page", "name": "home", "anonymousId": device, "messageId": f"{user}-p"},
        {"type": "identify", "userId": user, "anonymousId": device,
         "messageId": f"{user}-i"},
        *({"type": "track", "event": "race", "userId": user, "anonymousId": device,
           "messageId": f"{user}-t{i}"} for i in range(3)),
    ]


async def test_events_sent_around_an_erasure_are_never_counted(
    broker: TansuBroker, store: Client,
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    project = new_project("sticks")
    async with running_pipeline(settings, store, project) as p:
        started = now_utc()
        await send(p, earlier_life("racer", "dev-racer"))
        await p.wait_inserted(5)
        assert person_rows(store, project.id, "racer", "dev-racer") == 5

        # Accepted, then erased straight away: the sink may not have read it yet.
        await send(p, [{"type": "track", "event": "race", "userId": "racer",
                        "messageId": "racer-last"}])
        erased = await p.http.delete("/v1/users/racer", headers=bearer(project.read_keys[0]))
        assert erased.status_code == 200, erased.text
        before = (now_utc() - timedelta(minutes=5)).isoformat()
        # After it: the client's retry of that event, a late batch of the offline app
        # (events that happened before the erasure), and someone else's event.
        await send(p, [
            {"type": "track", "event": "race", "userId": "racer", "messageId": "racer-last"},
            {"type": "track", "event": "race", "userId": "racer", "timestamp": before,
             "messageId": "racer-offline"},
            {"type": "page", "name": "late", "anonymousId": "dev-racer", "timestamp": before,
             "messageId": "racer-offline-anon"},
            {"type": "track", "event": "race", "userId": "bystander", "messageId": "by-1"},
        ])
        await p.wait_inserted(10)
        assert person_rows(store, project.id, "racer", "dev-racer") == 0
        assert await p.total("race", started) == 1  # the bystander's
        # Dropped as erased: the late batch (two events), and the last event too unless the
        # sink had stored it before the erasure, which then deleted it. The client's retry
        # of it arrived after the erasure (no timestamp: it happened then too), so it is
        # no erased event: it is dropped as a duplicate of the first copy either way.
        assert p.metric("tracklane_stream_erased_total") in (2, 3)
        assert p.metric("tracklane_stream_duplicates_total") >= 1


async def test_a_replay_after_the_dedup_window_is_dropped(
    broker: TansuBroker, store: Client,
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    project = new_project("replay")
    async with running_pipeline(settings, store, project) as p:
        started = now_utc()
        await send(p, earlier_life("gone", "dev-gone"))
        await p.wait_inserted(5)
        erased = await p.http.delete("/v1/users/gone", headers=bearer(project.read_keys[0]))
        assert erased.status_code == 200, erased.text
        assert person_rows(store, project.id, "gone", "dev-gone") == 0
        # The dedup window passes: the sink no longer knows these message ids.
        store.command("DELETE FROM event_ids WHERE project_id = %(p)s",
                      parameters={"p": project.id})

        # Kafka still holds the envelopes (its retention is longer): replay them all.
        records = await read_topic(broker.bootstrap_servers, settings.topic, 5)
        assert len(records) == 5
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            for record in records:
                await producer.send_and_wait(settings.topic, record.value, key=record.key,
                                             partition=record.partition)
        finally:
            await producer.stop()

        await p.wait_inserted(10)
        assert person_rows(store, project.id, "gone", "dev-gone") == 0
        assert await p.total("race", started) == 0
        assert p.metric("tracklane_stream_erased_total") == 5
