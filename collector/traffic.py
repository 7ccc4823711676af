"""Traffic classification: where an event came from, whose agent it carries, and whether
it is the project's own internal or test traffic.

A browser request is the end user's device, so its ``User-Agent`` is theirs. Any other
request is some backend's HTTP library: its agent says nothing about the person, and only
``context.userAgent`` (which Segment's server libraries fill when the backend knows it)
does. Judging bots on the library's agent flagged every order a shop's backend confirmed.
"""

from __future__ import annotations

from typing import Literal

from starlette.datastructures import Headers

from tracklane.contract import ExclusionReason, InboundMessage, Source
from tracklane.projects import Exclusions

# context.library.name of the browser libraries we know: ours, Segment's, RudderStack's.
_BROWSER_LIBRARIES = frozenset({
    "tracklane-js", "analytics.js", "analytics-next", "RudderLabs JavaScript SDK",
    "@rudderstack/analytics-js",
})
_MOBILE_LIBRARIES = ("analytics-ios", "analytics-android", "analytics-react-native",
                     "analytics-flutter", "analytics-swift", "analytics-kotlin",
                     "rudder-sdk-ios", "rudder-sdk-android", "RudderLabs Android SDK",
                     "rudder-ios-library", "@segment/analytics-react-native")


def is_browser_request(route: str, headers: Headers) -> bool:
    """The pixel, a ``text/plain`` beacon, or a request a browser marked as one.

    Browsers put ``Origin`` on every POST and ``Sec-Fetch-*`` on every request; server
    libraries send neither.
    """
    if route == "pixel":
        return True
    content_type = headers.get("content-type", "")
    return (content_type.startswith("text/plain") or "origin" in headers
            or "sec-fetch-mode" in headers)


def message_source(msg: InboundMessage, route: str, browser_request: bool) -> Source:
    if route == "pixel":
        return "pixel"
    if browser_request:
        return "browser"
    library = str((msg.context.library or {}).get("name") or "")
    extra = msg.context.model_extra or {}
    if library.startswith(_MOBILE_LIBRARIES) or isinstance(extra.get("app"), dict):
        return "mobile"
    if library in _BROWSER_LIBRARIES:
        return "browser"
    return "server"


def end_user_agent(msg: InboundMessage, request_ua: str, browser_request: bool) -> str:
    """The agent of the person's device: the message's own, else a browser request's."""
    if msg.context.userAgent:
        return msg.context.userAgent
    return request_ua if browser_request else ""


def exclusion_reason(rules: Exclusions, msg: InboundMessage,
                     raw_ip: str) -> ExclusionReason | Literal[""]:
    """Why the project counts this message as its own traffic; empty when it does not."""
    if rules.test_events and (msg.context.model_extra or {}).get("test") is True:
        return "test"
    if rules.internal_ip(raw_ip):
        return "internal_ip"
    if rules.internal_id(msg.userId, msg.anonymousId):
        return "internal_user"
    return ""
