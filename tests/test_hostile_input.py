"""Hostile input: every bad request gets a 4xx JSON error naming the problem, never a 5xx.

Three layers:

* properties (hypothesis, derandomized) of the event contract and the pixel parser:
  arbitrary JSON-like values and query strings either become a valid message and
  envelope, with their fields intact, or raise the contract's named error;
* hostile bodies, headers and query strings through the real app (ASGI) with a real
  Kafka, each with its exact status and error code;
* slow clients against the collector as a real process (uvicorn on a loopback port).

Behaviour documented here: duplicate JSON keys are accepted and the last one wins (orjson);
the Content-Type is not checked (beacons send text/plain), so a JSON body is read as
JSON whatever its label, and anything else is ``invalid_json``.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import select
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from tests.collector_process import CollectorProcess, collector_env
from tests.pipeline import (
    Pipeline,
    basic_auth,
    new_project,
    now_utc,
    pipeline_settings,
    running_pipeline,
)
from tracklane.broker import TansuBroker, free_port
from tracklane.collector.body import RequestError
from tracklane.collector.pixel import pixel_message
from tracklane.contract import (
    CLICK_ID_PARAMS,
    EVENT_COLUMNS,
    MAX_REVENUE,
    PIXEL_DEFAULT_EVENT,
    TYPE_EVENT_NAMES,
    UTM_FIELDS,
    ContractError,
    Envelope,
    InboundMessage,
    RequestFacts,
    TimeLimits,
    UserAgentInfo,
    build_envelope,
    envelope_to_row,
    parse_message,
)
from tracklane.projects import Project

MESSAGE_TYPES = ("track", "page", "screen", "identify", "group", "alias")
LIMIT = 500 * 1024  # the default max_body_bytes
DETERMINISTIC = settings(
    derandomize=True, deadline=None, database=None, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)

# ---------------------------------------------------------------------------------------
# Strategies: what orjson can hand the contract, plus values aimed at its edges.

_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


_deep = st.integers(min_value=200, max_value=320).map(nested)  # orjson writes 255 levels

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = TimeLimits()
FACTS = RequestFacts(project_id="p_props", received_at=RECEIVED, anonymized_ip="198.51.100.0",
                     user_agent=UserAgentInfo(browser="Chrome", os="Linux",
                                              device_type="desktop"))

_offsets: st.SearchStrategy[tzinfo | None] = st.none() | st.integers(
    min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))
_any_instant = st.builds(lambda naive, tz: naive.replace(tzinfo=tz), st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)), _offsets)
_recent = st.timedeltas(min_value=-timedelta(days=100), max_value=timedelta(hours=2)).map(
    lambda d: RECEIVED + d)
_times = (_any_instant.map(datetime.isoformat) | _recent.map(datetime.isoformat)
          | st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                             "yesterday", "", "2026-02-30T00:00:00Z"])
          | st.integers() | st.floats(allow_nan=False) | json_values)
_ids = (st.text(max_size=210) | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False) | st.booleans() | json_values)
_names = st.text(max_size=210) | json_values
_urls = st.sampled_from([
    "https://shop.example/p?utm_source=news&utm_medium=mail&gclid=g1&fbclid=f1",
    "https://www.google.com/search?q=x", "http://[::1", "http://[not-ipv6]/", "//", "",
    "https://shop.example/" + "x" * 3000,
]) | st.text(max_size=40)
_revenues = (st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
             | st.sampled_from(["12.5", "1e400", "NaN", "sNaN", "-Infinity", "", "lots",
                                "99999999999999.99995", "1e-30"]) | json_values)
_props = st.dictionaries(
    st.sampled_from(["revenue", "total", "currency", "url", "path", "title", "referrer"])
    | st.text(max_size=6),
    _revenues | _urls | json_values | _deep, max_size=5,
) | json_values
_context = st.fixed_dictionaries({}, optional={
    "page": st.fixed_dictionaries({}, optional={
        "url": _urls, "path": _urls, "referrer": _urls, "title": _names}) | json_values,
    "userAgent": st.text(max_size=60) | json_values,
    "ip": st.sampled_from(["203.0.113.9", "::1", "2001:db8::1", "::ffff:1.2.3.4", "999.1.1.1",
                           ""]) | json_values,
    "locale": st.text(max_size=40) | json_values,
    "library": st.fixed_dictionaries({}, optional={"name": _names, "version": _names})
    | json_values,
    "campaign": st.dictionaries(st.sampled_from([*UTM_FIELDS, "name", *CLICK_ID_PARAMS]),
                                st.text(max_size=20) | json_values, max_size=4) | json_values,
    "sessionId": _ids,
}) | json_values
messages = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from([*MESSAGE_TYPES, "purchase", "TRACK", ""]) | json_values,
    "messageId": _ids, "anonymousId": _ids, "userId": _ids, "groupId": _ids,
    "previousId": _ids, "event": _names, "name": _names,
    "properties": _props, "traits": _props, "context": _context,
    "timestamp": _times, "originalTimestamp": _times, "sentAt": _times,
})
# Mostly valid messages, so that the envelope properties see many successes.
valid_messages = st.fixed_dictionaries({
    "type": st.sampled_from(MESSAGE_TYPES),
    "event": st.text(min_size=1, max_size=50),
    "anonymousId": st.text(min_size=1, max_size=50),
}, optional={
    "messageId": st.text(max_size=60), "userId": st.text(max_size=60),
    "properties": _props, "traits": st.dictionaries(st.text(max_size=6), json_values),
    "context": _context, "timestamp": _recent.map(datetime.isoformat),
    "sentAt": _recent.map(datetime.isoformat),
})


# ---------------------------------------------------------------------------------------
# Properties of the contract


@settings(DETERMINISTIC, max_examples=200)
@given(raw=messages | valid_messages | json_values,
       default_type=st.none() | st.sampled_from(MESSAGE_TYPES))
def test_parse_message_returns_a_message_or_names_the_field(
    raw: Any, default_type: str | None,
) -> None:
    try:
        msg = parse_message(raw, default_type)
    except ContractError as exc:
        # "<field>: <reason>", never an empty or foreign error.
        assert ": " in str(exc), exc
        return
    assert isinstance(raw, dict)
    assert isinstance(msg, InboundMessage)
    assert msg.type == raw.get("type", default_type)
    for field in ("event", "name"):
        if isinstance(raw.get(field), str):
            assert getattr(msg, field) == raw[field]
    for field in ("messageId", "anonymousId", "userId", "groupId", "previousId"):
        value = raw.get(field)
        if isinstance(value, str):
            assert getattr(msg, field) == (value or None)
        elif isinstance(value, int) and not isinstance(value, bool):
            assert getattr(msg, field) == str(value)


@settings(DETERMINISTIC, max_examples=150)
@given(raw=valid_messages | messages)
def test_envelope_is_built_with_its_fields_intact_or_named_error(raw: dict[str, Any]) -> None:
    try:
        msg = parse_message(raw)
        env = build_envelope(msg, FACTS, LIMITS)
    except ContractError as exc:
        assert ": " in str(exc), exc
        return
    assert env.project_id == FACTS.project_id and env.type == msg.type
    assert env.event == (msg.event if msg.type == "track" else TYPE_EVENT_NAMES[msg.type])
    if msg.messageId:
        assert env.message_id == msg.messageId
    else:
        uuid.UUID(env.message_id)
    assert env.anonymous_id == (msg.anonymousId or "")
    assert env.user_id == (msg.userId or "")
    assert env.anonymous_id or env.user_id
    assert orjson.loads(env.properties) == msg.properties
    assert orjson.loads(env.traits) == msg.traits
    assert RECEIVED - LIMITS.max_past <= env.timestamp <= RECEIVED + LIMITS.max_future
    assert env.timestamp.utcoffset() == timedelta(0)
    assert abs(env.revenue) <= MAX_REVENUE and env.revenue.is_finite()
    assert env.ip == FACTS.anonymized_ip and env.received_at == RECEIVED
    # The envelope survives Kafka unchanged, and becomes one full events row.
    assert Envelope.from_kafka_value(env.to_kafka_value()) == env
    assert len(envelope_to_row(env, 1, 2, "t")) == len(EVENT_COLUMNS)


def test_contract_regressions_are_named_errors() -> None:
    """Inputs that used to escape the contract as OverflowError or TypeError (a 500)."""
    cases: list[tuple[dict[str, Any], str]] = [
        # Before year 1 once in UTC.
        ({"timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp: out of range"),
        ({"sentAt": "0001-01-01T00:00:00+01:00"}, "sentAt: out of range"),
        # Skew correction past year 9999.
        ({"timestamp": "9999-12-31T00:00:00Z", "sentAt": "0001-01-01T00:00:00Z"},
         "timestamp: out of range"),
        # Deeper than orjson writes (255 levels), though orjson reads it (1024).
        ({"properties": {"d": nested(300)}}, "properties: nested too deeply"),
        ({"traits": {"d": nested(300)}}, "traits: nested too deeply"),
    ]
    for fields, expected in cases:
        msg = parse_message({"type": "track", "event": "e", "anonymousId": "a", **fields})
        with pytest.raises(ContractError, match=expected):
            build_envelope(msg, FACTS, LIMITS)


# ---------------------------------------------------------------------------------------
# Properties of the pixel's query parser

_pixel_keys = st.sampled_from(["k", "e", "mid", "aid", "uid", "sid", "url", "ref", "title",
                               "ts", "p", "p.a", "p.revenue", "p.", "p.p.x"]) | st.text(max_size=4)
_pixel_values = (st.text(max_size=20) | json_values.map(lambda v: orjson.dumps(v).decode())
                 | st.integers(min_value=0, max_value=10**30).map(str)
                 | st.sampled_from(["page_view", "99999999999999999999", "²", "9" * 5000,
                                    "1700000000000", "2026-03-01T11:00:00Z", "{}", "[]"])
                 | st.integers(min_value=200, max_value=320).map(
                     lambda n: '{"d":' + "[" * n + "1" + "]" * n + "}"))
query_strings = (st.lists(st.tuples(_pixel_keys, _pixel_values), max_size=8).map(urlencode)
                 | st.text(max_size=80))


@settings(DETERMINISTIC, max_examples=200)
@given(query=query_strings)
def test_pixel_query_becomes_a_message_or_a_named_error(query: str) -> None:
    params = QueryParams(query)
    try:
        message = pixel_message(params)
    except RequestError as exc:
        assert exc.status == 400 and exc.code in ("invalid_json", "invalid_event"), exc.code
        assert exc.message.split(":")[0] in ("p", "ts"), exc.message
        return
    event = params.get("e") or PIXEL_DEFAULT_EVENT
    if event == PIXEL_DEFAULT_EVENT:
        assert message["type"] == "page" and "event" not in message
    else:
        assert message["type"] == "track" and message["event"] == event
    for param, field in (("mid", "messageId"), ("aid", "anonymousId"), ("uid", "userId")):
        assert message.get(field) == (params.get(param) or None)
    expected = orjson.loads(params["p"]) if params.get("p") else {}
    for key, value in params.multi_items():
        if key.startswith("p.") and len(key) > 2:
            expected[key[2:]] = value
    assert message["properties"] == expected
    # What the pixel builds goes through the same contract as any other event.
    if "anonymousId" not in message and "userId" not in message:
        message["anonymousId"] = "px_cookieless"
    try:
        env = build_envelope(parse_message(message), FACTS, LIMITS)
    except ContractError as exc:
        assert ": " in str(exc)
        return
    assert env.library_name == "tracklane-pixel"
    if params.get("url"):
        assert env.url == params["url"][:2048]


# ---------------------------------------------------------------------------------------
# The real app, in a thread's event loop, for a property over whole HTTP requests


@pytest.fixture(scope="module")
def threaded(broker: TansuBroker) -> Iterator[tuple[BlockingPortal, Pipeline]]:
    settings_ = pipeline_settings(broker.bootstrap_servers)
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(
        running_pipeline(settings_, None)
    ) as pipeline:
        yield portal, pipeline


_big_event = st.integers(min_value=32 * 1024 - 200, max_value=32 * 1024 + 200).map(
    lambda n: {"type": "track", "event": "big", "anonymousId": "a",
               "properties": {"blob": "x" * n}})
_batch_items = messages | valid_messages | json_values | _big_event | st.builds(
    lambda d: {"type": "track", "event": "deep", "anonymousId": "a", "properties": {"d": d}},
    _deep)


@settings(DETERMINISTIC, max_examples=60)
@given(batch=st.lists(_batch_items, max_size=6), single=st.sampled_from((None, *MESSAGE_TYPES)))
def test_every_event_is_accepted_or_reported_over_http(
    threaded: tuple[BlockingPortal, Pipeline], batch: list[Any], single: str | None,
) -> None:
    portal, p = threaded
    body: Any
    if single is None:
        route, events, body = "/v1/batch", batch, {"batch": batch}
    else:
        route = f"/v1/{single}"
        body = batch[0] if batch and isinstance(batch[0], dict) else {"event": "x"}
        events = [body]
    # stdlib json: orjson itself refuses to write the deepest test values.
    content = json.dumps(body).encode()
    response = portal.call(lambda: p.http.post(route, content=content, headers=p.auth))
    assert response.status_code in (200, 400), response.text
    answer = response.json()
    if response.status_code == 200:
        assert answer["success"] is True
        errors = answer.get("errors", [])
    else:
        assert answer["success"] is False and answer["message"]
        errors = answer["errors"]
        assert answer["accepted"] == 0 and answer["error"] == errors[0]["error"]
    # Never silent loss: each event is either counted accepted or reported by index.
    assert answer.get("accepted", 0) + len(errors) == len(events)
    assert [e["index"] for e in errors] == sorted({e["index"] for e in errors})
    for error in errors:
        assert error["error"] in ("invalid_event", "event_too_large"), error
        assert 0 <= error["index"] < len(events) and error["message"]


# ---------------------------------------------------------------------------------------
# Hostile requests through the real app, each with its exact answer


async def _asgi_get(p: Pipeline, path: str, query: bytes,
                    headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """GET straight through ASGI: no client-side URL length limit."""
    sent: list[dict[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": query, "headers": headers,
             "client": ("198.51.100.23", 4711), "server": ("collector", 80)}
    await p.app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent
                            if m["type"] == "http.response.body")


def _track(event: str, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "anonymousId": "a-1",
            "messageId": str(uuid.uuid4()), **fields}


async def _expect(p: Pipeline, cases: list[tuple[str, str, dict[str, Any], int, str]]) -> None:
    for label, path, kwargs, status, code in cases:
        method = kwargs.pop("method", "POST")
        response = await p.http.request(method, path, **kwargs)
        assert response.status_code == status, (label, response.status_code, response.text[:300])
        body = response.json()
        assert body["success"] is False, label
        assert body["error"] == code, (label, body)
        assert isinstance(body["message"], str) and body["message"], label


@pytest.mark.anyio
async def test_hostile_bodies_get_exact_errors(broker: TansuBroker) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), None) as p:
        auth = p.auth
        gz = {**auth, "Content-Encoding": "gzip"}
        json_ct = {**auth, "Content-Type": "application/json"}
        tiny = b"0," * 1_000_000
        cases: list[tuple[str, str, dict[str, Any], int, str]] = [
            # orjson refuses more than 1024 levels: a 400, not a RecursionError.
            ("100k nested arrays", "/v1/batch", {"content": b"[" * 100_000 + b"]" * 100_000,
                                                 "headers": auth}, 400, "invalid_json"),
            ("50k nested objects", "/v1/track",
             {"content": b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "headers": auth},
             400, "invalid_json"),
            ("1M tiny items", "/v1/batch",
             {"content": b'{"batch":[' + tiny + b'0]}', "headers": auth}, 413, "body_too_large"),
            ("1M tiny items, streamed with no length", "/v1/batch",
             {"content": _chunks([b'{"batch":[', tiny, b'0]}']), "headers": auth},
             413, "body_too_large"),
            ("one byte over the limit", "/v1/batch",
             {"content": b'{"batch":[]}' + b" " * (LIMIT - 11), "headers": auth},
             413, "body_too_large"),
            ("gzip bomb", "/v1/batch",
             {"content": gzip.compress(b'{"batch":[' + b" " * (50 * LIMIT) + b"]}"),
              "headers": gz}, 413, "body_too_large"),
            ("gzip one byte over", "/v1/batch",
             {"content": gzip.compress(b'{"batch":[]}' + b" " * (LIMIT - 11)), "headers": gz},
             413, "body_too_large"),
            ("truncated gzip", "/v1/batch",
             {"content": gzip.compress(orjson.dumps({"batch": [_track("cut")]}))[:-6],
              "headers": gz}, 400, "invalid_gzip"),
            # A second gzip member used to be dropped without a word.
            ("two gzip members", "/v1/batch",
             {"content": gzip.compress(orjson.dumps({"batch": [_track("m1")]}))
              + gzip.compress(b"more"), "headers": gz}, 400, "invalid_gzip"),
            ("deflate", "/v1/batch", {"content": b"{}", "headers": {
                **auth, "Content-Encoding": "deflate"}}, 415, "unsupported_encoding"),
            ("invalid UTF-8", "/v1/batch",
             {"content": b'{"batch":[{"event":"\xc3\x28"}]}', "headers": auth},
             400, "invalid_utf8"),
            ("overlong UTF-8", "/v1/track",
             {"content": b'{"event":"\xc0\xaf","anonymousId":"a"}', "headers": auth},
             400, "invalid_utf8"),
            ("UTF-8 encoded surrogate", "/v1/track",
             {"content": b'{"event":"\xed\xa0\x80","anonymousId":"a"}', "headers": auth},
             400, "invalid_utf8"),
            ("lone high surrogate escape", "/v1/track",
             {"content": b'{"event":"\\ud800","anonymousId":"a"}', "headers": auth},
             400, "invalid_json"),
            ("lone low surrogate escape", "/v1/track",
             {"content": b'{"event":"x\\udc00","anonymousId":"a"}', "headers": auth},
             400, "invalid_json"),
            ("NaN", "/v1/track", {"content": b'{"event":"x","anonymousId":"a",'
                                             b'"properties":{"revenue":NaN}}',
                                  "headers": auth}, 400, "invalid_json"),
            ("Infinity", "/v1/batch", {"content": b'{"batch":[Infinity]}', "headers": auth},
             400, "invalid_json"),
            ("-Infinity", "/v1/batch", {"content": b'{"batch":[-Infinity]}', "headers": auth},
             400, "invalid_json"),
            ("number overflowing a double", "/v1/batch",
             {"content": b'{"batch":[1e400]}', "headers": auth}, 400, "invalid_json"),
            ("array body", "/v1/batch", {"content": b"[]", "headers": auth}, 400,
             "invalid_body"),
            ("string body", "/v1/track", {"content": b'"track"', "headers": auth}, 400,
             "invalid_body"),
            ("number body", "/v1/page", {"content": b"42", "headers": auth}, 400,
             "invalid_body"),
            ("null body", "/v1/identify", {"content": b"null", "headers": auth}, 400,
             "invalid_body"),
            ("batch not an array", "/v1/batch", {"content": b'{"batch":"x"}', "headers": auth},
             400, "invalid_body"),
            ("whitespace body", "/v1/batch", {"content": b" \r\n\t", "headers": auth}, 400,
             "empty_body"),
            ("NUL bytes outside strings", "/v1/batch", {"content": b"\x00\x00",
                                                        "headers": auth}, 400, "invalid_json"),
            ("form body, form type", "/v1/batch", {
                "content": b"batch=1&writeKey=x", "headers": {
                    **auth, "Content-Type": "application/x-www-form-urlencoded"}},
             400, "invalid_json"),
            ("multipart body", "/v1/batch", {
                "content": b'--b\r\nContent-Disposition: form-data; name="batch"\r\n\r\n[]\r\n'
                           b"--b--\r\n",
                "headers": {**auth, "Content-Type": "multipart/form-data; boundary=b"}},
             400, "invalid_json"),
            ("XML body", "/v1/track", {"content": b"<event>x</event>", "headers": {
                **auth, "Content-Type": "application/xml"}}, 400, "invalid_json"),
            # Every event rejected: 400 with the per-event detail.
            ("deep properties, one event", "/v1/track",
             {"content": json.dumps({"event": "x", "anonymousId": "a",
                                     "properties": {"d": nested(300)}}).encode(),
              "headers": auth}, 400, "invalid_event"),
            ("timestamp before year 1 in UTC", "/v1/track",
             {"content": b'{"event":"x","anonymousId":"a",'
                         b'"timestamp":"0001-01-01T00:00:00+01:00"}', "headers": auth},
             400, "invalid_event"),
            ("skew correction past year 9999", "/v1/track",
             {"content": b'{"event":"x","anonymousId":"a","timestamp":"9999-12-31T00:00:00Z",'
                         b'"sentAt":"0001-01-01T00:00:00Z"}', "headers": auth},
             400, "invalid_event"),
            # The query API parses its own JSON (FastAPI, stdlib json): also a 400.
            ("query API: 100k nested arrays", "/v1/query/kpis",
             {"content": b"[" * 100_000 + b"]" * 100_000, "headers": {
                 **json_ct, "Authorization": f"Bearer {p.project.read_keys[0]}"}},
             400, "invalid_json"),
        ]
        await _expect(p, cases)

        # A batch with one over-deep event keeps its other events and names the bad one.
        response = await p.http.post("/v1/batch", headers=auth, content=json.dumps({
            "batch": [_track("ok"), _track("deep", properties={"d": nested(300)}),
                      _track("ok")]}).encode())
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["accepted"] == 2
        assert body["errors"] == [{"index": 1, "error": "invalid_event",
                                   "message": "event: nested too deeply"}]

        # Nesting within orjson's limits is fine, however deep the total document.
        response = await p.http.post("/v1/track", headers=auth, content=orjson.dumps(
            {"event": "deep_ok", "anonymousId": "a", "properties": {"d": nested(250)}}))
        assert response.status_code == 200, response.text


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        for start in range(0, len(part), 64 * 1024):
            yield part[start:start + 64 * 1024]


@pytest.mark.anyio
async def test_hostile_headers_params_and_paths_get_exact_errors(
    broker: TansuBroker, store: Client,
) -> None:
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store) as p:
        auth = p.auth
        event = orjson.dumps({"event": "h", "anonymousId": "a"})
        wk = p.write_key
        read = {"Authorization": f"Bearer {p.project.read_keys[0]}"}
        big = "x" * 1024 * 1024
        cases: list[tuple[str, str, dict[str, Any], int, str]] = [
            ("1 MB write key", "/v1/track", {"content": event, "headers": {"X-Write-Key": big}},
             401, "invalid_write_key"),
            ("1 MB Basic credentials", "/v1/track",
             {"content": event, "headers": {"Authorization": "Basic " + big}},
             401, "missing_write_key"),
            # Header bytes are latin-1: b64decode refused non-ASCII with a bare ValueError.
            ("non-ASCII Basic credentials", "/v1/track",
             {"content": event, "headers": [(b"Authorization", b"Basic \xff\xfe==")]},
             401, "missing_write_key"),
            ("non-ASCII write key", "/v1/track",
             {"content": event, "headers": [(b"X-Write-Key", b"wk_\xe9")]},
             401, "invalid_write_key"),
            ("1 MB origin", "/v1/track", {"content": event, "headers": {
                **auth, "Origin": "https://" + big}}, 403, "origin_not_allowed"),
            ("non-ASCII read key", "/v1/alerts", {"method": "GET", "headers": [
                (b"Authorization", b"Bearer \xff")]}, 401, "invalid_read_key"),
            ("1 MB read key", "/v1/stats/minutes", {"method": "GET", "headers": {
                "Authorization": "Bearer " + big}}, 401, "invalid_read_key"),
            # "²".isdigit() is True, int("²") is not a number: no longer a ValueError.
            ("superscript Content-Length", "/v1/batch", {"content": b"[]", "headers": [
                *auth.items(), (b"Content-Length", b"\xb2")]}, 400, "invalid_body"),
            ("20-digit Content-Length", "/v1/batch", {"content": b"[]", "headers": {
                **auth, "Content-Length": "9" * 20}}, 413, "body_too_large"),
            # The pixel's ts: out of datetime's range, or digits int() refuses.
            ("pixel: ts past year 9999", f"/p.gif?k={wk}&ts=99999999999999999999",
             {"method": "GET"}, 400, "invalid_event"),
            ("pixel: ts of 5000 digits", f"/p.gif?k={wk}&ts={'9' * 5000}",
             {"method": "GET"}, 400, "invalid_event"),
            ("pixel: ts superscript digit", f"/p.gif?k={wk}&ts=%C2%B2",
             {"method": "GET"}, 400, "invalid_event"),
            ("pixel: p not JSON", f"/p.gif?k={wk}&p=%7Bx", {"method": "GET"},
             400, "invalid_json"),
            ("pixel: p an array", f"/p.gif?k={wk}&p=%5B1%5D", {"method": "GET"},
             400, "invalid_json"),
            ("pixel: p nested too deeply", "/p.gif?" + urlencode(
                {"k": wk, "p": json.dumps({"d": nested(300)})}),
             {"method": "GET"}, 400, "invalid_event"),
            ("pixel: p with a lone surrogate escape",
             f"/p.gif?k={wk}&p=%7B%22a%22%3A%22%5Cud800%22%7D", {"method": "GET"},
             400, "invalid_json"),
            ("pixel: 3000 p.<name> params", f"/p.gif?k={wk}&" + "&".join(
                f"p.k{i}=vvvvvvvvvv" for i in range(3000)), {"method": "GET"},
             400, "event_too_large"),
            ("pixel: no key", "/p.gif?e=x", {"method": "GET"}, 401, "missing_write_key"),
            # Read APIs: years outside 1900..2299 used to overflow datetime arithmetic.
            ("stats: year 1 with an offset", "/v1/stats/minutes?event=x&from="
             "0001-01-01T00:00:00%2B01:00&to=2020-01-01T00:00:00Z",
             {"method": "GET", "headers": read}, 400, "invalid_query"),
            ("alerts: to in year 1", "/v1/alerts?to=0001-01-02T00:00:00",
             {"method": "GET", "headers": read}, 400, "invalid_query"),
            ("alerts: limit ²", "/v1/alerts?limit=%C2%B2", {"method": "GET", "headers": read},
             400, "invalid_query"),
            ("alerts: limit of 5000 digits", f"/v1/alerts?limit={'1' * 5000}",
             {"method": "GET", "headers": read}, 400, "invalid_query"),
            ("query: from in year 1", "/v1/query/kpis", {"json": {
                "from": "0001-01-01T00:00:00+01:00", "to": "2020-01-01T00:00:00Z"},
                "headers": read}, 400, "invalid_query"),
            ("query: to in year 9999", "/v1/query/kpis", {"json": {
                "from": "9999-12-30T00:00:00Z", "to": "9999-12-31T00:00:00Z"},
                "headers": read}, 400, "invalid_query"),
            ("query: retention in year 1", "/v1/query/retention", {"json": {
                "from_day": "0001-01-01", "to_day": "0001-01-02"}, "headers": read},
             400, "invalid_query"),
            ("query: NaN window", "/v1/query/funnel", {
                "content": b'{"from":"2026-01-01T00:00:00Z","to":"2026-01-02T00:00:00Z",'
                           b'"steps":["a","b"],"window_s":NaN}',
                "headers": {**read, "Content-Type": "application/json"}},
             400, "invalid_query"),
            # Unknown paths and methods answer in the same shape as every other error.
            ("unknown path", "/v2/batch", {}, 404, "not_found"),
            ("wrong method", "/v1/batch", {"method": "PUT"}, 405, "method_not_allowed"),
        ]
        await _expect(p, cases)

        # An enormous query string (1.4 MB, 200k parameters) straight through ASGI.
        params = b"&".join(b"x%d=1" % i for i in range(200_000))
        status, body = await _asgi_get(p, "/p.gif", b"k=" + wk.encode() + b"&" + params, [])
        assert status == 200 and body.startswith(b"GIF89a")
        params = b"&".join(b"p.k%d=1" % i for i in range(200_000))
        status, body = await _asgi_get(p, "/p.gif", b"k=" + wk.encode() + b"&" + params, [])
        assert status == 400 and orjson.loads(body)["error"] == "event_too_large"

        # Huge but harmless headers do not stop an event.
        response = await p.http.post("/v1/track", content=event, headers={
            **auth, "User-Agent": "Mozilla/5.0 " + big, "X-Forwarded-For": big,
            "Cookie": big})
        assert response.status_code == 200, response.text


@pytest.mark.anyio
async def test_strange_but_valid_values_are_stored_as_sent(
    broker: TansuBroker, store: Client,
) -> None:
    """Accepted means stored: NUL, surrogate pairs, duplicate keys, any Content-Type."""
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store) as p:
        now = now_utc()
        tag = uuid.uuid4().hex[:8]
        sends: list[tuple[bytes, dict[str, str], str]] = [
            # NUL inside a string is a character like any other.
            (b'{"type":"track","event":"nul\\u0000' + tag.encode() + b'","anonymousId":"a"}',
             {}, f"nul\x00{tag}"),
            # A surrogate pair is one character.
            (b'{"type":"track","event":"emoji\\ud83d\\ude00' + tag.encode()
             + b'","anonymousId":"a"}', {}, f"emoji\U0001f600{tag}"),
            # Duplicate keys: the last one wins.
            (b'{"type":"track","event":"first' + tag.encode() + b'","event":"last'
             + tag.encode() + b'","anonymousId":"a"}', {}, f"last{tag}"),
            # The Content-Type is not checked: JSON is JSON whatever its label.
            (b'{"type":"track","event":"form' + tag.encode() + b'","anonymousId":"a"}',
             {"Content-Type": "application/x-www-form-urlencoded"}, f"form{tag}"),
            (b'{"type":"track","event":"xml' + tag.encode() + b'","anonymousId":"a"}',
             {"Content-Type": "application/xml"}, f"xml{tag}"),
        ]
        for content, headers, _ in sends:
            response = await p.http.post("/v1/batch", content=b'{"batch":[' + content + b"]}",
                                         headers={**p.auth, **headers})
            assert response.status_code == 200, response.text
            assert response.json() == {"success": True, "accepted": 1}
        await p.wait_inserted(len(sends))
        for _, _, stored in sends:
            assert await p.total(stored, now) == 1, repr(stored)
        assert await p.total(f"first{tag}", now) == 0

        # The silence API reads at most 64 KB, like ingest reads at most its limit.
        response = await p.http.post("/v1/silences", content=b'{"comment":"' + b"x" * 70_000
                                     + b'"}', headers={
                                         "Authorization": f"Bearer {p.project.read_keys[0]}"})
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "body_too_large"


# ---------------------------------------------------------------------------------------
# Slow clients, against the collector as a real process


@pytest.fixture(scope="module")
def real_collector(
    broker: TansuBroker, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, Project]]:
    project = new_project("slow")
    workdir = tmp_path_factory.mktemp("slow-clients")
    (workdir / "projects.toml").write_text(
        f'[[project]]\nid = "{project.id}"\nwrite_keys = ["{project.write_keys[0]}"]\n'
        f'read_keys = ["{project.read_keys[0]}"]\nallowed_origins = ["*"]\n')
    port = free_port()
    env = collector_env(broker.bootstrap_servers, f"slow-{uuid.uuid4().hex[:8]}",
                        workdir / "projects.toml", port, workdir, topic_partitions=1,
                        log_level="WARNING", read_timeout_s=READ_TIMEOUT_S)
    collector = CollectorProcess(env, port, workdir / "collector.err")
    try:
        asyncio.run(collector.wait_healthy())
        yield port, project
    finally:
        collector.kill()  # nothing here needs a graceful stop


READ_TIMEOUT_S = 1.0
# A header block that never ends: one more complete header line at a time.
_HEADERS_START = b"POST /v1/batch HTTP/1.1\r\nHost: c\r\n"
_HEADER_DRIP = b"X-Slow: 1\r\n"


def _status(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def _open(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if first:
        sock.sendall(first)
    sock.setblocking(False)
    return sock


Slow = dict[str, tuple[socket.socket, bytes]]


def _trickle(socks: Slow, seconds: float, interval: float = 0.2) -> dict[str, str]:
    """Send each socket's drip a byte at a time (none: stay idle); what the server did."""
    outcome: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    position = 0
    while time.monotonic() < deadline and len(outcome) < len(socks):
        for name, (sock, drip) in socks.items():
            if name in outcome:
                continue
            readable, _, _ = select.select([sock], [], [], 0)
            try:
                if readable:
                    data = sock.recv(65536)
                    outcome[name] = "closed" if not data else data.split(b"\r\n")[0].decode()
                elif drip:
                    at = position % len(drip)
                    sock.send(drip[at:at + 1])
            except OSError:
                outcome[name] = "closed"
        position += 1
        time.sleep(interval)
    return {name: outcome.get(name, "still open") for name in socks}


