"""The dashboard at ``/``: its committed build, its size, its headers, and the app itself in
Debian's chromium against ``tracklane up`` with planted traffic.

The planted traffic is small enough to count by hand; the numbers the panels must show
are worked out below from what is planted, never read back from the API.
"""

from __future__ import annotations

import filecmp
import gzip
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests import sdk_js
from tests.test_geoip import city_database
from tests.up_process import tracklane_up, wait_for
from tracklane.broker import free_port
from tracklane.collector.app import error_response
from tracklane.collector.body import RequestError
from tracklane.collector.dashboard_files import CONTENT_SECURITY_POLICY, dashboard_router

DASHBOARD = Path(__file__).resolve().parent.parent / "collector" / "dashboard"
DIST = DASHBOARD / "dist"
BUDGET = 150 * 1024
# Where the screenshots go: CI keeps this directory as the run's artifacts; README shows
# the overview, copied to docs/ by the test.
ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "artifacts" / "dashboard"
README_SHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"


def require_tooling() -> None:
    sdk_js.require_tooling(browser=True)
    if not (DASHBOARD / "node_modules" / ".package-lock.json").exists():
        raise sdk_js.SdkToolingMissing(
            "missing: the dashboard's node packages (cd collector/dashboard && npm ci). "
            ".ci/run installs them.")


def node(*args: str, timeout_s: float = 180,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", *args], cwd=DASHBOARD, capture_output=True, text=True,
                          timeout=timeout_s, check=False, input=stdin)


