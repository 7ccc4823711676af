"""Who sent a request: the connection's peer, or what a trusted proxy says it forwarded.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are anyone's to write. They are read only
when the connection comes from one of the configured proxies (``TRACKLANE_TRUSTED_PROXIES``),
and then ``X-Forwarded-For`` is walked from the right, past the trusted hops: the first
address no trusted proxy vouches for is the client. The leftmost entry is what the client
itself claimed, so it is never taken on trust when a hop after it is known.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxiesError(ValueError):
    """A trusted proxy entry that is not an address or a CIDR range."""


def parse_trusted_proxies(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses and CIDR ranges, e.g. ``["10.0.0.0/8", "127.0.0.1"]``."""
    networks: list[Network] = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise TrustedProxiesError(
                f"trusted proxy {entry!r} is not an IP address or CIDR range") from None
    return tuple(networks)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in proxies)


def _peer(request: Request) -> str:
    return request.client.host if request.client else ""


def client_ip(request: Request, proxies: tuple[Network, ...]) -> str:
    """The client's address (see the module docstring)."""
    peer = _peer(request)
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    # Every hop is a trusted proxy: the leftmost is as far back as anyone vouches for.
    return hops[0] if hops else peer


def client_scheme(request: Request, proxies: tuple[Network, ...]) -> str:
    """The scheme the client used: ``X-Forwarded-Proto`` when a trusted proxy sent it."""
    scheme = request.url.scheme
    if proxies and _trusted(_peer(request), proxies):
        forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        if forwarded in ("http", "https"):
            return forwarded
    return scheme
