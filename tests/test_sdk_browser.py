"""The browser SDK and the pixel in headless chromium against a real `tracklane up`.

Each scenario has its own project, so its counts are its own. The topic has one
partition here: once a sentinel sent after the browser closed is counted, everything the
browser sent before it has been consumed too, so "exactly" is checked, not "at least".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import sdk_js
from tests.sdk_js import Site, up_site

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

SDK_DOC = Path(__file__).resolve().parent.parent / "docs" / "sdk.md"
LOCAL = "http://127.0.0.1:8080"

# scenario -> the exact counts it must leave in the pipeline
EXPECTED: dict[str, dict[str, int]] = {
    "spa": {"page_view": 4, "Clicked": 5},
    "beacon": {"page_view": 1, "Leaving": 1},
    "offline_reload": {"page_view": 2, "OfflineEvent": 5},
    "offline_replay": {"page_view": 2, "Replayed": 3},
    "retry_after": {"page_view": 1, "Retried": 10},
    "consent_denied": {"page_view": 0, "Held": 0, "AfterDenied": 0},
    "consent_granted": {"page_view": 1, "Held": 3},
    "pixel": {"email_open": 1},
    "readme": {"page_view": 1, "Signup": 1},
    "vitals": {"page_view": 1, "web_vitals": 1},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with up_site(tmp_path_factory.mktemp("sdk_up"), list(EXPECTED)) as running:
        yield running


def check(site: Site, project: str) -> None:
    expected = EXPECTED[project]
    assert site.counts_after_sentinel(project, list(expected)) == expected


def test_page_load_three_spa_navigations_and_five_events_give_exact_counts(site: Site) -> None:
    report = sdk_js.scenario("spa", site.config("spa"))
    assert report["requests"] >= 1
    check(site, "spa")


def test_event_sent_right_before_navigating_away_arrives_by_beacon(site: Site) -> None:
    report = sdk_js.scenario("beacon", site.config("beacon"))
    assert report["fetches"] == 0, "nothing was due before the page was left"
    assert report["beacons"] == [{"url": f"{site.base}/v1/batch", "ok": True}]
    check(site, "beacon")


def test_offline_events_are_delivered_once_after_a_reload_online(site: Site) -> None:
    report = sdk_js.scenario("offline_reload", site.config("offline_reload"))
    assert report["queuedOffline"] == 5
    check(site, "offline_reload")


def test_queue_left_behind_offline_is_replayed_once_on_the_next_load(site: Site) -> None:
    report = sdk_js.scenario("offline_replay", site.config("offline_replay"))
    assert report["queuedOffline"] == 3
    assert report["sentWhileAway"] == 0, "a beacon sent offline would have been lost"
    check(site, "offline_replay")


def test_503_with_retry_after_is_waited_out_and_every_event_arrives_once(site: Site) -> None:
    report = sdk_js.scenario("retry_after", site.config("retry_after"))
    assert report["refused"] == 3
    assert report["attempts"] > 3
    # Retry-After: 1 is honoured after each refusal (measured in node, some slack).
    assert min(report["gaps"][:3]) >= 900, report["gaps"]
    check(site, "retry_after")


def test_consent_denied_sends_and_stores_nothing(site: Site) -> None:
    report = sdk_js.scenario("consent_denied", site.config("consent_denied"))
    assert report == {"requests": 0, "storageKeys": []}
    check(site, "consent_denied")


def test_consent_granted_sends_the_held_events(site: Site) -> None:
    report = sdk_js.scenario("consent_granted", site.config("consent_granted"))
    assert report["beforeConsent"] == 0
    check(site, "consent_granted")


def test_pixel_in_an_img_tag_counts_once(site: Site) -> None:
    report = sdk_js.scenario("pixel", site.config("pixel"))
    assert report["naturalWidths"] == [1, 1]
    check(site, "pixel")


def sdk_doc_snippet() -> str:
    text = SDK_DOC.read_text()
    block = text.split("<!-- tracklane:snippet:start -->")[1].split(
        "<!-- tracklane:snippet:end -->")[0]
    found = re.search(r"```html\n(.*?)```", block, re.S)
    assert found, "docs/sdk.md's snippet block has no html code"
    return found.group(1)


def test_web_vitals_add_on_sends_the_page_speed_once_as_the_page_is_left(site: Site) -> None:
    """The main content appears 1.5 s late: the LCP the add-on sends says so."""
    report = sdk_js.scenario("vitals", site.config("vitals", delay=1500))
    [vitals] = report["vitals"]
    assert vitals["path"] == "/vitals"
    assert vitals["lcp"] >= 1500 and vitals["fcp"] < vitals["lcp"]
    assert 0 <= vitals["ttfb"] < vitals["fcp"]
    assert isinstance(vitals["cls"], int | float) and vitals["cls"] >= 0
    assert vitals["inp"] > 0  # the click
    check(site, "vitals")


def test_sdk_doc_snippet_is_the_built_one() -> None:
    built = (sdk_js.DIST / "snippet.txt").read_text()
    expected = built.replace("https://COLLECTOR", LOCAL).replace("WRITE_KEY", "YOUR_WRITE_KEY")
    assert sdk_doc_snippet() == expected


def test_sdk_doc_snippet_on_a_plain_static_page_records_page_views_and_an_event(
    site: Site, tmp_path: Path,
) -> None:
    snippet = sdk_doc_snippet().replace(LOCAL, site.base).replace(
        "YOUR_WRITE_KEY", Site.keys("readme")[0])
    (tmp_path / "index.html").write_text(
        "<!doctype html>\n<html><head><title>Plain page</title>\n" + snippet +
        "</head><body><h1>Hello</h1>\n<script>tracklane.track('Signup');</script>\n"
        "</body></html>\n")
    with sdk_js.static_server(tmp_path) as base:
        sdk_js.scenario("visit", site.config("readme", url=f"{base}/index.html"))
    check(site, "readme")
