"""A seeded synthetic shop with known answers, for the analytics queries.

Users arrive over five weeks through planted channels, browse in sessions, walk a funnel
(page_view -> add_to_cart -> purchase) with planted drop-off, come back on planted days
and place orders. Most browse with the SDK (a session id on every event); some are
server-side (no session id: the queries sessionize them by 30 minutes of inactivity). A
crawler adds bot traffic that every metric must leave out.

Every hit carries the facts the pipeline derives (referrer domain, device, browser, OS,
bot flag) as plain labels, so the tests compute expected answers from these objects in
plain Python, never from SQL.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from collector.enrich import parse_user_agent
from store.queries import insert_events
from tracklane.contract import (
    RequestFacts,
    TimeLimits,
    build_envelope,
    envelope_to_row,
    parse_message,
)

START = datetime(2026, 9, 1, tzinfo=UTC)
DAYS = 35
SESSION_GAP = timedelta(minutes=30)


@dataclass(frozen=True)
class Agent:
    ua: str
    device: str
    browser: str
    os: str
    bot: bool = False


DESKTOP = Agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                "Gecko) Chrome/120.0.0.0 Safari/537.36", "desktop", "Chrome", "Windows")
PHONE = Agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
              "mobile", "Mobile Safari", "iOS")
CRAWLER = Agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "bot", "Googlebot", "", bot=True)


@dataclass(frozen=True)
class Channel:
    """How a visit arrives: UTM tags on the landing URL, or a referrer, or neither."""

    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    referrer: str = ""

    @property
    def referrer_domain(self) -> str:
        host = self.referrer.split("/")[2] if self.referrer else ""
        return host.removeprefix("www.")

    @property
    def name(self) -> str:
        """UTM source/medium, else the referrer domain, else direct."""
        if self.utm_source:
            return f"{self.utm_source}/{self.utm_medium}"
        return self.referrer_domain or "direct"


CHANNELS = (
    Channel("google", "cpc", "autumn", "https://www.google.com/"),
    Channel("newsletter", "email", "weekly"),
    Channel(referrer="https://news.example/story/1"),
    Channel(),
)
PATHS = ("/", "/pricing", "/docs", "/blog/launch", "/product/kettle")


@dataclass(frozen=True)
class Hit:
    """One event as sent, with the facts the pipeline derives from it."""

    message_id: str
    ts: datetime
    type: str  # page | track | identify
    event: str  # page_view for pages
    anonymous_id: str
    user_id: str
    session_id: str  # "" for server-side events
    path: str
    channel: Channel  # the touch on this hit's URL/referrer (empty past the landing page)
    agent: Agent
    revenue: Decimal = Decimal(0)

    @property
    def distinct_id(self) -> str:
        return self.user_id or self.anonymous_id

    def message(self) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in (
            ("utm_source", self.channel.utm_source), ("utm_medium", self.channel.utm_medium),
            ("utm_campaign", self.channel.utm_campaign)) if v)
        url = f"https://shop.example{self.path}" + (f"?{query}" if query else "")
        context: dict[str, Any] = {
            "page": {"url": url, "path": self.path, "referrer": self.channel.referrer},
            "userAgent": self.agent.ua,
        }
        if self.session_id:
            context["sessionId"] = self.session_id
        msg: dict[str, Any] = {
            "type": self.type, "messageId": self.message_id, "anonymousId": self.anonymous_id,
            "timestamp": self.ts.isoformat(), "context": context,
        }
        if self.user_id:
            msg["userId"] = self.user_id
        if self.type == "track":
            msg["event"] = self.event
            msg["properties"] = {"revenue": str(self.revenue)} if self.revenue else {}
        return msg


@dataclass
class Shop:
    """The generated hits and the plan behind them."""

    project_id: str
    hits: list[Hit] = field(default_factory=list)

    @property
    def human(self) -> list[Hit]:
        return [h for h in self.hits if not h.agent.bot]


class _Builder:
    def __init__(self, project_id: str, rng: random.Random) -> None:
        self.shop = Shop(project_id)
        self.rng = rng
        self.seq = 0

    def hit(self, **fields: Any) -> None:
        self.seq += 1
        self.shop.hits.append(Hit(message_id=f"{self.shop.project_id}-{self.seq}", **fields))

    def visit(self, user: int, start: datetime, channel: Channel, agent: Agent, sdk: bool,
              user_id: str, visit_no: int) -> None:
        """One session: pages 30 s to 5 min apart, maybe a cart and an order."""
        rng = self.rng
        anon = f"a-{user}"
        session = f"s-{user}-{visit_no}" if sdk else ""
        ts = start
        pages = rng.choice((1, 1, 2, 3, 4))
        for n in range(pages):
            self.hit(ts=ts, type="page", event="page_view", anonymous_id=anon, user_id=user_id,
                     session_id=session, path=rng.choice(PATHS) if n else PATHS[visit_no % 5],
                     channel=channel if n == 0 else Channel(), agent=agent)
            ts += timedelta(seconds=rng.randint(30, 300))
        if pages > 1 and rng.random() < 0.45:
            self.hit(ts=ts, type="track", event="add_to_cart", anonymous_id=anon,
                     user_id=user_id, session_id=session, path="/product/kettle",
                     channel=Channel(), agent=agent)
            ts += timedelta(seconds=rng.randint(20, 120))
            if rng.random() < 0.5:
                self.hit(ts=ts, type="track", event="purchase", anonymous_id=anon,
                         user_id=user_id, session_id=session, path="/checkout",
                         channel=Channel(), agent=agent,
                         revenue=Decimal(rng.choice((19, 49, 99))) + Decimal("0.90"))


def generate(project_id: str, users: int = 2000, seed: int = 7) -> Shop:
    """A deterministic shop: `users` people over DAYS days from START."""
    rng = random.Random(seed)
    b = _Builder(project_id, rng)
    for user in range(users):
        first_day = rng.randrange(DAYS - 7)
        agent = PHONE if user % 3 == 0 else DESKTOP
        sdk = user % 5 != 0
        # Visit days: the first, then planted returns (D1, D7, sometimes D30).
        days = [first_day]
        for offset, p in ((1, 0.4), (3, 0.2), (7, 0.3), (30, 0.5)):
            if first_day + offset < DAYS and rng.random() < p:
                days.append(first_day + offset)
        user_id = ""
        for visit_no, day in enumerate(days):
            start = START + timedelta(days=day, hours=rng.randint(7, 21),
                                      minutes=rng.randrange(60), seconds=rng.randrange(60))
            channel = CHANNELS[(user + visit_no * rng.randrange(2)) % len(CHANNELS)]
            if visit_no and rng.random() < 0.3:
                user_id = f"u-{user}"  # logged in on a later visit
            b.visit(user, start, channel, agent, sdk, user_id, visit_no)
    for n in range(300):  # a crawler: page views that no metric may count
        b.hit(ts=START + timedelta(hours=n * 2, seconds=17), type="page", event="page_view",
              anonymous_id=f"bot-{n % 7}", user_id="", session_id=f"bot-s-{n}",
              path=PATHS[n % 5], channel=Channel(), agent=CRAWLER)
    b.shop.hits.sort(key=lambda h: h.ts)
    return b.shop


def rows(shop: Shop) -> Iterator[list[Any]]:
    """The hits as stored rows, through the real contract and enrichment."""
    for offset, hit in enumerate(shop.hits):
        msg = parse_message(hit.message())
        facts = RequestFacts(project_id=shop.project_id, received_at=hit.ts + timedelta(seconds=1),
                             anonymized_ip="192.0.2.0", user_agent=parse_user_agent(hit.agent.ua))
        env = build_envelope(msg, facts, TimeLimits(max_past=timedelta(days=3650)))
        yield envelope_to_row(env, 0, offset, shop.project_id)


def load(client: Client, shop: Shop, chunk: int = 20_000) -> None:
    """Insert the shop's rows in chunks (the views fill the rollups and sessions)."""
    batch: list[list[Any]] = []
    for n, row in enumerate(rows(shop)):
        batch.append(row)
        if len(batch) == chunk:
            insert_events(client, batch, f"{shop.project_id}-{n}")
            batch = []
    if batch:
        insert_events(client, batch, f"{shop.project_id}-end")


def sessions(hits: Sequence[Hit]) -> dict[str, list[Hit]]:
    """Independent sessionization: the SDK id, else 30 minutes of inactivity per anonymous id."""
    out: dict[str, list[Hit]] = {}
    last: dict[str, tuple[datetime, str]] = {}
    for hit in sorted(hits, key=lambda h: h.ts):
        if hit.session_id:
            key = hit.session_id
        else:
            prev = last.get(hit.anonymous_id)
            fresh = prev is None or hit.ts - prev[0] > SESSION_GAP
            key = f"{hit.anonymous_id}@{hit.ts.isoformat()}" if fresh or prev is None else prev[1]
            last[hit.anonymous_id] = (hit.ts, key)
        out.setdefault(key, []).append(hit)
    return out
