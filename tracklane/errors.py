"""Every error code an HTTP answer can carry, with its status and what it means.

Each error answer is ``{"success": false, "error": "<code>", "message": "..."}``. The
handlers raise codes from this catalogue only (``collector.body.RequestError`` takes an
``ErrorCode``), and ``/openapi.json`` lists them, per route and status, from here
(collector/openapi.py), so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class _Kind:
    status: int
    meaning: str


class ErrorCode(Enum):
    """An error's code (the member's name in lower case), status and meaning."""

    # The body
    INVALID_JSON = _Kind(400, "the body (or the pixel's `p`) is not JSON")
    INVALID_UTF8 = _Kind(400, "the body is not UTF-8")
    INVALID_GZIP = _Kind(400, "the body is not whole, valid gzip")
    EMPTY_BODY = _Kind(400, "the body is empty")
    INVALID_BODY = _Kind(400, "the JSON is not of the route's shape")
    BODY_TOO_LARGE = _Kind(413, "the body is over the limit (also after gunzip)")
    TOO_MANY_EVENTS = _Kind(413, "the batch holds more events than a request may")
    UNSUPPORTED_ENCODING = _Kind(415, "a Content-Encoding other than gzip")
    REQUEST_TIMEOUT = _Kind(408, "the body did not arrive within TRACKLANE_READ_TIMEOUT_S")
    # An event (per event in a partly accepted request; the request's when none is valid)
    INVALID_EVENT = _Kind(400, "the event breaks the contract; the message names the field")
    EVENT_TOO_LARGE = _Kind(400, "the event is over the size limit of one event")
    # Keys and origins
    MISSING_WRITE_KEY = _Kind(401, "no write key")
    INVALID_WRITE_KEY = _Kind(401, "an unknown write key")
    ORIGIN_NOT_ALLOWED = _Kind(403, "a browser Origin not in the project's allowed_origins")
    MISSING_READ_KEY = _Kind(401, "no read key (Authorization: Bearer <key>)")
    INVALID_READ_KEY = _Kind(401, "an unknown read key")
    # Reads
    INVALID_QUERY = _Kind(400, "a bad parameter, named in the message")
    INVALID_USER_ID = _Kind(400, "the user id in the path is empty or too long")
    INVALID_PERSON_ID = _Kind(400, "the person id in the path is empty or too long")
    INVALID_SILENCE = _Kind(400, "an invalid silence, as the message says")
    NOT_FOUND = _Kind(404, "no such route or file")
    SDK_NOT_BUILT = _Kind(404, "the browser SDK or the dashboard is not built")
    SILENCE_NOT_FOUND = _Kind(404, "no active silence with this id")
    PERSON_NOT_FOUND = _Kind(404, "no person has this id in the project")
    METHOD_NOT_ALLOWED = _Kind(405, "the route does not take this method")
    STORE_UNAVAILABLE = _Kind(503, "this collector has no store configured")
    ERASURE_UNAVAILABLE = _Kind(503, "this collector cannot erase (no secret or no store)")
    ERASURE_FAILED = _Kind(503, "the erasure did not complete; retry")
    # Nothing accepted: retry after Retry-After seconds
    RATE_LIMITED = _Kind(429, "the client or the project is over its events per second")
    TOO_MANY_REQUESTS = _Kind(429, "the client has too many requests in flight")
    OVERLOADED = _Kind(503, "the collector is at capacity")
    SPOOL_FULL = _Kind(503, "the disk spool (or up's journal) is full")
    SPOOL_FAILED = _Kind(503, "the disk refused the write (full or read-only)")
    BROKER_UNAVAILABLE = _Kind(503, "Kafka did not acknowledge, and there is no spool")
    # Anything else
    HTTP_ERROR = _Kind(400, "an HTTP error the framework raised")
    INTERNAL_ERROR = _Kind(500, "a bug: the request failed and the log says why")

    @property
    def code(self) -> str:
        return self.name.lower()

    @property
    def status(self) -> int:
        return self.value.status

    @property
    def meaning(self) -> str:
        return self.value.meaning
