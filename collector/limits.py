"""Load shedding: rate limits per client and per project (429), and a bound on work in
flight (503).

Both answer at once with ``Retry-After`` instead of queueing: a queue in memory is how a
collector under overload grows until it is killed, losing what it held.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from collector.body import RequestError
from tracklane.projects import RateLimit


class TokenBucket:
    """Tokens refill at ``rate`` up to ``burst``. A request is admitted whole or refused
    whole: never into debt, so no later sender waits for someone else's big batch. A batch
    larger than the bucket costs the whole bucket (it passes when the bucket is full)."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self._limit = limit
        self._tokens = limit.burst
        self._updated = now

    def wait(self, n: int, now: float) -> float:
        """Seconds until ``n`` events may pass (0: now), taking nothing."""
        rate = self._limit.events_per_s
        self._tokens = min(self._limit.burst, self._tokens + (now - self._updated) * rate)
        self._updated = now
        cost = min(float(n), self._limit.burst)
        return 0.0 if self._tokens >= cost else (cost - self._tokens) / rate

    def take(self, n: int) -> None:
        """Take what ``wait`` just allowed."""
        self._tokens -= min(float(n), self._limit.burst)


class RateLimiter:
    """Token buckets per project and per (project, client address), created on first use.

    The client's bucket keeps one abuser holding a project's public write key from
    starving the project's other visitors; the project's bucket, when one is configured,
    bounds the project as a whole. A request must fit both, and takes from both only
    then. Client buckets are kept for the ``max_clients`` most recent addresses: a
    forgotten one starts full again, as an idle one would be.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 65536) -> None:
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: dict[str, tuple[RateLimit, TokenBucket]] = {}
        self._clients: OrderedDict[tuple[str, str], tuple[RateLimit, TokenBucket]] = (
            OrderedDict())

    def check(self, project_id: str, limit: RateLimit | None, n: int,
              client: str = "", client_limit: RateLimit | None = None) -> None:
        """Admit ``n`` events, or raise a 429 ``RequestError`` saying when to retry."""
        now = self._clock()
        held: list[tuple[str, RateLimit, TokenBucket]] = []
        if client_limit is not None:
            key = (project_id, client)
            bucket = self._clients.get(key)
            if bucket is None or bucket[0] != client_limit:
                bucket = (client_limit, TokenBucket(client_limit, now))
                self._clients[key] = bucket
                if len(self._clients) > self._max_clients:
                    self._clients.popitem(last=False)
            self._clients.move_to_end(key)
            held.append(("this client's", *bucket))
        if limit is not None:
            found = self._buckets.get(project_id)
            if found is None or found[0] != limit:  # new project, or its limit was changed
                found = (limit, TokenBucket(limit, now))
                self._buckets[project_id] = found
            held.append(("the project's", *found))
        for whose, rate, tokens in held:
            wait = tokens.wait(n, now)
            if wait > 0:
                raise RequestError(
                    429, "rate_limited",
                    f"over {whose} limit of {rate.events_per_s:g} events/s",
                    retry_after=max(1, math.ceil(wait)))
        for _, _, tokens in held:
            tokens.take(n)


class InflightLimit:
    """At most ``max_requests`` ingest requests and ``max_bytes`` of their bodies at once."""

    def __init__(self, max_requests: int, max_bytes: int, retry_after_s: int) -> None:
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._retry_after_s = retry_after_s
        self.requests = 0
        self.bytes = 0

    @contextlib.contextmanager
    def admit(self, declared_bytes: int) -> Iterator[None]:
        """Hold a slot for a request whose body may be ``declared_bytes`` long."""
        if (self.requests + 1 > self._max_requests
                or self.bytes + declared_bytes > self._max_bytes):
            raise RequestError(503, "overloaded", "the collector is at capacity; retry later",
                               retry_after=self._retry_after_s)
        self.requests += 1
        self.bytes += declared_bytes
        try:
            yield
        finally:
            self.requests -= 1
            self.bytes -= declared_bytes
