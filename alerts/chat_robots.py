"""The group-chat robots Chinese teams are paged in: DingTalk, WeCom and Feishu (Lark).

Each takes a JSON POST to its webhook URL and answers HTTP 200 whether it accepted the
message or not: the verdict is an error code in the body (``errcode`` for DingTalk and
WeCom, ``code`` for Feishu), which :func:`check_answer` turns into a ``NotifyError``.

Signing, as each vendor documents it:

- DingTalk ("加签"): ``timestamp`` in milliseconds; the string ``"{timestamp}\\n{secret}"``
  is signed with HMAC-SHA256 keyed by the secret, base64-encoded, and both go in the
  URL's query as ``timestamp`` and ``sign`` (URL-encoded). DingTalk refuses a timestamp
  more than an hour off.
- Feishu ("签名校验"): ``timestamp`` in seconds; the HMAC-SHA256 of an empty message
  keyed by ``"{timestamp}\\n{secret}"``, base64-encoded; both go in the JSON body.
- WeCom signs nothing: the robot's ``key`` in its URL is the credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from tracklane.alerts.messages import Message, message
from tracklane.alerts.model import Notification
from tracklane.alerts.rules import NotifierSpec

# The error codes that mean "too many messages, slow down": retried. Any other non-zero
# code (a bad signature, a keyword not in the message, a removed robot) never succeeds.
RATE_LIMITED = {"dingtalk": {130101}, "wecom": {45009}, "feishu": {9499, 11232}}
_MARKDOWN_MAX = 4096  # WeCom's markdown content limit, in bytes


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _markdown(m: Message, heading: str) -> str:
    lines = [f"{heading} {m.title}", "", m.summary, ""]
    lines += [f"- **{label}**: {value}" for label, value in m.facts]
    if m.links:
        lines += ["", " | ".join(f"[{label}]({url})" for label, url in m.links)]
    return "\n".join(lines)


def dingtalk_request(spec: NotifierSpec, n: Notification, now: datetime,
                     ) -> tuple[str, dict[str, Any]]:
    """The URL (signed when the robot has a secret) and the markdown message."""
    m = message(n, spec.locale)
    text = _markdown(m, "####")
    at: dict[str, Any] = {"isAtAll": False}
    # Only a firing message calls people: a resolve is news, not a page.
    if m.firing and (spec.at_mobiles or spec.at_all):
        at = {"atMobiles": list(spec.at_mobiles), "isAtAll": spec.at_all}
        # DingTalk notifies a mobile only when the text names it.
        text += "\n\n" + " ".join(f"@{mobile}" for mobile in spec.at_mobiles)
    return dingtalk_url(spec, now), {"msgtype": "markdown",
                                     "markdown": {"title": m.title, "text": text}, "at": at}


def dingtalk_url(spec: NotifierSpec, now: datetime) -> str:
    """The robot's URL, with ``timestamp`` and ``sign`` when it has a secret."""
    url = spec.url or ""
    if not spec.secret:
        return url
    stamp = int(now.timestamp() * 1000)
    sep = "&" if "?" in url else "?"
    return url + sep + urlencode({"timestamp": stamp, "sign": dingtalk_sign(spec.secret, stamp)})


def feishu_signed(spec: NotifierSpec, body: dict[str, Any], now: datetime) -> dict[str, Any]:
    """``body`` with ``timestamp`` and ``sign`` first when the bot has a secret."""
    if not spec.secret:
        return body
    stamp = int(now.timestamp())
    return {"timestamp": str(stamp), "sign": feishu_sign(spec.secret, stamp), **body}


def wecom_body(spec: NotifierSpec, n: Notification) -> dict[str, Any]:
    """A markdown message; the title coloured as WeCom's markdown allows (warning: orange,
    info: green)."""
    m = message(n, spec.locale)
    colour = "warning" if m.firing else "info"
    lines = [f'### <font color="{colour}">{m.title}</font>', m.summary, ""]
    lines += [f'> {label}: <font color="comment">{value}</font>' for label, value in m.facts]
    if m.links:
        lines += ["", " | ".join(f"[{label}]({url})" for label, url in m.links)]
    content = "\n".join(lines)
    while len(content.encode()) > _MARKDOWN_MAX:
        content = content[: len(content) - 64]
    return {"msgtype": "markdown", "markdown": {"content": content}}


def feishu_body(spec: NotifierSpec, n: Notification, now: datetime) -> dict[str, Any]:
    """An interactive card: a red or green header, the facts, and a button per link."""
    m = message(n, spec.locale)
    facts = "\n".join(f"**{label}**: {value}" for label, value in m.facts)
    elements: list[dict[str, Any]] = [
        {"tag": "div", "text": {"tag": "lark_md", "content": m.summary}},
        {"tag": "hr"},
        {"tag": "div", "text": {"tag": "lark_md", "content": facts}},
    ]
    if m.links:
        elements.append({"tag": "action", "actions": [
            {"tag": "button", "text": {"tag": "plain_text", "content": label}, "url": url,
             "type": "default"} for label, url in m.links]})
    return feishu_signed(spec, feishu_card(m.title, "red" if m.firing else "green", elements),
                         now)


def feishu_card(title: str, colour: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {"title": {"tag": "plain_text", "content": title}, "template": colour},
            "elements": elements,
        },
    }


def answer_error(kind: str, answer: Any) -> tuple[str, bool] | None:
    """The robot's refusal in a 200 answer, and whether retrying may help; None when it
    accepted the message. An answer that is not the robot's JSON is a refusal too."""
    if not isinstance(answer, dict):
        return "the answer is not the robot's JSON", True
    code = answer.get("errcode") if kind in ("dingtalk", "wecom") else answer.get(
        "code", answer.get("StatusCode"))
    if code == 0:
        return None
    text = answer.get("errmsg") or answer.get("msg") or answer.get("StatusMessage") or ""
    return f"error {code}: {text}", code in RATE_LIMITED[kind]
