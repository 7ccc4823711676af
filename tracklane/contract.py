"""The event contract: the one place that says what an event is.

Three shapes live here, and nowhere else:

* ``InboundMessage``: what clients send (the Segment spec, leniently typed so that
  existing Segment and RudderStack libraries work unchanged);
* ``Envelope``: what the collector writes to Kafka after validation and enrichment;
* ``EVENT_COLUMNS`` / ``envelope_to_row``: what the stream writes to ClickHouse.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from tracklane.errors import ErrorCode

ENVELOPE_VERSION = 1

MessageType = Literal["track", "page", "screen", "identify", "group", "alias"]
# The same, as values: the single-event routes and the documented schema use them.
MESSAGE_TYPES: tuple[str, ...] = get_args(MessageType)
# browser: a page sent it (our SDK, analytics.js, a beacon); pixel: the 1x1 GIF; mobile: an
# app's SDK; server: a backend's library or any other HTTP client.
Source = Literal["browser", "server", "pixel", "mobile"]
SOURCES: tuple[Source, ...] = ("browser", "server", "pixel", "mobile")
# Why an event is stored but not counted: a test message (context.test), an address in the
# project's internal ranges, or one of its listed internal user or anonymous ids.
ExclusionReason = Literal["test", "internal_ip", "internal_user"]

# Stored event names for the types that carry no `event` of their own.
TYPE_EVENT_NAMES: dict[str, str] = {
    "page": "page_view",
    "screen": "screen_view",
    "identify": "identify",
    "group": "group",
    "alias": "alias",
}
PIXEL_DEFAULT_EVENT = "page_view"

UTM_FIELDS = ("source", "medium", "campaign", "term", "content")
# Ad-network click ids, in the order we prefer when a URL carries several.
CLICK_ID_PARAMS = (
    "gclid", "gbraid", "wbraid", "fbclid", "msclkid", "ttclid", "li_fat_id", "twclid",
)

MAX_EVENT_NAME = 200
MAX_ID_LENGTH = 200
# Decimal(18, 4) holds up to 14 integer digits.
MAX_REVENUE = Decimal("99999999999999.9999")


class ContractError(ValueError):
    """An event breaks the contract; the message says which field and why, ``error`` what
    the client is told (``invalid_event``, or ``event_too_large``)."""

    def __init__(self, message: str, error: ErrorCode = ErrorCode.INVALID_EVENT) -> None:
        super().__init__(message)
        self.error = error

    @property
    def code(self) -> str:
        return self.error.code


def _id(value: str | int | None) -> str | None:
    if value is None:
        return None
    text = str(value)
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"longer than {MAX_ID_LENGTH} characters")
    return text or None


# What /openapi.json says of these fields, where the lenient types say less: documentation
# only, validation is the models' (collector/openapi.py makes the message schemas from
# them).
_ID_DOC = WithJsonSchema({"type": ["string", "number"], "maxLength": MAX_ID_LENGTH})
_NAME_DOC = WithJsonSchema({"type": "string", "maxLength": MAX_EVENT_NAME})
_TEXT = {"type": "string"}
_PAGE_DOC: dict[str, Any] = {"properties": {"url": _TEXT, "path": _TEXT, "referrer": _TEXT,
                                            "title": _TEXT}}
_LIBRARY_DOC: dict[str, Any] = {"properties": {"name": _TEXT, "version": _TEXT}}


class Context(BaseModel):
    """The Segment context; unknown keys are kept and ignored."""

    model_config = ConfigDict(extra="allow")

    page: dict[str, Any] | None = Field(default=None, json_schema_extra=_PAGE_DOC)
    userAgent: str | None = None
    ip: str | None = None
    locale: str | None = None
    library: dict[str, Any] | None = Field(default=None, json_schema_extra=_LIBRARY_DOC)
    campaign: dict[str, Any] | None = None
    sessionId: Annotated[str | None, WithJsonSchema({"type": ["string", "integer"]})] = None

    @field_validator("sessionId", mode="before")
    @classmethod
    def _session(cls, v: Any) -> Any:
        # Some SDKs send a numeric session id (a start time in ms).
        return _id(v) if isinstance(v, str | int) and not isinstance(v, bool) else v


class InboundMessage(BaseModel):
    """A Segment-spec message; unknown fields are kept and ignored. One of anonymousId or
    userId is required; a track needs its event."""

    model_config = ConfigDict(extra="allow")

    type: MessageType
    messageId: Annotated[str | None, _ID_DOC] = None
    anonymousId: Annotated[str | None, _ID_DOC] = None
    userId: Annotated[str | None, _ID_DOC] = None
    event: Annotated[str | None, _NAME_DOC] = None
    name: Annotated[str | None, _NAME_DOC] = None
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: Context = Field(default_factory=Context)
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    groupId: Annotated[str | None, _ID_DOC] = None
    previousId: Annotated[str | None, _ID_DOC] = None

    @field_validator("messageId", "anonymousId", "userId", "groupId", "previousId", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> Any:
        # Libraries send numeric user ids; the contract stores every id as text.
        if isinstance(v, bool):
            raise ValueError("must be a string")
        if isinstance(v, int | float):
            v = str(v)
        return v

    @field_validator("messageId", "anonymousId", "userId", "groupId", "previousId")
    @classmethod
    def _id_length(cls, v: str | None) -> str | None:
        return _id(v)

    @field_validator("event", "name")
    @classmethod
    def _name_length(cls, v: str | None) -> str | None:
        if v is not None and len(v) > MAX_EVENT_NAME:
            raise ValueError(f"longer than {MAX_EVENT_NAME} characters")
        return v


class Envelope(BaseModel):
    """What the collector writes to Kafka: validated, enriched, and free of the raw IP."""

    v: int = ENVELOPE_VERSION
    project_id: str
    message_id: str
    type: MessageType
    event: str
    timestamp: datetime
    received_at: datetime
    sent_at: datetime | None = None
    anonymous_id: str = ""
    user_id: str = ""
    session_id: str = ""
    group_id: str = ""
    previous_id: str = ""
    url: str = ""
    path: str = ""
    title: str = ""
    referrer: str = ""
    referrer_domain: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_term: str = ""
    utm_content: str = ""
    click_id: str = ""
    click_id_type: str = ""
    browser: str = ""
    browser_version: str = ""
    os: str = ""
    os_version: str = ""
    device_type: str = ""
    is_bot: bool = False
    # Where the event was sent from (``Source``), and why it is left out of analytics
    # (``ExclusionReason``; empty: counted). Both empty on envelopes older than them.
    source: str = ""
    excluded: str = ""
    ip: str = ""
    # Where the request came from, looked up on the raw IP (collector/geoip.py): ISO 3166-1
    # alpha-2 country, and with a MaxMind database the region and city names.
    country: str = ""
    region: str = ""
    city: str = ""
    locale: str = ""
    library_name: str = ""
    library_version: str = ""
    revenue: Decimal = Decimal(0)
    currency: str = ""
    properties: str = "{}"
    traits: str = "{}"

    @property
    def kafka_key(self) -> bytes:
        return kafka_key(self.project_id, self.message_id)

    def to_kafka_value(self) -> bytes:
        return _encode(self.__dict__)

    @classmethod
    def from_kafka_value(cls, value: bytes) -> Envelope:
        return cls.model_validate_json(value)


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    browser: str = ""
    browser_version: str = ""
    os: str = ""
    os_version: str = ""
    device_type: str = ""
    is_bot: bool = False


@dataclass(frozen=True, slots=True)
class GeoInfo:
    country: str = ""
    region: str = ""
    city: str = ""


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the collector knows about the HTTP request an event arrived in."""

    project_id: str
    received_at: datetime
    anonymized_ip: str
    user_agent: UserAgentInfo
    source: Source | Literal[""] = ""
    excluded: ExclusionReason | Literal[""] = ""
    geo: GeoInfo = GeoInfo()


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """How far an event's time may sit from its arrival before it is rejected."""

    max_future: timedelta = timedelta(hours=1)
    max_past: timedelta = timedelta(days=90)


