"""The HTTP load generator of ``bench.throughput``, run in a process of its own.

    python -m bench.loadgen '<spec as JSON>'

Raw asyncio connections with keep-alive (and optional pipelining): no HTTP client library
on the hot path, so one core drives far more requests than the server under test answers.
Each *stream* of the spec is closed-loop (every connection sends its next request as soon as
the previous answer arrived: the server's capacity) or paced (``rate`` requests per second
on a fixed schedule, latency counted from the scheduled time so a slow server cannot hide
its queueing). Prints one JSON object on stdout; progress goes to stderr.

The request bodies are built here too (``batch_template``, ``pixel_request``), so the
throughput workers can turn the very same events into Kafka records.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

# A handful of real browsers: the collector parses each user agent once (an LRU cache),
# as on a real site, where few distinct agents make most of the traffic.
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/123.0.0.0 Safari/537.36 Edg/123.0.2420.81",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
PRODUCTS = ("sku-1042", "sku-2210", "sku-3307", "sku-4821", "sku-5150", "sku-6688")
# Placeholders replaced per request: a unique token (message ids), the send time, and a
# /24 network (the first three octets) that the server-side events' addresses are in.
TOKEN = b"@R@"
NOW = b"@T@"
NET = b"@N@"
_nets = itertools.count(1)


def _event(i: int, name: str | None) -> dict[str, Any]:
    """One Segment event of about 300 bytes of JSON, varied by ``i``."""
    product = PRODUCTS[i % len(PRODUCTS)]
    token = TOKEN.decode()
    common = {"messageId": f"{token}-{i}", "anonymousId": f"anon-{i % 97}"}
    # Half from browsers (a user agent), half from a server-side library.
    context: dict[str, Any] = (
        {"userAgent": USER_AGENTS[i // 2 % len(USER_AGENTS)]} if i % 2 == 0
        # A server library reports its user's address, and every request's are new ones: a
        # site's visitors come from many addresses, so the collector's place lookups
        # (collector/geoip.py) miss its cache at least as often as on real traffic.
        else {"library": {"name": "analytics-python", "version": "2.3.3"},
              "ip": f"{NET.decode()}.{i % 250 + 1}"})
    if name is not None:
        return {"type": "track", "event": name, **common, "properties": {"n": i},
                "context": context}
    if i % 3 == 0:
        context["page"] = {"url": f"https://shop.example/p/{product}?utm_source=news"}
        return {"type": "page", "name": "Product", **common, "timestamp": NOW.decode(),
                "context": context}
    return {"type": "track", "event": "Product Viewed", **common, "timestamp": NOW.decode(),
            "properties": {"product_id": product, "price": 19.5 + i % 40, "currency": "EUR"},
            "context": context}


def batch_template(size: int, name: str | None = None) -> bytes:
    """A ``/v1/batch`` body with ``size`` events; ``TOKEN`` and ``NOW`` still to fill in.

    With ``name``, every event is a small ``track`` of that name without a timestamp (the
    freshness load, counted by name in the read API).
    """
    body = {"batch": [_event(i, name) for i in range(size)], "sentAt": NOW.decode()}
    return json.dumps(body, separators=(",", ":")).encode()


def fill(template: bytes, token: str) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3].encode() + b"Z"
    n = next(_nets)
    net = f"{(n >> 16) % 222 + 1}.{(n >> 8) & 255}.{n & 255}".encode()
    return template.replace(TOKEN, token.encode()).replace(NOW, now).replace(NET, net)


def event_bytes(template: bytes) -> float:
    """Average size of one event of a filled body, in bytes of JSON."""
    events = json.loads(fill(template, "0123456789ab"))["batch"]
    return sum(len(json.dumps(e, separators=(",", ":"))) for e in events) / len(events)


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def _pixel_variant(write_key: str, n: int) -> tuple[bytes, bytes]:
    product = PRODUCTS[n % len(PRODUCTS)]
    url = quote(f"https://shop.example/p/{product}?utm_source=news", safe="")
    head = f"GET /p.gif?k={write_key}&e=page_view&mid="
    tail = (f"&aid=a-{n}&url={url}&ref={quote('https://www.google.com/', safe='')}"
            f"&title=Product HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"User-Agent: {USER_AGENTS[n % len(USER_AGENTS)]}\r\n"
            "Accept: image/avif,image/webp,image/*,*/*;q=0.8\r\n\r\n")
    return head.encode(), tail.encode()


_PIXEL_VARIANTS: dict[str, list[tuple[bytes, bytes]]] = {}


def pixel_request(write_key: str, n: int, token: str) -> bytes:
    """A pixel hit with a unique ``mid``; 997 variants of user, page and browser."""
    variants = _PIXEL_VARIANTS.get(write_key)
    if variants is None:
        variants = _PIXEL_VARIANTS[write_key] = [_pixel_variant(write_key, i)
                                                 for i in range(997)]
    head, tail = variants[n % 997]
    return head + token.encode() + tail


def post_request(path: str, auth: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "User-Agent: analytics-python/2.3.3\r\n\r\n").encode() + body


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- CPU accounting --------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> int:
    """Busy jiffies of the whole machine, all cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # less idle and iowait