def _batch_request(project: Project, content_length: int | None = None) -> bytes:
    body = orjson.dumps({"batch": [_track("slow_ok")]})
    auth = basic_auth(project.write_keys[0])["Authorization"]
    return (b"POST /v1/batch HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\n"
            b"Authorization: " + auth.encode() + b"\r\nContent-Length: "
            + str(content_length or len(body)).encode() + b"\r\n\r\n")


def test_slow_clients_do_not_stop_other_requests(real_collector: tuple[int, Project]) -> None:
    port, project = real_collector
    slow: Slow = {f"headers-{i}": (_open(port, _HEADERS_START), _HEADER_DRIP)
                  for i in range(20)}
    slow.update({f"body-{i}": (_open(port, _batch_request(project, 10_000)), b" ")
                 for i in range(20)})
    try:
        _trickle(slow, 0.5, interval=0.1)
        started = time.monotonic()
        body = orjson.dumps({"batch": [_track("while_slow")]})
        status = _status(port, "POST", "/v1/batch", body, {
            **basic_auth(project.write_keys[0]), "Content-Type": "application/json"})
        assert status == 200
        assert time.monotonic() - started < 5
        # A header block over 64 KB is refused by the server itself, with a plain-text
        # 431; a smaller one is the app's to judge.
        assert _status(port, "GET", "/healthz", headers={"X-Big": "x" * 1_000_000}) == 431
        assert _status(port, "GET", "/healthz", headers={"X-Big": "x" * 60_000}) == 200
        assert _status(port, "GET", "/healthz") == 200
    finally:
        for sock, _ in slow.values():
            sock.close()


def test_a_body_sent_a_byte_at_a_time_gets_408_after_the_read_timeout(
    real_collector: tuple[int, Project],
) -> None:
    port, project = real_collector
    sock = _open(port, _batch_request(project, 10_000))
    started = time.monotonic()
    try:
        outcome = _trickle({"body": (sock, b" ")}, READ_TIMEOUT_S + 2)
    finally:
        sock.close()
    assert outcome["body"].startswith("HTTP/1.1 408 "), outcome
    assert time.monotonic() - started < READ_TIMEOUT_S + 1.5


def test_slow_headers_and_idle_connections_are_cut_off_after_the_read_timeout(
    real_collector: tuple[int, Project],
) -> None:
    port, _ = real_collector
    slow: Slow = {
        "idle after connecting": (_open(port, b""), b""),
        "headers a line at a time": (_open(port, _HEADERS_START), _HEADER_DRIP),
    }
    try:
        outcome = _trickle(slow, READ_TIMEOUT_S + 1)
    finally:
        for sock, _ in slow.values():
            sock.close()
    for name, what in outcome.items():
        # Closed, or answered with a 4xx (408), never left open and never a 5xx.
        assert what == "closed" or what.split(" ")[1].startswith("4"), (name, what)