def event_name(msg: InboundMessage) -> str:
    if msg.type == "track":
        if not msg.event:
            raise ContractError("event: required for track")
        return msg.event
    return TYPE_EVENT_NAMES[msg.type]


def event_time(msg: InboundMessage, received_at: datetime, limits: TimeLimits) -> datetime:
    """Event time corrected for the client's clock skew, bounded by ``limits``."""
    ts = msg.timestamp or msg.originalTimestamp
    if ts is None:
        return received_at
    ts = _utc(ts)
    if msg.sentAt is not None:
        # The client's clock error is the same for sentAt and timestamp; remove it.
        try:
            ts = received_at - (_utc(msg.sentAt, "sentAt") - ts)
        except OverflowError:
            raise ContractError("timestamp: out of range after clock skew correction") from None
    if ts > received_at + limits.max_future:
        raise ContractError(f"timestamp: more than {limits.max_future} in the future")
    if ts < received_at - limits.max_past:
        raise ContractError(f"timestamp: more than {limits.max_past} in the past")
    return ts


def _utc(ts: datetime, name: str = "timestamp") -> datetime:
    try:
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ContractError(f"{name}: out of range") from None


def _json_text(value: Any, name: str) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # orjson writes at most 255 levels of nesting
        raise ContractError(f"{name}: nested too deeply") from None


