"""A seeded synthetic shop with known answers, for the analytics queries.

Users arrive over five weeks through planted channels, browse in sessions, walk a funnel
(page_view -> add_to_cart -> purchase) with planted drop-off, come back on planted days
and place orders. Most browse with the SDK (a session id on every event); some send
without one, like the pixel (the queries sessionize them by 30 minutes of inactivity).

The traffic is shaped the way real shops send it:

- half the buyers who are not yet logged in log in at checkout (an ``identify`` with both
  ids, mid-session);
- most logged-in orders are confirmed by the shop's backend instead of the browser: a
  server library's agent, no ``context.userAgent``, only the user id, and either
  ``purchase`` with ``total`` or Segment's ``Order Completed`` with ``revenue``;
- some users come back on a second device and log in there;
- one browser is shared by two users (no reset between their logins), and another pair
  shares one with a reset in between;
- an internal tester (the project's internal address range and user id) and test
  messages (``context.test``) are stored but never counted, like the crawler's bot traffic.

Every hit carries the facts the pipeline derives (referrer domain, device, browser, OS,
bot flag, exclusion) as plain labels, and :func:`resolve_persons` merges ids into persons
by the documented rules in plain Python, so the tests compute expected answers from these
objects, never from SQL.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from tracklane.collector.config import GeoConfig
from tracklane.collector.enrich import anonymize_ip, parse_user_agent
from tracklane.collector.geoip import GeoIP
from tracklane.collector.traffic import (
    end_user_agent,
    end_user_ip,
    exclusion_reason,
    message_source,
)
from tracklane.contract import (
    RequestFacts,
    TimeLimits,
    build_envelope,
    envelope_to_row,
    parse_message,
)
from tracklane.projects import DEFAULT_ORDER_EVENTS, Exclusions
from tracklane.store.queries import insert_events

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
    server: bool = False  # a backend's HTTP library, not the person's device


DESKTOP = Agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                "Gecko) Chrome/120.0.0.0 Safari/537.36", "desktop", "Chrome", "Windows")
PHONE = Agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
              "mobile", "Mobile Safari", "iOS")
CRAWLER = Agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "bot", "Googlebot", "", bot=True)
BACKENDS = (Agent("python-requests/2.32.3", "", "", "", server=True),
            Agent("analytics-node/2.1.0", "", "", "", server=True),
            Agent("Go-http-client/1.1", "", "", "", server=True))

ORDER_EVENTS = DEFAULT_ORDER_EVENTS
# The loading project's exclusions, and the same rules written out for the expectations.
EXCLUSIONS = Exclusions.model_validate(
    {"ips": ["198.51.100.0/24"], "user_ids": ["qa@shop.example"]})
OFFICE_IP = "198.51.100.23"
SHOPPER_IP = "192.0.2.10"
# Shoppers' addresses and the country the registries' data gives each: a documentation
# address has none.
COUNTRIES = {"81.2.69.160": "GB", "8.8.8.8": "US", "1.0.16.1": "JP",
             "2a00:1450:4001::1": "IE", SHOPPER_IP: ""}
SHOPPER_IPS = tuple(COUNTRIES)
GEO = GeoIP(GeoConfig())


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
    revenue_key: str = "revenue"  # Segment's spec also allows "total"
    ip: str = SHOPPER_IP
    test: bool = False  # sent with context.test = true
    previous_id: str = ""  # alias only
    person: str = ""  # set by resolve_persons

    @property
    def distinct_id(self) -> str:
        """The ids as the event carried them (what the minute rollups count)."""
        return self.user_id or self.anonymous_id

    @property
    def country(self) -> str:
        return COUNTRIES.get(self.ip, "")

    @property
    def excluded(self) -> bool:
        # A backend's own address is no person's: only a browser's is checked.
        internal_ip = not self.agent.server and self.ip.startswith("198.51.100.")
        return self.test or internal_ip or self.user_id == "qa@shop.example"

    @property
    def counted(self) -> bool:
        return not self.agent.bot and not self.excluded

    @property
    def is_order(self) -> bool:
        return self.event in ORDER_EVENTS

    def message(self) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in (
            ("utm_source", self.channel.utm_source), ("utm_medium", self.channel.utm_medium),
            ("utm_campaign", self.channel.utm_campaign)) if v)
        url = f"https://shop.example{self.path}" + (f"?{query}" if query else "")
        context: dict[str, Any] = {}
        if not self.agent.server:  # a backend knows neither the page nor the browser
            context["page"] = {"url": url, "path": self.path, "referrer": self.channel.referrer}
            context["userAgent"] = self.agent.ua
        if self.session_id:
            context["sessionId"] = self.session_id
        if self.test:
            context["test"] = True
        msg: dict[str, Any] = {
            "type": self.type, "messageId": self.message_id,
            "timestamp": self.ts.isoformat(), "context": context,
        }
        if self.anonymous_id:
            msg["anonymousId"] = self.anonymous_id
        if self.user_id:
            msg["userId"] = self.user_id
        if self.previous_id:
            msg["previousId"] = self.previous_id
        if self.type == "track":
            msg["event"] = self.event
            msg["properties"] = {self.revenue_key: str(self.revenue)} if self.revenue else {}
        return msg


@dataclass
class Shop:
    """The generated hits and the plan behind them."""

    project_id: str
    hits: list[Hit] = field(default_factory=list)

    @property
    def human(self) -> list[Hit]:
        """The hits every metric counts: no bots, no internal or test traffic."""
        return [h for h in self.hits if h.counted]


def resolve_persons(shop: Shop) -> None:
    """Set every hit's person by the identity rules (see store/persons.py), in plain Python.

    An anonymous id (or an alias's previous id) belongs to the first user, by time then
    user id, that an event linked it to; an event with a user id is that user's.
    """
    first: dict[str, tuple[datetime, str]] = {}
    for h in shop.hits:
        if not h.user_id:
            continue
        for linked in {h.anonymous_id, h.previous_id if h.type == "alias" else ""}:
            if linked and linked != h.user_id:
                link = (h.ts, h.user_id)
                first[linked] = min(first.get(linked, link), link)
    shop.hits = [replace(h, person=h.user_id or first.get(h.anonymous_id, (h.ts, ""))[1]
                         or h.anonymous_id) for h in shop.hits]


def session_person(hits: Sequence[Hit]) -> str:
    """A session's person: its (greatest) user id, else its anonymous id's person."""
    return max(h.user_id for h in hits) or hits[0].person


class _Builder:
    def __init__(self, project_id: str, rng: random.Random) -> None:
        self.shop = Shop(project_id)
        self.rng = rng
        self.seq = 0
        self.orders = 0

    def hit(self, **fields: Any) -> None:
        self.seq += 1
        self.shop.hits.append(Hit(message_id=f"{self.shop.project_id}-{self.seq}", **fields))

    def visit(self, user: int, start: datetime, channel: Channel, agent: Agent, sdk: bool,
              user_id: str, visit_no: int, anon: str = "", ip: str = SHOPPER_IP) -> str:
        """One session: pages 30 s to 5 min apart, maybe a cart and an order.

        Returns the user id the visitor ends it with: a buyer may log in at checkout
        and a logged-in buyer's order may come from the shop's backend.
        """
        rng = self.rng
        anon = anon or f"a-{user}"
        session = f"s-{user}-{visit_no}" if sdk else ""
        ts = start
        common = {"anonymous_id": anon, "session_id": session, "agent": agent, "ip": ip}
        if user_id and visit_no and anon != f"a-{user}":
            # A second device: logged in at once, which links it to the person.
            self.hit(ts=ts - timedelta(seconds=5), type="identify", event="identify",
                     user_id=user_id, path="", channel=Channel(), **common)
        pages = rng.choice((1, 1, 2, 3, 4))
        for n in range(pages):
            self.hit(ts=ts, type="page", event="page_view", user_id=user_id,
                     path=rng.choice(PATHS) if n else PATHS[visit_no % 5],
                     channel=channel if n == 0 else Channel(), **common)
            ts += timedelta(seconds=rng.randint(30, 300))
        if pages > 1 and rng.random() < 0.45:
            self.hit(ts=ts, type="track", event="add_to_cart", user_id=user_id,
                     path="/product/kettle", channel=Channel(), **common)
            ts += timedelta(seconds=rng.randint(20, 120))
            if rng.random() < 0.5:
                if not user_id and rng.random() < 0.65:
                    user_id = f"u-{user}"
                    self.hit(ts=ts - timedelta(seconds=10), type="identify", event="identify",
                             user_id=user_id, path="/login", channel=Channel(), **common)
                revenue = Decimal(rng.choice((19, 49, 99))) + Decimal("0.90")
                if user_id and rng.random() < 0.5:
                    self.backend_order(ts + timedelta(seconds=rng.randint(1, 20)), user_id,
                                       revenue, ip)
                else:
                    self.hit(ts=ts, type="track", event="purchase", user_id=user_id,
                             path="/checkout", channel=Channel(), revenue=revenue, **common)
        return user_id

    def backend_order(self, ts: datetime, user_id: str, revenue: Decimal, ip: str) -> None:
        """An order the shop's backend confirms: only the user id, a library's agent."""
        self.orders += 1
        segment_spec = self.orders % 2 == 0
        self.hit(ts=ts, type="track", event="Order Completed" if segment_spec else "purchase",
                 anonymous_id="", user_id=user_id, session_id="", path="", channel=Channel(),
                 agent=BACKENDS[self.orders % len(BACKENDS)], revenue=revenue,
                 revenue_key="revenue" if segment_spec else "total", ip=ip)


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
            # Every 7th user comes back on their other device once logged in.
            second_device = bool(user_id) and user % 7 == 3 and visit_no % 2 == 1
            user_id = b.visit(user, start, channel,
                              (DESKTOP if agent is PHONE else PHONE) if second_device else agent,
                              sdk, user_id, visit_no,
                              anon=f"a-{user}-b" if second_device else "",
                              ip=SHOPPER_IPS[user % len(SHOPPER_IPS)])
    _shared_browsers(b)
    _internal_traffic(b)
    for n in range(300):  # a crawler: page views that no metric may count
        b.hit(ts=START + timedelta(hours=n * 2, seconds=17), type="page", event="page_view",
              anonymous_id=f"bot-{n % 7}", user_id="", session_id=f"bot-s-{n}",
              path=PATHS[n % 5], channel=Channel(), agent=CRAWLER)
    b.shop.hits.sort(key=lambda h: h.ts)
    resolve_persons(b.shop)
    return b.shop


def _shared_browsers(b: _Builder) -> None:
    """Hard identity cases: a shared browser with and without a reset, and an alias.

    No reset: ``u-shared-1`` logs in on ``a-shared``, later ``u-shared-2`` on the same
    browser; the browser's anonymous events stay ``u-shared-1``'s. With a reset each user
    logs in on a fresh anonymous id. An alias links ``a-alias``'s earlier browsing to
    ``u-alias``.
    """
    for n, (anon, user) in enumerate((("a-shared", "u-shared-1"), ("a-shared", "u-shared-2"),
                                      ("a-reset-1", "u-reset-1"), ("a-reset-2", "u-reset-2"),
                                      ("a-alias", ""))):
        start = START + timedelta(days=3 + 4 * n, hours=12)
        common = {"anonymous_id": anon, "session_id": f"shared-s-{n}", "agent": DESKTOP}
        b.hit(ts=start, type="page", event="page_view", user_id="", path="/",
              channel=CHANNELS[n % 4], **common)
        if user:
            b.hit(ts=start + timedelta(minutes=1), type="identify", event="identify",
                  user_id=user, path="/login", channel=Channel(), **common)
        b.hit(ts=start + timedelta(minutes=2), type="track", event="add_to_cart", user_id=user,
              path="/product/kettle", channel=Channel(), **common)
        b.hit(ts=start + timedelta(minutes=3), type="track", event="purchase", user_id=user,
              path="/checkout", channel=Channel(), revenue=Decimal("49.90"), **common)
    b.hit(ts=START + timedelta(days=DAYS - 2), type="alias", event="alias",
          anonymous_id="a-alias-new", user_id="u-alias", previous_id="a-alias",
          session_id="shared-s-alias", path="", channel=Channel(), agent=DESKTOP)


def _internal_traffic(b: _Builder) -> None:
    """An internal tester in the office and a QA run's test messages: stored, not counted."""
    for day in range(0, DAYS, 3):
        start = START + timedelta(days=day, hours=10)
        b.visit(20_000, start, CHANNELS[3], DESKTOP, True, "qa@shop.example" if day % 2 else "",
                day, anon="qa-anon", ip=OFFICE_IP)
    for n in range(40):
        b.hit(ts=START + timedelta(hours=n * 17, minutes=3), type="track",
              event="purchase" if n % 4 == 0 else "add_to_cart", anonymous_id=f"qa-run-{n}",
              user_id="", session_id=f"qa-run-s-{n}", path="/checkout", channel=Channel(),
              agent=DESKTOP, revenue=Decimal(5) if n % 4 == 0 else Decimal(0), test=True)


def rows(shop: Shop) -> Iterator[list[Any]]:
    """The hits as stored rows, through the real contract and enrichment."""
    for offset, hit in enumerate(shop.hits):
        msg = parse_message(hit.message())
        # A backend posts JSON with its library's agent; the rest arrive as a browser's
        # requests (the SDK's fetch, or the pixel when there is no session id).
        browser = not hit.agent.server
        route = "batch" if hit.agent.server or hit.session_id else "pixel"
        facts = RequestFacts(
            project_id=shop.project_id, received_at=hit.ts + timedelta(seconds=1),
            anonymized_ip=anonymize_ip(hit.ip),
            geo=GEO.lookup(msg.context.ip or hit.ip),
            user_agent=parse_user_agent(end_user_agent(msg, hit.agent.ua, browser)),
            source=message_source(msg, route, browser),
            excluded=exclusion_reason(EXCLUSIONS, msg, end_user_ip(msg, hit.ip, browser)))
        env = build_envelope(msg, facts, TimeLimits(max_past=timedelta(days=3650)))
        yield envelope_to_row(env, 0, offset, shop.project_id)


def load(client: Client, shop: Shop, chunk: int = 20_000) -> None:
    """Insert the shop's rows in chunks (the views fill the rollups and sessions)."""
    resolve_persons(shop)
    batch: list[list[Any]] = []
    for n, row in enumerate(rows(shop)):
        batch.append(row)
        if len(batch) == chunk:
            insert_events(client, batch, f"{shop.project_id}-{n}")
            batch = []
    if batch:
        insert_events(client, batch, f"{shop.project_id}-end")


def sessions(hits: Sequence[Hit]) -> dict[str, list[Hit]]:
    """Independent sessionization: the SDK id, else 30 minutes of inactivity per anonymous id.

    A backend's events are no visit and join no session.
    """
    out: dict[str, list[Hit]] = {}
    last: dict[str, tuple[datetime, str]] = {}
    for hit in sorted(hits, key=lambda h: h.ts):
        if hit.agent.server:
            continue
        if hit.session_id:
            key = hit.session_id
        else:
            prev = last.get(hit.anonymous_id)
            fresh = prev is None or hit.ts - prev[0] > SESSION_GAP
            key = f"{hit.anonymous_id}@{hit.ts.isoformat()}" if fresh or prev is None else prev[1]
            last[hit.anonymous_id] = (hit.ts, key)
        out.setdefault(key, []).append(hit)
    return out
