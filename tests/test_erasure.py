"""User erasure (DELETE /v1/users/<id>) and per-project retention, on the session's chDB.

Events go through the real contract (parse, envelope, row) and the real insert, so the
materialized views fill ``rollups_minute`` and ``sessions`` as in production. Every
expected number is computed in plain Python from the events as sent, never from SQL.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from tests.analytics_data import CRAWLER, DESKTOP, PHONE, Agent
from tests.pipeline import TEST_SECRET, pipeline_settings
from tracklane.collector.app import CollectorDeps, create_app
from tracklane.collector.delivery import Delivery
from tracklane.collector.enrich import parse_user_agent
from tracklane.collector.users_api import key_fingerprint
from tracklane.contract import (
    TYPE_EVENT_NAMES,
    ExclusionReason,
    RequestFacts,
    TimeLimits,
    build_envelope,
    envelope_to_row,
    parse_message,
)
from tracklane.install_secret import install_secret
from tracklane.metrics import Metrics
from tracklane.projects import Project, Projects, ProjectsFileError, load_projects
from tracklane.store.migrate import RetentionConfig, apply_retention, project_retention
from tracklane.store.queries import insert_events

pytestmark = [pytest.mark.anyio, pytest.mark.waits_on_mutations]

# What the session's store runs with (tests/conftest.py); restored after retention tests.
SESSION_RETENTION = RetentionConfig(events_days=395, dedup_window_hours=48)
# A recent day, well inside every retention the session applies.
DAY0 = (datetime.now(UTC) - timedelta(days=10)).replace(hour=0, minute=0, second=0,
                                                         microsecond=0)


@dataclass(frozen=True)
class Ev:
    """One message as sent, with what the pipeline derives from it, for the expectations."""

    ts: datetime
    type: str
    anonymous_id: str = ""
    user_id: str = ""
    session_id: str = ""
    path: str = "/"
    event: str = ""  # track only
    revenue: Decimal = Decimal(0)
    previous_id: str = ""
    agent: Agent = DESKTOP
    currency: str = ""  # track with revenue only
    traits: dict[str, Any] | None = None  # identify only
    excluded: ExclusionReason | Literal[""] = ""  # as the collector judges it
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def name(self) -> str:
        return self.event if self.type == "track" else TYPE_EVENT_NAMES[self.type]

    @property
    def distinct_id(self) -> str:
        return self.user_id or self.anonymous_id

    @property
    def minute(self) -> datetime:
        return self.ts.replace(second=0, microsecond=0)

    def message(self) -> dict[str, Any]:
        context: dict[str, Any] = {"page": {"url": f"https://shop.example{self.path}",
                                            "path": self.path}, "userAgent": self.agent.ua}
        if self.session_id:
            context["sessionId"] = self.session_id
        msg: dict[str, Any] = {"type": self.type, "messageId": self.message_id,
                               "timestamp": self.ts.isoformat(), "context": context}
        for key, value in (("anonymousId", self.anonymous_id), ("userId", self.user_id),
                           ("previousId", self.previous_id)):
            if value:
                msg[key] = value
        if self.type == "track":
            msg["event"] = self.event
            msg["properties"] = {"revenue": str(self.revenue)} if self.revenue else {}
            if self.currency:
                msg["properties"]["currency"] = self.currency
        if self.traits is not None:
            msg["traits"] = self.traits
        return msg


def load(client: Client, project_id: str, events: Sequence[Ev]) -> None:
    rows = []
    for offset, ev in enumerate(events):
        facts = RequestFacts(project_id=project_id, received_at=ev.ts + timedelta(seconds=1),
                             anonymized_ip="192.0.2.0", user_agent=parse_user_agent(ev.agent.ua),
                             excluded=ev.excluded)
        env = build_envelope(parse_message(ev.message()), facts,
                             TimeLimits(max_past=timedelta(days=3650)))
        rows.append(envelope_to_row(env, 0, offset, project_id))
    insert_events(client, rows, f"{project_id}-{uuid.uuid4().hex}")


def at(day: int, hh: int, mm: int, ss: int) -> datetime:
    return DAY0 + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


def shop_events() -> list[Ev]:
    """Alice (anonymous, then identified, on two devices and a shared one) among others."""
    return [
        # Alice browses anonymously, then identifies and buys, in one session.
        Ev(at(0, 10, 0, 5), "page", "anon-alice-1", session_id="s-a1", path="/"),
        Ev(at(0, 10, 0, 40), "track", "anon-alice-1", session_id="s-a1", event="add_to_cart"),
        Ev(at(0, 10, 1, 10), "identify", "anon-alice-1", "alice", session_id="s-a1"),
        Ev(at(0, 10, 2, 0), "track", "anon-alice-1", "alice", session_id="s-a1",
           event="purchase", revenue=Decimal("49.90")),
        # Bob shares Alice's minutes and events: his counts must stay.
        Ev(at(0, 10, 0, 20), "page", "anon-bob", "bob", session_id="s-b1", path="/",
           agent=PHONE),
        Ev(at(0, 10, 1, 5), "page", "anon-bob", session_id="s-b1", path="/pricing",
           agent=PHONE),
        Ev(at(0, 10, 2, 30), "track", "anon-bob", "bob", session_id="s-b1", event="purchase",
           revenue=Decimal("19.90"), agent=PHONE),
        # Carol, anonymous only, and a crawler, in Alice's first minute.
        Ev(at(0, 10, 0, 30), "page", "anon-carol", session_id="s-c1", path="/docs"),
        Ev(at(0, 10, 0, 45), "page", "bot-1", session_id="bot-s1", path="/", agent=CRAWLER),
        # A shared browser: an anonymous visit (linked to Alice: erased), then Alice, then
        # Dave in the same session (his events stay, and so does the session, rebuilt).
        Ev(at(0, 10, 0, 50), "page", "anon-shared", session_id="s-sh1", path="/blog/launch"),
        Ev(at(0, 11, 0, 0), "page", "anon-shared", "alice", session_id="s-sh2", path="/"),
        Ev(at(0, 11, 5, 0), "page", "anon-shared", "dave", session_id="s-sh2",
           path="/pricing"),
        Ev(at(0, 11, 6, 0), "track", "anon-shared", "dave", session_id="s-sh2",
           event="add_to_cart"),
        # Next day: Alice on a second device, anonymous first; and server-side.
        Ev(at(1, 12, 0, 0), "page", "anon-alice-2", session_id="s-a3", path="/docs"),
        Ev(at(1, 12, 1, 0), "identify", "anon-alice-2", "alice", session_id="s-a3"),
        Ev(at(1, 9, 30, 0), "track", user_id="alice", event="invoice_paid",
           revenue=Decimal("10.00")),
        Ev(at(1, 9, 30, 20), "track", "anon-erin", "erin", event="invoice_paid",
           revenue=Decimal("5.00")),
        # An alias away from Alice's id carries it: erased too.
        Ev(at(1, 12, 2, 0), "alias", user_id="alice-2", previous_id="alice",
           session_id="s-a3"),
        # A day Alice was never seen: nothing to rebuild there.
        Ev(at(2, 8, 0, 0), "page", "anon-bob", "bob", session_id="s-b2", path="/"),
    ]


def expected_links(events: Iterable[Ev]) -> dict[str, str]:
    """Per anonymous id (and alias previous id), the user it was first linked to, by event
    time and then user id: what ``identities`` says, restated."""
    links: dict[str, str] = {}
    for e in sorted((e for e in events if e.user_id), key=lambda e: (e.ts, e.user_id)):
        for linked in (e.anonymous_id, e.previous_id if e.type == "alias" else ""):
            if linked and linked != e.user_id:
                links.setdefault(linked, e.user_id)
    return links


def erased(events: Iterable[Ev], user: str) -> list[Ev]:
    """The rule of the erasure API, restated: every event naming the user's id (as user id,
    anonymous id or alias previous id), and the anonymous events of the anonymous ids
    first linked to them."""
    events = list(events)
    owned = {a for a, u in expected_links(events).items() if u == user}
    return [e for e in events if user in (e.user_id, e.previous_id, e.anonymous_id)
            or (not e.user_id and e.anonymous_id in owned)]


# Expected aggregates, from the events, in plain Python.

def expected_rollups(events: Iterable[Ev]) -> dict[tuple[str, datetime, int], tuple[int, int,
                                                                                    Decimal]]:
    groups: dict[tuple[str, datetime, int], list[Ev]] = {}
    for e in events:
        groups.setdefault((e.name, e.minute, int(e.agent.bot)), []).append(e)
    return {k: (len(v), len({e.distinct_id for e in v}), sum((e.revenue for e in v),
                                                             Decimal(0)))
            for k, v in groups.items()}


def expected_sessions(events: Iterable[Ev]) -> dict[tuple[date, str], tuple[Any, ...]]:
    groups: dict[tuple[date, str], list[Ev]] = {}
    for e in events:
        if e.session_id:
            groups.setdefault((e.ts.date(), e.session_id), []).append(e)
    out = {}
    for key, evs in groups.items():
        pages = sorted((e for e in evs if e.type == "page"), key=lambda e: e.ts)
        out[key] = (
            len(evs), len(pages), sum(e.type in ("track", "screen") for e in evs),
            min(e.ts for e in evs), max(e.ts for e in evs), max(e.user_id for e in evs),
            sum((e.revenue for e in evs), Decimal(0)),
            pages[0].path if pages else "", pages[-1].path if pages else "",
        )
    return out


# What the store holds.

def stored_rollups(store: Client, project_id: str) -> dict[tuple[str, datetime, int],
                                                          tuple[int, int, Decimal]]:
    rows = store.query(
        "SELECT event, minute, is_bot, sum(events), uniqMerge(users), sum(revenue) "
        "FROM rollups_minute WHERE project_id = %(p)s GROUP BY event, minute, is_bot",
        parameters={"p": project_id}).result_rows
    return {(str(ev), _utc(m), int(bot)): (int(n), int(u), Decimal(r))
            for ev, m, bot, n, u, r in rows}


def stored_sessions(store: Client, project_id: str) -> dict[tuple[date, str], tuple[Any, ...]]:
    rows = store.query(
        "SELECT day, session_id, sum(events), sum(pageviews), sum(interactions), "
        "min(started_at), max(ended_at), max(user_id), sum(revenue), "
        "argMinMerge(entry_path), argMaxMerge(exit_path) "
        "FROM sessions WHERE project_id = %(p)s GROUP BY day, session_id",
        parameters={"p": project_id}).result_rows
    return {(d, str(s)): (int(n), int(pv), int(i), _utc(lo), _utc(hi), str(u), Decimal(r),
                          str(entry), str(exit_))
            for d, s, n, pv, i, lo, hi, u, r, entry, exit_ in rows}


def stored_links(store: Client, project_id: str) -> dict[str, str]:
    return {str(a): str(u) for a, u in store.query(
        "SELECT anonymous_id, min(first_link).2 FROM identities WHERE project_id = %(p)s "
        "GROUP BY anonymous_id", parameters={"p": project_id}).result_rows}


def stored_ids(store: Client, project_id: str) -> set[str]:
    return {str(r[0]) for r in store.query(
        "SELECT message_id FROM events WHERE project_id = %(p)s",
        parameters={"p": project_id}).result_rows}


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def new_project(prefix: str, **extra: Any) -> Project:
    tag = uuid.uuid4().hex[:10]
    return Project(id=f"{prefix}_{tag}", write_keys=[f"wk_{tag}"], read_keys=[f"rk_{tag}"],
                   **extra)


@dataclass
class World:
    shop: Project
    other: Project
    shop_events: list[Ev]
    other_events: list[Ev]


@pytest.fixture(scope="module")
def world(store: Client) -> World:
    shop, other = new_project("erase"), new_project("erase_other")
    shop_evs = shop_events()
    # The other project has a user of the same id, in the same minutes.
    other_evs = [
        Ev(at(0, 10, 0, 10), "page", "o-anon-1", "alice", session_id="o-s1"),
        Ev(at(0, 10, 0, 15), "page", "o-anon-1", session_id="o-s1", path="/docs"),
        Ev(at(0, 10, 0, 25), "page", "o-anon-2", "zoe", session_id="o-s2"),
    ]
    load(store, shop.id, shop_evs)
    load(store, other.id, other_evs)
    # The views filled the aggregates exactly as the events say, before anything.
    for project, evs in ((shop, shop_evs), (other, other_evs)):
        assert stored_rollups(store, project.id) == expected_rollups(evs)
        assert stored_sessions(store, project.id) == expected_sessions(evs)
        assert stored_links(store, project.id) == expected_links(evs)
    return World(shop, other, shop_evs, other_evs)


@pytest.fixture
async def http(store: Client, world: World) -> AsyncIterator[httpx.AsyncClient]:
    deps = CollectorDeps(
        pipeline_settings("127.0.0.1:9").collector(), Projects((world.shop, world.other)),
        # The erasure API never touches Kafka.
        cast(Delivery, None), Metrics(), store,
        clock=lambda: datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
    )
    transport = httpx.ASGITransport(app=create_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def audit_row(store: Client, erasure_id: str) -> dict[str, Any]:
    result = store.query("SELECT * FROM erasures WHERE erasure_id = %(e)s",
                         parameters={"e": erasure_id})
    assert len(result.result_rows) == 1
    return dict(zip(result.column_names, result.result_rows[0], strict=True))


async def test_erasure_needs_a_read_key_and_a_valid_id(
    http: httpx.AsyncClient, world: World, store: Client,
) -> None:
    audits_before = store.query("SELECT count() FROM erasures").result_rows[0][0]
    good = bearer(world.shop.read_keys[0])
    checks = [
        ("/v1/users/alice", {}, 401, "missing_read_key"),
        ("/v1/users/alice", bearer("rk_wrong"), 401, "invalid_read_key"),
        ("/v1/users/alice", bearer(world.shop.write_keys[0]), 401, "invalid_read_key"),
        ("/v1/users/alice", {"Authorization": f"Basic {world.shop.read_keys[0]}"}, 401,
         "missing_read_key"),
        ("/v1/users/", good, 400, "invalid_user_id"),
        ("/v1/users/" + "x" * 201, good, 400, "invalid_user_id"),
        # Without a key, a bad id says nothing either: the key is checked first.
        ("/v1/users/", {}, 401, "missing_read_key"),
    ]
    for url, headers, status, code in checks:
        response = await http.delete(url, headers=headers)
        assert response.status_code == status, (url, headers, response.text)
        body = response.json()
        assert body["success"] is False and body["error"] == code and body["message"], body
    # Nothing was erased or audited by a refused request.
    assert stored_ids(store, world.shop.id) == {e.message_id for e in world.shop_events}
    assert store.query("SELECT count() FROM erasures").result_rows[0][0] == audits_before


async def test_unknown_user_succeeds_with_zeros_and_is_audited(
    http: httpx.AsyncClient, world: World, store: Client,
) -> None:
    # A slash in an id travels escaped and is part of the id.
    response = await http.delete("/v1/users/nobody%2Fhere", headers=bearer(
        world.shop.read_keys[0]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"success": True, "erasure_id": body["erasure_id"], "events_deleted": 0,
                    "anonymous_ids_erased": 0, "days_rebuilt": 0, "minutes_rebuilt": 0,
                    "sessions_rebuilt": 0}
    row = audit_row(store, body["erasure_id"])
    assert row["user_hash"] == keyed(b"nobody/here")
    assert row["project_id"] == world.shop.id and row["events_deleted"] == 0
    assert stored_ids(store, world.shop.id) == {e.message_id for e in world.shop_events}


async def test_erasure_removes_the_user_and_their_share_of_every_aggregate(
    http: httpx.AsyncClient, world: World, store: Client,
) -> None:
    shop, other = world.shop, world.other

    # The other project erases its own "alice": only there.
    before_rollups = stored_rollups(store, shop.id)
    before_sessions = stored_sessions(store, shop.id)
    response = await http.delete("/v1/users/alice", headers=bearer(other.read_keys[0]))
    assert response.status_code == 200, response.text
    assert response.json()["events_deleted"] == 2  # her page and her anonymous one
    other_left = [e for e in world.other_events if e not in erased(world.other_events, "alice")]
    assert stored_ids(store, other.id) == {e.message_id for e in other_left}
    assert stored_rollups(store, other.id) == expected_rollups(other_left)
    assert stored_sessions(store, other.id) == expected_sessions(other_left)
    assert stored_links(store, other.id) == expected_links(other_left) == {"o-anon-2": "zoe"}
    assert stored_links(store, shop.id) == expected_links(world.shop_events)
    assert stored_ids(store, shop.id) == {e.message_id for e in world.shop_events}
    assert stored_rollups(store, shop.id) == before_rollups
    assert stored_sessions(store, shop.id) == before_sessions
    other_rollups = stored_rollups(store, other.id)

    # The shop erases Alice.
    gone = erased(world.shop_events, "alice")
    left = [e for e in world.shop_events if e not in gone]
    # The rule reaches her anonymous browsing on both devices, the shared browser's
    # anonymous visit and the alias; Dave's events on the shared browser stay.
    assert {e.anonymous_id for e in gone if not e.user_id} == {
        "anon-alice-1", "anon-alice-2", "anon-shared"}
    assert any(e.previous_id == "alice" for e in gone)
    assert {e.user_id for e in left} == {"", "bob", "dave", "erin"}
    key = shop.read_keys[0]
    response = await http.delete("/v1/users/alice", headers=bearer(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "success": True, "erasure_id": body["erasure_id"], "events_deleted": len(gone),
        "anonymous_ids_erased": 3, "days_rebuilt": len({e.ts.date() for e in gone}),
        "minutes_rebuilt": len({e.minute for e in gone}),
        "sessions_rebuilt": len({(e.ts.date(), e.session_id) for e in gone if e.session_id}),
    }

    # Raw events: hers are gone, everyone else's are there.
    assert stored_ids(store, shop.id) == {e.message_id for e in left}
    assert store.query(
        "SELECT count() FROM events WHERE project_id = %(p)s AND (user_id = 'alice' OR "
        "previous_id = 'alice' OR anonymous_id IN ('anon-alice-1', 'anon-alice-2') OR "
        "distinct_id = 'alice')", parameters={"p": shop.id}).result_rows[0][0] == 0

    # Aggregates equal a recomputation from the remaining events: counts, unique users
    # (uniq states rebuilt, not kept) and revenue per minute; every session's numbers.
    rollups = stored_rollups(store, shop.id)
    assert rollups == expected_rollups(left)
    assert stored_sessions(store, shop.id) == expected_sessions(left)
    # Her links are gone, the alias's row keyed by her id too; the shared browser, first
    # hers, now belongs to Dave, whose events on it remain.
    assert stored_links(store, shop.id) == expected_links(left) == {
        "anon-bob": "bob", "anon-shared": "dave", "anon-erin": "erin"}
    assert store.query(
        "SELECT count() FROM identities WHERE project_id = %(p)s AND (anonymous_id IN "
        "('alice', 'anon-alice-1', 'anon-alice-2') OR first_link.2 = 'alice')",
        parameters={"p": shop.id}).result_rows[0][0] == 0
    # Spelled out for the shared minutes: Bob, Carol and the crawler are still counted.
    first = at(0, 10, 0, 0)
    assert rollups[("page_view", first, 0)] == (2, 2, Decimal(0))  # Bob and Carol
    assert rollups[("page_view", first, 1)] == (1, 1, Decimal(0))  # the crawler
    assert rollups[("purchase", at(0, 10, 2, 0), 0)] == (1, 1, Decimal("19.90"))  # Bob's
    assert ("add_to_cart", first, 0) not in rollups  # Alice's alone: no row left
    # Rows of minutes she was never in are the very rows that were there.
    her_minutes = {e.minute for e in gone}
    assert {k: v for k, v in rollups.items() if k[1] not in her_minutes} == {
        k: v for k, v in before_rollups.items() if k[1] not in her_minutes}
    sessions = stored_sessions(store, shop.id)
    day0 = DAY0.date()
    assert (day0, "s-a1") not in sessions and (day0, "s-sh1") not in sessions
    assert sessions[(day0, "s-sh2")][:3] == (2, 1, 1)  # Dave's part only
    assert sessions[(day0, "s-sh2")][5] == "dave"
    # The other project is as its own erasure left it.
    assert stored_rollups(store, other.id) == other_rollups

    # The audit keeps a hash and counts: neither the id nor the key.
    row = audit_row(store, body["erasure_id"])
    assert row["project_id"] == shop.id
    assert row["user_hash"] == keyed(b"alice")
    assert row["user_hash"] != hashlib.sha256(b"alice").hexdigest()
    assert row["requested_by"] == key_fingerprint(key)
    assert _utc(row["requested_at"]) == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert (row["events_deleted"], row["anonymous_ids"], row["days_rebuilt"],
            row["minutes_rebuilt"], row["sessions_rebuilt"]) == (
        body["events_deleted"], body["anonymous_ids_erased"], body["days_rebuilt"],
        body["minutes_rebuilt"], body["sessions_rebuilt"])
    for value in row.values():
        assert "alice" not in str(value) and key not in str(value)

    # Once more: nothing left to erase, still a success, still audited.
    again = await http.delete("/v1/users/alice", headers=bearer(key))
    assert again.status_code == 200
    assert again.json()["events_deleted"] == 0
    assert again.json()["erasure_id"] != body["erasure_id"]
    assert stored_rollups(store, shop.id) == expected_rollups(left)


async def test_a_failed_erasure_is_retried_safely(
    store: Client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure after the aggregates are rebuilt leaves the raw events: the retry redoes
    everything, and its rebuilt rows, identical to the first attempt's, are not dropped
    by the tables' insert deduplication."""
    project = new_project("erase_retry")
    events = [
        Ev(at(0, 9, 0, 5), "page", "anon-x", "xavier", session_id="s-x"),
        Ev(at(0, 9, 0, 10), "page", "anon-y", "yann", session_id="s-y"),
        Ev(at(0, 9, 0, 20), "page", "anon-y", "yann", session_id="s-y", path="/docs"),
    ]
    load(store, project.id, events)
    deps = CollectorDeps(pipeline_settings("127.0.0.1:9").collector(), Projects((project,)),
                         cast(Delivery, None), Metrics(), store)
    transport = httpx.ASGITransport(app=create_app(deps))
    command = store.command

    def failing(sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.startswith("ALTER TABLE events DELETE"):
            raise RuntimeError("the store went away")
        return command(sql, *args, **kwargs)

    async with httpx.AsyncClient(transport=transport, base_url="http://c") as http:
        monkeypatch.setattr(store, "command", failing)
        response = await http.delete("/v1/users/xavier", headers=bearer(project.read_keys[0]))
        assert response.status_code == 503
        assert response.json()["error"] == "erasure_failed"
        monkeypatch.undo()
        assert stored_ids(store, project.id) == {e.message_id for e in events}
        response = await http.delete("/v1/users/xavier", headers=bearer(project.read_keys[0]))
        assert response.status_code == 200, response.text
        assert response.json()["events_deleted"] == 1
    left = events[1:]
    assert stored_ids(store, project.id) == {e.message_id for e in left}
    assert stored_rollups(store, project.id) == expected_rollups(left)
    assert stored_sessions(store, project.id) == expected_sessions(left)


@pytest.mark.parametrize("failing_step", [
    "ALTER TABLE identities DELETE", "INSERT INTO identities", "ALTER TABLE events DELETE"])
async def test_a_retry_after_the_links_were_rebuilt_still_erases_what_was_theirs(
    store: Client, monkeypatch: pytest.MonkeyPatch, failing_step: str,
) -> None:
    """A shared browser, first u1's: a failed attempt to erase u1 may already have rebuilt
    its ``identities`` row (now u2's) or dropped it. The retry still finds the browser
    u1's, from u1's events that are still there, and erases its anonymous events."""
    project = new_project("erase_retry_links")
    events = [
        Ev(at(0, 9, 0, 0), "page", "shared", session_id="s-1"),
        Ev(at(0, 9, 1, 0), "identify", "shared", "u1", session_id="s-1"),
        Ev(at(0, 9, 2, 0), "page", "shared", session_id="s-1", path="/cart"),
        Ev(at(0, 9, 5, 0), "identify", "shared", "u2", session_id="s-2"),
        Ev(at(0, 9, 6, 0), "page", "shared", "u2", session_id="s-2"),
    ]
    load(store, project.id, events)
    deps = CollectorDeps(pipeline_settings("127.0.0.1:9").collector(), Projects((project,)),
                         cast(Delivery, None), Metrics(), store)
    transport = httpx.ASGITransport(app=create_app(deps))
    command = store.command

    def failing(sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.startswith(failing_step):
            raise RuntimeError("the store went away")
        return command(sql, *args, **kwargs)

    async with httpx.AsyncClient(transport=transport, base_url="http://c") as http:
        monkeypatch.setattr(store, "command", failing)
        response = await http.delete("/v1/users/u1", headers=bearer(project.read_keys[0]))
        assert response.status_code == 503
        monkeypatch.undo()
        assert stored_ids(store, project.id) == {e.message_id for e in events}
        assert stored_links(store, project.id) == {
            "ALTER TABLE identities DELETE": {"shared": "u1"},
            "INSERT INTO identities": {},
            "ALTER TABLE events DELETE": {"shared": "u2"},
        }[failing_step]
        response = await http.delete("/v1/users/u1", headers=bearer(project.read_keys[0]))
        assert response.status_code == 200, response.text
        assert (response.json()["events_deleted"], response.json()["anonymous_ids_erased"]) == (
            3, 1)
    left = events[3:]
    assert stored_ids(store, project.id) == {e.message_id for e in left}
    assert stored_rollups(store, project.id) == expected_rollups(left)
    assert stored_sessions(store, project.id) == expected_sessions(left)
    assert stored_links(store, project.id) == expected_links(left) == {"shared": "u2"}


def keyed(user_id: bytes) -> str:
    """The audit's hash: HMAC-SHA-256 under the install secret."""
    return hmac.new(TEST_SECRET.encode(), user_id, hashlib.sha256).hexdigest()


# Per-project retention.

def test_project_retention_days_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "projects.toml"
    path.write_text('[[project]]\nid = "a"\nretention_days = 30\n[[project]]\nid = "b"\n')
    projects = load_projects(path).projects
    assert [p.retention_days for p in projects] == [30, None]
    assert project_retention(projects) == {"a": 30}
    for bad in ("0", "3651", '"30"', "1.5", "true"):
        path.write_text(f'[[project]]\nid = "a"\nretention_days = {bad}\n')
        with pytest.raises(ProjectsFileError, match="retention_days"):
            load_projects(path)


def test_retention_refuses_what_it_cannot_quote(store: Client) -> None:
    ddl = store.query("SHOW CREATE TABLE events").result_rows[0][0]
    for projects in ({"x') OR 1 --": 1}, {"ok": 0}, {"ok\n": 5}):
        with pytest.raises(ValueError, match="retention"):
            apply_retention(store, RetentionConfig(395, 48, projects))
    assert store.query("SHOW CREATE TABLE events").result_rows[0][0] == ddl


def test_a_project_keeps_its_own_retention(store: Client) -> None:
    short, default, long = (new_project("ret_short", retention_days=1),
                            new_project("ret_default"), new_project("ret_long",
                                                                    retention_days=3650))
    old = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    for project in (short, default, long):
        load(store, project.id, [
            Ev(old, "page", "anon-1", session_id="s-1"),
            Ev(old + timedelta(minutes=1), "track", "anon-1", "u-1", session_id="s-1",
               event="purchase", revenue=Decimal("9.90")),
            # Recent: today, so that even its session day is inside one day.
            Ev(datetime.now(UTC) - timedelta(seconds=2), "page", "anon-2", session_id="s-2"),
        ])

    def counts(project: Project) -> list[int]:
        return [int(store.query(f"SELECT count() FROM {table} WHERE project_id = %(p)s",
                                parameters={"p": project.id}).result_rows[0][0])
                for table in ("events", "rollups_minute", "sessions")]

    before = {p.id: counts(p) for p in (short, default, long)}
    try:
        apply_retention(store, RetentionConfig(
            SESSION_RETENTION.events_days, SESSION_RETENTION.dedup_window_hours,
            project_retention([short, default, long])))
        ddl = store.query("SHOW CREATE TABLE events").result_rows[0][0]
        assert f"WHERE project_id IN ('{short.id}')" in ddl
        assert f"NOT IN ('{long.id}', '{short.id}')" in ddl
        for table in ("events", "rollups_minute", "sessions"):
            store.command(f"OPTIMIZE TABLE {table} FINAL")
        # The 1-day project keeps only its recent event; the others keep everything.
        assert counts(short) == [1, 1, 1]
        assert counts(default) == before[default.id]
        assert counts(long) == before[long.id]
    finally:
        apply_retention(store, SESSION_RETENTION)
    assert "project_id" not in store.query("SHOW CREATE TABLE events").result_rows[0][0].split(
        "TTL", 1)[1].split("SETTINGS")[0]


def test_the_install_secret_is_created_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret"
    first = install_secret(path)
    assert len(first) == 64 and install_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("")
    with pytest.raises(ValueError, match="TRACKLANE_SECRET"):
        install_secret(path)


async def test_a_collector_without_a_secret_refuses_erasure(store: Client) -> None:
    project = new_project("erase_nokey")
    config = replace(pipeline_settings("127.0.0.1:9").collector(), audit_key=b"")
    deps = CollectorDeps(config, Projects((project,)), cast(Delivery, None), Metrics(), store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(deps)),
                                 base_url="http://c") as http:
        response = await http.delete("/v1/users/u1", headers=bearer(project.read_keys[0]))
    assert response.status_code == 503
    assert response.json()["error"] == "erasure_unavailable"