def _text(value: Any, limit: int = 2048) -> str:
    if value is None:
        return ""
    return str(value)[:limit]


def _revenue(props: Mapping[str, Any]) -> Decimal:
    raw = props.get("revenue", props.get("total"))
    if raw is None or raw == "":
        return Decimal(0)
    if isinstance(raw, bool):
        raise ContractError("properties.revenue: must be a number")
    try:
        value = Decimal(str(raw)).quantize(Decimal("0.0001"))
    except InvalidOperation:
        raise ContractError("properties.revenue: must be a number") from None
    if not value.is_finite() or abs(value) > MAX_REVENUE:
        raise ContractError("properties.revenue: out of range")
    return value


# A site sends the same few thousand page URLs and referrers over and over: parsing them
# was a tenth of the collector's time per event.
@lru_cache(maxsize=8192)
def _domain(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")


@lru_cache(maxsize=8192)
def _url_parts(url: str) -> tuple[str, Mapping[str, str]]:
    """A URL's path and query parameters (read-only: the result is shared)."""
    try:
        parts = urlsplit(url)
        return parts.path, MappingProxyType(dict(parse_qsl(parts.query)))
    except ValueError:
        return "", MappingProxyType({})


def _page_fields(msg: InboundMessage) -> dict[str, str]:
    page = msg.context.page or {}
    props = msg.properties
    url = _text(page.get("url") or props.get("url"))
    path = _text(page.get("path") or props.get("path"))
    if url and not path:
        path = _url_parts(url)[0]
    referrer = _text(page.get("referrer") or props.get("referrer"))
    return {
        "url": url,
        "path": path,
        "title": _text(page.get("title") or props.get("title") or msg.name or ""),
        "referrer": referrer,
        "referrer_domain": _domain(referrer) if referrer else "",
    }


_NO_QUERY: Mapping[str, str] = MappingProxyType({})


def _campaign_fields(msg: InboundMessage, url: str) -> dict[str, Any]:
    query = _url_parts(url)[1] if url else _NO_QUERY
    campaign = msg.context.campaign or {}
    out = {
        f"utm_{f}": _text(campaign.get(f) or campaign.get("name" if f == "campaign" else f)
                          or query.get(f"utm_{f}"), 200)
        for f in UTM_FIELDS
    }
    out["click_id"] = out["click_id_type"] = ""
    for param in CLICK_ID_PARAMS:
        value = query.get(param) or campaign.get(param)
        if value:
            out["click_id"], out["click_id_type"] = _text(value, 500), param
            break
    return out


def envelope_fields(msg: InboundMessage, facts: RequestFacts, limits: TimeLimits) -> dict[str, Any]:
    """Validate one message against the contract and enrich it: the ``Envelope``'s fields.

    Raises ``ContractError`` with a field-naming reason when the message is unusable. The
    collector encodes these fields straight to Kafka (``envelope_record``): building a
    pydantic model per event was a sixth of its time, and every value here already has
    its declared type (``build_envelope`` checks that, and the tests hold them equal).
    """
    if not (msg.anonymousId or msg.userId):
        raise ContractError("anonymousId or userId: one is required")
    name = event_name(msg)
    page: dict[str, Any] = _page_fields(msg)
    library = msg.context.library or {}
    props = dict(msg.properties)
    revenue = _revenue(props)
    currency = _text(props.get("currency"), 8).upper() if revenue else ""
    ua = facts.user_agent
    # In ``Envelope``'s field order, so the JSON is byte for byte the model's.
    return {
        "v": ENVELOPE_VERSION,
        "project_id": facts.project_id,
        "message_id": msg.messageId or str(uuid.uuid4()),
        "type": msg.type,
        "event": name,
        "timestamp": event_time(msg, facts.received_at, limits),
        "received_at": facts.received_at,
        "sent_at": _utc(msg.sentAt, "sentAt") if msg.sentAt else None,
        "anonymous_id": msg.anonymousId or "",
        "user_id": msg.userId or "",
        "session_id": msg.context.sessionId or "",
        "group_id": msg.groupId or "",
        "previous_id": msg.previousId or "",
        **page,
        **_campaign_fields(msg, page["url"]),
        "browser": ua.browser,
        "browser_version": ua.browser_version,
        "os": ua.os,
        "os_version": ua.os_version,
        "device_type": ua.device_type,
        "is_bot": ua.is_bot,
        "source": facts.source,
        "excluded": facts.excluded,
        "ip": facts.anonymized_ip,
        "country": facts.geo.country,
        "region": facts.geo.region,
        "city": facts.geo.city,
        "locale": _text(msg.context.locale, 35),
        "library_name": _text(library.get("name"), 100),
        "library_version": _text(library.get("version"), 50),
        "revenue": revenue,
        "currency": currency,
        "properties": _json_text(props, "properties"),
        "traits": _json_text(msg.traits, "traits"),
    }


def build_envelope(msg: InboundMessage, facts: RequestFacts, limits: TimeLimits) -> Envelope:
    """``envelope_fields`` as a validated ``Envelope``."""
    return Envelope.model_validate(envelope_fields(msg, facts, limits))


def envelope_record(fields: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The Kafka (key, value) of an envelope given as ``envelope_fields``."""
    return kafka_key(fields["project_id"], fields["message_id"]), _encode(fields)


def kafka_key(project_id: str, message_id: str) -> bytes:
    """Every copy of one message id lands in one partition, so one consumer owns its dedup."""
    return f"{project_id}:{message_id}".encode()


def _encode(fields: Mapping[str, Any]) -> bytes:
    # The same JSON as pydantic's ``model_dump(mode="json")``: Z times, decimals as text.
    return orjson.dumps(fields, default=_decimal_text, option=orjson.OPT_UTC_Z)


def parse_message(raw: Any, default_type: str | None = None) -> InboundMessage:
    """Turn one decoded JSON value into an ``InboundMessage`` or raise ``ContractError``."""
    if not isinstance(raw, dict):
        raise ContractError("event: must be a JSON object")
    if default_type is not None and "type" not in raw:
        raw = {**raw, "type": default_type}
    try:
        return InboundMessage.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise ContractError(f"{where}: {first['msg']}") from None


def _ms(at: datetime) -> int:
    # DateTime64(3) as ClickHouse stores it: clickhouse-connect passes ints through, and
    # converting its datetimes in Python cost the sink's insert a twentieth of its time.
    return (math.floor(at.timestamp()) * 1_000_000 + at.microsecond) // 1000


# The raw ``events`` row, in insert order: each column, and how it is read from an
# envelope ``e`` when it is not ``e.<column>``. ``EVENT_COLUMNS`` and ``envelope_to_row``
# are made from it, and tests/test_contract.py checks it against the columns the
# migrations create.
_ROW: tuple[tuple[str, str | None], ...] = (
    ("project_id", None), ("message_id", None), ("type", None), ("event", None),
    ("timestamp", "_ms(e.timestamp)"), ("received_at", "_ms(e.received_at)"),
    ("sent_at", "None if e.sent_at is None else _ms(e.sent_at)"),
    ("anonymous_id", None), ("user_id", None), ("distinct_id", "e.user_id or e.anonymous_id"),
    ("session_id", None), ("group_id", None), ("previous_id", None),
    ("url", None), ("path", None), ("title", None), ("referrer", None),
    ("referrer_domain", None),
    ("utm_source", None), ("utm_medium", None), ("utm_campaign", None), ("utm_term", None),
    ("utm_content", None), ("click_id", None), ("click_id_type", None),
    ("browser", None), ("browser_version", None), ("os", None), ("os_version", None),
    ("device_type", None), ("is_bot", "int(e.is_bot)"),
    ("source", None), ("excluded", None), ("ip", None),
    ("country", None), ("region", None), ("city", None), ("locale", None),
    ("library_name", None), ("library_version", None),
    ("revenue", None), ("currency", None), ("properties", None), ("traits", None),
    # Where the sink read the envelope, and its batch's token (set last: stream/sink.py).
    ("kafka_partition", "partition"), ("kafka_offset", "offset"), ("batch_token", "token"),
)
EVENT_COLUMNS: tuple[str, ...] = tuple(column for column, _ in _ROW)


def _row_builder() -> Callable[[Envelope, int, int, str], list[Any]]:
    """``envelope_to_row``, compiled from ``_ROW`` once, as ``dataclasses`` compiles
    ``__init__``: a list display reads a row in 2.1 µs, a getter per column in 3.3 µs (4%
    of the sink's time per event)."""
    body = ", ".join(expression or f"e.{column}" for column, expression in _ROW)
    namespace: dict[str, Any] = {"_ms": _ms}
    exec(f"def envelope_to_row(e, partition, offset, token):\n    return [{body}]\n",
         namespace)
    built: Callable[[Envelope, int, int, str], list[Any]] = namespace["envelope_to_row"]
    built.__doc__ = "One ``events`` row in ``EVENT_COLUMNS`` order, times as epoch ms."
    return built


envelope_to_row = _row_builder()
