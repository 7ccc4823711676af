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

from tracklane.collector.body import RequestError
from tracklane.errors import ErrorCode
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
                    ErrorCode.RATE_LIMITED,
                    f"over {whose} limit of {rate.events_per_s:g} events/s",
                    retry_after=max(1, math.ceil(wait)))
        for _, _, tokens in held:
            tokens.take(n)


class InflightLimit:
    """At most ``max_requests`` accepted requests at once, and ``max_bytes`` of bodies held.

    A request takes a slot only once its write key is known good (``admit``); bytes are
    charged as they are actually read (``holding``), not as a header declares them. So
    uploads that never send their body, or send no valid key, cost their connection and
    what they really sent, and never the capacity a real client needs.
    """

    def __init__(self, max_requests: int, max_bytes: int, retry_after_s: int) -> None:
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._retry_after_s = retry_after_s
        self.requests = 0
        self.bytes = 0

    def _overloaded(self) -> RequestError:
        return RequestError(ErrorCode.OVERLOADED, "the collector is at capacity; retry later",
                            retry_after=self._retry_after_s)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a request slot."""
        if self.requests + 1 > self._max_requests:
            raise self._overloaded()
        self.requests += 1
        try:
            yield
        finally:
            self.requests -= 1

    @contextlib.contextmanager
    def holding(self) -> Iterator[Callable[[int], None]]:
        """A ``charge(n)`` for bytes as they arrive; all of them are given back at the end."""
        held = 0

        def charge(n: int) -> None:
            nonlocal held
            if self.bytes + n > self._max_bytes:
                raise self._overloaded()
            self.bytes += n
            held += n

        try:
            yield charge
        finally:
            self.bytes -= held


class ClientSlots:
    """At most ``max_per_client`` requests in progress per client address.

    A single address holding many slow or idle uploads is refused at once (429) beyond
    that, each refusal costing a connection, so it cannot use up the collector's memory or
    its request slots. Counted per address, entries removed when they drop to zero.
    """

    def __init__(self, max_per_client: int) -> None:
        self._max = max_per_client
        self._active: dict[str, int] = {}

    @contextlib.contextmanager
    def admit(self, client: str) -> Iterator[None]:
        count = self._active.get(client, 0)
        if self._max > 0 and count >= self._max:
            raise RequestError(ErrorCode.TOO_MANY_REQUESTS,
                               f"over {self._max} requests in progress from this address",
                               retry_after=1)
        self._active[client] = count + 1
        try:
            yield
        finally:
            left = self._active[client] - 1
            if left:
                self._active[client] = left
            else:
                del self._active[client]