def proc_jiffies(pid: int | None) -> int:
    """User and system jiffies of one process (0 once it is gone)."""
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


class CpuWindow:
    """CPU used over a stretch of time by named processes, by this one (when ``me`` names
    it) and by everything else on the machine (``other``: other people's work on it)."""

    def __init__(self, pids: dict[str, int | None], me: str | None = None) -> None:
        self._pids = pids
        self._me = me
        self._at = time.monotonic()
        self._machine = machine_jiffies()
        self._procs = {name: proc_jiffies(pid) for name, pid in pids.items()}
        self._cpu = time.process_time()

    def stop(self, extra: dict[str, float] | None = None) -> dict[str, float]:
        """Percent of one core each; ``extra``: shares measured elsewhere (not "other")."""
        seconds = max(1e-6, time.monotonic() - self._at)
        out = {f"{name}_cpu_pct": round(100 * (proc_jiffies(pid) - self._procs[name])
                                        / CLK_TCK / seconds, 1)
               for name, pid in self._pids.items()}
        if self._me is not None:
            out[f"{self._me}_cpu_pct"] = round(
                100 * (time.process_time() - self._cpu) / seconds, 1)
        out.update(extra or {})
        machine = 100 * (machine_jiffies() - self._machine) / CLK_TCK / seconds
        out["other_cpu_pct"] = round(max(0.0, machine - sum(out.values())), 1)
        return out


def descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (e.g. the Tansu of ``tracklane up``)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            out += [child, *descendants(child)]
    return out


# -- connections -------------------------------------------------------------------------


@dataclass(slots=True)
class _Done:
    at: float       # monotonic time the answer was complete
    latency: float  # from the send (closed loop) or the scheduled time (paced)
    status: int
    events: int


class _Conn(asyncio.Protocol):
    def __init__(self, stream: _Stream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.inflight: deque[tuple[float, int]] = deque()  # (start, events)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._stream.ready(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._stream.lost(self)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(buf[:head_end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                line_end = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:line_end if line_end >= 0 else len(head)])
            end = head_end + 4 + length
            if len(buf) < end:
                return
            status = int(buf[9:12])
            del buf[:end]
            start, events = self.inflight.popleft()
            self._stream.answered(self, start, status, events)

    def send(self, request: bytes, start: float, events: int) -> None:
        assert self.transport is not None
        self.inflight.append((start, events))
        self.transport.write(request)


@dataclass
class _Stream:
    """One kind of request on its own connections."""

    kind: str  # pixel | batch | load (freshness load: named events, no timestamps)
    host: str
    port: int
    write_key: str
    connections: int
    pipeline: int = 1
    rate: float | None = None  # requests per second; None: closed loop
    batch_size: int = 100
    event_name: str | None = None
    running: bool = True
    done: list[_Done] = field(default_factory=list)
    errors: int = 0
    _conns: list[_Conn] = field(default_factory=list)
    _idle: deque[_Conn] = field(default_factory=deque)
    _backlog: deque[float] = field(default_factory=deque)  # scheduled times (paced)
    _n: int = 0
    _template: bytes = b""
    _auth: str = ""
    _prefix: str = ""

    def __post_init__(self) -> None:
        self._auth = basic_auth(self.write_key)
        self._prefix = f"{os.getpid():x}{random.getrandbits(24):06x}"
        if self.kind != "pixel":
            self._template = batch_template(self.batch_size, self.event_name)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.connections):
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
            self._conns.append(conn)

    def close(self) -> None:
        self.running = False
        for conn in self._conns:
            if conn.transport is not None:
                conn.transport.close()

    def request(self) -> tuple[bytes, int]:
        self._n += 1
        token = f"{self._prefix}{self._n:x}"
        if self.kind == "pixel":
            return pixel_request(self.write_key, self._n, token), 1
        return post_request("/v1/batch", self._auth, fill(self._template, token)), \
            self.batch_size

    # -- closed loop and paced sending ---------------------------------------------------

    def ready(self, conn: _Conn) -> None:
        if self.rate is None:
            self._top_up(conn)
        else:
            self._idle.append(conn)

    def _top_up(self, conn: _Conn) -> None:
        while self.running and conn.transport is not None and len(conn.inflight) < self.pipeline:
            request, events = self.request()
            conn.send(request, time.monotonic(), events)

    def answered(self, conn: _Conn, start: float, status: int, events: int) -> None:
        now = time.monotonic()
        self.done.append(_Done(now, now - start, status, events))
        if self.rate is None:
            self._top_up(conn)
        elif self._backlog and self.running:
            request, n = self.request()
            conn.send(request, self._backlog.popleft(), n)
        elif not conn.inflight:
            self._idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        if self.running:
            self.errors += len(conn.inflight) + 1
            print(f"loadgen: {self.kind} connection lost", file=sys.stderr)
        conn.inflight.clear()
        if conn in self._idle:
            self._idle.remove(conn)

    async def pace(self, until: float) -> None:
        """Send ``rate`` requests per second on schedule until ``until`` (monotonic)."""
        assert self.rate is not None
        interval = 1.0 / self.rate
        due = time.monotonic()
        while self.running and due < until:
            now = time.monotonic()
            while due <= now:
                conn = self._idle.popleft() if self._idle else None
                if conn is not None and conn.transport is not None:
                    request, events = self.request()
                    conn.send(request, due, events)
                else:
                    self._backlog.append(due)  # sent as soon as a connection is free
                due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    def summary(self, start: float, end: float) -> dict[str, Any]:
        window = [d for d in self.done if start <= d.at < end]
        ok = [d for d in window if 200 <= d.status < 300]
        statuses: dict[str, int] = {}
        for d in window:
            statuses[str(d.status)] = statuses.get(str(d.status), 0) + 1
        seconds = end - start
        latencies = [d.latency for d in ok]
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        return {
            "kind": self.kind, "connections": self.connections, "pipeline": self.pipeline,
            "rate": self.rate, "seconds": round(seconds, 2),
            "requests_per_s": round(len(ok) / seconds, 1),
            "events_per_s": round(sum(d.events for d in ok) / seconds, 1),
            "statuses": statuses, "connection_errors": self.errors,
            "latency_p50_ms": round(p50 * 1000, 2) if p50 is not None else None,
            "latency_p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
            "backlog_at_end": len(self._backlog),
        }


