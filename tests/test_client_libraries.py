"""Unmodified Segment and RudderStack Python libraries, pointed at a real collector."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from tests.pipeline import now_utc, pipeline_settings, running_pipeline
from tracklane.broker import TansuBroker, free_port
from tracklane.runner import HttpServer

pytestmark = pytest.mark.anyio


def drive(client: Any, prefix: str) -> None:
    """What an app does with the library: the calls go out over HTTP, gzip and Basic auth."""
    client.track(user_id="u-1", event=f"{prefix}_order", properties={"revenue": 12.5})
    client.page(anonymous_id="a-1", name="Home", properties={"url": "https://shop.example/"})
    client.screen(user_id="u-1", name="Settings")
    client.identify(user_id="u-1", traits={"plan": "pro"})
    client.group(user_id="u-1", group_id="acme")
    client.alias(previous_id="a-1", user_id="u-1")
    client.flush()


async def test_segment_and_rudderstack_libraries_work_unchanged(
    broker: TansuBroker, store: Client,
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        port = free_port()
        server = HttpServer(p.app, "127.0.0.1", port)
        await server.start()
        errors: list[Any] = []
        try:
            now = now_utc()
            for prefix, cls in (("segment", SegmentClient), ("rudder", RudderClient)):
                client = cls(write_key=p.write_key, host=f"http://127.0.0.1:{port}",
                             sync_mode=True, gzip=True, max_retries=0,
                             on_error=lambda e, batch: errors.append(e))
                await asyncio.to_thread(drive, client, prefix)
            assert errors == []
            await p.wait_inserted(12)
            assert await p.total("segment_order", now) == 1
            assert await p.total("rudder_order", now) == 1
            for event in ("page_view", "screen_view", "identify", "group", "alias"):
                assert await p.total(event, now) == 2, event
            # Each library announced itself in context.library (both call it analytics-python).
            libraries = store.query(
                "SELECT library_name, uniqExact(library_version), count() FROM events "
                "WHERE project_id = %(p)s GROUP BY library_name",
                parameters={"p": p.project.id}).result_rows
            assert libraries == [("analytics-python", 2, 12)]
        finally:
            await server.stop()
