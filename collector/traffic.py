"""Traffic classification: where an event came from, whose agent it carries, and whether
it is the project's own internal or test traffic.

A browser request is the end user's device, so its ``User-Agent`` and address are theirs.
Any other request is some backend's HTTP library: its agent and address say nothing about
the person, and only ``context.userAgent`` and ``context.ip`` (which Segment's server
libraries fill when the backend knows them) do. Judging bots on the library's agent
flagged every order a shop's backend confirmed; judging internal addresses on the
backend's own would leave out every order of a backend inside an excluded network.
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
# context.library.name prefixes of the mobile libraries (Segment's, RudderStack's). Any
# message with a ``context.app`` object is one too: every mobile SDK sends it.
_MOBILE_LIBRARIES = ("analytics-ios", "analytics-android", "analytics-react-native",
                     "analytics-flutter", "analytics-swift", "analytics-kotlin",
                     "@segment/analytics-react-native", "rudder-sdk-ios",
                     "rudder-sdk-android", "rudder-ios-library", "rudder-sdk-flutter",
                     "rudder-sdk-react-native", "@rudderstack/rudder-sdk-react-native",
                     "RudderLabs Android SDK", "com.rudderstack.android")


def is_browser_request(route: str, headers: Headers) -> bool:
    """The pixel, a ``text/plain`` beacon, or a request a browser marked as one.

    Browsers put ``Origin`` on every POST and ``Sec-Fetch-*`` on every request to a
    secure origin; server libraries send neither, and send JSON as ``application/json``
    where ``sendBeacon`` and analytics.js send ``text/plain`` (it needs no preflight).
    """
    if route == "pixel":
        return True
    content_type = headers.get("content-type", "").lstrip().lower()
    return (content_type.startswith("text/plain") or "origin" in headers
            or "sec-fetch-mode" in headers)


def message_source(msg: InboundMessage, route: str, browser_request: bool) -> Source:
    """pixel, browser, mobile or server (see ``tracklane.contract.Source``)."""
    if route == "pixel":
        return "pixel"
    library = str((msg.context.library or {}).get("name") or "")
    # Segment's mobile libraries post text/plain, as browsers do: the name decides first.
    if library.startswith(_MOBILE_LIBRARIES):
        return "mobile"
    if browser_request:
        return "browser"
    extra = msg.context.model_extra or {}
    if isinstance(extra.get("app"), dict):
        return "mobile"
    # A browser library's message relayed by a backend (a first-party proxy).
    if library in _BROWSER_LIBRARIES:
        return "browser"
    return "server"


def end_user_agent(msg: InboundMessage, request_ua: str, browser_request: bool) -> str:
    """The agent of the person's device: the message's own, else a browser request's.

    Empty when neither is known: such an event is not judged a bot, nor given a browser,
    OS or device type.
    """
    if msg.context.userAgent:
        return msg.context.userAgent
    return request_ua if browser_request else ""


def end_user_ip(msg: InboundMessage, request_ip: str, browser_request: bool) -> str:
    """The address of the person's device: the message's own, else a browser request's."""
    if msg.context.ip:
        return msg.context.ip
    return request_ip if browser_request else ""


def is_test_message(msg: InboundMessage) -> bool:
    """``context.test`` is JSON ``true`` (not merely truthy: ``"false"`` is a string)."""
    return (msg.context.model_extra or {}).get("test") is True


def exclusion_reason(rules: Exclusions, msg: InboundMessage,
                     raw_ip: str) -> ExclusionReason | Literal[""]:
    """Why the project counts this message as its own traffic; empty when it does not.

    ``raw_ip`` is the end user's address as received (:func:`end_user_ip`), before it is
    anonymized: a range narrower than the /24 the stored address keeps still matches.
    """
    if rules.test_events and is_test_message(msg):
        return "test"
    if rules.internal_ip(raw_ip):
        return "internal_ip"
    if rules.internal_id(msg.userId, msg.anonymousId):
        return "internal_user"
    return ""