# -- freshness -------------------------------------------------------------------------


@dataclass
class _Freshness:
    """Polls ``/v1/stats/minutes`` for the load's and the probes' counts."""

    base: str
    write_key: str
    read_key: str
    load_event: str
    probe_event: str
    poll_s: float
    since: datetime
    polls: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, load count)
    probe_count: int = 0
    probe_seen: asyncio.Event = field(default_factory=asyncio.Event)
    probes: list[float] = field(default_factory=list)
    probe_timeouts: int = 0
    poll_errors: int = 0
    running: bool = True

    async def count(self, http: httpx.AsyncClient, event: str) -> int:
        now = datetime.now(UTC)
        response = await http.get("/v1/stats/minutes", params={
            "event": event, "from": self.since.strftime("%Y-%m-%dT%H:%M:00Z"),
            "to": (now + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:00Z")})
        if response.status_code != 200:
            self.poll_errors += 1
            return -1
        return sum(int(row["count"]) for row in response.json()["rows"])

    async def poll(self, http: httpx.AsyncClient) -> None:
        while self.running:
            started = time.monotonic()
            load, probe = await asyncio.gather(self.count(http, self.load_event),
                                               self.count(http, self.probe_event))
            at = time.monotonic()
            if load >= 0:
                self.polls.append((at, max(load, self.polls[-1][1] if self.polls else 0)))
            if probe > self.probe_count:
                self.probe_count = probe
                self.probe_seen.set()
            await asyncio.sleep(max(0.0, self.poll_s - (time.monotonic() - started)))

    async def probe(self, http: httpx.AsyncClient, until: float) -> None:
        """One probe event at a time: send, wait for its 2xx, then for it to be counted."""
        headers = {"Authorization": basic_auth(self.write_key)}
        sent = 0
        while time.monotonic() < until:
            await asyncio.sleep(random.uniform(0.0, 0.2))
            mid = f"probe-{os.getpid()}-{sent}-{random.getrandbits(32):08x}"
            response = await http.post("/v1/track", headers=headers, json={
                "event": self.probe_event, "messageId": mid, "anonymousId": "probe"})
            acked = time.monotonic()
            if response.status_code != 200:
                continue
            sent += 1
            deadline = acked + 30.0
            while self.probe_count < sent and time.monotonic() < deadline:
                self.probe_seen.clear()
                try:
                    await asyncio.wait_for(self.probe_seen.wait(), deadline - time.monotonic())
                except TimeoutError:
                    break
            if self.probe_count >= sent:
                self.probes.append(time.monotonic() - acked)
            else:
                self.probe_timeouts += 1
                self.probe_count = sent  # do not let later probes inherit this one

    def all_events(self, done: list[_Done], start: float, end: float) -> list[float]:
        """Per acknowledged event: first poll that counted it, minus its 2xx (FIFO order)."""
        import bisect

        acked = sorted((d.at, d.events) for d in done if 200 <= d.status < 300)
        counts = [c for _, c in self.polls]
        out: list[float] = []
        index = 0
        for at, n in acked:
            for _ in range(n):
                index += 1
                if not start <= at < end:
                    continue
                poll = bisect.bisect_left(counts, index)
                if poll == len(counts):
                    out.append(float("inf"))  # never seen
                else:
                    out.append(max(0.0, self.polls[poll][0] - at))
        return out


def _dist(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if v != float("inf")]
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    return {"n": len(values), "never_seen": len(values) - len(finite),
            "p50_s": round(p50, 3) if p50 is not None else None,
            "p99_s": round(p99, 3) if p99 is not None else None,
            "max_s": round(max(finite), 3) if finite else None}


# -- main --------------------------------------------------------------------------------


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec.get("host", "127.0.0.1"), int(spec["port"])
    warmup, duration = float(spec.get("warmup_s", 0)), float(spec["duration_s"])
    streams = [
        _Stream(kind=s["kind"], host=host, port=port, write_key=spec["write_key"],
                connections=int(s.get("connections", 32)), pipeline=int(s.get("pipeline", 1)),
                rate=s.get("rate"), batch_size=int(s.get("batch_size", 100)),
                event_name=s.get("event_name"))
        for s in spec["streams"]
    ]
    fresh_spec = spec.get("freshness")
    for stream in streams:
        await stream.open()
    t0 = time.monotonic()
    start, end = t0 + warmup, t0 + warmup + duration
    cpu: dict[str, float] = {}
    watch: dict[str, int | None] = {k: int(v) for k, v in spec.get("watch_pids", {}).items()}

    async def mark_cpu() -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        window = CpuWindow(watch, me="loadgen")
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        cpu.update(window.stop())

    print(f"loadgen: {', '.join(s.kind for s in streams)} for {warmup:.0f}+{duration:.0f} s "
          f"on :{port}", file=sys.stderr, flush=True)
    tasks = [asyncio.create_task(mark_cpu())]
    tasks += [asyncio.create_task(s.pace(end)) for s in streams if s.rate is not None]
    fresh: _Freshness | None = None
    http: httpx.AsyncClient | None = None
    if fresh_spec is not None:
        fresh = _Freshness(
            base=f"http://{host}:{port}", write_key=spec["write_key"],
            read_key=fresh_spec["read_key"], load_event=fresh_spec["load_event"],
            probe_event=fresh_spec["probe_event"], poll_s=float(fresh_spec.get("poll_s", 0.05)),
            since=datetime.now(UTC) - timedelta(minutes=1))
        http = httpx.AsyncClient(base_url=fresh.base, timeout=30.0, headers={
            "Authorization": f"Bearer {fresh_spec['read_key']}"})
        poller = asyncio.create_task(fresh.poll(http))
        tasks.append(asyncio.create_task(fresh.probe(http, end)))
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    for stream in streams:
        stream.running = False
    await asyncio.gather(*tasks)
    # Let requests in flight finish (their answers are outside the window anyway).
    drain_until = time.monotonic() + 5.0
    while any(c.inflight for s in streams for c in s._conns) and time.monotonic() < drain_until:
        await asyncio.sleep(0.02)
    result: dict[str, Any] = {"streams": [s.summary(start, end) for s in streams]}
    result["cpu"] = cpu
    if fresh is not None and http is not None:
        # Keep polling until every acknowledged event is counted (or 30 s pass). Only the
        # freshness load's events are counted by name: other streams (pixel hits sent
        # at the same time) are load, not measured here.
        loads = [s for s in streams if s.kind == "load"]
        acked = sum(d.events for s in loads for d in s.done if 200 <= d.status < 300)
        wait_until = time.monotonic() + 30.0
        while (not fresh.polls or fresh.polls[-1][1] < acked) and time.monotonic() < wait_until:
            await asyncio.sleep(0.1)
        fresh.running = False
        await poller
        await http.aclose()
        done = [d for s in loads for d in s.done]
        result["freshness"] = {
            "all_events": _dist(fresh.all_events(done, start, end)),
            "probes": {**_dist(fresh.probes), "timeouts": fresh.probe_timeouts},
            "acked_events": acked,
            "counted_events": fresh.polls[-1][1] if fresh.polls else 0,
            "polls": len(fresh.polls), "poll_errors": fresh.poll_errors,
            "poll_interval_s": fresh.poll_s,
        }
    for stream in streams:
        stream.close()
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = asyncio.run(run(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
