"""A report as each notifier kind shows it: markdown for DingTalk, WeCom and Slack, a card
for Feishu, a text and an HTML part for email, the report's JSON for a webhook.

The words are English or Chinese by the notifier's ``locale``, as alerts' are.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

from tracklane.alerts import chat_robots
from tracklane.alerts.mail import compose
from tracklane.alerts.messages import number
from tracklane.alerts.notifiers import OutgoingRequest, json_body, signed_webhook_headers
from tracklane.alerts.reports import KpiLine, Report
from tracklane.alerts.rules import Locale, NotifierSpec

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "day": "Daily report", "week": "Weekly report", "late": "late",
        "kpis": "KPIs", "previous": "vs previous", "week_ago": "vs a week ago",
        "movers": "Top movers (visitors)", "funnel": "Funnel", "alerts": "Alerts fired",
        "none": "none", "page": "page", "referrer_domain": "source", "country": "country",
        "direct": "(direct)", "unknown": "(unknown)", "of_first": "of step 1",
        "pageviews": "Page views", "visitors": "Visitors", "sessions": "Sessions",
        "bounce_rate": "Bounce rate", "avg_duration_s": "Visit duration", "orders": "Orders",
        "revenue": "Revenue", "aov": "Average order value",
        "conversion_rate": "Conversion rate",
    },
    "zh-CN": {
        "day": "日报", "week": "周报", "late": "补发", "kpis": "核心指标",
        "previous": "环比", "week_ago": "周同比", "movers": "变化最大 (访客)",
        "funnel": "漏斗", "alerts": "期间告警", "none": "无", "page": "页面",
        "referrer_domain": "来源", "country": "国家/地区", "direct": "(直接访问)",
        "unknown": "(未知)", "of_first": "占第一步",
        "pageviews": "浏览量", "visitors": "访客", "sessions": "会话",
        "bounce_rate": "跳出率", "avg_duration_s": "访问时长", "orders": "订单",
        "revenue": "收入", "aov": "客单价", "conversion_rate": "转化率",
    },
}
_RATES = frozenset({"bounce_rate", "conversion_rate"})


def title(report: Report, locale: Locale) -> str:
    w = _WORDS[locale]
    zone = ZoneInfo(report.tz)
    first = report.period.start.astimezone(zone).date()
    last = (report.period.end.astimezone(zone) - timedelta(seconds=1)).date()
    span = first.isoformat() if first == last else f"{first.isoformat()} .. {last.isoformat()}"
    late = f" [{w['late']}]" if report.late else ""
    return f"{w[report.every]} {report.project} {span}{late}"


def _value(line: KpiLine, value: float | None, currency: str | None) -> str:
    if value is None:
        return "n/a"
    if line.name in _RATES:
        return f"{value * 100:.1f}%"
    if line.name == "avg_duration_s":
        return f"{value:.0f}s"
    if line.name in ("revenue", "aov"):
        return f"{value:,.2f}" + (f" {currency}" if currency else "")
    return number(value)


def _change(change: float | None) -> str:
    return "n/a" if change is None else f"{change * 100:+.1f}%"


def lines(report: Report, locale: Locale, bold: str = "**") -> list[str]:
    """The report's body as markdown lines (``bold``: the markup for bold)."""
    w = _WORDS[locale]
    out = [f"{bold}{w['kpis']}{bold}"]
    for k in report.kpis:
        out.append(f"- {w[k.name]}: {bold}{_value(k, k.value, report.currency)}{bold} "
                   f"({w['previous']} {_change(k.change(k.previous))}, "
                   f"{w['week_ago']} {_change(k.change(k.week_ago))})")
    if report.movers:
        out += ["", f"{bold}{w['movers']}{bold}"]
        for m in report.movers:
            shown = m.value or (w["direct"] if m.dimension == "referrer_domain" else w["unknown"])
            out.append(f"- {w[m.dimension]} {shown}: {m.visitors} ({m.delta:+d})")
    if report.funnel:
        out += ["", f"{bold}{w['funnel']}{bold}"]
        out += [f"{n}. {f.event}: {f.persons} ({f.from_first * 100:.1f}% {w['of_first']})"
                for n, f in enumerate(report.funnel, 1)]
    out += ["", f"{bold}{w['alerts']}{bold}"]
    if not report.alerts:
        out.append(f"- {w['none']}")
    out += [f"- {a['at']} {a['rule']} ({a['severity']}): {a['summary']}" for a in report.alerts]
    return out


def markdown(report: Report, locale: Locale) -> str:
    return "\n".join([f"### {title(report, locale)}", "", *lines(report, locale)])


def report_request(spec: NotifierSpec, report: Report, now: datetime) -> OutgoingRequest:
    """The HTTP request that delivers ``report`` through a chat or webhook notifier."""
    headers = {"content-type": "application/json", "user-agent": "tracklane-notifier"}
    headers.update({k.lower(): v for k, v in spec.headers.items()})
    url = spec.url or ""
    heading = title(report, spec.locale)
    body: dict[str, Any]
    if spec.kind == "webhook":
        raw = json_body(report.as_json())
        return OutgoingRequest(url, raw, {**headers, **signed_webhook_headers(
            spec, report.id, now, raw)})
    if spec.kind == "slack":
        text = "\n".join(lines(report, spec.locale, bold="*"))
        body = {"text": heading, "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": heading[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}]}
    elif spec.kind == "dingtalk":
        url = chat_robots.dingtalk_url(spec, now)
        body = {"msgtype": "markdown", "markdown": {"title": heading,
                                                    "text": markdown(report, spec.locale)}}
    elif spec.kind == "wecom":
        body = {"msgtype": "markdown", "markdown": {"content": markdown(report, spec.locale)}}
    elif spec.kind == "feishu":
        content = "\n".join(lines(report, spec.locale))
        body = chat_robots.feishu_signed(spec, chat_robots.feishu_card(
            heading, "orange" if report.late else "blue",
            [{"tag": "div", "text": {"tag": "lark_md", "content": content}}]), now)
    else:
        raise ValueError(f"{spec.name}: a {spec.kind} notifier takes no reports")
    return OutgoingRequest(url, json_body(body), headers)


def report_email(spec: NotifierSpec, report: Report) -> EmailMessage:
    assert spec.email is not None
    heading = title(report, spec.locale)
    body = lines(report, spec.locale, bold="")
    page = "".join(f"<p>{html.escape(line)}</p>" if line else "" for line in body)
    return compose(spec.email, heading, "\n".join([heading, "", *body]) + "\n",
                   f"<html><body><h2>{html.escape(heading)}</h2>{page}</body></html>",
                   report.id, report.period.due)
