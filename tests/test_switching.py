"""docs/switching.md, run as written against `tracklane up`.

Each block of that file is taken from it, its host and key substituted, and used
with the unchanged library: the npm packages bundled into a page served from another
origin and driven in chromium, analytics-node in node, the Python libraries in a fresh
interpreter. Each scenario has its own project; counts are checked exactly.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import sdk_js
from tests.recorded import analytics_kotlin_upload
from tests.sdk_js import Site, up_site

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "docs" / "switching.md"
LOCAL = "http://127.0.0.1:8080"
SCRIPT = "e2e/switching.mjs"
CALLS = {"page_view": 1, "Clicked": 5, "identify": 1}  # what e2e/switching.mjs's calls send

# project -> (README block, what it exports, scenario, extra config)
BROWSER: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "ajs": ("analytics-next", "analytics", "calls", {}),
    "ajs_snippet": ("analytics-js-snippet", "analytics", "snippet", {}),
    "ajs_batching": ("analytics-next-batching", "analytics", "calls", {}),
    "rudder": ("rudderstack", "rudderAnalytics", "calls", {}),
    "rudder_beacon": ("rudderstack-beacon", "rudderAnalytics", "beacon", {}),
    # Seven calls, seven requests: each refused (or its answer lost) once, then a reload;
    # each of the seven must be sent again.
    "ajs_reload": ("analytics-next", "analytics", "outage",
                   {"requests": 7, "resends": 7, "reload": True}),
    "rudder_reload": ("rudderstack", "rudderAnalytics", "outage",
                      {"requests": 7, "resends": 7, "reload": True}),
    # Batching keeps a failed batch in memory: retried in place, not across a reload.
    "ajs_batching_outage": ("analytics-next-batching", "analytics", "outage",
                            {"requests": 2, "resends": 1, "reload": False}),
}
PROJECTS = [*BROWSER, "ajs_node", "segment_python", "rudder_python", "kotlin"]


def readme_block(name: str) -> str:
    """The code block under ``<!-- tracklane:switch:<name> -->`` in docs/switching.md."""
    found = re.search(rf"<!-- tracklane:switch:{re.escape(name)} -->\n```\w+\n(.*?)```",
                      README.read_text(), re.S)
    assert found, f"docs/switching.md has no switch block {name!r}"
    return found.group(1)


def configured(block: str, site: Site, project: str) -> str:
    host = site.base.removeprefix("http://")
    return (block.replace(LOCAL, site.base).replace("127.0.0.1:8080", host)
            .replace("YOUR_WRITE_KEY", Site.keys(project)[0]))


@pytest.fixture(scope="module")
def segment_cdn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Segment's CDN for analytics.js's bundles: the npm package's own build, over HTTP.

    The page's browser gets the bundles through the collector's redirect, which playwright
    cannot intercept, so the collector is pointed here (TRACKLANE_SEGMENT_CDN).
    """
    root = tmp_path_factory.mktemp("segment_cdn")
    (root / "analytics-next").mkdir()
    (root / "analytics-next" / "bundles").symlink_to(
        sdk_js.SDK / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd")
    with sdk_js.static_server(root) as base:
        yield base


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, segment_cdn: str) -> Iterator[Site]:
    with up_site(tmp_path_factory.mktemp("switch_up"), PROJECTS,
                 {"TRACKLANE_SEGMENT_CDN": segment_cdn}) as running:
        yield running


