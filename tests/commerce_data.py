"""Small hand-made shops for the commerce tests: orders in several currencies.

:class:`PricedHit` is a :class:`tests.analytics_data.Hit` that sends its revenue as a
JSON number with a currency; :func:`priced` makes one at a second offset from
:data:`BASE`. Load them with :func:`tests.analytics_data.load`, which resolves persons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.analytics_data import BACKENDS, CRAWLER, DESKTOP, Channel, Hit

BASE = datetime(2026, 6, 1, 10, tzinfo=UTC)
DAY = (BASE, BASE + timedelta(days=1))


@dataclass(frozen=True)
class PricedHit(Hit):
    """A hit whose revenue is sent as a JSON number, with a currency."""

    currency: str = ""

    def message(self) -> dict[str, Any]:
        msg = super().message()
        if self.type == "track" and self.revenue:
            msg["properties"] = {self.revenue_key: float(self.revenue)}
            if self.currency:
                msg["properties"]["currency"] = self.currency
        return msg


def priced(project: str, n: int, seconds: int, event: str, anon: str = "", user: str = "",
           revenue: str = "0", currency: str = "", key: str = "revenue",
           bot: bool = False, at: datetime = BASE) -> PricedHit:
    """One event ``seconds`` after ``at``; without an anonymous id it is a backend's (a
    server library's agent, only the user id)."""
    kind = {"page_view": "page", "identify": "identify"}.get(event, "track")
    backend = not anon
    return PricedHit(f"{project}-{n}", at + timedelta(seconds=seconds), kind, event, anon,
                     user, "" if backend else f"s-{anon}", "" if backend else "/", Channel(),
                     CRAWLER if bot else BACKENDS[0] if backend else DESKTOP,
                     Decimal(revenue), key, currency=currency)


def currency_of(hit: Hit) -> str:
    """What the contract stores: the sent currency, upper-cased, only with revenue."""
    return getattr(hit, "currency", "").upper() if hit.revenue else ""
