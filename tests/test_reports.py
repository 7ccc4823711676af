"""Scheduled reports (日报, 周报) on an injected clock, against the real store and loopback
receivers: sent at their local times once, after a restart once and marked late, rendered
for every notifier kind, and printed by ``tracklane report send --dry-run``."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.client import Client

from tests import analytics_data as data
from tests.receiver import Received, Receiver
from tests.test_notifiers import NOW
from tests.test_notifiers_cn import (
    FEISHU_SECRET,
    SECRET,
    WECOM_KEY,
    Mailbox,
    dingtalk_verdict,
    feishu_verdict,
    smtp_server,
    tls,  # noqa: F401  (the module's TLS fixture)
    wecom_verdict,
)
from tracklane.alerts.notifiers import verify
from tracklane.alerts.report_service import ReportScheduler
from tracklane.alerts.reports import Period, latest_due
from tracklane.alerts.rules import NotifierSpec, ReportSpec, parse_rules
from tracklane.store import analytics

pytestmark = pytest.mark.anyio

PROJECT = "report-shop"
SHANGHAI = ZoneInfo("Asia/Shanghai")
WHSEC = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A time of September 2026 in Shanghai, in UTC."""
    return datetime(2026, 9, day, hour, minute, second, tzinfo=SHANGHAI).astimezone(UTC)


def spec(**changes: Any) -> ReportSpec:
    base: dict[str, Any] = {"name": "daily", "project": PROJECT, "every": "day", "at": "09:00",
                            "tz": "Asia/Shanghai", "notify": ["hook"],
                            "funnel": ["page_view", "add_to_cart", "purchase"]}
    return ReportSpec.model_validate({**base, **changes})


# -- when a report is due ------------------------------------------------------------------


def test_a_daily_report_covers_the_local_day_before() -> None:
    daily = spec()
    assert latest_due(daily, at(20, 9, 5)) == Period(at(19, 0), at(20, 0), at(20, 9))
    # Before 09:00 the latest report is yesterday's, of the day before.
    assert latest_due(daily, at(20, 8, 59)) == Period(at(18, 0), at(19, 0), at(19, 9))
    assert latest_due(daily, at(20, 9)) == Period(at(19, 0), at(20, 0), at(20, 9))


def test_a_weekly_report_covers_the_seven_days_before_its_weekday() -> None:
    weekly = spec(every="week", weekday="monday", at="08:30")
    # 2026-09-21 is a Monday.
    assert latest_due(weekly, at(23, 12)) == Period(at(14, 0), at(21, 0), at(21, 8, 30))
    assert latest_due(weekly, at(21, 8, 29)).due == at(14, 8, 30)


def test_a_day_with_a_clock_change_is_23_hours_long() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    daily = spec(tz="Europe/Berlin")
    # Summer time ends on 2026-10-25: that local day has 25 hours.
    period = latest_due(daily, datetime(2026, 10, 26, 10, tzinfo=berlin))
    assert period.end - period.start == timedelta(hours=25)
    period = latest_due(daily, datetime(2026, 3, 30, 10, tzinfo=berlin))
    assert period.end - period.start == timedelta(hours=23)


# -- sending, once ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop(store: Client) -> Iterator[data.Shop]:
    generated = data.generate(PROJECT, users=400, seed=11)
    data.load(store, generated)
    yield generated


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def hook(url: str) -> NotifierSpec:
    return NotifierSpec(name="hook", kind="webhook", url=url, secret=WHSEC)


def signed(got: Received) -> tuple[int, dict[str, Any]]:
    ok = verify(WHSEC, got.headers, got.body)
    return (204 if ok else 401), {}


