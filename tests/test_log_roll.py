"""`up` replaces its in-memory log by a new one as it grows (tracklane/log_roll.py): while
clients send on keep-alive connections, every accepted event is stored once, the old
topics leave the broker, and the journals forget what was inserted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.up_process import children, metric, stats, stored_rows, tracklane_up, wait_for
from tracklane.broker import free_port
from tracklane.projects import load_projects

pytestmark = [pytest.mark.e2e]

BATCHES = 10  # per wave
PER_BATCH = 25
PIXELS = 50


def _topics(bootstrap: str) -> list[str]:
    async def listed() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return sorted(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(listed())


def _tansu_bootstrap(pid: int) -> str:
    (tansu,) = [p for p, name in children(pid).items() if name.startswith("tansu")]
    args = (Path("/proc") / str(tansu) / "cmdline").read_bytes().split(b"\0")
    url = args[args.index(b"--listener-url") + 1].decode()
    return url.removeprefix("tcp://")


@pytest.mark.parametrize("workers", [1, 2])
def test_the_log_rolls_over_while_clients_send_and_nothing_is_lost(
        tmp_path: Path, workers: int) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"TRACKLANE_WORKERS": str(workers), "TRACKLANE_LOG_ROLL_RECORDS": "200",
           "TRACKLANE_LOG_ROLL_MIN_S": "0",
           # One client sends fast here; its limit is not what this test is about.
           "TRACKLANE_CLIENT_RATE_LIMIT_EVENTS_PER_S": "0"}
    with tracklane_up(tmp_path, port, env) as process:
        project = load_projects(tmp_path / "data" / "projects.toml").projects[0]
        write_key, read_key = project.write_keys[0], project.read_keys[0]
        failures: list[str] = []
        # One keep-alive connection each, kept across the waves.
        batch_http = httpx.Client(base_url=base, timeout=30)
        pixel_http = httpx.Client(base_url=base, timeout=30)

        def batches(wave: int) -> None:
            for b in range(BATCHES):
                sent = batch_http.post("/v1/batch", auth=(write_key, ""), json={"batch": [
                    {"type": "track", "event": "added", "messageId": f"b-{wave}-{b}-{i}",
                     "anonymousId": f"v-{i % 13}"} for i in range(PER_BATCH)]})
                if sent.status_code != 200:
                    failures.append(sent.text)

        def pixels(wave: int) -> None:
            for n in range(PIXELS):
                hit = pixel_http.get("/p.gif", params={"k": write_key, "e": "page_view",
                                                       "mid": f"px-{wave}-{n}"})
                if hit.status_code != 200:
                    failures.append(hit.text)

        # Waves of both until the log has rolled over three times, rolls landing among
        # the requests.
        waves = 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (
                waves < 4 or metric(base, "tracklane_log_generation") < 3):
            senders = [threading.Thread(target=batches, args=(waves,)),
                       threading.Thread(target=pixels, args=(waves,))]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            waves += 1
        batch_http.close()
        pixel_http.close()
        assert failures == []
        generation = int(metric(base, "tracklane_log_generation"))
        assert generation >= 3, generation
        wait_for(lambda: stats(base, read_key, "added") == waves * BATCHES * PER_BATCH
                 and stats(base, read_key, "page_view") == waves * PIXELS, 60,
                 "not every accepted event was counted")
        events = waves * (BATCHES * PER_BATCH + PIXELS)
        # The old generations are gone (once a roll in progress, if any, has ended).
        bootstrap = _tansu_bootstrap(process.pid)
        wait_for(lambda: _topics(bootstrap) == [
            f"tracklane.events.{int(metric(base, 'tracklane_log_generation'))}"], 10,
            "old generations of the log are kept")
        assert metric(base, "tracklane_stream_inserted_total") == events
    assert process.returncode == 0

    # Once each: no event counted twice, none lost, in the store itself.
    rows = stored_rows(tmp_path, "SELECT message_id FROM events")
    counts = Counter(row[0] for row in rows)
    assert len(counts) == events and max(counts.values()) == 1
    # The sink's progress stays under the log's own name.
    assert stored_rows(tmp_path, "SELECT DISTINCT topic FROM stream_progress") == [
        ("tracklane.events",)]

    # The journals forgot what was inserted: a restart forwards nothing again.
    with tracklane_up(tmp_path, port, env):
        assert stats(base, read_key, "added") == waves * BATCHES * PER_BATCH
        assert metric(base, "tracklane_events_produced_total") == 0
        assert metric(base, "tracklane_spool_events") == 0
