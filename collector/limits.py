"""Load shedding: per-project rate limits (429) and a bound on work in flight (503).

Both answer at once with ``Retry-After`` instead of queueing: a queue in memory is how a
collector under overload grows until it is killed, losing what it held.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

from collector.body import RequestError
from tracklane.projects import RateLimit


class TokenBucket:
    """Tokens refill at ``rate`` up to ``burst``. A request may take more than is left
    (a 100-event batch against 50 tokens) and leaves the bucket in debt, so a large batch is
    never refused forever; the next request waits until the debt is paid."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self._limit = limit
        self._tokens = limit.burst
        self._updated = now

    def take(self, n: int, now: float) -> float:
        """Take ``n`` tokens and return 0, or return the seconds until a request may pass."""
        rate = self._limit.events_per_s
        self._tokens = min(self._limit.burst, self._tokens + (now - self._updated) * rate)
        self._updated = now
        if self._tokens < 1:
            return (1 - self._tokens) / rate
        self._tokens -= n
        return 0.0


class RateLimiter:
    """One token bucket per project, created on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[RateLimit, TokenBucket]] = {}

    def check(self, project_id: str, limit: RateLimit | None, n: int) -> None:
        """Raise a 429 ``RequestError`` when the project is over its limit."""
        if limit is None:
            return
        now = self._clock()
        held = self._buckets.get(project_id)
        if held is None or held[0] != limit:  # new project, or its limit was changed
            held = (limit, TokenBucket(limit, now))
            self._buckets[project_id] = held
        wait = held[1].take(n, now)
        if wait > 0:
            raise RequestError(429, "rate_limited",
                               f"over the project's limit of {limit.events_per_s:g} events/s",
                               retry_after=max(1, math.ceil(wait)))


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
