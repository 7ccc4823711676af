"""What the OpenAPI schema (``/openapi.json``) says about routes that read raw requests.

The ingest routes, the pixel and the stats and alert routes read the request themselves
(size limits, gzip, lenient Segment parsing), so FastAPI cannot infer their bodies and
answers. The route declarations reference the schemas below: request bodies and
parameters through ``openapi_extra``, answers through ``responses=``. Nothing here
validates a request; it documents what the handlers accept and answer, and the
schemathesis suite (tests/test_schemathesis.py) checks every answer against it.

Every error answer is ``{"success": false, "error": "<code>", "message": "..."}``; each
route's error models are made by ``errors`` from the catalogue (tracklane/errors.py), and
list per status the codes it may answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from tracklane.contract import MAX_EVENT_NAME, MESSAGE_TYPES, Context, InboundMessage
from tracklane.errors import ErrorCode

# The API's description in /openapi.json: what every read route's numbers mean.
API_DESCRIPTION = """\
Ingest (Segment spec: `/v1/batch`, `/v1/track`, ..., the pixel `/p.gif`) with a write key;
read (`/v1/stats`, `/v1/query/*`, `/v1/persons`, `/v1/users`) with a read key.

**Source.** Every event is stored with a `source`: `pixel`, `browser` (a request a browser
sent: `Origin`, `Sec-Fetch-Mode` or a `text/plain` beacon, or a browser library's message),
`mobile` (a mobile library, or `context.app`), else `server`. `source` is a `breakdown`
dimension. Bots are judged on the end user's agent: `context.userAgent`, else the
request's `User-Agent` only for a browser request; a server library's own agent
(analytics-python, python-requests, Go-http-client, okhttp, curl, ...) is never a bot.

**Exclusions.** A project's `[project.exclude]` (projects file) lists internal address
ranges (CIDR, checked on the raw end-user address before it is anonymized), user ids and
anonymous ids; a message with `context.test = true` is a test. Such events are stored with
their reason (`excluded`) and, like bots, left out of every number and every alert.

**Persons.** Every person-level number (visitors, conversion, funnels, retention,
attribution, sessions' visitors, customers, CLV) counts persons merged across their ids,
at query time and retroactively. An anonymous id is linked to a user id by an `identify`
or any event carrying both, and by an `alias` (`previousId` -> `userId`). An event with a
user id is that user's; an event with only an anonymous id is the person's its anonymous
id was first linked to (event time, then user id); otherwise the anonymous id is the
person. User ids are never remapped: two known users are never merged. `GET
/v1/persons/{id}` answers a person by any of their ids; `DELETE /v1/users/{id}` erases the
whole person.

**Orders.** Orders are the events in the project's `order_events` (default `purchase` and
`Order Completed`); revenue is `properties.revenue`, else `properties.total`. Revenue, AOV
and CLV are given per currency and never summed across currencies.

**Customer KPIs** (`/v1/query/customers`): repurchase rate (customers with two or more
orders over customers, in the range and all time), CLV (revenue per customer over their
life so far, overall and by first-order month), new and returning visitors, and the
median time from first visit to first order.
"""

Responses = dict[int | str, dict[str, Any]]
E = ErrorCode


class _Error(BaseModel):
    success: Literal[False]
    error: str
    message: str


def _codes_field(codes: Sequence[ErrorCode]) -> Any:
    return Field(description="; ".join(f"`{c.code}`: {c.meaning}" for c in codes),
                 json_schema_extra={"enum": [c.code for c in codes]})


class EventError(BaseModel):
    """One rejected event of a request, by its position in the request."""

    index: int = Field(ge=0)
    error: str = _codes_field([E.INVALID_EVENT, E.EVENT_TOO_LARGE])
    message: str


class IngestAccepted(BaseModel):
    """Every valid event of the request is in Kafka (or the collector's disk spool)."""

    success: Literal[True]
    accepted: int = Field(ge=0)
    errors: list[EventError] | None = Field(
        None, description="the events that were rejected, when some were")


class _IngestError(_Error):
    accepted: int | None = Field(None, description="0, when events were rejected")
    errors: list[EventError] | None = None


_RETRY_STATUSES = (429, 503)


@cache
def _error_model(name: str, codes: tuple[ErrorCode, ...], base: type[_Error]) -> type[_Error]:
    model: type[_Error] = create_model(name, __base__=base, error=(str, _codes_field(codes)))
    return model


def errors(name: str, *codes: ErrorCode, base: type[_Error] = _Error,
           status: Mapping[ErrorCode, int] | None = None) -> Responses:
    """The error answers a route documents, from the catalogue (tracklane/errors.py): per
    status, a model ``<name><status>`` whose ``error`` lists that status's codes.
    ``status``: where the route answers a code with another status than its own."""
    by_status: dict[int, list[ErrorCode]] = {}
    for code in codes:
        by_status.setdefault((status or {}).get(code, code.status), []).append(code)
    out: Responses = {}
    for answer, group in sorted(by_status.items()):
        entry: dict[str, Any] = {
            "model": _error_model(f"{name}{answer}", tuple(group), base),
            "description": "; ".join(f"{c.code}: {c.meaning}" for c in group)}
        if answer in _RETRY_STATUSES:
            entry["description"] += ". Nothing was accepted: retry after Retry-After seconds"
            entry["headers"] = {"Retry-After": {"description": "seconds to wait",
                                                "schema": {"type": "integer"}}}
        out[answer] = entry
    return out


_READ_ERRORS = (E.MISSING_READ_KEY, E.INVALID_READ_KEY, E.STORE_UNAVAILABLE)
_BODY_ERRORS = (E.INVALID_JSON, E.INVALID_UTF8, E.INVALID_GZIP, E.EMPTY_BODY,
                E.BODY_TOO_LARGE, E.UNSUPPORTED_ENCODING)
_REFUSED = (E.RATE_LIMITED, E.TOO_MANY_REQUESTS, E.OVERLOADED, E.SPOOL_FULL, E.SPOOL_FAILED,
            E.BROKER_UNAVAILABLE)
_WRITE_KEY_ERRORS = (E.MISSING_WRITE_KEY, E.INVALID_WRITE_KEY, E.ORIGIN_NOT_ALLOWED)

class MinuteRow(BaseModel):
    minute: str = Field(description="the minute's start, ISO 8601 in UTC")
    count: int
    unique_users: int
    revenue: float


class MinuteStats(BaseModel):
    rows: list[MinuteRow]


class Silence(BaseModel):
    id: str
    matchers: dict[str, str]
    starts_at: str | None
    ends_at: str | None
    created_by: str
    comment: str
    created_at: str | None
    state: Literal["active", "pending"]


class Silences(BaseModel):
    silences: list[Silence]


class AlertsAnswer(BaseModel):
    alerts: list[dict[str, Any]] = Field(description="each alert's current state")
    transitions: list[dict[str, Any]] = Field(description="state changes, newest first")


class Readiness(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "unavailable"]
    kafka: bool
    store: bool | None = Field(description="null when this collector has no store")


INGEST_RESPONSES: Responses = {
    200: {"model": IngestAccepted, "description": "the valid events were accepted"},
    **errors("IngestError", *_BODY_ERRORS, E.INVALID_BODY, E.INVALID_EVENT, E.EVENT_TOO_LARGE,
             E.TOO_MANY_EVENTS, E.REQUEST_TIMEOUT, *_WRITE_KEY_ERRORS, *_REFUSED,
             base=_IngestError),
}

PIXEL_RESPONSES: Responses = {
    200: {"description": "a 1x1 transparent GIF: the hit was accepted",
          "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}}},
    **errors("PixelError", E.INVALID_JSON, E.INVALID_EVENT, E.EVENT_TOO_LARGE,
             *_WRITE_KEY_ERRORS, *_REFUSED),
}

QUERY_RESPONSES: Responses = errors("QueryError", E.INVALID_QUERY, E.INVALID_JSON,
                                    *_READ_ERRORS)

READ_RESPONSES: Responses = errors("ReadError", *_READ_ERRORS)

STATS_RESPONSES: Responses = {
    200: {"model": MinuteStats, "description": "one row per minute of [from, to)"},
    **QUERY_RESPONSES,
}

ALERTS_RESPONSES: Responses = {
    200: {"model": AlertsAnswer, "description": "alert states and transitions"},
    **QUERY_RESPONSES,
}

SILENCES_RESPONSES: Responses = {
    200: {"model": Silences, "description": "the project's active and pending silences"},
    **errors("SilencesError", *_READ_ERRORS),
}

CREATE_SILENCE_RESPONSES: Responses = {
    201: {"model": Silence, "description": "the silence was created"},
    **errors("SilenceError", E.INVALID_SILENCE, *_BODY_ERRORS, *_READ_ERRORS),
}

EXPIRE_SILENCE_RESPONSES: Responses = {
    204: {"description": "the silence was expired"},
    **errors("ExpireError", E.SILENCE_NOT_FOUND, *_READ_ERRORS),
}

PERSON_RESPONSES: Responses = errors("PersonError", E.INVALID_PERSON_ID, E.PERSON_NOT_FOUND,
                                     *_READ_ERRORS)

ERASE_RESPONSES: Responses = errors("EraseError", E.INVALID_USER_ID, *_READ_ERRORS,
                                    E.ERASURE_UNAVAILABLE, E.ERASURE_FAILED)

SDK_RESPONSES: Responses = {
    200: {"description": "the file",
          "content": {"text/javascript": {"schema": {"type": "string"}}},
          "headers": {"ETag": {"schema": {"type": "string"}}}},
    304: {"description": "unchanged since the If-None-Match ETag"},
    **errors("SdkError", E.NOT_FOUND, E.SDK_NOT_BUILT),
}

READY_RESPONSES: Responses = {
    200: {"model": Readiness, "description": "ready to accept events"},
    503: {"model": Readiness, "description": "not ready; the body says which part"},
}

METRICS_RESPONSES: Responses = {
    200: {"description": "Prometheus text exposition",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
}

CLIENT_CONFIG_RESPONSES: Responses = {
    200: {"description": "the settings the library loads with: delivery to this collector, "
          "no destinations", "content": {"application/json": {"schema": {"type": "object"}}}},
    # Segment's settings CDN answers an unknown key 404 (RudderStack's: 401).
    **errors("SegmentSettingsError", E.MISSING_WRITE_KEY, E.INVALID_WRITE_KEY,
             status={E.MISSING_WRITE_KEY: 400, E.INVALID_WRITE_KEY: 404}),
}

RUDDERSTACK_CONFIG_RESPONSES: Responses = {
    200: CLIENT_CONFIG_RESPONSES[200],
    **errors("SourceConfigError", E.MISSING_WRITE_KEY, E.INVALID_WRITE_KEY,
             status={E.MISSING_WRITE_KEY: 400}),
}

BUNDLE_RESPONSES: Responses = {
    302: {"description": "the bundle's address on Segment's CDN",
          "headers": {"Location": {"schema": {"type": "string"}}}},
    **errors("BundleError", E.NOT_FOUND),
}

PREFLIGHT_RESPONSES: Responses = {
    204: {"description": "CORS preflight answer"},
    **errors("PreflightError", E.NOT_FOUND),
}

# Answered by any route: the framework's own errors, and a failure of ours.
COMMON_RESPONSES: Responses = errors("Error", E.METHOD_NOT_ALLOWED, E.HTTP_ERROR,
                                     E.INTERNAL_ERROR)

_TIME = {"type": "string", "format": "date-time"}
_NAME = {"type": "string", "maxLength": MAX_EVENT_NAME}
_WRITE_KEY = {"type": "string", "description": "the write key, if not in a header"}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` put in place and pydantic's titles dropped: the raw
    routes' bodies are declared inline (``openapi_extra``)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            # A property may be named "title" too: pydantic's own titles are strings.
            return {k: walk(v) for k, v in node.items()
                    if not (k == "title" and isinstance(v, str))}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


def message_schema(kind: str | None = None) -> dict[str, Any]:
    """One Segment-spec message, from the contract's model (tracklane/contract.py);
    ``kind`` fixes its type (the single-event routes, where it may be left out)."""
    schema = _inlined(InboundMessage.model_json_schema())
    schema["description"] = " ".join(schema["description"].split())
    schema["properties"]["type"] = {"type": "string",
                                    "enum": [kind] if kind else list(MESSAGE_TYPES)}
    schema["properties"]["writeKey"] = _WRITE_KEY
    if kind is not None:
        schema.pop("required", None)
    return schema


BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "batch": {"type": "array", "items": message_schema()},
        "writeKey": _WRITE_KEY,
        "context": {**_inlined(Context.model_json_schema()),
                    "description": "merged under each event's own context"},
        "sentAt": {**_TIME, "description": "for each event that has none"},
    },
    "required": ["batch"],
}

_ENCODING_HEADER = {
    "name": "Content-Encoding", "in": "header", "required": False,
    "description": "gzip bodies are inflated (and limited after inflating)",
    "schema": {"type": "string", "enum": ["gzip", "identity"]},
}


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    # text/plain: beacons that avoid a CORS preflight send the same JSON.
    return {"required": True, "description": description, "content": {
        "application/json": {"schema": schema}, "text/plain": {"schema": schema}}}


def ingest_extra(kind: str | None) -> dict[str, Any]:
    """``openapi_extra`` of ``POST /v1/batch`` (``kind`` None) or ``POST /v1/<kind>``."""
    if kind is None:
        body = _json_body(BATCH_SCHEMA, "a batch of messages of any types")
    else:
        body = _json_body(message_schema(kind), f"one {kind} message")
    return {
        "description": "Send the write key as the Basic-auth username, an X-Write-Key "
                       "header or writeKey in the body. Valid events are accepted and each "
                       "rejected one is reported by index.",
        "requestBody": body,
        "parameters": [_ENCODING_HEADER],
    }


def _query(name: str, description: str, schema: dict[str, Any],
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}


_STRING = {"type": "string"}

PIXEL_EXTRA: dict[str, Any] = {
    "description": "A tracking pixel. `p.<name>=<value>` sets one property. The write key "
                   "may also come as an X-Write-Key header.",
    "parameters": [
        _query("k", "write key", _STRING),
        _query("e", "event name; default page_view (stored as a page view)", _NAME),
        _query("mid", "message id; makes retries and re-opens safe", _STRING),
        _query("aid", "anonymous id", _STRING),
        _query("uid", "user id", _STRING),
        _query("sid", "session id", _STRING),
        _query("url", "page URL", _STRING),
        _query("ref", "referrer", _STRING),
        _query("title", "page title", _STRING),
        _query("ts", "client time: Unix milliseconds or ISO 8601", _STRING),
        _query("p", 'properties as a JSON object, e.g. {"plan":"pro"}', _STRING),
    ],
}

STATS_EXTRA: dict[str, Any] = {
    "description": "Per-minute counts from the rollups, with 'Authorization: Bearer <read "
                   "key>'. At most 7 days.",
    "parameters": [
        _query("event", "event name", {"type": "string", "minLength": 1}, required=True),
        _query("from", "range start, inclusive", _TIME, required=True),
        _query("to", "range end, exclusive", _TIME, required=True),
    ],
}

ALERTS_EXTRA: dict[str, Any] = {
    "description": "With 'Authorization: Bearer <read key>'.",
    "parameters": [
        _query("from", "range start; default 7 days before `to`", _TIME),
        _query("to", "range end; default now", _TIME),
        _query("limit", "at most this many transitions",
               {"type": "integer", "minimum": 1, "maximum": 1000}),
        _query("rule", "only this rule", _STRING),
    ],
}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that validates its raw JSON body with ``model``."""
    schema = model.model_json_schema()
    assert "$defs" not in schema, "only flat models can be inlined"
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": schema}}}}