async def test_a_daily_report_goes_out_once_at_its_time(store: Client, shop: data.Shop) -> None:
    with Receiver(signed).running() as receiver:
        clock = Clock(at(20, 8, 50))
        scheduler = ReportScheduler([spec()], [hook(receiver.url)], store, clock)
        try:
            assert await scheduler.tick() == []  # not yet
            clock.now = at(20, 9, 0, 30)
            assert await scheduler.tick() == [("daily", "hook", False)]
            clock.now = at(20, 9, 5)
            assert await scheduler.tick() == []  # once
            clock.now = at(21, 9, 1)
            assert await scheduler.tick() == [("daily", "hook", False)]  # the next day's
        finally:
            await scheduler.close()
        first, second = receiver.payloads()
    assert [r.headers["webhook-id"] for r in receiver.received()] == [
        "report-daily-20260918T1600", "report-daily-20260919T1600"]
    assert first["period"] == {"start": "2026-09-18T16:00:00.000Z",
                               "end": "2026-09-19T16:00:00.000Z",
                               "due": "2026-09-20T01:00:00.000Z"}
    assert first["late"] is False
    # Each KPI is the API's for the day, against the day before and a week before.
    day = (at(19, 0), at(20, 0))
    k = analytics.kpis(store, PROJECT, *day, data.ORDER_EVENTS)
    before = analytics.kpis(store, PROJECT, at(18, 0), at(19, 0), data.ORDER_EVENTS)
    week = analytics.kpis(store, PROJECT, at(12, 0), at(13, 0), data.ORDER_EVENTS)
    kpis = {line["name"]: line for line in first["kpis"]}
    assert (kpis["pageviews"]["value"], kpis["pageviews"]["previous"],
            kpis["pageviews"]["week_ago"]) == (k.pageviews, before.pageviews, week.pageviews)
    assert kpis["visitors"]["value"] == k.visitors_exact
    assert kpis["orders"]["value"] == k.orders
    assert kpis["conversion_rate"]["value"] == pytest.approx(k.conversion_rate)
    assert kpis["pageviews"]["change"] == pytest.approx(
        (k.pageviews - before.pageviews) / before.pageviews)
    funnel = analytics.funnel(store, PROJECT, *day, ["page_view", "add_to_cart", "purchase"],
                              timedelta(hours=1))[0]
    assert [f["persons"] for f in first["funnel"]] == [s.persons for s in funnel.steps]
    # The movers are the biggest changes in visitors against the day before.
    pages_now = {r.value: r.visitors for r in analytics.breakdown(store, PROJECT, *day, "page")}
    pages_before = {r.value: r.visitors
                    for r in analytics.breakdown(store, PROJECT, at(18, 0), at(19, 0), "page")}
    deltas = sorted((abs(pages_now.get(p, 0) - pages_before.get(p, 0)), p)
                    for p in set(pages_now) | set(pages_before))
    moved = [m for m in first["movers"] if m["dimension"] == "page"]
    assert abs(moved[0]["delta"]) == deltas[-1][0]
    assert second["period"]["start"] == "2026-09-19T16:00:00.000Z"


async def test_after_a_restart_across_its_time_a_report_is_sent_once_and_late(
        store: Client, shop: data.Shop) -> None:
    weekly = spec(name="weekly", every="week", weekday="monday", at="09:00")
    with Receiver(signed).running() as receiver:
        # Running on Monday the 14th, sent at 09:00; then down from Sunday night to Monday
        # the 21st, 11:30.
        clock = Clock(at(14, 8, 59))
        first = ReportScheduler([weekly], [hook(receiver.url)], store, clock)
        clock.now = at(14, 9, 1)
        assert await first.tick() == [("weekly", "hook", False)]
        await first.close()
        clock.now = at(21, 11, 30)
        restarted = ReportScheduler([weekly], [hook(receiver.url)], store, clock)
        try:
            assert await restarted.tick() == [("weekly", "hook", True)]
            clock.now = at(21, 11, 31)
            assert await restarted.tick() == []
        finally:
            await restarted.close()
        # A second restart does not send it again either.
        again = ReportScheduler([weekly], [hook(receiver.url)], store, clock)
        assert await again.tick() == []
        await again.close()
        sent = receiver.payloads()
    assert [(p["period"]["start"], p["late"]) for p in sent] == [
        ("2026-09-06T16:00:00.000Z", False), ("2026-09-13T16:00:00.000Z", True)]


async def test_a_new_report_starts_with_its_next_time(store: Client, shop: data.Shop) -> None:
    with Receiver(signed).running() as receiver:
        clock = Clock(at(22, 15))
        scheduler = ReportScheduler([spec(name="fresh")], [hook(receiver.url)], store, clock)
        try:
            assert await scheduler.tick() == []  # 09:00 today passed before it existed
            clock.now = at(23, 9, 0, 10)
            assert await scheduler.tick() == [("fresh", "hook", False)]
        finally:
            await scheduler.close()


async def test_a_failed_delivery_is_retried_and_recorded_once(store: Client,
                                                              shop: data.Shop) -> None:
    with Receiver().running() as receiver:
        receiver.statuses = [503]
        clock = Clock(at(24, 9, 0, 5))
        scheduler = ReportScheduler([spec(name="flaky")], [hook(receiver.url)], store, clock)
        try:
            clock.now = at(24, 9, 0, 6)
            scheduler._started = at(24, 8)  # it was running before 09:00
            assert await scheduler.tick() == []  # 503
            clock.now += timedelta(seconds=10)
            assert await scheduler.tick() == []  # backing off
            clock.now += timedelta(seconds=30)
            assert await scheduler.tick() == [("flaky", "hook", False)]
            assert await scheduler.tick() == []
        finally:
            await scheduler.close()
        assert len(receiver.received()) == 2


# -- every notifier kind -----------------------------------------------------------------


