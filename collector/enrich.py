"""Request enrichment: user agent parsing, bot detection and IP anonymization."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from ua_parser import parse as parse_ua

from tracklane.contract import UserAgentInfo

# Crawlers and automation that ua-parser's device families do not all flag.
_BOT_PATTERN = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|headlesschrome|phantomjs|lighthouse|pingdom|"
    r"uptime|monitor|preview|facebookexternalhit|python-requests|go-http-client|wget",
    re.IGNORECASE,
)
_MOBILE_OS = {"Android", "iOS", "iPadOS", "Windows Phone", "BlackBerry OS", "KaiOS"}


@lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str) -> UserAgentInfo:
    """Browser, OS, device type and bot flag; cached because a site sees few distinct UAs."""
    if not user_agent:
        return UserAgentInfo()
    result = parse_ua(user_agent[:1024])
    ua = result.user_agent
    os_ = result.os
    device = result.device
    is_bot = bool(_BOT_PATTERN.search(user_agent)) or (
        device is not None and device.family == "Spider"
    )
    return UserAgentInfo(
        browser=ua.family if ua else "",
        browser_version=".".join(p for p in (ua.major, ua.minor) if p) if ua else "",
        os=os_.family if os_ else "",
        os_version=".".join(p for p in (os_.major, os_.minor) if p) if os_ else "",
        device_type=_device_type(user_agent, os_.family if os_ else "", is_bot),
        is_bot=is_bot,
    )


def _device_type(user_agent: str, os_family: str, is_bot: bool) -> str:
    if is_bot:
        return "bot"
    lowered = user_agent.lower()
    if "ipad" in lowered or "tablet" in lowered or (
        os_family == "Android" and "mobile" not in lowered
    ):
        return "tablet"
    if os_family in _MOBILE_OS or "mobile" in lowered:
        return "mobile"
    if os_family:
        return "desktop"
    return ""


def anonymize_ip(raw: str) -> str:
    """Zero the host part: the last octet of IPv4, everything after the /48 of IPv6.

    The raw address is never stored; this keeps coarse network location only.
    """
    return _anonymize(raw.strip())


_V4_HOST = 0xFF
_V6_HOST = (1 << 80) - 1


# Every event of a batch, and every hit of a busy client, repeats one address, and parsing
# it with ``ipaddress`` was a fifth of the collector's time per batch event.
@lru_cache(maxsize=65536)
def _anonymize(raw: str) -> str:
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return str(ipaddress.IPv6Address(int(ip) & ~_V6_HOST))
        ip = ip.ipv4_mapped
    return str(ipaddress.IPv4Address(int(ip) & ~_V4_HOST))
