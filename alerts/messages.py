"""A notification as words, in English or Chinese: its title and its labelled facts.

The chat robots (DingTalk, WeCom, Feishu) and email lay these out each in their own
format; the words are the same everywhere, so the on-call engineer reads one message
whichever channel it arrives by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tracklane.alerts.codec import iso
from tracklane.alerts.model import Notification, NotificationKind
from tracklane.alerts.rules import Locale

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "firing": "FIRING", "resolved": "RESOLVED", "project": "Project", "rule": "Rule",
        "severity": "Severity", "observed": "Observed", "expected": "Expected",
        "band": "Band", "p_value": "p-value", "window": "Window",
        "complete": "Data complete until", "baseline": "Baseline", "since": "Since",
        "ended": "Resolved at", "flapping": "Flapping",
        "flapping_text": "yes: resolves only after a calm period",
        "runbook": "Runbook", "dashboard": "Dashboard", "repeat": "Reminder",
        "repeat_text": "still firing",
    },
    "zh-CN": {
        "firing": "告警", "resolved": "已恢复", "project": "项目", "rule": "规则",
        "severity": "级别", "observed": "观测值", "expected": "预期值", "band": "正常区间",
        "p_value": "p 值", "window": "时间窗口", "complete": "数据完整至",
        "baseline": "基线", "since": "开始时间", "ended": "恢复时间", "flapping": "抖动",
        "flapping_text": "是, 平稳一段时间后才会恢复", "runbook": "处理手册",
        "dashboard": "仪表盘", "repeat": "提醒", "repeat_text": "仍在告警",
    },
}
_SEVERITY = {
    "zh-CN": {"critical": "严重", "error": "错误", "warning": "警告", "info": "提示"},
}


@dataclass(frozen=True, slots=True)
class Message:
    firing: bool
    title: str  # "[FIRING] critical checkout (demo)" / "[告警] 严重 checkout (demo)"
    summary: str
    facts: list[tuple[str, str]]  # label, value
    links: list[tuple[str, str]]  # label, URL


def words(locale: Locale) -> dict[str, str]:
    return _WORDS[locale]


def message(n: Notification, locale: Locale) -> Message:
    w = _WORDS[locale]
    f = n.finding
    firing = n.status is not NotificationKind.RESOLVED
    severity = _SEVERITY.get(locale, {}).get(n.severity, n.severity)
    state = w["firing"] if firing else w["resolved"]
    title = f"[{state}] {severity} {n.rule} ({n.project})"
    facts = [(w["project"], n.project), (w["rule"], n.rule), (w["severity"], severity),
             (w["observed"], number(f.observed)), (w["expected"], number(f.expected))]
    if f.band_low is not None or f.band_high is not None:
        facts.append((w["band"], f"{number(f.band_low)} .. {number(f.band_high)}"))
    if f.p_value is not None:
        facts.append((w["p_value"], number(f.p_value)))
    facts.append((w["window"], f"{iso(f.window.start)} .. {iso(f.window.end)}"))
    facts.append((w["complete"], iso(n.complete_until) or ""))
    if f.baseline:
        facts.append((w["baseline"], f.baseline))
    facts.append((w["since"], iso(n.starts_at) or ""))
    if not firing and n.ends_at is not None:
        facts.append((w["ended"], iso(n.ends_at) or ""))
    if n.flapping:
        facts.append((w["flapping"], w["flapping_text"]))
    if n.repeat and firing:
        facts.append((w["repeat"], w["repeat_text"]))
    links = [(w[name], url) for name, url in
             (("runbook", n.runbook_url), ("dashboard", n.dashboard_url)) if url]
    return Message(firing, title, n.summary, facts, links)


def number(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.4g}"