async def test_a_report_is_rendered_for_every_notifier_kind(
        store: Client, shop: data.Shop, tls: tuple[ssl.SSLContext, Path]) -> None:  # noqa: F811
    context, ca_file = tls
    mailbox = Mailbox()
    mail = smtp_server(mailbox, context, implicit_tls=False)
    mail.start()
    robots = {"dd": Receiver(dingtalk_verdict(SECRET)), "wx": Receiver(wecom_verdict),
              "fs": Receiver(feishu_verdict(FEISHU_SECRET)), "sl": Receiver()}
    started = [r.running() for r in robots.values()]
    for running in started:
        running.__enter__()
    try:
        notifiers = [
            NotifierSpec(name="dd", kind="dingtalk", secret=SECRET, locale="zh-CN",
                         url=f"{robots['dd'].url}/robot/send?access_token=tok"),
            NotifierSpec(name="wx", kind="wecom", locale="zh-CN",
                         url=f"{robots['wx'].url}/cgi-bin/webhook/send?key={WECOM_KEY}"),
            NotifierSpec(name="fs", kind="feishu", secret=FEISHU_SECRET,
                         url=f"{robots['fs'].url}/open-apis/bot/v2/hook/x"),
            NotifierSpec(name="sl", kind="slack", url=f"{robots['sl'].url}/services/x"),
            NotifierSpec.model_validate({
                "name": "mail", "kind": "email", "email": {
                    "host": "127.0.0.1", "port": mail.port, "username": "alerts@shop.example",
                    "password": "s3cret", "from": "alerts@shop.example",
                    "to": ["ops@shop.example"], "ca_file": str(ca_file)}}),
        ]
        # The robots' verdicts check their signatures against NOW of the notifier tests.
        clock = Clock(NOW)
        kinds = spec(name="kinds", notify=[n.name for n in notifiers])
        scheduler = ReportScheduler([kinds], notifiers, store, clock)
        try:
            report = scheduler.build(kinds, at(20, 9, 5))
            assert await scheduler.send_now(kinds, report) == ["dd", "wx", "fs", "sl", "mail"]
        finally:
            await scheduler.close()
    finally:
        for running in started:
            running.__exit__(None, None, None)
        mail.stop()
    dd = robots["dd"].payloads()[0]["markdown"]
    assert dd["title"] == "日报 report-shop 2026-09-19"
    pageviews = analytics.kpis(store, PROJECT, at(19, 0), at(20, 0)).pageviews
    assert f"- 浏览量: **{pageviews}**" in dd["text"]
    assert "环比" in dd["text"] and "**漏斗**" in dd["text"]
    assert robots["wx"].payloads()[0]["markdown"]["content"].startswith("### 日报 report-shop")
    card = robots["fs"].payloads()[0]["card"]
    assert card["header"]["title"]["content"] == "Daily report report-shop 2026-09-19"
    assert "Page views" in card["elements"][0]["text"]["content"]
    assert robots["sl"].payloads()[0]["text"] == "Daily report report-shop 2026-09-19"
    (_, recipients, message), = mailbox.messages
    assert recipients == ["ops@shop.example"]
    assert message["Subject"] == "Daily report report-shop 2026-09-19"
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None and "Top movers (visitors)" in text.get_content()
    assert page is not None and "<h2>Daily report report-shop 2026-09-19</h2>" in page.get_content()


def test_reports_in_the_rules_file_are_checked() -> None:
    good = parse_rules(
        "notifiers: [{name: dd, kind: dingtalk, url: 'https://oapi.dingtalk.com/robot/send'}]\n"
        "reports: [{name: daily, project: p, every: day, at: '09:00', tz: Asia/Shanghai,"
        " notify: [dd]}]\n")
    assert good.reports[0].kpis[0] == "pageviews"
    for text, message in [
        ("notifiers: [{name: pd, kind: pagerduty, url: 'https://e.example', routing_key: k}]\n"
         "reports: [{name: r, project: p, every: day, notify: [pd]}]", "is a pagerduty notifier"),
        ("reports: [{name: r, project: p, every: day, notify: [x]}]", "no notifier named 'x'"),
        ("notifiers: [{name: h, kind: webhook, url: 'https://h.example'}]\n"
         "reports: [{name: r, project: p, every: day, at: '25:00', notify: [h]}]", "at"),
        ("notifiers: [{name: h, kind: webhook, url: 'https://h.example'}]\n"
         "reports: [{name: r, project: p, every: day, tz: Mars/Base, notify: [h]}]", "tz"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_rules(text)


def test_report_send_dry_run_prints_a_report(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(
        "notifiers: [{name: dd, kind: dingtalk, locale: zh-CN,"
        " url: 'https://oapi.dingtalk.com/robot/send?access_token=x'}]\n"
        "reports: [{name: daily, project: default, every: day, tz: Asia/Shanghai,"
        " notify: [dd]}]\n")
    env = {**os.environ, "TRACKLANE_DATA_DIR": str(tmp_path / "data"),
           "TRACKLANE_ALERTS_FILE": str(rules)}
    (tmp_path / "data").mkdir()
    keys = subprocess.run([sys.executable, "-m", "tracklane.cli", "keys"], env=env, check=True,
                          capture_output=True, text=True).stdout
    (tmp_path / "data" / "projects.toml").write_text(keys)
    subprocess.run([sys.executable, "-m", "tracklane.cli", "migrate"], env=env, check=True,
                   capture_output=True, timeout=120)
    done = subprocess.run([sys.executable, "-m", "tracklane.cli", "report", "send", "daily",
                           "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("### 日报 default ")
    assert "- 浏览量: **0**" in done.stdout and "期间告警" in done.stdout
    missing = subprocess.run([sys.executable, "-m", "tracklane.cli", "report", "send", "nope",
                              "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no report 'nope'" in missing.stderr
