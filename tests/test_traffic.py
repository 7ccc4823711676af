"""Traffic classification: bots, sources, the end user's agent, and excluded traffic.

The rules under test (collector/traffic.py, collector/enrich.py): a request's own agent and
address are the person's only when a browser sent it; a backend's HTTP library is never a
bot; a project's internal and test traffic is stored with a reason and counted nowhere.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import crawleruseragents
import httpx
import pytest
import requests
from clickhouse_connect.driver.client import Client
from hypothesis import given
from hypothesis import strategies as st
from segment.analytics.client import Client as SegmentClient
from segment.analytics.version import VERSION as SEGMENT_VERSION
from starlette.datastructures import Headers
from ua_parser import parse as parse_ua

from tests.pipeline import Pipeline, now_utc, pipeline_settings, running_pipeline
from tracklane.broker import TansuBroker, free_port
from tracklane.collector.enrich import anonymize_ip, is_server_library, parse_user_agent
from tracklane.collector.traffic import (
    end_user_agent,
    end_user_ip,
    exclusion_reason,
    is_browser_request,
    message_source,
)
from tracklane.contract import InboundMessage, parse_message
from tracklane.projects import Exclusions, ProjectsFileError, load_projects
from tracklane.runner import HttpServer
from tracklane.store import analytics

# The agents as their operators publish them.
BOTS = {
    "Googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Googlebot smartphone": (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/126.0.6478.126 Mobile Safari/537.36 "
        "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
    "bingbot": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
        "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36"),
    "HeadlessChrome": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/124.0.6367.60 Safari/537.36"),
    "GPTBot": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
        "+https://openai.com/gptbot)"),
    "ClaudeBot": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
        "+claudebot@anthropic.com)"),
    "Bytespider": (
        "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)"),
}
GOOGLEBOT = BOTS["Googlebot"]

# What backends send with, as each library or tool sets its User-Agent.
SERVER_LIBRARIES = [
    f"analytics-python/{SEGMENT_VERSION}",  # Segment's, and RudderStack's Python library
    "analytics-node/6.2.0",                 # Segment's classic Node library
    "analytics-node-next/latest",           # @segment/analytics-node
    "rudder-sdk-python/2.1.9",
    "rudder-sdk-node/2.0.7",
    requests.utils.default_user_agent(),    # python-requests/<version>
    f"python-httpx/{httpx.__version__}",
    "python-urllib3/2.2.1",
    "Python-urllib/3.11",
    "Python/3.11 aiohttp/3.9.5",
    "Go-http-client/1.1",
    "Go-http-client/2.0",
    "okhttp/4.12.0",
    "Java-http-client/21",
    "Java/17.0.11",
    "Apache-HttpClient/4.5.14 (Java/17.0.11)",
    "GuzzleHttp/7",
    "curl/8.7.1",
    "node",
    "axios/1.7.2",
    "Ruby",
]

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/126.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
BROWSERS = {
    "Chrome desktop": (CHROME, "desktop"),
    "Firefox desktop": ("Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 "
                        "Firefox/127.0", "desktop"),
    "Safari desktop": ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                       "(KHTML, like Gecko) Version/17.5 Safari/605.1.15", "desktop"),
    "Edge desktop": (CHROME + " Edg/126.0.0.0", "desktop"),
    "Safari iPhone": (IPHONE, "mobile"),
    "Chrome Android": ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like "
                       "Gecko) Chrome/126.0.0.0 Mobile Safari/537.36", "mobile"),
    "Samsung Internet": ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 "
                         "(KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile "
                         "Safari/537.36", "mobile"),
    "Android WebView": ("Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) "
                        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
                        "Chrome/126.0.6478.71 Mobile Safari/537.36", "mobile"),
    "Facebook in-app": ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
                        "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
                        "[FBAN/FBIOS;FBAV/470.0.0.37.108;FBBV/622016181;FBDV/iPhone15,2;"
                        "FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]",
                        "mobile"),
    "Safari iPad": ("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", "tablet"),
}
ORIGIN = "https://shop.example"


def message(**fields: Any) -> InboundMessage:
    return parse_message({"type": "track", "event": "e", "anonymousId": "a-1", **fields})


# --- Bots -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BOTS))
def test_crawlers_and_ai_crawlers_are_bots(name: str) -> None:
    info = parse_user_agent(BOTS[name])
    assert info.is_bot, name
    assert info.device_type == "bot"


@pytest.mark.parametrize("agent", SERVER_LIBRARIES)
def test_server_libraries_are_never_bots(agent: str) -> None:
    assert is_server_library(agent)
    assert not parse_user_agent(agent).is_bot


def test_the_crawler_list_alone_would_flag_backends() -> None:
    # Why the allow-list exists: the list (rightly, for page views) flags the HTTP clients
    # scrapers use too, and ua-parser calls urllib3 a spider.
    for agent in (requests.utils.default_user_agent(), "Go-http-client/1.1", "okhttp/4.12.0",
                  "curl/8.7.1", "Python/3.11 aiohttp/3.9.5"):
        assert crawleruseragents.is_crawler(agent), agent
    device = parse_ua("python-urllib3/2.2.1").device
    assert device is not None and device.family == "Spider"


@pytest.mark.parametrize("name", list(BROWSERS))
def test_people_s_browsers_are_not_bots(name: str) -> None:
    agent, device = BROWSERS[name]
    info = parse_user_agent(agent)
    assert not info.is_bot
    assert not is_server_library(agent)
    assert info.device_type == device
    assert info.browser and info.os


def test_an_agent_that_only_starts_like_a_library_is_judged() -> None:
    # The allow-list matches the first product token, not any prefix of it.
    assert not is_server_library("curlbot/1.0 (+https://example.com/bot)")
    assert not is_server_library("Mozilla/5.0 (compatible; python-requests crawler)")
    assert not is_server_library("")


# --- Source and the end user's agent -----------------------------------------------------


@pytest.mark.parametrize(("route", "headers", "browser"), [
    ("pixel", {}, True),
    ("batch", {"Origin": ORIGIN, "Content-Type": "application/json"}, True),
    ("batch", {"Content-Type": "text/plain;charset=UTF-8"}, True),  # sendBeacon
    ("track", {"Content-Type": "Text/Plain"}, True),
    ("batch", {"Sec-Fetch-Mode": "cors", "Content-Type": "application/json"}, True),
    ("batch", {"Content-Type": "application/json", "User-Agent": "python-requests/2.32.3"},
     False),
    ("batch", {"Content-Type": "application/json", "User-Agent": CHROME}, False),
    ("batch", {}, False),
])
def test_a_browser_request_is_the_pixel_a_beacon_or_marked_by_the_browser(
    route: str, headers: dict[str, str], browser: bool,
) -> None:
    assert is_browser_request(route, Headers(headers)) is browser


@pytest.mark.parametrize(("fields", "route", "browser", "source"), [
    ({}, "pixel", True, "pixel"),
    ({}, "batch", True, "browser"),
    ({"context": {"library": {"name": "analytics-python"}}}, "batch", False, "server"),
    ({}, "batch", False, "server"),
    ({"context": {"app": {"name": "Shop", "version": "3.2", "build": "320"}}}, "batch", False,
     "mobile"),
    ({"context": {"library": {"name": "analytics-ios", "version": "4.1.8"}}}, "batch", False,
     "mobile"),
    ({"context": {"library": {"name": "com.rudderstack.android.sdk.core"}}}, "batch", False,
     "mobile"),
    # A browser library's message relayed by a first-party proxy.
    ({"context": {"library": {"name": "analytics.js"}}}, "batch", False, "browser"),
    ({"context": {"app": "Shop"}}, "batch", False, "server"),  # not the spec's app object
])
def test_message_source(fields: dict[str, Any], route: str, browser: bool, source: str) -> None:
    assert message_source(message(**fields), route, browser) == source


def test_the_request_agent_and_address_are_the_person_s_only_from_a_browser() -> None:
    bare = message()
    assert end_user_agent(bare, CHROME, browser_request=True) == CHROME
    assert end_user_agent(bare, GOOGLEBOT, browser_request=False) == ""
    assert end_user_ip(bare, "192.0.2.7", browser_request=True) == "192.0.2.7"
    assert end_user_ip(bare, "10.1.2.3", browser_request=False) == ""
    told = message(context={"userAgent": GOOGLEBOT, "ip": "203.0.113.9"})
    for browser in (True, False):
        assert end_user_agent(told, "python-requests/2.32.3", browser) == GOOGLEBOT
        assert end_user_ip(told, "10.1.2.3", browser) == "203.0.113.9"
    # So a backend relaying a crawler's hit flags it, and one reporting an order on its
    # own crawler-listed agent does not.
    assert parse_user_agent(end_user_agent(told, "python-requests/2.32.3", False)).is_bot
    assert not parse_user_agent(end_user_agent(bare, GOOGLEBOT, False)).is_bot


# --- Exclusions --------------------------------------------------------------------------


RULES = Exclusions.model_validate({
    "ips": ["203.0.113.7/32", "10.0.0.0/8", "2001:db8:cafe::/48", "::ffff:198.51.100.0/120"],
    "user_ids": ["qa@shop.example", "42"], "anonymous_ids": ["anon-ci-runner"],
})


@pytest.mark.parametrize(("raw_ip", "internal"), [
    ("203.0.113.7", True),
    ("203.0.113.8", False),        # same /24: the stored address could not tell them apart
    ("10.200.3.4", True),
    ("11.0.0.1", False),
    ("2001:db8:cafe:12::5", True),
    ("2001:db8:beef::5", False),
    ("::ffff:203.0.113.7", True),  # an IPv4 client on a dual-stack socket
    ("::ffff:203.0.113.8", False),
    ("198.51.100.23", True),       # an IPv4-mapped range is the IPv4 range
    (" 10.0.0.1 ", True),
    ("", False),
    ("not-an-ip", False),
])
def test_internal_ranges_match_the_raw_address(raw_ip: str, internal: bool) -> None:
    assert RULES.internal_ip(raw_ip) is internal
    reason = exclusion_reason(RULES, message(), raw_ip)
    assert reason == ("internal_ip" if internal else "")


def test_a_range_narrower_than_the_stored_one_still_matches() -> None:
    # The stored address keeps a /24; the check must run on the raw one.
    assert anonymize_ip("203.0.113.7") == anonymize_ip("203.0.113.8") == "203.0.113.0"
    assert exclusion_reason(RULES, message(), "203.0.113.7") == "internal_ip"
    assert exclusion_reason(RULES, message(), "203.0.113.8") == ""


def test_internal_ids_and_test_messages() -> None:
    assert exclusion_reason(RULES, message(userId="qa@shop.example"), "") == "internal_user"
    assert exclusion_reason(RULES, message(userId=42), "") == "internal_user"  # ids are text
    assert exclusion_reason(RULES, message(anonymousId="anon-ci-runner"), "") == "internal_user"
    assert exclusion_reason(RULES, message(userId="QA@shop.example"), "") == ""  # exact
    assert exclusion_reason(RULES, message(context={"test": True}), "") == "test"
    # Only JSON true: a string or a number is not a test flag.
    for value in ("true", 1, False, None):
        assert exclusion_reason(RULES, message(context={"test": value}), "") == ""
    # A test message is "test" whatever else it matches.
    assert exclusion_reason(RULES, message(userId="qa@shop.example", context={"test": True}),
                            "10.0.0.1") == "test"
    no_tests = Exclusions(test_events=False)
    assert exclusion_reason(no_tests, message(context={"test": True}), "") == ""
    nothing = Exclusions()
    assert exclusion_reason(nothing, message(userId="qa@shop.example"), "10.0.0.1") == ""


@given(st.text(max_size=80))
def test_any_address_text_is_judged_without_raising(raw_ip: str) -> None:
    assert exclusion_reason(RULES, message(), raw_ip) in ("", "internal_ip")


@pytest.mark.parametrize(("exclude", "error"), [
    ('ips = ["10.0.0.1/8"]', r"project\.0\.exclude\.ips\.0: .*host bits set"),
    ('ips = ["10.0.0.0/8", "office"]', r"project\.0\.exclude\.ips\.1: .*'office' is not a CIDR"),
    ('ips = ["10.0.0.0/33"]', r"project\.0\.exclude\.ips\.0: .*not a CIDR"),
    ("ips = [10]", r"project\.0\.exclude\.ips\.0: .*a CIDR range is a string"),
    ('ips = "10.0.0.0/8"', r"project\.0\.exclude\.ips: "),
    ('ip = ["10.0.0.0/8"]', r"project\.0\.exclude\.ip: Extra inputs"),
    ('test_events = "yes"', r"project\.0\.exclude\.test_events: "),
])
def test_bad_exclusions_name_the_field(tmp_path: Path, exclude: str, error: str) -> None:
    path = tmp_path / "projects.toml"
    path.write_text(f'[[project]]\nid = "shop"\n[project.exclude]\n{exclude}\n')
    with pytest.raises(ProjectsFileError, match=error):
        load_projects(path)


def test_exclusions_default_to_test_messages_only(tmp_path: Path) -> None:
    path = tmp_path / "projects.toml"
    path.write_text('[[project]]\nid = "shop"\n')
    exclude = load_projects(path).projects[0].exclude
    assert (exclude.ips, exclude.user_ids, exclude.anonymous_ids, exclude.test_events) == (
        [], [], [], True)


# --- Through the collector, Kafka, the sink and the store ---------------------------------

def _rows(store: Client, project_id: str, columns: str, where: str = "1") -> list[Any]:
    return list(store.query(
        f"SELECT {columns} FROM events WHERE project_id = %(p)s AND {where} ORDER BY message_id",
        parameters={"p": project_id}).result_rows)


async def _serve(p: Pipeline) -> tuple[HttpServer, str]:
    """The collector on a real socket, for the libraries that speak real HTTP."""
    port = free_port()
    server = HttpServer(p.app, "127.0.0.1", port)
    await server.start()
    return server, f"http://127.0.0.1:{port}"


def _browser_headers(agent: str = CHROME, **extra: str) -> dict[str, str]:
    return {"Origin": ORIGIN, "User-Agent": agent, **extra}


@pytest.mark.anyio
async def test_source_and_agent_of_each_kind_of_request(
    broker: TansuBroker, store: Client,
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        at = now_utc().isoformat()

        def ev(mid: str, **fields: Any) -> dict[str, Any]:
            return {"type": "track", "event": "e", "messageId": mid, "anonymousId": "a",
                    "timestamp": at, **fields}

        sends = [
            p.http.get("/p.gif", params={"k": p.write_key, "mid": "pixel", "aid": "a"},
                       headers={"User-Agent": CHROME}),
            p.http.post("/v1/batch", json={"writeKey": p.write_key, "batch": [ev("origin")]},
                        headers=_browser_headers()),
            # navigator.sendBeacon: text/plain, the write key in the body.
            p.http.post("/v1/batch",
                        content=json.dumps({"writeKey": p.write_key, "batch": [ev("beacon")]}),
                        headers={"Content-Type": "text/plain;charset=UTF-8", "User-Agent": IPHONE}),
            # A backend: the library's own agent is not judged (a crawler-listed one here).
            p.http.post("/v1/batch", json={"batch": [
                ev("server-bare"),
                ev("server-crawler", context={"userAgent": GOOGLEBOT}),
                ev("server-person", context={"userAgent": IPHONE}),
            ]}, headers={**p.auth, "User-Agent": "Go-http-client/1.1"}),
            # A request whose own agent is Googlebot but which is no browser's: not judged.
            p.http.post("/v1/batch", json={"batch": [ev("server-googlebot-agent")]},
                        headers={**p.auth, "User-Agent": GOOGLEBOT}),
            # An app: context.app, and a mobile library name.
            p.http.post("/v1/batch", json={"batch": [
                ev("app", context={"app": {"name": "Shop", "version": "3.2"}}),
                ev("app-lib", context={"library": {"name": "analytics-android"}}),
            ]}, headers={**p.auth, "User-Agent": "okhttp/4.12.0"}),
        ]
        for response in await asyncio.gather(*sends):
            assert response.status_code == 200, response.text
        await p.wait_inserted(9)
        rows = {r[0]: r[1:] for r in _rows(
            store, p.project.id, "message_id, source, is_bot, browser, device_type")}
        assert rows == {
            "pixel": ("pixel", 0, "Chrome", "desktop"),
            "origin": ("browser", 0, "Chrome", "desktop"),
            "beacon": ("browser", 0, "Mobile Safari", "mobile"),
            "server-bare": ("server", 0, "", ""),
            "server-crawler": ("server", 1, "Googlebot", "bot"),
            "server-person": ("server", 0, "Mobile Safari", "mobile"),
            "server-googlebot-agent": ("server", 0, "", ""),
            "app": ("mobile", 0, "", ""),
            "app-lib": ("mobile", 0, "", ""),
        }
        # And the breakdown by source counts persons per source, bots left out.
        span = (now_utc() - timedelta(hours=1), now_utc() + timedelta(hours=1))
        by_source = {r.value: (r.pageviews, r.visitors, r.sessions)
                     for r in analytics.breakdown(store, p.project.id, *span, "source")}
        assert by_source == {"pixel": (1, 1, 0), "browser": (0, 1, 0), "server": (0, 1, 0),
                             "mobile": (0, 1, 0)}
        # The query API takes it as a dimension like any other.
        response = await p.http.post(
            "/v1/query/breakdown",
            json={"from": span[0].isoformat(), "to": span[1].isoformat(), "dimension": "source"},
            headers={"Authorization": f"Bearer {p.project.read_keys[0]}"})
        assert response.status_code == 200, response.text
        assert {r["value"]: r["visitors"] for r in response.json()["rows"]} == {
            "pixel": 1, "browser": 1, "server": 1, "mobile": 1}


@pytest.mark.anyio
async def test_three_shoppers_two_orders_from_the_backend(
    broker: TansuBroker, store: Client,
) -> None:
    """Three shoppers browse; two log in and their backend confirms the order.

    The backend sends with the real ``requests`` library: a crawler-listed agent, no
    context.userAgent. The orders must count, for the right persons.
    """
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        server, url = await _serve(p)
        try:
            t0 = now_utc() - timedelta(minutes=10)

            def at(shopper: int, step: int) -> str:
                return (t0 + timedelta(minutes=shopper, seconds=10 * step)).isoformat()

            for i in range(3):
                anon = f"anon-shopper-{i}"
                context = {"sessionId": f"s-{i}",
                           "page": {"url": f"https://shop.example/p/{i}"}}
                batch = [
                    {"type": "page", "name": "Product", "anonymousId": anon,
                     "messageId": f"{i}-1", "timestamp": at(i, 1), "context": context},
                    {"type": "track", "event": "add_to_cart", "anonymousId": anon,
                     "messageId": f"{i}-2", "timestamp": at(i, 2), "context": context},
                ]
                if i < 2:
                    batch.append({"type": "identify", "anonymousId": anon,
                                  "userId": f"user-{i}", "messageId": f"{i}-3",
                                  "timestamp": at(i, 3), "context": context})
                response = await p.http.post(
                    "/v1/batch", json={"writeKey": p.write_key, "batch": batch},
                    headers=_browser_headers(BROWSERS["Safari iPhone"][0] if i else CHROME))
                assert response.status_code == 200, response.text

            def backend_orders() -> list[int]:
                codes = []
                for i in range(2):
                    order: dict[str, Any] = {
                        "type": "track", "event": "purchase", "userId": f"user-{i}",
                        "messageId": f"{i}-4", "timestamp": at(i, 4),
                        "properties": {"revenue": 40 + i, "currency": "EUR"}}
                    got = requests.post(f"{url}/v1/batch", json={"batch": [order]},
                                        auth=(p.write_key, ""), timeout=10)
                    codes.append(got.status_code)
                return codes

            assert await asyncio.to_thread(backend_orders) == [200, 200]
            await p.wait_inserted(3 * 2 + 2 + 2)
        finally:
            await server.stop()

        purchases = _rows(store, p.project.id, "is_bot, source, user_id, browser",
                          "event = 'purchase'")
        agent = requests.utils.default_user_agent()
        assert crawleruseragents.is_crawler(agent)  # what the old rule would have judged
        assert purchases == [(0, "server", "user-0", ""), (0, "server", "user-1", "")]
        browsing = _rows(store, p.project.id, "DISTINCT source, is_bot", "event != 'purchase'")
        assert browsing == [("browser", 0)]

        span = (t0 - timedelta(hours=1), now_utc() + timedelta(hours=1))
        [funnel] = analytics.funnel(store, p.project.id, *span,
                                    ["page_view", "add_to_cart", "purchase"], timedelta(hours=1))
        assert [s.persons for s in funnel.steps] == [3, 3, 2]
        kpis = analytics.kpis(store, p.project.id, *span)
        assert kpis.visitors_exact == 3
        assert kpis.sessions == 3  # the backend's orders open no session of their own
        conversion = analytics.conversion(store, p.project.id, *span, "purchase")
        assert (conversion.visitors, conversion.converted) == (3, 2)
        assert conversion.rate == pytest.approx(2 / 3)
        by_source = {r.value: r.visitors
                     for r in analytics.breakdown(store, p.project.id, *span, "source")}
        assert by_source == {"browser": 3, "server": 2}


@pytest.mark.anyio
async def test_segment_python_library_events_are_server_traffic(
    broker: TansuBroker, store: Client,
) -> None:
    settings = pipeline_settings(broker.bootstrap_servers)
    async with running_pipeline(settings, store) as p:
        server, url = await _serve(p)
        errors: list[Any] = []
        try:
            client = SegmentClient(write_key=p.write_key, host=url, sync_mode=True, gzip=True,
                                   max_retries=0, on_error=lambda e, batch: errors.append(e))

            def drive() -> None:
                client.track(user_id="u-1", event="purchase", message_id="seg-order",
                             properties={"revenue": 12.5})
                client.identify(user_id="u-1", message_id="seg-identify",
                                traits={"plan": "pro"})
                # The backend knows its end user's agent: that one is judged.
                client.track(user_id="u-2", event="page_fetch", message_id="seg-crawler",
                             context={"userAgent": GOOGLEBOT})
                client.track(user_id="u-3", event="purchase", message_id="seg-phone",
                             context={"userAgent": IPHONE})
                client.flush()

            await asyncio.to_thread(drive)
            assert errors == []
            await p.wait_inserted(4)
        finally:
            await server.stop()
        rows = _rows(store, p.project.id,
                     "message_id, source, is_bot, library_name, browser")
        assert rows == [
            ("seg-crawler", "server", 1, "analytics-python", "Googlebot"),
            ("seg-identify", "server", 0, "analytics-python", ""),
            ("seg-order", "server", 0, "analytics-python", ""),
            ("seg-phone", "server", 0, "analytics-python", "Mobile Safari"),
        ]


@pytest.mark.anyio
async def test_a_project_s_exclusions_apply_to_it_alone(
    broker: TansuBroker, store: Client, tmp_path: Path,
) -> None:
    """The same traffic to a project with ``[project.exclude]`` and to one without."""
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "projects.toml"
    path.write_text(f"""