def test_committed_build_is_the_build_of_the_sources_and_small(tmp_path: Path) -> None:
    """`up` serves the committed dist/ without node: it must be what the sources build to,
    and the whole app at most 150 KB gzipped."""
    require_tooling()
    result = node("build.mjs", "--outdir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)
    built = sorted(p.name for p in tmp_path.iterdir())
    assert sorted(p.name for p in DIST.iterdir()) == built
    _, mismatch, errors = filecmp.cmpfiles(DIST, tmp_path, built, shallow=False)
    assert not mismatch and not errors, (
        f"collector/dashboard/dist is stale ({mismatch + errors}): run `npm run build` in "
        "collector/dashboard and commit")
    total = sum(len(gzip.compress(p.read_bytes())) for p in DIST.iterdir())
    print(f"dashboard: {total} B gzipped ({BUDGET} B budget)")
    assert total <= BUDGET
    # Nothing it loads comes from elsewhere: no absolute URL in the page or the bundle
    # but in licence comments and the SVG and XHTML namespaces, which name a standard
    # and are never fetched.
    page = (DIST / "index.html").read_text()
    assert "<script>" not in page and " style=" not in page
    for name in built:
        text = re.sub(r"/\*!.*?\*/", "", (DIST / name).read_text(), flags=re.S)
        text = text.replace("http://www.w3.org/", "")
        assert not re.search(r"https?://", text), (name, re.findall(r".{40}https?://.{40}", text))


def app_for(directory: Path) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(RequestError)
    async def _error(request: Request, err: RequestError) -> JSONResponse:
        return error_response(err)

    app.include_router(dashboard_router(directory))
    return app


@pytest.mark.anyio
async def test_served_under_a_strict_content_security_policy() -> None:
    transport = httpx.ASGITransport(app=app_for(DIST))
    async with httpx.AsyncClient(transport=transport, base_url="http://c") as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY
        assert "unsafe" not in CONTENT_SECURITY_POLICY
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["x-frame-options"] == "DENY"
        for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
            asset = await http.get(f"/dashboard/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
            again = await http.get(f"/dashboard/{name}",
                                   headers={"If-None-Match": asset.headers["etag"]})
            assert again.status_code == 304
        missing = await http.get("/dashboard/../pyproject.toml")
        assert missing.status_code == 404
        assert (await http.get("/dashboard/index.js")).json()["error"] == "not_found"


# -- the app in chromium, against `tracklane up` ---------------------------------------------

CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")


@dataclass(frozen=True)
class Visit:
    """One visitor's session: (seconds after its start, type, event or page, revenue)."""

    anonymous_id: str
    ago: timedelta  # before now, when the visit starts
    agent: str
    ip: str
    hits: tuple[tuple[int, str, str, float], ...]
    landing_query: str = ""
    referrer: str = ""

    def batch(self, now: datetime) -> list[dict[str, Any]]:
        start = now - self.ago
        out = []
        for n, (after, kind, name, revenue) in enumerate(self.hits):
            page = name if kind == "page" else "/checkout"
            query = self.landing_query if n == 0 else ""
            msg: dict[str, Any] = {
                "type": kind, "messageId": f"{self.anonymous_id}-{n}-{uuid.uuid4().hex[:6]}",
                "anonymousId": self.anonymous_id,
                "timestamp": (start + timedelta(seconds=after)).isoformat(),
                "context": {"ip": self.ip, "userAgent": self.agent,
                            "sessionId": f"s-{self.anonymous_id}",
                            "library": {"name": "analytics.js", "version": "test"},
                            "page": {"url": f"https://shop.example{page}{query}", "path": page,
                                     "referrer": self.referrer if n == 0 else ""}},
            }
            if kind == "track":
                msg["event"] = name
                msg["properties"] = {"revenue": revenue, "currency": "USD"} if revenue else {}
            out.append(msg)
        return out


LONDON, TOKYO, US = "81.2.69.160", "1.0.16.1", "8.8.8.8"
# The last 24 hours: three visits. The previous 24: one. A live visitor comes later.
PLANTED = (
    # Now, from London: two pages, a cart, an order of 50 USD; in the live window.
    Visit("anna", timedelta(minutes=2), CHROME, LONDON,
          ((0, "page", "/", 0), (30, "page", "/pricing", 0), (50, "track", "add_to_cart", 0),
           (70, "track", "purchase", 50.0))),
    # Three hours ago, from Tokyo, on a phone: one page, a bounce.
    Visit("ben", timedelta(hours=3), IPHONE, TOKYO, ((0, "page", "/", 0),)),
    # Five hours ago, from the US, from a newsletter: two pages over 40 s.
    Visit("cleo", timedelta(hours=5), CHROME, US,
          ((0, "page", "/pricing", 0), (40, "page", "/docs", 0)),
          landing_query="?utm_source=newsletter&utm_medium=email&utm_campaign=launch",
          referrer="https://mail.example/"),
    # Thirty hours ago: the previous period's one page view.
    Visit("dora", timedelta(hours=30), CHROME, US, ((0, "page", "/", 0),)),
)
LIVE_VISITOR = Visit("eve", timedelta(seconds=5), CHROME, TOKYO, ((0, "page", "/docs", 0),))
# Anna's page speed, as the SDK's Web Vitals add-on sends it when she leaves /pricing.
VITALS = {"lcp": 3210, "inp": 120, "cls": 0.12, "fcp": 900, "ttfb": 180, "path": "/pricing"}

# Worked out by hand from PLANTED, for the last 24 hours against the 24 before.
EXPECTED: dict[str, Any] = {
    "pageviews": 5, "pageviews_before": 1, "visitors": 3, "sessions": 3,
    "bounce_rate": 1 / 3, "orders": 1, "revenue": 50.0, "aov": 50.0,
    "conversion_rate": 1 / 3,
    # anna 70 s, ben 0 s, cleo 40 s.
    "avg_duration_s": (70 + 0 + 40) / 3,
    "pages": {"/": 2, "/pricing": 2, "/docs": 1},
    "countries": {"GB": 1, "JP": 1, "US": 1},
    "cities": {"London": 1, "": 2},
    "utm_source": {"newsletter": 1, "": 2},
    "live_visitors": 1, "live_visitors_after": 2,
}


@dataclass(frozen=True)
class Dashboard:
    base: str
    write_key: str
    read_key: str

    def send(self, visits: tuple[Visit, ...], now: datetime) -> None:
        for visit in visits:
            # As a browser sends: an Origin, its own agent, and text/plain as sendBeacon.
            response = httpx.post(
                f"{self.base}/v1/batch", content=json.dumps(
                    {"batch": visit.batch(now), "writeKey": self.write_key}),
                headers={"Origin": "https://shop.example", "User-Agent": visit.agent,
                         "Content-Type": "text/plain"})
            assert response.status_code == 200, response.text
            assert response.json().get("errors") in (None, []), response.text

    def send_vitals(self, at: datetime) -> None:
        response = httpx.post(f"{self.base}/v1/batch", content=json.dumps({
            "writeKey": self.write_key, "batch": [{
                "type": "track", "event": "web_vitals", "anonymousId": "anna",
                "timestamp": at.isoformat(), "properties": VITALS,
                "context": {"ip": LONDON, "userAgent": CHROME, "sessionId": "s-anna",
                            "library": {"name": "analytics.js", "version": "test"},
                            "page": {"path": "/pricing",
                                     "url": "https://shop.example/pricing"}}}]}),
            headers={"Origin": "https://shop.example", "User-Agent": CHROME,
                     "Content-Type": "text/plain"})
        assert response.status_code == 200, response.text

    def query(self, name: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.base}/v1/query/{name}", json=body,
                              headers={"Authorization": f"Bearer {self.read_key}"})
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """`tracklane up` from a fresh data directory, with a city database, and the planted
    traffic stored."""
    require_tooling()
    workdir = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    env = {"TRACKLANE_GEOIP_DB": str(city_database(workdir / "city.mmdb")),
           "TRACKLANE_TOPIC_PARTITIONS": "1"}
    with tracklane_up(workdir, port, env):
        banner = (workdir / "up.out").read_text()
        link = next(line.split()[-1] for line in banner.splitlines()
                    if line.strip().startswith("dashboard"))
        assert link.startswith(f"http://127.0.0.1:{port}/#key=")
        read_key = link.split("#key=", 1)[1]
        write_key = next(line.split()[-1] for line in banner.splitlines()
                         if line.strip().startswith("write key"))
        site = Dashboard(f"http://127.0.0.1:{port}", write_key, read_key)
        now = datetime.now(UTC)
        site.send(PLANTED, now)
        site.send_vitals(now - timedelta(minutes=1))
        both = {"from": (now - timedelta(hours=48)).isoformat(), "to": now.isoformat()}
        planted = EXPECTED["pageviews"] + EXPECTED["pageviews_before"]
        wait_for(lambda: site.query("kpis", both)["pageviews"] == planted,
                 60, "planted traffic not stored")
        yield site


def test_the_api_answers_the_planted_numbers(dashboard: Dashboard) -> None:
    """The planted traffic is what EXPECTED says, as the API sees it: the browser test
    below then checks that the panels show these numbers."""
    now = datetime.now(UTC)
    span = {"from": (now - timedelta(hours=24)).isoformat(), "to": now.isoformat()}
    kpis = dashboard.query("kpis", span)
    assert (kpis["pageviews"], kpis["visitors_exact"], kpis["sessions"], kpis["orders"]) == (
        EXPECTED["pageviews"], EXPECTED["visitors"], EXPECTED["sessions"], EXPECTED["orders"])
    assert kpis["bounce_rate"] == pytest.approx(EXPECTED["bounce_rate"])
    assert kpis["avg_duration_s"] == pytest.approx(EXPECTED["avg_duration_s"])
    assert (kpis["revenue"], kpis["aov"], kpis["currency"]) == (50.0, 50.0, "USD")
    assert kpis["conversion_rate"] == pytest.approx(EXPECTED["conversion_rate"])

    def rows(dimension: str, key: str = "sessions") -> dict[str, int]:
        got = dashboard.query("breakdown", {**span, "dimension": dimension})["rows"]
        return {r["value"]: r[key] for r in got}

    assert rows("page", "pageviews") == EXPECTED["pages"]
    assert rows("country", "visitors") == EXPECTED["countries"]
    assert rows("city", "visitors") == EXPECTED["cities"]
    assert rows("utm_source") == EXPECTED["utm_source"]
    before = {"from": (now - timedelta(hours=48)).isoformat(),
              "to": (now - timedelta(hours=24)).isoformat()}
    assert dashboard.query("kpis", before)["pageviews"] == EXPECTED["pageviews_before"]
    realtime = httpx.get(f"{dashboard.base}/v1/stats/realtime",
                         headers={"Authorization": f"Bearer {dashboard.read_key}"}).json()
    assert realtime["visitors"] == EXPECTED["live_visitors"]

    def pipeline() -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(
            f"{dashboard.base}/v1/stats/pipeline",
            headers={"Authorization": f"Bearer {dashboard.read_key}"}).json()
        return answer

    planted = sum(len(v.hits) for v in PLANTED) + 1  # and the page speed
    wait_for(lambda: pipeline()["accepted_last_hour"] == planted, 30, "ingest counts")
    fresh = pipeline()
    assert fresh["rejected_last_hour"] == 0 and fresh["lag"] == 0
    assert 0 <= fresh["watermark_delay_s"] < 60


def e2e(config: dict[str, Any], on_ready: Any = None, timeout_s: float = 300) -> dict[str, Any]:
    """Run e2e/dashboard.mjs (chromium) with ``config``; at its READY line, ``on_ready()``
    returns the line to answer. Its JSON report."""
    proc = subprocess.Popen(["node", "e2e/dashboard.mjs", json.dumps(config)], cwd=DASHBOARD,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "READY" and on_ready is not None:
                proc.stdin.write(on_ready() + "\n")
                proc.stdin.flush()
        proc.wait(timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read() if proc.stderr is not None else ""
    assert lines, f"no report from the e2e script: {stderr}"
    report: dict[str, Any] = json.loads(lines[-1])
    report["_exit"] = proc.returncode
    report["_stderr"] = stderr[-3000:]
    return report


@pytest.mark.browser
@pytest.mark.e2e
def test_the_dashboard_shows_the_planted_numbers_in_chromium(dashboard: Dashboard) -> None:
    """Signed in with the link `up` prints: every panel shows what was planted, a breakdown
    row filters the whole page, the live panel follows a new visitor, a wrong key is told
    so, Chinese labels appear, and nothing leaves the collector's origin."""
    kpi = "kpi-{}-value".format
    row_labels = "[data-testid=breakdown-row][data-dimension={}] [data-testid=breakdown-label]"
    # The 24-hour range's retention cohorts are its local (UTC) days, oldest first: each
    # planted visitor is in the cohort of the day of their first visit.
    now = datetime.now(UTC)
    days = [(now - timedelta(hours=24)).date() + timedelta(days=n)
            for n in range((now.date() - (now - timedelta(hours=24)).date()).days + 1)]
    firsts = [(now - visit.ago).date() for visit in PLANTED]
    config = {
        "base": dashboard.base, "readKey": dashboard.read_key, "range": "24h",
        "screenshotsDir": str(ARTIFACTS), "liveStep": True,
        "expect": {
            kpi("pageviews"): "5", "kpi-pageviews-change": "+400%",
            kpi("visitors"): "3", kpi("sessions"): "3", kpi("bounce_rate"): "33.3%",
            kpi("avg_duration_s"): "37s", kpi("orders"): "1", kpi("revenue"): "$50.00",
            kpi("aov"): "$50.00", kpi("conversion_rate"): "33.3%",
            row_labels.format("page"): ["/", "/pricing", "/docs"],
            "live-visitors": "1", "pipeline-rejected": "0",
            "retention-size": [str(firsts.count(day)) for day in days],
            # The one order came in a visit with no referrer and no campaign.
            "attribution-channel": ["direct"], "attribution-conversions": ["1.00"],
            "attribution-revenue": ["50.00"],
            # One page view's Web Vitals: its p75 is itself; none the day before.
            kpi("lcp"): "3,210 ms", kpi("cls"): "0.120", kpi("ttfb"): "180 ms",
            "kpi-lcp-change": "—",
        },
        "silence": {"matchers": "rule=checkout-conversion", "createdBy": "on-call",
                    "comment": "deploy"},
        "filter": [
            # The place of each visit, from the registries' data and the city database.
            {"dimension": "country", "value": "GB",
             "expect": {kpi("pageviews"): "2", kpi("visitors"): "1", kpi("orders"): "1",
                        kpi("revenue"): "$50.00", kpi("bounce_rate"): "0%"}},
            {"dimension": "city", "value": "London", "expect": {kpi("pageviews"): "2"}},
            {"dimension": "utm_source", "value": "newsletter",
             "expect": {kpi("pageviews"): "2", kpi("visitors"): "1", kpi("orders"): "0"}},
        ],
        "funnel": {"steps": ["page_view", "add_to_cart", "purchase"], "window_s": 3600},
    }

    def new_visitor() -> str:
        dashboard.send((LIVE_VISITOR,), datetime.now(UTC))
        return json.dumps({"live-visitors": str(EXPECTED["live_visitors_after"])})

    report = e2e(config, on_ready=new_visitor)
    print(json.dumps({k: v for k, v in report.items() if k != "requests"}, indent=1)[:4000])
    assert report["ok"] and report["_exit"] == 0, (report["failures"], report["_stderr"])
    assert report["live"]["after"] == "2"
    assert report["silence"] == {"created": True, "expired": True,
                                 "text": "rule=checkout-conversion"}
    assert [(s["event"], s["persons"]) for s in report["funnelSteps"]] == [
        ("page_view", "3"), ("add_to_cart", "1"), ("purchase", "1")]
    assert report["requests"]["foreign"] == [] and report["requests"]["total"] > 20
    assert report["signinError"] == "This read key is not valid for any project."
    assert report["zhLabel"] == "浏览量"
    assert report["storage"]["cookies"] == 0
    shots = {Path(p).name for p in report["screenshots"]}
    assert shots == {"overview-light.png", "overview-dark.png", "overview-zh-CN.png"}
    if os.environ.get("TRACKLANE_README_SCREENSHOT"):
        shutil.copyfile(ARTIFACTS / "overview-light.png", README_SHOT)
