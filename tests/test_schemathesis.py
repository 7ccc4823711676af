"""Every route against its OpenAPI schema, with generated requests (schemathesis).

The collector runs in-process with a real Kafka and the real store, started in the event
loop schemathesis serves ASGI apps from. Requests carry a real write key and read key, so
generation reaches past authentication. For every operation in ``/openapi.json``, valid
and invalid requests are generated (derandomized, bounded), and every answer must be no
5xx, have a documented status and content type, and match its documented schema.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import FailedHealthCheck, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python import asgi as schemathesis_asgi

from tests.pipeline import Pipeline, new_project, pipeline_settings, running_pipeline
from tracklane.broker import TansuBroker
from tracklane.errors import ErrorCode
from tracklane.projects import Project
from tracklane.settings import Settings

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 12}
# Operations whose every call does real work in the store get fewer examples.
FEWER = {"DELETE /v1/users/{user_id}": 4}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


@schemathesis.serializer("text/plain")
def _json_as_text(ctx: Any, value: Any) -> bytes:
    # The ingest routes take the same JSON as text/plain (beacons avoid a CORS preflight).
    return json.dumps(value).encode()


class _Collector:
    """An ASGI app: the collector, whose pipeline starts in the loop that serves it."""

    def __init__(self, settings: Settings, store: Client, project: Project) -> None:
        self._settings = settings
        self._store = store
        self._project = project
        self._pipeline: Pipeline | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert self._pipeline is not None, "the lifespan has not started"
        await self._pipeline.app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        message: Message = await receive()
        assert message["type"] == "lifespan.startup"
        async with contextlib.AsyncExitStack() as stack:
            try:
                self._pipeline = await stack.enter_async_context(
                    running_pipeline(self._settings, self._store, self._project))
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
        await send({"type": "lifespan.shutdown.complete"})


@pytest.fixture(scope="module")
def api(broker: TansuBroker, store: Client) -> Iterator[tuple[Any, dict[str, str]]]:
    project = new_project("st")
    app = _Collector(pipeline_settings(broker.bootstrap_servers), store, project)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # The ingest routes read the write key from Basic auth or X-Write-Key; the read routes
    # want the read key as a Bearer token. Send the read key as the Authorization header
    # and the write key as X-Write-Key, so that every route sees a valid key.
    headers = {"Authorization": f"Bearer {project.read_keys[0]}",
               "X-Write-Key": project.write_keys[0]}
    try:
        yield schema, headers
    finally:
        schemathesis_asgi.shutdown_lifespans()


def _run(operation: Any, mode: GenerationMode, headers: dict[str, str], examples: int,
         seen: dict[int, int]) -> None:
    @settings(derandomize=True, database=None, deadline=None, max_examples=examples,
              print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large])
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(headers=dict(headers), timeout=120)  # an erasure scans every part
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    check()


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_every_operation_answers_as_documented(api: tuple[Any, dict[str, str]]) -> None:
    schema, headers = api
    failures: list[str] = []
    statuses: dict[str, dict[int, int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = operation.label
        seen: dict[int, int] = {}
        for mode, examples in EXAMPLES.items():
            try:
                _run(operation, mode, headers, FEWER.get(label, examples), seen)
            except (FailedHealthCheck, Unsatisfiable) as exc:
                # Nothing to make invalid (no body or query; any path segment is a string).
                if mode is GenerationMode.POSITIVE:
                    failures.append(f"{label} [{mode.value}]: {exc}")
            except Exception as exc:
                failures.append(f"{label} [{mode.value}]:\n{exc}")
        statuses[label] = seen
    summary = "\n".join(f"  {label}: {dict(sorted(seen.items()))}"
                        for label, seen in statuses.items())
    assert not failures, "\n\n".join(failures) + f"\n\nanswers seen:\n{summary}"
    # Authentication worked: some requests got past it on every authenticated route.
    for label, seen in statuses.items():
        assert any(status not in (401, 403) for status in seen), (label, seen)


def _good_requests(now: datetime) -> list[tuple[str, dict[str, Any], int]]:
    """Valid requests generation rarely finds (ranges, known names), with their status."""
    day = {"from": (now - timedelta(days=1)).isoformat(), "to": now.isoformat()}
    track = {"type": "track", "event": "st_signup", "anonymousId": "a-1",
             "properties": {"revenue": 9.5, "currency": "EUR"}}
    return [
        ("POST /v1/batch", {"body": {"batch": [track, {"type": "page", "userId": "u-1"}]}}, 200),
        ("POST /v1/batch", {"body": {"batch": [track, {"type": "track"}]}}, 200),
        ("POST /v1/batch", {"body": {"batch": [{"type": "track"}]}}, 400),
        ("POST /v1/track", {"body": track, "media_type": "text/plain"}, 200),
        ("POST /v1/batch", {"body": {"batch": [{**track, "properties": {
            "blob": "x" * 600_000}}]}}, 413),
        ("GET /p.gif", {"query": {"e": "st_open", "aid": "a-1", "p": '{"plan": "pro"}'}}, 200),
        ("OPTIONS /v1/{path}", {"path_parameters": {"path": "batch"}}, 204),
        ("GET /v1/stats/minutes", {"query": {"event": "st_signup", **day}}, 200),
        ("GET /v1/alerts", {"query": {"limit": 10}}, 200),
        ("POST /v1/query/kpis", {"body": day}, 200),
        ("POST /v1/query/timeseries", {"body": {**day, "event": "st_signup", "grain": "hour",
                                                "tz": "Europe/Paris"}}, 200),
        ("POST /v1/query/breakdown", {"body": {**day, "dimension": "utm_source"}}, 200),
        ("POST /v1/query/conversion", {"body": {**day, "goal": "st_signup"}}, 200),
        ("POST /v1/query/funnel", {"body": {**day, "steps": ["page_view", "st_signup"],
                                            "breakdown": "device"}}, 200),
        ("POST /v1/query/retention", {"body": {
            "from_day": (now - timedelta(days=3)).date().isoformat(),
            "to_day": now.date().isoformat(), "max_day": 2}}, 200),
        ("POST /v1/query/attribution", {"body": {**day, "conversion_event": "st_signup",
                                                 "model": "time_decay"}}, 200),
        ("POST /v1/query/kpis", {"body": {"from": day["to"], "to": day["from"]}}, 400),
        ("POST /v1/query/kpis", {"body": {**day, "order_events": ["st_signup"]}}, 200),
        ("POST /v1/query/customers", {"body": {**day, "tz": "Asia/Tokyo",
                                               "order_events": ["st_signup"]}}, 200),
        ("GET /sdk/{name}", {"path_parameters": {"name": "tracklane.min.js"}}, 200),
        ("GET /sdk/{name}", {"path_parameters": {"name": "nope.js"}}, 404),
        ("GET /v1/persons/{person_id}", {"path_parameters": {"person_id": "st-nobody"}}, 404),
        ("DELETE /v1/users/{user_id}", {"path_parameters": {"user_id": "u-1"}}, 200),
    ]


def test_valid_requests_answer_as_documented(api: tuple[Any, dict[str, str]]) -> None:
    schema, headers = api
    for label, fields, status in _good_requests(datetime.now(UTC)):
        operation = schema.find_operation_by_label(label)
        assert operation is not None, label
        if "body" in fields:
            fields.setdefault("media_type", "application/json")
        case = operation.Case(**fields)
        response = case.call(headers=dict(headers), timeout=120)  # an erasure scans every part
        assert response.status_code == status, (label, fields, response.text[:300])
        case.validate_response(response, checks=CHECKS)
    # A silence's whole life: created (201), expired (204), then gone (404).
    silences = schema.find_operation_by_label("POST /v1/silences")
    case = silences.Case(body={"matchers": {"rule": "st"}, "created_by": "schemathesis",
                               "duration_minutes": 5}, media_type="application/json")
    created = case.call(headers=dict(headers))
    assert created.status_code == 201, created.text
    case.validate_response(created, checks=CHECKS)
    expire = schema.find_operation_by_label("DELETE /v1/silences/{silence_id}")
    for status in (204, 404):
        case = expire.Case(path_parameters={"silence_id": created.json()["id"]})
        response = case.call(headers=dict(headers), timeout=120)  # an erasure scans every part
        assert response.status_code == status, response.text
        case.validate_response(response, checks=CHECKS)
    # Without keys: the documented 401s.
    anonymous: list[tuple[str, dict[str, Any]]] = [
        ("POST /v1/batch", {"body": {"batch": []}}), ("GET /p.gif", {}),
        ("GET /v1/alerts", {}), ("POST /v1/query/kpis", {"body": {"from": "x"}})]
    for label, fields in anonymous:
        if "body" in fields:
            fields["media_type"] = "application/json"
        case = schema.find_operation_by_label(label).Case(**fields)
        response = case.call()
        assert response.status_code == 401, (label, response.text)
        case.validate_response(response, checks=CHECKS)


def test_raw_request_routes_document_their_bodies_and_errors(
    api: tuple[Any, dict[str, str]],
) -> None:
    schema, _ = api
    document = schema.raw_schema
    paths = document["paths"]
    for kind in ("batch", "track", "page", "screen", "identify", "group", "alias"):
        operation = paths[f"/v1/{kind}"]["post"]
        assert set(operation["requestBody"]["content"]) == {"application/json", "text/plain"}
        assert {"200", "400", "401", "403", "408", "413", "415", "429", "503"} <= set(
            operation["responses"]), kind
    assert "requestBody" in paths["/v1/silences"]["post"]
    # Every error answer has the one error shape (/readyz's 503 is a readiness report).
    components = document["components"]["schemas"]
    for path, methods in paths.items():
        if path == "/readyz":
            continue
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")) or status == "422":
                    continue
                ref = response["content"]["application/json"]["schema"]["$ref"]
                error = components[ref.rsplit("/", 1)[1]]
                assert {"success", "error", "message"} <= set(error["required"]), (
                    method, path, status)


def test_openapi_lists_every_error_code_of_the_catalogue(
    api: tuple[Any, dict[str, str]],
) -> None:
    """Codes are raised from tracklane/errors.py only (``RequestError`` takes an
    ``ErrorCode``), and the document's error models are made from it: every code is there,
    under its own status or the one a route documents for it, and nothing else is."""
    schema, _ = api
    document = schema.raw_schema
    components = document["components"]["schemas"]
    listed: dict[str, set[int]] = {}
    for methods in document["paths"].values():
        for operation in methods.values():
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json", {})
                ref = content.get("schema", {}).get("$ref", "")
                error = components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
                for code in error.get("error", {}).get("enum", []):
                    listed.setdefault(code, set()).add(int(status))
    assert set(listed) == {error.code for error in ErrorCode}
    # The per-event errors of a partly accepted batch, too.
    assert set(components["EventError"]["properties"]["error"]["enum"]) == {
        "invalid_event", "event_too_large"}
    # Where a route answers a code with another status, that is documented (Segment's
    # settings CDN answers an unknown key 404).
    assert listed["invalid_write_key"] == {401, 404}