[[project]]
id = "shop_{tag}"
write_keys = ["wk_shop_{tag}"]
read_keys = ["rk_shop_{tag}"]
allowed_origins = ["{ORIGIN}"]

[project.exclude]
# The office (one address), its IPv6 network, and the network the backends send from.
ips = ["198.51.100.23/32", "2001:db8:cafe::/48", "127.0.0.0/8"]
user_ids = ["qa@shop.example"]
anonymous_ids = ["anon-ci-runner"]
test_events = true

[[project]]
id = "plain_{tag}"
write_keys = ["wk_plain_{tag}"]
read_keys = ["rk_plain_{tag}"]
allowed_origins = ["{ORIGIN}"]
""")
    shop, plain = load_projects(path).projects

    # Behind a proxy (the test client's address) that names the client in X-Forwarded-For.
    settings = pipeline_settings(broker.bootstrap_servers, trusted_proxies="198.51.100.23")
    t0 = now_utc() - timedelta(minutes=5)
    # Browsers: (anonymous id, user id, client address, extra context, reason in shop).
    visitors = [
        ("anon-alice", None, "192.0.2.10", {}, ""),
        ("anon-bob", None, "192.0.2.11", {}, ""),
        ("anon-neighbour", None, "198.51.100.24", {}, ""),  # the office's /24, another address
        ("anon-office", None, "198.51.100.23", {}, "internal_ip"),
        ("anon-office-v6", None, "2001:db8:cafe:7::20", {}, "internal_ip"),
        ("anon-office-mapped", None, "::ffff:198.51.100.23", {}, "internal_ip"),
        ("anon-qa", "qa@shop.example", "192.0.2.20", {}, "internal_user"),
        ("anon-ci-runner", None, "192.0.2.21", {}, "internal_user"),
        ("anon-staging", None, "192.0.2.22", {"test": True}, "test"),
    ]
    async with running_pipeline(settings, store, project=shop, others=(plain,)) as p:
        server, url = await _serve(p)
        try:
            for project in (shop, plain):
                for n, (anon, user, address, extra, _) in enumerate(visitors):
                    context = {"sessionId": f"{anon}-s", "page": {"url": f"{ORIGIN}/"},
                               **extra}
                    base: dict[str, Any] = {
                        "anonymousId": anon, "context": context,
                        "timestamp": (t0 + timedelta(seconds=n)).isoformat()}
                    if user:
                        base["userId"] = user
                    batch = [{**base, "type": "page", "messageId": f"{anon}-page"},
                             {**base, "type": "track", "event": "add_to_cart",
                              "messageId": f"{anon}-cart"}]
                    response = await p.http.post(
                        "/v1/batch", json={"writeKey": project.write_keys[0], "batch": batch},
                        headers=_browser_headers(**{"X-Forwarded-For": address}))
                    assert response.status_code == 200, response.text

            def backend_orders(write_key: str) -> None:
                # From 127.0.0.1, inside the shop's excluded ranges: the backend's own
                # address is nobody's, so only the end user's (context.ip) is checked.
                orders: list[dict[str, Any]] = [
                    {"userId": "u-alice", "messageId": "order-alice"},
                    {"userId": "qa@shop.example", "messageId": "order-qa"},
                    {"userId": "u-walk-in", "messageId": "order-office",
                     "context": {"ip": "198.51.100.23"}},
                ]
                batch: list[dict[str, Any]] = [
                    {"type": "track", "event": "purchase", "timestamp": t0.isoformat(),
                     "properties": {"revenue": 10}, **o} for o in orders]
                got = requests.post(f"{url}/v1/batch", json={"batch": batch},
                                    auth=(write_key, ""), timeout=10)
                assert got.status_code == 200, got.text

            for project in (shop, plain):
                await asyncio.to_thread(backend_orders, project.write_keys[0])
            await p.wait_inserted(2 * (2 * len(visitors) + 3))
        finally:
            await server.stop()

    # Every event is stored, with the reason it is not counted. The project without
    # [project.exclude] still leaves out context.test messages: test_events defaults on.
    expected = {f"{anon}-{kind}": reason for anon, _, _, _, reason in visitors
                for kind in ("page", "cart")}
    expected.update({"order-alice": "", "order-qa": "internal_user",
                     "order-office": "internal_ip"})
    assert dict(_rows(store, shop.id, "message_id, excluded")) == expected
    assert {m: r for m, r in _rows(store, plain.id, "message_id, excluded") if r} == {
        "anon-staging-page": "test", "anon-staging-cart": "test"}
    # The raw address is not stored: the office's is its /24, the same as its neighbour's.
    ips = dict(_rows(store, shop.id, "anonymous_id, ip", "type = 'page'"))
    assert ips["anon-office"] == ips["anon-neighbour"] == "198.51.100.0"

    span = (t0 - timedelta(hours=1), now_utc() + timedelta(hours=1))
    shop_kpis = analytics.kpis(store, shop.id, *span)
    plain_kpis = analytics.kpis(store, plain.id, *span)
    # shop: alice, bob, the neighbour, and u-alice's order. plain: every browser but the
    # staging one, and the three buyers (qa@shop.example is also a browser).
    assert (shop_kpis.visitors_exact, plain_kpis.visitors_exact) == (4, 10)
    assert (shop_kpis.pageviews, plain_kpis.pageviews) == (3, 8)
    assert (shop_kpis.sessions, plain_kpis.sessions) == (3, 8)
    for project_id, carts, buyers in ((shop.id, 3, 1), (plain.id, 8, 3)):
        cart = analytics.conversion(store, project_id, *span, "add_to_cart")
        bought = analytics.conversion(store, project_id, *span, "purchase")
        assert (cart.converted, bought.converted) == (carts, buyers), project_id

    # The minute rollups (time series, alerts, Grafana) never saw the excluded events.
    def rollup(project_id: str) -> dict[str, int]:
        rows = store.query(
            "SELECT event, sum(events) FROM rollups_minute WHERE project_id = %(p)s "
            "GROUP BY event", parameters={"p": project_id}).result_rows
        return {str(e): int(n) for e, n in rows}

    assert rollup(shop.id) == {"page_view": 3, "add_to_cart": 3, "purchase": 1}
    assert rollup(plain.id) == {"page_view": 8, "add_to_cart": 8, "purchase": 3}
    series = analytics.timeseries(store, shop.id, "page_view", *span, "hour", visitors=False)
    assert sum(point.events for point in series) == 3
