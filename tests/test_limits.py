"""Shedding load: 429 over a project's rate, 503 over the in-flight bound, 408 for slow bodies."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from tests.collector_process import CollectorProcess, collector_env
from tests.pipeline import new_project, pipeline_settings, running_pipeline
from tracklane.broker import TansuBroker, free_port
from tracklane.collector.app import MAX_BATCH_EVENTS
from tracklane.collector.body import RequestError
from tracklane.collector.limits import ClientSlots, InflightLimit, RateLimiter, TokenBucket
from tracklane.collector.producer import ensure_topic
from tracklane.projects import RateLimit

pytestmark = pytest.mark.anyio


def test_token_bucket_admits_whole_or_refuses_whole_and_never_goes_into_debt() -> None:
    bucket = TokenBucket(RateLimit(events_per_s=4, burst=8), now=0.0)
    assert bucket.wait(8, 0.0) == 0.0
    bucket.take(8)
    assert bucket.wait(1, 0.0) == 0.25
    assert bucket.wait(1, 0.25) == 0.0
    bucket.take(1)
    # 6 events against 1 token: refused whole, told the time until 6 are there...
    assert bucket.wait(6, 0.5) == 1.25
    # ...and nothing was taken: the next small request passes at once.
    assert bucket.wait(1, 0.5) == 0.0
    bucket.take(1)
    # A batch larger than the bucket passes when the bucket is full, and costs all of it:
    # the next sender waits for one token, not for 92 owed.
    assert bucket.wait(100, 10.0) == 0.0
    bucket.take(100)
    assert bucket.wait(1, 10.0) == 0.25


def test_rate_limiter_is_per_client_and_per_project_and_says_when_to_retry() -> None:
    now = [0.0]
    limiter = RateLimiter(lambda: now[0])
    limit = RateLimit(events_per_s=2, burst=2)
    limiter.check("a", limit, 2)
    with pytest.raises(RequestError) as refused:
        limiter.check("a", limit, 1)
    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (
        429, "rate_limited", 1)
    limiter.check("b", limit, 2)  # another project has its own bucket
    limiter.check("a", None, 1000)  # no limit, no bucket
    now[0] = 0.5
    limiter.check("a", limit, 1)

    # Per client: a flood from one address is refused, its neighbour is not.
    client = RateLimit(events_per_s=10, burst=20)
    limiter.check("c", None, 20, "198.51.100.1", client)
    with pytest.raises(RequestError) as flood:
        limiter.check("c", None, 5, "198.51.100.1", client)
    assert flood.value.retry_after == 1 and "client" in flood.value.message
    limiter.check("c", None, 20, "198.51.100.2", client)
    # A client under its limit is still held to the project's; refused, it loses nothing.
    project = RateLimit(events_per_s=1, burst=25)
    limiter.check("d", project, 20, "198.51.100.3", client)
    with pytest.raises(RequestError) as whole:
        limiter.check("d", project, 10, "198.51.100.4", client)
    assert "project" in whole.value.message and whole.value.retry_after == 5
    limiter.check("d", project, 5, "198.51.100.4", client)
    # Client buckets are bounded: the oldest address is forgotten (and starts full).
    small = RateLimiter(lambda: now[0], max_clients=2)
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        small.check("e", None, 20, address, client)
    small.check("e", None, 20, "192.0.2.1", client)


def test_inflight_limit_counts_requests_and_the_bytes_actually_read() -> None:
    limit = InflightLimit(max_requests=2, max_bytes=100, retry_after_s=3)
    with limit.admit(), limit.admit():
        with pytest.raises(RequestError) as refused, limit.admit():
            pass
        assert (refused.value.status, refused.value.code, refused.value.retry_after) == (
            503, "overloaded", 3)
    with limit.holding() as first, limit.holding() as second:
        first(60)
        second(30)
        with pytest.raises(RequestError) as full:
            second(11)
        assert full.value.code == "overloaded"
        second(10)
        assert limit.bytes == 100
    assert (limit.requests, limit.bytes) == (0, 0)


def test_client_slots_bound_each_address_alone() -> None:
    slots = ClientSlots(max_per_client=2)
    with slots.admit("192.0.2.1"), slots.admit("192.0.2.1"):
        with pytest.raises(RequestError) as refused, slots.admit("192.0.2.1"):
            pass
        assert (refused.value.status, refused.value.code) == (429, "too_many_requests")
        with slots.admit("192.0.2.2"):
            pass
    with slots.admit("192.0.2.1"), slots.admit("192.0.2.1"):
        pass


async def test_a_project_over_its_rate_gets_429_with_retry_after(
    broker: TansuBroker, store: Client,
) -> None:
    now = [1000.0]
    project = new_project().model_copy(
        update={"rate_limit_events_per_s": 10.0, "rate_limit_burst": 20.0})
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store, project, monotonic=lambda: now[0]) as p:
        batch = {"batch": [{"type": "track", "event": "limited", "anonymousId": "a"}] * 20}
        assert (await p.http.post("/v1/batch", headers=p.auth, json=batch)).status_code == 200
        refused = await p.http.post("/v1/batch", headers={**p.auth, "Origin": "https://shop.example"},
                                    json=batch)
        assert refused.status_code == 429
        # 20 tokens at 10/s: no debt, so the wait is the time until the batch fits.
        assert refused.headers["retry-after"] == "2"
        assert refused.headers["access-control-expose-headers"] == "Retry-After"
        assert refused.json()["error"] == "rate_limited"
        pixel = await p.http.get("/p.gif", params={"k": p.write_key, "e": "limited"})
        assert pixel.status_code == 429
        assert p.metrics.registry.get_sample_value(
            "tracklane_events_rejected_total", {"reason": "rate_limited"}) == 21
        now[0] += 2.0
        assert (await p.http.post("/v1/batch", headers=p.auth, json=batch)).status_code == 200


async def test_a_body_that_does_not_arrive_in_time_gets_408(
    broker: TansuBroker, store: Client,
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers, read_timeout_s=0.3)

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"batch": ['
        await asyncio.sleep(1.0)
        yield b"]}"

    async with running_pipeline(settings, store) as p:
        slow = await p.http.post("/v1/batch", headers=p.auth, content=trickle())
        assert slow.status_code == 408
        assert slow.json()["error"] == "request_timeout"




async def test_overload_is_shed_with_429_and_503_and_memory_stays_flat(
    own_broker: TansuBroker, tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:8]
    projects = tmp_path / "projects.toml"
    projects.write_text(
        f'[[project]]\nid = "limited_{tag}"\nwrite_keys = ["wk_limited"]\n'
        "rate_limit_events_per_s = 50\n"
        f'[[project]]\nid = "open_{tag}"\nwrite_keys = ["wk_open"]\n')
    settings = pipeline_settings(own_broker.bootstrap_servers)
    await ensure_topic(settings.kafka())
    port = free_port()
    env = collector_env(own_broker.bootstrap_servers, settings.topic, projects, port,
                        tmp_path / "data", spool_max_bytes=0, max_inflight_requests=4)
    collector = CollectorProcess(env, port, tmp_path / "collector.log")
    statuses: Counter[tuple[str, int]] = Counter()
    rss: list[int] = []
    stop = asyncio.Event()
    body = [{"type": "track", "event": "flood", "anonymousId": f"a{i}",
             "properties": {"path": "/" + "x" * 200}} for i in range(50)]

    async def flood(key: str) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", auth=(key, ""),
                                     timeout=10.0) as http:
            while not stop.is_set():
                r = await http.post("/v1/batch", json={"batch": body})
                statuses[(key, r.status_code)] += 1
                if r.status_code in (429, 503):
                    assert r.headers["retry-after"]
                    assert r.json()["error"] in ("rate_limited", "overloaded")

    try:
        await collector.wait_healthy()
        tasks = [asyncio.create_task(flood(key))
                 for key in ["wk_limited"] * 8 + ["wk_open"] * 24]
        for _ in range(12):
            await asyncio.sleep(0.5)
            rss.append(collector.rss_bytes())
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        collector.terminate()

    assert statuses[("wk_limited", 429)] > 0, statuses
    assert statuses[("wk_limited", 200)] > 0, statuses
    assert statuses[("wk_open", 503)] > 0, statuses
    assert statuses[("wk_open", 200)] > 0, statuses
    assert not {status for (_, status) in statuses} - {200, 429, 503}, statuses
    # Shedding, not queueing: after warm-up, memory does not grow with the flood.
    warm = rss[3]
    assert max(rss[3:]) <= warm * 1.10, [r // 1024 for r in rss]


async def test_a_batch_over_the_event_count_limit_is_refused_whole(
    broker: TansuBroker, store: Client,
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        refused = await p.http.post("/v1/batch", headers=p.auth,
                                    json={"batch": [{}] * (MAX_BATCH_EVENTS + 1)})
        assert refused.status_code == 413
        assert refused.json()["error"] == "too_many_events"


def _held_upload(port: int, kind: int) -> socket.socket:
    """An upload with no valid key that sends its headers and then (almost) nothing."""
    headers = {
        0: b"Content-Encoding: gzip\r\nContent-Length: 400000\r\n",  # charged 500 KB before
        1: b"Content-Length: 10\r\n",
        2: b"Content-Length: 400000\r\n",
        3: b"Transfer-Encoding: chunked\r\n",
    }[kind % 4]
    first = {0: b"\x1f\x8b", 1: b'{"b', 2: b'{"batch": [', 3: b"5\r\nhello\r\n"}[kind % 4]
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))  # another client address than the real client's
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: collector\r\n"
                 b"Content-Type: text/plain\r\n" + headers + b"\r\n" + first)
    return sock


async def test_held_keyless_uploads_leave_a_real_client_served(
    own_broker: TansuBroker, tmp_path: Path,
) -> None:
    projects = tmp_path / "projects.toml"
    projects.write_text('[[project]]\nid = "real"\nwrite_keys = ["wk_real"]\n')
    settings = pipeline_settings(own_broker.bootstrap_servers)
    await ensure_topic(settings.kafka())
    port = free_port()
    # Default limits: what a new install runs with.
    env = collector_env(own_broker.bootstrap_servers, settings.topic, projects, port,
                        tmp_path / "data")
    collector = CollectorProcess(env, port, tmp_path / "collector.log")
    held: list[socket.socket] = []
    try:
        await collector.wait_healthy()
        held = [_held_upload(port, n) for n in range(700)]
        await asyncio.sleep(0.5)  # the collector has taken them all in
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     auth=("wk_real", ""), timeout=5.0) as http:
            for n in range(20):
                started = time.monotonic()
                response = await http.post("/v1/track", json={
                    "event": "real", "anonymousId": "visitor", "properties": {"n": n}})
                elapsed = time.monotonic() - started
                assert response.status_code == 200, (n, response.text)
                assert elapsed < 2.0, (n, elapsed)
    finally:
        for sock in held:
            sock.close()
        collector.terminate()
