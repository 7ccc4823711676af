"""Migrations, the stats read API and the sink's progress table, on the session's chDB."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from clickhouse_connect.driver.client import Client

from tests.pipeline import now_utc, pipeline_settings, poll, running_pipeline
from tracklane.broker import TansuBroker
from tracklane.collector.identity_map import IdentityMapReloader
from tracklane.store import queries
from tracklane.store.client import dictionary_credentials
from tracklane.store.migrate import RetentionConfig, available_migrations, migrate

pytestmark = pytest.mark.anyio


def test_migrations_are_versioned_and_idempotent(store: Client) -> None:
    assert migrate(store, RetentionConfig(30, 24)) == []
    recorded = [r[0] for r in store.query(
        "SELECT version FROM schema_migrations ORDER BY version").result_rows]
    assert recorded == [m.version for m in available_migrations()]
    ddl = store.query("SHOW CREATE TABLE events").result_rows[0][0]
    assert "toDateTime(timestamp) + toIntervalDay(30)" in ddl
    assert "PARTITION BY toYYYYMM(timestamp)" in ddl  # by month since 0015
    migrate(store, RetentionConfig(395, 48))  # back to the session's settings
    # Every start recreates and loads the identity dictionary the person queries read.
    assert store.query("SELECT status FROM system.dictionaries "
                       "WHERE name = 'identity_map'").result_rows == [("LOADED",)]


async def test_the_identity_dictionary_is_reloaded_on_a_timer(store: Client) -> None:
    # chDB never reloads a dictionary on its own: the query process does.
    def loaded() -> str:
        return str(store.query("SELECT last_successful_update_time FROM system.dictionaries "
                               "WHERE name = 'identity_map'").result_rows[0][0])

    before = loaded()
    reloader = IdentityMapReloader(store, interval_s=0.2)
    await reloader.start()
    try:
        await poll(lambda: loaded() != before, 10, "identity_map reloaded")
    finally:
        await reloader.stop()


def test_the_identity_dictionary_reads_as_the_dsns_user() -> None:
    # A server's default user may have a password: the dictionary's source must log in.
    assert dictionary_credentials("http://tracklane:s3cr%27t%40@ch:8123/default") == (
        "USER 'tracklane' PASSWORD 's3cr\\'t@'")
    assert dictionary_credentials("https://ch.example:8443/db") == ""
    assert dictionary_credentials("chdb:///var/lib/tracklane/store") == ""


async def test_stats_are_zero_filled_and_guarded(broker: TansuBroker, store: Client) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        start = (now_utc() - timedelta(hours=2)).replace(second=0, microsecond=0)
        events = [{"type": "track", "event": "zf", "anonymousId": f"a{i % 2}",
                   "messageId": f"zf-{i}", "properties": {"revenue": 1.25},
                   "timestamp": (start + timedelta(minutes=2, seconds=i)).isoformat()}
                  for i in range(3)]
        response = await p.http.post("/v1/batch", json={"writeKey": p.write_key,
                                                        "batch": events})
        assert response.status_code == 200
        await p.wait_inserted(3)
        rows = await p.stats("zf", start, start + timedelta(minutes=5))
        assert [r["count"] for r in rows] == [0, 0, 3, 0, 0]
        assert rows[2] == {"minute": (start + timedelta(minutes=2)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"), "count": 3, "unique_users": 2, "revenue": 3.75}

        url = "/v1/stats/minutes"
        good = {"event": "zf", "from": start.isoformat(),
                "to": (start + timedelta(minutes=5)).isoformat()}
        bearer = {"Authorization": f"Bearer {p.project.read_keys[0]}"}
        checks = [
            ({}, good, 401, "missing_read_key"),
            ({"Authorization": "Bearer rk_wrong"}, good, 401, "invalid_read_key"),
            ({"Authorization": f"Bearer {p.write_key}"}, good, 401, "invalid_read_key"),
            (bearer, {**good, "event": ""}, 400, "invalid_query"),
            (bearer, {**good, "from": "last tuesday"}, 400, "invalid_query"),
            (bearer, {**good, "to": good["from"]}, 400, "invalid_query"),
            (bearer, {**good, "to": (start + timedelta(days=8)).isoformat()}, 400,
             "invalid_query"),
        ]
        for headers, params, status, code in checks:
            response = await p.http.get(url, params=params, headers=headers)
            assert response.status_code == status, (params, response.text)
            assert response.json()["error"] == code

        def progress_is_current() -> bool:
            rows = queries.read_progress(store, settings.consumer_group, settings.topic)
            return (len(rows) == settings.topic_partitions
                    and all(r.lag == 0 for r in rows)
                    and sum(r.next_offset for r in rows) == 3
                    and all(now_utc() - r.watermark < timedelta(seconds=30) for r in rows))

        await poll(progress_is_current, 10, "stream_progress did not reach the topic's end")
        assert p.metric("tracklane_stream_inserted_total") == 3


async def test_sink_rides_out_a_failing_store_and_loses_nothing(
    broker: TansuBroker, store: Client,
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        now = now_utc()

        async def send(first: int, count: int) -> None:
            response = await p.http.post("/v1/batch", json={"writeKey": p.write_key, "batch": [
                {"type": "track", "event": "outage", "anonymousId": "a", "messageId": f"o{i}"}
                for i in range(first, first + count)]})
            assert response.status_code == 200

        await send(0, 10)
        await p.wait_inserted(10)
        # The sink's id lookup (and the view feeding it) now fail, as with a lost server.
        store.command("RENAME TABLE event_ids TO event_ids_away")
        try:
            await send(10, 10)
            await poll(lambda: p.metric("tracklane_stream_errors_total") >= 2, 20,
                       "the sink did not report failing rounds")
        finally:
            store.command("RENAME TABLE event_ids_away TO event_ids")

        async def all_counted() -> bool:
            return await p.total("outage", now) == 20

        await poll(all_counted, 30, "events sent during the store outage were not inserted")
        assert p.metric("tracklane_stream_inserted_total") == 20


def test_replay_completes_an_insert_that_landed_in_the_table_but_not_its_views(
    store: Client,
) -> None:
    """The ClickHouse behaviour the sink's crash recovery relies on.

    A crash between the table part and a view's part leaves the table holding the token
    while the view target does not. Replaying with the same token must skip the table and
    still fill the view; a second replay must change nothing.
    """
    tag = uuid.uuid4().hex[:8]
    source, target, view = f"probe_src_{tag}", f"probe_dst_{tag}", f"probe_mv_{tag}"
    table = ("(x UInt64) ENGINE = MergeTree ORDER BY x "
             "SETTINGS non_replicated_deduplication_window = 100")
    settings = {"insert_deduplicate": 1, "insert_deduplication_token": f"tok-{tag}",
                "deduplicate_blocks_in_dependent_materialized_views": 1}
    store.command(f"CREATE TABLE {source} {table}")
    store.command(f"CREATE TABLE {target} {table}")
    try:
        store.insert(source, [[1], [2], [3]], column_names=["x"], settings=settings)
        # The view appears only now: the same state as a crash after the table's part.
        store.command(f"CREATE MATERIALIZED VIEW {view} TO {target} AS SELECT x FROM {source}")
        for _ in range(2):
            store.insert(source, [[1], [2], [3]], column_names=["x"], settings=settings)
            counts = [store.query(f"SELECT count() FROM {t}").result_rows[0][0]
                      for t in (source, target)]
            assert counts == [3, 3]
    finally:
        for name in (view, target, source):
            store.command(f"DROP TABLE IF EXISTS {name}")


def test_stored_message_ids_finds_exact_pairs_whatever_their_characters(store: Client) -> None:
    project = f"p'{uuid.uuid4().hex[:6]}"
    other = f"q{uuid.uuid4().hex[:6]}"
    ids = ["a'b", "c\\d", "tab\there", "nl\nx", "ünï", "x\x00y", "{ids:String}",
           "'); DROP TABLE events; --", " sp ", "x'00", "", "😀" * 50, "L" * 200]
    now = now_utc()
    store.insert("event_ids", [[project, m, now, "tok"] for m in ids] + [[other, "o1", now, "t2"]],
                 column_names=["project_id", "message_id", "received_at", "batch_token"])
    asked = [(project, m) for m in ids] + [(other, "a'b"), (project, "o1"), (other, "o1"),
                                           (project, "never")]
    found = queries.stored_message_ids(store, asked, now - timedelta(minutes=1))
    assert found == {**{(project, m): "tok" for m in ids}, (other, "o1"): "t2"}
    assert queries.stored_message_ids(store, asked, now + timedelta(seconds=1)) == {}


def test_progress_of_partitions_the_topic_lost_is_forgotten(store: Client) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    now = now_utc()
    old = [queries.PartitionProgress(p, 10, 10, 0, now - timedelta(days=1)) for p in range(4)]
    queries.write_progress(store, "g", topic, old, now - timedelta(days=1))
    queries.forget_partitions(store, "g", topic, [0])
    assert [p.partition for p in queries.read_progress(store, "g", topic)] == [0]