@pytest.mark.parametrize("project", list(BROWSER))
def test_browser_libraries_count_each_call_exactly_once(site: Site, project: str) -> None:
    block, exported, scenario, extra = BROWSER[project]
    report = sdk_js.scenario(scenario, site.config(
        project, code=configured(readme_block(block), site, project),
        **{"global": exported, "event": "Clicked", **extra}), script=SCRIPT)
    key = Site.keys(project)[0]
    if project == "ajs":
        # Its settings from the collector, then one request per call on Segment's paths.
        assert {f"GET /v1/projects/{key}/settings", "POST /v1/p", "POST /v1/t",
                "POST /v1/i"} <= set(report["requests"]), report
    elif project == "ajs_snippet":
        # Settings from the collector; the query-string bundle asked of it, and sent on.
        assert {f"GET /v1/projects/{key}/settings", "POST /v1/p", "POST /v1/t"} <= set(
            report["requests"]), report
        assert any(r.startswith("GET /analytics-next/bundles/queryString.")
                   for r in report["requests"]), report
        expected = {**CALLS, "Promo Opened": 1}
        assert site.counts_after_sentinel(project, list(expected)) == expected
        return
    elif project == "ajs_batching":
        assert "POST /v1/b" in report["requests"], report
        assert not {"POST /v1/t", "POST /v1/p"} & set(report["requests"]), report
    elif project == "rudder":
        assert {"GET /sourceConfig/", "POST /v1/page", "POST /v1/track",
                "POST /v1/identify"} <= set(report["requests"]), report
    elif project == "rudder_beacon":
        # Beacons are not page requests to playwright; what was fetched is only the config.
        assert report["requests"] == ["GET /sourceConfig/"], report
    else:
        # Both kinds of failure happened: refused outright, and accepted with the answer
        # lost (so the library's resend is a duplicate the pipeline must drop).
        assert report["forwarded"] >= 1 and report["refused"] >= 1, report
        assert report["afterOutage"] >= extra["resends"], report
    assert site.counts_after_sentinel(project, list(CALLS)) == CALLS


def test_analytics_node_counts_every_message_type(site: Site) -> None:
    project = "ajs_node"
    report = sdk_js.scenario("node", site.config(
        project, code=configured(readme_block("analytics-node"), site, project),
        **{"global": "analytics", "event": "Clicked"}), script=SCRIPT)
    assert report == {"errors": []}
    expected = {**CALLS, "group": 1, "alias": 1}
    assert site.counts_after_sentinel(project, list(expected)) == expected


@pytest.mark.parametrize(("project", "block", "module"), [
    ("segment_python", "analytics-python", "analytics"),
    ("rudder_python", "rudder-sdk-python", "rudder_analytics"),
])
def test_python_libraries_configured_as_readme_says(
        site: Site, project: str, block: str, module: str) -> None:
    program = configured(readme_block(block), site, project) + textwrap.dedent(f"""
        errors = []
        {module}.on_error = lambda error, batch: errors.append(repr(error))
        {module}.page(anonymous_id="a-1", name="Home")
        for i in range(5):
            {module}.track(user_id="user-1", event="Clicked", properties={{"i": i}})
        {module}.identify(user_id="user-1", traits={{"plan": "pro"}})
        {module}.flush()
        assert errors == [], errors
        """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert site.counts_after_sentinel(project, list(CALLS)) == CALLS


def test_mobile_hosts_from_readme_reach_settings_and_batch_upload(site: Site) -> None:
    project = "kotlin"
    block = configured(readme_block("mobile"), site, project)
    hosts = dict(re.findall(r'(apiHost|cdnHost) = "([^"]+)"', block))
    assert hosts == {"apiHost": "collector.example.com/v1", "cdnHost": "collector.example.com/v1"}
    key = Site.keys(project)[0]
    # The libraries build https://<host>/...; here the host is the running collector's.
    local = {name: value.replace("collector.example.com", site.base.removeprefix("http://"))
             for name, value in hosts.items()}
    with httpx.Client() as http:  # one keep-alive connection, as the phone's HTTP stack
        settings = http.get(f"http://{local['cdnHost']}/projects/{key}/settings")
        assert settings.status_code == 200, settings.text
        assert settings.json()["integrations"]["Segment.io"]["apiKey"] == key
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = analytics_kotlin_upload(key, now)
        upload = http.post(f"http://{local['apiHost']}/b", content=body, headers={
            "Content-Type": "text/plain", "Content-Encoding": "gzip",
            "User-Agent": "analytics-kotlin/1.16.3"})
        assert upload.status_code == 200, upload.text
    expected = {"Application Opened": 1, "screen_view": 1, "identify": 1}
    assert site.counts_after_sentinel(project, list(expected)) == expected
