"""Persons (GET /v1/persons/<id>) and the erasure of a whole person, on the session's chDB.

Events go through the real contract and the real insert (tests/test_erasure.py's ``load``),
so ``identities_mv`` links them as in production. Every expected answer is computed in
plain Python from the events as sent, by the rules of store/persons.py restated here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from tests.analytics_data import CRAWLER, PHONE
from tests.pipeline import pipeline_settings
from tests.test_erasure import (
    Ev,
    at,
    bearer,
    expected_links,
    load,
    new_project,
    stored_ids,
    stored_links,
)
from tracklane.collector.app import CollectorDeps, create_app
from tracklane.collector.delivery import Delivery
from tracklane.metrics import Metrics
from tracklane.projects import Project, Projects

pytestmark = pytest.mark.anyio

ORDERS = ("purchase", "Order Completed")


def person_of(e: Ev, links: dict[str, str]) -> str:
    """Rule 1: a user id is its own person; rule 2: an anonymous id is its first user's;
    rule 3: else the anonymous id is the person."""
    return e.user_id or links.get(e.anonymous_id, "") or e.anonymous_id


def expected_person(events: Sequence[Ev], person: str,
                    orders: Iterable[str] = ORDERS) -> dict[str, Any]:
    links = expected_links(events)
    users = {e.user_id for e in events if e.user_id}
    mine = [e for e in events
            if not e.agent.bot and not e.excluded and person_of(e, links) == person]
    traits: dict[str, Any] = {}
    for e in sorted((e for e in mine if e.type == "identify" and e.traits),
                    key=lambda e: (e.ts, e.message_id)):
        traits.update(e.traits or {})
    order_names = set(orders)
    bought = [e for e in mine if e.type == "track" and e.event in order_names]
    # Per currency; an order without revenue keeps no currency.
    currencies: dict[str, tuple[int, Decimal]] = {}
    for e in bought:
        code = e.currency.upper() if e.revenue else ""
        n, total = currencies.get(code, (0, Decimal(0)))
        currencies[code] = (n + 1, total + e.revenue)
    user_id = person if person in users or person in links.values() else None
    ids = {person} | ({a for a, u in links.items() if u == person} if user_id else set())
    return {
        "id": person, "user_id": user_id, "ids": sorted(ids),
        "first_seen": min(e.ts for e in mine), "last_seen": max(e.ts for e in mine),
        "events": len(mine), "traits": traits, "orders": len(bought),
        "currencies": [{"currency": c, "orders": n, "revenue": float(v)}
                       for c, (n, v) in sorted(currencies.items())],
    }


def answered(body: dict[str, Any]) -> dict[str, Any]:
    assert body["success"] is True, body
    person = dict(body["person"])
    for key in ("first_seen", "last_seen"):
        person[key] = datetime.fromisoformat(person[key]).astimezone(UTC)
    return person


def shop_events() -> list[Ev]:
    return [
        # Alice: a phone and a laptop, anonymous first on each; an older anonymous id
        # aliased to her; orders under both order names, in two currencies.
        Ev(at(0, 9, 0, 0), "page", "alice-old", session_id="s-o", path="/"),
        Ev(at(0, 10, 0, 0), "page", "a-phone", session_id="s-p1", agent=PHONE),
        Ev(at(0, 10, 1, 0), "identify", "a-phone", "alice", session_id="s-p1", agent=PHONE,
           traits={"name": "Alice", "plan": "free", "address": {"city": "Lyon"}}),
        Ev(at(0, 12, 0, 0), "page", "a-laptop", session_id="s-l1", path="/pricing"),
        Ev(at(0, 12, 1, 0), "identify", "a-laptop", "alice", session_id="s-l1",
           traits={"plan": "pro", "email": "alice@shop.example", "address": {"zip": "69001"}}),
        # An identify without traits changes none.
        Ev(at(0, 12, 2, 0), "identify", "a-laptop", "alice", session_id="s-l1"),
        Ev(at(0, 12, 3, 0), "track", "a-laptop", "alice", session_id="s-l1",
           event="Order Completed", revenue=Decimal("30.00"), currency="eur"),
        Ev(at(1, 8, 0, 0), "track", "a-phone", "alice", session_id="s-p2", agent=PHONE,
           event="purchase", revenue=Decimal("20.50"), currency="USD"),
        Ev(at(1, 8, 5, 0), "track", "a-phone", "alice", session_id="s-p2", agent=PHONE,
           event="purchase", revenue=Decimal("10.25"), currency="EUR"),
        # An order without revenue counts as an order; revenue outside orders does not.
        Ev(at(1, 8, 6, 0), "track", user_id="alice", event="Order Completed"),
        Ev(at(1, 8, 7, 0), "track", user_id="alice", event="invoice_paid",
           revenue=Decimal("99.00"), currency="USD"),
        Ev(at(1, 9, 0, 0), "alias", user_id="alice", previous_id="alice-old"),
        # Her QA run: stored, never counted, no order of hers.
        Ev(at(1, 9, 30, 0), "track", user_id="alice", event="purchase",
           revenue=Decimal("999.00"), currency="EUR", excluded="test"),
        # Back on the phone, logged out: still hers.
        Ev(at(2, 7, 0, 0), "page", "a-phone", session_id="s-p3", agent=PHONE, path="/docs"),
        # Bob and Carl are two known users: an alias and a shared identify never merge them.
        Ev(at(0, 11, 0, 0), "page", "b-1", "bob", session_id="s-b1"),
        Ev(at(0, 11, 1, 0), "page", "b-1", session_id="s-b1", path="/pricing"),
        Ev(at(0, 11, 2, 0), "identify", "b-1", "bob", session_id="s-b1",
           traits={"name": "Bob"}),
        Ev(at(0, 11, 5, 0), "identify", "b-1", "carl", session_id="s-b1",
           traits={"name": "Carl"}),
        Ev(at(0, 11, 6, 0), "alias", "c-1", "carl", previous_id="bob"),
        Ev(at(0, 11, 7, 0), "track", "c-1", "carl", event="purchase",
           revenue=Decimal("5.00"), currency="GBP"),
        # A shared browser without a reset: u1, then u2 on the same anonymous id.
        Ev(at(0, 14, 0, 0), "page", "shared", session_id="s-s1"),
        Ev(at(0, 14, 1, 0), "identify", "shared", "u1", session_id="s-s1"),
        Ev(at(0, 14, 2, 0), "page", "shared", session_id="s-s1", path="/cart"),
        Ev(at(0, 15, 0, 0), "identify", "shared", "u2", session_id="s-s2"),
        Ev(at(0, 15, 1, 0), "page", "shared", "u2", session_id="s-s2", path="/account"),
        Ev(at(0, 16, 0, 0), "page", "shared", session_id="s-s3", path="/"),
        # The same kiosk with a reset between: two anonymous ids, two persons.
        Ev(at(0, 17, 0, 0), "page", "kiosk-1", session_id="s-k1"),
        Ev(at(0, 17, 1, 0), "identify", "kiosk-1", "v1", session_id="s-k1"),
        Ev(at(0, 17, 5, 0), "page", "kiosk-2", session_id="s-k2"),
        Ev(at(0, 17, 6, 0), "identify", "kiosk-2", "v2", session_id="s-k2"),
        # Never identified; and a crawler, which is nobody.
        Ev(at(0, 18, 0, 0), "page", "lurker", session_id="s-x1"),
        Ev(at(1, 18, 0, 0), "page", "lurker", session_id="s-x2", path="/blog"),
        Ev(at(0, 18, 30, 0), "page", "bot-1", session_id="s-bot", agent=CRAWLER),
    ]


@dataclass
class World:
    shop: Project
    other: Project
    events: list[Ev]
    other_events: list[Ev]


@pytest.fixture(scope="module")
def world(store: Client) -> World:
    shop, other = new_project("persons"), new_project("persons_other")
    events = shop_events()
    # Another project knows an "alice" too, with an anonymous id of the shop's.
    other_events = [Ev(at(0, 10, 0, 30), "page", "a-phone", "alice", session_id="o-1")]
    load(store, shop.id, events)
    load(store, other.id, other_events)
    return World(shop, other, events, other_events)


def app_for(store: Client, *projects: Project) -> httpx.AsyncClient:
    deps = CollectorDeps(
        pipeline_settings("127.0.0.1:9").collector(), Projects(projects),
        cast(Delivery, None), Metrics(), store,  # the persons API never touches Kafka
        clock=lambda: datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(deps)),
                             base_url="http://collector")


@pytest.fixture
async def http(store: Client, world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with app_for(store, world.shop, world.other) as client:
        yield client


async def lookup(http: httpx.AsyncClient, project: Project, any_id: str) -> httpx.Response:
    return await http.get(f"/v1/persons/{any_id}", headers=bearer(project.read_keys[0]))


async def test_every_id_of_a_person_answers_that_person(
    http: httpx.AsyncClient, world: World,
) -> None:
    alice = expected_person(world.events, "alice")
    # Both devices, the aliased anonymous id: one person.
    assert alice["ids"] == ["a-laptop", "a-phone", "alice", "alice-old"]
    for any_id in alice["ids"]:
        response = await lookup(http, world.shop, any_id)
        assert response.status_code == 200, (any_id, response.text)
        assert answered(response.json()) == alice, any_id
    # Spelled out: her anonymous browsing on both devices counts, her test order does not.
    assert alice["events"] == 13
    assert alice["first_seen"] == at(0, 9, 0, 0) and alice["last_seen"] == at(2, 7, 0, 0)
    # Traits: the latest value per key across her identifies; a nested value is replaced
    # whole, as Segment does.
    assert alice["traits"] == {"name": "Alice", "plan": "pro", "email": "alice@shop.example",
                               "address": {"zip": "69001"}}
    # Both order names count; revenue per currency (upper-cased), never summed across; the
    # order without revenue is under ''; her invoice is no order.
    assert alice["orders"] == 4
    assert alice["currencies"] == [{"currency": "", "orders": 1, "revenue": 0.0},
                                   {"currency": "EUR", "orders": 2, "revenue": 40.25},
                                   {"currency": "USD", "orders": 1, "revenue": 20.5}]


async def test_two_known_users_are_never_merged(http: httpx.AsyncClient, world: World) -> None:
    bob = answered((await lookup(http, world.shop, "bob")).json())
    carl = answered((await lookup(http, world.shop, "carl")).json())
    assert bob == expected_person(world.events, "bob")
    assert carl == expected_person(world.events, "carl")
    # b-1 was Bob's first: its anonymous event is his, and so is the anonymous id.
    assert answered((await lookup(http, world.shop, "b-1")).json()) == bob
    assert bob["ids"] == ["b-1", "bob"] and bob["events"] == 3
    assert bob["traits"] == {"name": "Bob"} and bob["orders"] == 0
    # Carl keeps only what carries his user id: his identify on b-1, his alias, his order.
    assert carl["events"] == 3 and carl["traits"] == {"name": "Carl"}
    assert carl["currencies"] == [{"currency": "GBP", "orders": 1, "revenue": 5.0}]
    # The alias linked Bob's id as Carl's previous id: listed for its anonymous events,
    # but the id itself answers Bob, whose user id is never remapped.
    assert carl["ids"] == ["bob", "c-1", "carl"]


async def test_a_shared_browser_with_and_without_a_reset(
    http: httpx.AsyncClient, world: World,
) -> None:
    u1 = answered((await lookup(http, world.shop, "u1")).json())
    u2 = answered((await lookup(http, world.shop, "u2")).json())
    assert u1 == expected_person(world.events, "u1")
    assert u2 == expected_person(world.events, "u2")
    # Without a reset the browser stays u1's: its anonymous events, before and after u2.
    assert answered((await lookup(http, world.shop, "shared")).json()) == u1
    assert u1["ids"] == ["shared", "u1"] and u1["events"] == 4
    assert u2["ids"] == ["u2"] and u2["events"] == 2
    # With a reset: two anonymous ids, two persons.
    for anonymous_id, user in (("kiosk-1", "v1"), ("kiosk-2", "v2")):
        got = answered((await lookup(http, world.shop, anonymous_id)).json())
        assert got == expected_person(world.events, user)
        assert got["ids"] == [anonymous_id, user] and got["events"] == 2


async def test_an_anonymous_person_and_the_unknown(http: httpx.AsyncClient, world: World) -> None:
    lurker = answered((await lookup(http, world.shop, "lurker")).json())
    assert lurker == expected_person(world.events, "lurker")
    assert lurker["user_id"] is None and lurker["ids"] == ["lurker"]
    assert lurker["traits"] == {} and lurker["orders"] == 0 and lurker["currencies"] == []
    # A crawler is nobody; an id never seen, or seen in another project only, is unknown.
    for any_id in ("bot-1", "nobody", "o-1"):
        response = await lookup(http, world.shop, any_id)
        assert response.status_code == 404, (any_id, response.text)
        assert response.json() == {"success": False, "error": "person_not_found",
                                   "message": response.json()["message"]}
    # Each project answers its own person of the id.
    other = answered((await lookup(http, world.other, "a-phone")).json())
    assert other == expected_person(world.other_events, "alice")
    assert other["events"] == 1 and other["ids"] == ["a-phone", "alice"]


async def test_orders_are_the_projects_order_events(store: Client) -> None:
    project = new_project("persons_orders", order_events=["Subscribed"])
    events = [
        Ev(at(0, 9, 0, 0), "track", "d-1", "dora", event="purchase",
           revenue=Decimal("10.00"), currency="EUR"),
        Ev(at(0, 9, 1, 0), "track", "d-1", "dora", event="Subscribed",
           revenue=Decimal("5.00"), currency="EUR"),
        Ev(at(0, 9, 2, 0), "track", "d-1", "dora", event="Subscribed",
           revenue=Decimal("7.00"), currency="JPY"),
    ]
    load(store, project.id, events)
    async with app_for(store, project) as http:
        dora = answered((await lookup(http, project, "d-1")).json())
    assert dora == expected_person(events, "dora", ["Subscribed"])
    assert dora["orders"] == 2 and dora["currencies"] == [
        {"currency": "EUR", "orders": 1, "revenue": 5.0},
        {"currency": "JPY", "orders": 1, "revenue": 7.0}]


async def test_a_read_key_is_required_and_the_id_checked(
    http: httpx.AsyncClient, world: World,
) -> None:
    good = bearer(world.shop.read_keys[0])
    checks = [
        ("/v1/persons/alice", {}, 401, "missing_read_key"),
        ("/v1/persons/alice", bearer("rk_wrong"), 401, "invalid_read_key"),
        ("/v1/persons/alice", bearer(world.shop.write_keys[0]), 401, "invalid_read_key"),
        ("/v1/persons/alice", {"Authorization": f"Basic {world.shop.read_keys[0]}"}, 401,
         "missing_read_key"),
        ("/v1/persons/", good, 400, "invalid_person_id"),
        ("/v1/persons/" + "x" * 201, good, 400, "invalid_person_id"),
        # Without a key, nothing about the id is said: the key is checked first.
        ("/v1/persons/", {}, 401, "missing_read_key"),
        ("/v1/persons/nobody", {}, 401, "missing_read_key"),
    ]
    for url, headers, status, code in checks:
        response = await http.get(url, headers=headers)
        assert response.status_code == status, (url, headers, response.text)
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["success"] is False and body["error"] == code and body["message"], body


# Erasure of a whole person.

@pytest.mark.waits_on_mutations
async def test_erasure_reaches_every_id_of_the_person(store: Client) -> None:
    project = new_project("persons_erase")
    events = shop_events()
    load(store, project.id, events)
    async with app_for(store, project) as http:
        key = bearer(project.read_keys[0])
        response = await http.delete("/v1/users/alice", headers=key)
        assert response.status_code == 200, response.text
        assert response.json()["anonymous_ids_erased"] == 3  # a-phone, a-laptop, alice-old
        left = [e for e in events if e.user_id != "alice"
                and e.anonymous_id not in ("a-phone", "a-laptop", "alice-old")]
        assert response.json()["events_deleted"] == len(events) - len(left) == 14
        assert stored_ids(store, project.id) == {e.message_id for e in left}
        # Her links went with her events, and nothing in identities names her.
        assert stored_links(store, project.id) == expected_links(left)
        assert not {"a-phone", "a-laptop", "alice-old"} & set(stored_links(store, project.id))
        assert store.query(
            "SELECT count() FROM identities WHERE project_id = %(p)s "
            "AND first_link.2 = 'alice'",
            parameters={"p": project.id}).result_rows[0][0] == 0
        for any_id in ("alice", "a-phone", "a-laptop", "alice-old"):
            response = await http.get(f"/v1/persons/{any_id}", headers=key)
            assert response.status_code == 404, (any_id, response.text)
        # Everyone else answers as before.
        for user in ("bob", "carl", "u1", "u2", "lurker"):
            got = answered((await http.get(f"/v1/persons/{user}", headers=key)).json())
            assert got == expected_person(events, user) == expected_person(left, user)


@pytest.mark.waits_on_mutations
async def test_erasing_the_shared_browsers_first_user_keeps_the_second_users_events(
    store: Client,
) -> None:
    project = new_project("persons_shared1")
    events = shop_events()
    load(store, project.id, events)
    async with app_for(store, project) as http:
        key = bearer(project.read_keys[0])
        response = await http.delete("/v1/users/u1", headers=key)
        assert response.status_code == 200, response.text
        # u1's identify, and the browser's anonymous events, which were u1's.
        assert response.json()["events_deleted"] == 4
        left = [e for e in events if e.user_id != "u1"
                and not (e.anonymous_id == "shared" and not e.user_id)]
        assert stored_ids(store, project.id) == {e.message_id for e in left}
        # u2's events on it stay, and now link the browser to u2.
        assert stored_links(store, project.id)["shared"] == "u2"
        assert stored_links(store, project.id) == expected_links(left)
        assert (await http.get("/v1/persons/u1", headers=key)).status_code == 404
        u2 = answered((await http.get("/v1/persons/shared", headers=key)).json())
        assert u2 == expected_person(left, "u2")
        assert u2["ids"] == ["shared", "u2"] and u2["events"] == 2


@pytest.mark.waits_on_mutations
async def test_erasing_the_shared_browsers_second_user_keeps_the_first_users_events(
    store: Client,
) -> None:
    project = new_project("persons_shared2")
    events = shop_events()
    load(store, project.id, events)
    async with app_for(store, project) as http:
        key = bearer(project.read_keys[0])
        u1_before = answered((await http.get("/v1/persons/u1", headers=key)).json())
        response = await http.delete("/v1/users/u2", headers=key)
        assert response.status_code == 200, response.text
        assert response.json()["events_deleted"] == 2
        assert response.json()["anonymous_ids_erased"] == 0  # the browser is u1's
        left = [e for e in events if e.user_id != "u2"]
        assert stored_ids(store, project.id) == {e.message_id for e in left}
        assert (await http.get("/v1/persons/u2", headers=key)).status_code == 404
        assert answered((await http.get("/v1/persons/shared", headers=key)).json()) == u1_before
        # The browser's row keeps no trace of u2: its last link is u1's identify again.
        rows = store.query(
            "SELECT min(first_link).2, min(first_link).1, max(last_linked) FROM identities "
            "WHERE project_id = %(p)s AND anonymous_id = 'shared'",
            parameters={"p": project.id}).result_rows
        assert [(u, _utc(lo), _utc(hi)) for u, lo, hi in rows] == [
            ("u1", at(0, 14, 1, 0), at(0, 14, 1, 0))]


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
