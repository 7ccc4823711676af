"""``tracklane up --workers N``: collector processes on the public port, one process owning
the store; every route answers as in one process, and counts stay exact."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.up_process import children, metric, stats, stored_rows, tracklane_up, wait_for
from tracklane.broker import free_port
from tracklane.projects import load_projects

pytestmark = [pytest.mark.e2e]

PIXELS = 120
BATCHES = 8
PER_BATCH = 100


def _journal_bytes(spool: Path) -> int:
    return sum(p.stat().st_size for p in spool.glob("*.seg"))


def test_workers_take_the_events_and_the_owner_answers_the_rest(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"TRACKLANE_WORKERS": "2"}
    with tracklane_up(tmp_path, port, env) as process:
        assert "2 worker processes sharing the port" in (tmp_path / "up.out").read_text()
        names = sorted(children(process.pid).values())
        assert len(names) == 3 and names[-1].startswith("tansu"), names
        project = load_projects(tmp_path / "data" / "projects.toml").projects[0]
        write_key, read_key = project.write_keys[0], project.read_keys[0]
        # New connections, so that the kernel gives each worker some.
        with httpx.Client(base_url=base, timeout=30,
                          limits=httpx.Limits(max_keepalive_connections=0)) as http:
            for n in range(PIXELS):
                hit = http.get("/p.gif", params={"k": write_key, "e": "page_view",
                                                 "mid": f"px-{n}",
                                                 "u": f"https://shop.example/p/{n % 7}"})
                assert hit.status_code == 200, hit.text
            for b in range(BATCHES):
                sent = http.post("/v1/batch", auth=(write_key, ""), json={"batch": [
                    {"type": "track", "event": "added", "messageId": f"b-{b}-{i}",
                     "anonymousId": f"v-{i % 13}"} for i in range(PER_BATCH)]})
                assert sent.status_code == 200, sent.text
            refused = http.post("/v1/batch", auth=("wk_nobody", ""), json={"batch": [
                {"type": "track", "event": "added", "anonymousId": "x"}]})
            assert refused.status_code == 401, refused.text

            # Reads go to the owner of the store, through whichever worker got them.
            wait_for(lambda: stats(base, read_key, "page_view") == PIXELS
                     and stats(base, read_key, "added") == BATCHES * PER_BATCH, 30,
                     "not every event was counted")
            now = datetime.now(UTC)
            kpis = http.post("/v1/query/kpis", headers={"Authorization": f"Bearer {read_key}"},
                             json={"from": (now - timedelta(hours=1)).isoformat(),
                                   "to": (now + timedelta(hours=1)).isoformat()})
            assert kpis.status_code == 200 and kpis.json()["pageviews"] == PIXELS, kpis.text
            alerts = http.get("/v1/alerts", headers={"Authorization": f"Bearer {read_key}"})
            assert alerts.status_code == 200, alerts.text
            unauthorized = http.get("/v1/alerts", headers={"Authorization": "Bearer rk_nope"})
            assert unauthorized.status_code == 401
            assert unauthorized.json()["error"] == "invalid_read_key", unauthorized.text
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["kafka"] is True and ready.json()["store"] is True, ready.text
            # One exposition: the workers' counts summed, the owner's sink beside them.
            scrape = http.get("/metrics").text
        types = [line for line in scrape.splitlines() if line.startswith("# TYPE ")]
        assert len(types) == len(set(types)), "a metric family appears twice"
        events = PIXELS + BATCHES * PER_BATCH
        assert metric(base, 'tracklane_events_received_total{route="pixel"}') == PIXELS
        assert metric(base, 'tracklane_events_received_total{route="batch"}') == \
            BATCHES * PER_BATCH
        assert metric(base, "tracklane_events_produced_total") == events
        assert metric(base, "tracklane_stream_inserted_total") == events
        # Both workers took events: each journal holds some.
        spool = tmp_path / "data" / "spool"
        assert _journal_bytes(spool / "0") > 0 and _journal_bytes(spool / "worker-1" / "0") > 0
    assert process.returncode == 0

    # The workers' per-minute counts reached the store through the owner.
    rows = stored_rows(tmp_path, "SELECT outcome, toString(sum(events)) FROM ingest_minute "
                       "GROUP BY outcome ORDER BY outcome")
    assert rows == [("accepted", str(events)), ("rejected", "1")], rows

    # Stopped cleanly, each worker's journal forgot what the sink had inserted: a restart
    # forwards nothing again.
    with tracklane_up(tmp_path, port, env):
        assert stats(base, read_key, "added") == BATCHES * PER_BATCH
        assert metric(base, "tracklane_events_produced_total") == 0
        assert metric(base, "tracklane_spool_events") == 0


def test_a_worker_killed_alone_is_replaced_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tracklane_up(tmp_path, port, {"TRACKLANE_WORKERS": "2"}) as process:
        project = load_projects(tmp_path / "data" / "projects.toml").projects[0]
        write_key, read_key = project.write_keys[0], project.read_keys[0]
        workers = [pid for pid, name in children(process.pid).items()
                   if not name.startswith("tansu")]
        with httpx.Client(base_url=base, auth=(write_key, ""), timeout=30,
                          limits=httpx.Limits(max_keepalive_connections=0)) as http:
            for b in range(10):
                sent = http.post("/v1/batch", json={"batch": [
                    {"type": "track", "event": "kept", "messageId": f"k-{b}-{i}",
                     "anonymousId": "v"} for i in range(50)]})
                assert sent.status_code == 200, sent.text
            os.kill(workers[0], signal.SIGKILL)
            wait_for(lambda: len([p for p, n in children(process.pid).items()
                                  if not n.startswith("tansu")]) == 2
                     and workers[0] not in children(process.pid), 30,
                     "the killed worker was not replaced")
            # Whatever it had accepted is in the store (its journal replayed on restart).
            wait_for(lambda: stats(base, read_key, "kept") == 500, 60,
                     "events of the killed worker were lost")
            # And the port keeps answering on every connection.
            for n in range(40):
                hit = http.get("/p.gif", params={"k": write_key, "e": "after", "mid": f"a{n}"})
                assert hit.status_code == 200, hit.text
        wait_for(lambda: stats(base, read_key, "after") == 40, 30, "hits after the restart")
