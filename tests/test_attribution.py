"""Multi-touch attribution against ground truth computed in plain Python from the shop's hits.

Touches come from the independent sessionization in tests/analytics_data.py and the
weights from the models' definitions, never from SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tests import analytics_data as data
from tests.analytics_data import Hit, Shop
from tracklane.store.analytics_errors import QueryError
from tracklane.store.attribution import MODELS, ChannelCredit, attribution

PROJECT = "attribution-shop"
WHOLE = (data.START, data.START + timedelta(days=data.DAYS))
# A week inside: conversions are cut at both ends and touches reach back before it.
WEEK = (data.START + timedelta(days=10, hours=13), data.START + timedelta(days=17, hours=13))
DAY = timedelta(days=1)
Touch = tuple[datetime, str]  # session start, channel


@pytest.fixture(scope="module")
def shop(store: Client) -> Iterator[Shop]:
    generated = data.generate(PROJECT)
    data.load(store, generated)
    yield generated


@pytest.fixture(scope="module")
def touches(shop: Shop) -> dict[str, list[Touch]]:
    """Every human session as a touch of its browser, from the independent sessionization."""
    out: dict[str, list[Touch]] = {}
    for hits in data.sessions(shop.human).values():
        out.setdefault(data.session_person(hits), []).append((hits[0].ts, hits[0].channel.name))
    return out


def weights(model: str, conversion: datetime, path: list[Touch],
            half_life: timedelta) -> list[float]:
    """The model's weights of a path of touches, oldest first."""
    n = len(path)
    if model == "first_touch":
        return [1.0] + [0.0] * (n - 1)
    if model == "last_touch":
        return [0.0] * (n - 1) + [1.0]
    if model == "linear":
        return [1 / n] * n
    if model == "time_decay":
        raw = [2 ** -((conversion - ts) / half_life) for ts, _ in path]
        return [w / sum(raw) for w in raw]
    assert model == "position_based"
    if n <= 2:
        return [1 / n] * n
    return [0.4] + [0.2 / (n - 2)] * (n - 2) + [0.4]


def conversions(shop: Shop, event: str, span: tuple[datetime, datetime]) -> list[Hit]:
    return [h for h in shop.human if h.event == event and span[0] <= h.ts < span[1]]


def path_of(hit: Hit, touches: dict[str, list[Touch]], lookback: timedelta) -> list[Touch]:
    found = sorted(t for t in touches.get(hit.person, [])
                   if hit.ts - lookback <= t[0] <= hit.ts)
    return found or [(hit.ts, "direct")]


def expected(shop: Shop, touches: dict[str, list[Touch]], *, event: str,
             span: tuple[datetime, datetime], model: str, lookback: timedelta,
             half_life: timedelta) -> dict[str, tuple[float, float]]:
    """channel -> (credited conversions, credited revenue)."""
    out: dict[str, tuple[float, float]] = {}
    for hit in conversions(shop, event, span):
        path = path_of(hit, touches, lookback)
        for (_, channel), w in zip(path, weights(model, hit.ts, path, half_life), strict=True):
            credit, revenue = out.get(channel, (0.0, 0.0))
            out[channel] = (credit + w, revenue + w * float(hit.revenue))
    return out


def check(got: list[ChannelCredit], want: dict[str, tuple[float, float]]) -> None:
    assert {c.channel for c in got} == set(want)
    total = sum(credit for credit, _ in want.values())
    for c in got:
        assert c.conversions == pytest.approx(want[c.channel][0], abs=1e-6)
        assert c.revenue == pytest.approx(want[c.channel][1], abs=1e-6)
        assert c.share == pytest.approx(want[c.channel][0] / total, abs=1e-6)
    # Most credited first, ties by channel (ties compared with float tolerance).
    for a, b in pairwise(got):
        assert a.conversions > b.conversions - 1e-9
        if abs(a.conversions - b.conversions) < 1e-9:
            assert a.channel < b.channel


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("span", "event", "lookback", "half_life"), [
    (WHOLE, "purchase", 30 * DAY, 7 * DAY),
    (WEEK, "purchase", 30 * DAY, 7 * DAY),
    (WHOLE, "purchase", 2 * DAY, 7 * DAY),
    (WHOLE, "purchase", 30 * DAY, DAY / 2),
    (WEEK, "add_to_cart", 8 * DAY, 3 * DAY),
], ids=["whole", "week", "lookback-2d", "half-life-12h", "carts"])
def test_models_equal_the_ground_truth(
        store: Client, shop: Shop, touches: dict[str, list[Touch]], model: str,
        span: tuple[datetime, datetime], event: str, lookback: timedelta,
        half_life: timedelta) -> None:
    want = expected(shop, touches, event=event, span=span, model=model, lookback=lookback,
                    half_life=half_life)
    got = attribution(store, PROJECT, conversion_event=event, start=span[0], end=span[1],
                      model=model, lookback=lookback, half_life=half_life)
    check(got, want)
    assert sum(c.conversions for c in got) == pytest.approx(
        len(conversions(shop, event, span)), abs=1e-6)


def test_the_cases_are_telling(shop: Shop, touches: dict[str, list[Touch]]) -> None:
    """The data exercises what the models differ on, so equal answers mean something."""
    orders = conversions(shop, "purchase", WHOLE)
    paths = [path_of(h, touches, 30 * DAY) for h in orders]
    assert any(len(p) >= 3 for p in paths)  # position_based's middle share
    assert any(len({c for _, c in p}) > 1 for p in paths)  # first and last touch differ
    assert sum(map(len, paths)) > sum(len(path_of(h, touches, 2 * DAY)) for h in orders)
    # The converting session is a touch: no order falls back to direct.
    assert all(p[-1][0] <= h.ts and p[-1][1] != "" for p, h in zip(paths, orders, strict=True))
    decays = [expected(shop, touches, event="purchase", span=WHOLE, model="time_decay",
                       lookback=30 * DAY, half_life=h) for h in (DAY / 2, 7 * DAY)]
    assert decays[0] != decays[1]


def test_no_touch_is_direct(store: Client, shop: Shop) -> None:
    # A zero lookback keeps only sessions starting at the conversion instant: none do.
    orders = conversions(shop, "purchase", WHOLE)
    got = attribution(store, PROJECT, conversion_event="purchase", start=WHOLE[0],
                      end=WHOLE[1], model="linear", lookback=timedelta(0))
    assert [c.channel for c in got] == ["direct"]
    assert got[0].conversions == pytest.approx(len(orders), abs=1e-6)
    assert got[0].revenue == pytest.approx(float(sum(h.revenue for h in orders)), abs=1e-6)
    assert got[0].share == 1.0


def test_bad_inputs(store: Client, shop: Shop) -> None:
    start, end = WHOLE
    for bad in ({"model": "u_shaped"}, {"model": "linear' OR 1=1 --"},
                {"start": end, "end": start}, {"end": start},
                {"lookback": -DAY}, {"half_life": timedelta(0)}):
        kwargs: dict[str, Any] = {"conversion_event": "purchase", "start": start, "end": end,
                                  "model": "linear", **bad}
        with pytest.raises(QueryError):
            attribution(store, PROJECT, **kwargs)
    # The event name is a bound parameter: an injection attempt is just an unknown event.
    for name in ("x' OR 1=1 --", "x\\' OR 1=1 --", "purchase' --"):
        assert attribution(store, PROJECT, conversion_event=name, start=start, end=end,
                           model="linear") == []
    assert attribution(store, "no-such-project", conversion_event="purchase", start=start,
                       end=end, model="last_touch") == []


@pytest.fixture(scope="module")
def edges(store: Client) -> Iterator[Shop]:
    """A browser with a touch exactly at the lookback edge and one at the conversion instant.

    It lands from Google at T, comes back two days later and buys at T + 2 days through a
    server-side event: that event opens a session (no other server-side event within 30
    minutes) starting at the conversion instant itself.
    """
    edge = Shop("attribution-edges")
    t = data.START + timedelta(days=3, hours=10)

    def hit(n: int, ts: datetime, **fields: Any) -> None:
        edge.hits.append(Hit(message_id=f"{edge.project_id}-{n}", ts=ts, anonymous_id="e-1",
                             user_id="", agent=data.DESKTOP, **fields))

    hit(1, t, type="page", event="page_view", session_id="e-s1", path="/",
        channel=data.CHANNELS[0])
    hit(2, t + 2 * DAY - timedelta(minutes=5), type="page", event="page_view",
        session_id="e-s2", path="/", channel=data.CHANNELS[1])
    hit(3, t + 2 * DAY, type="track", event="purchase", session_id="", path="/checkout",
        channel=data.Channel(), revenue=Decimal("10"))
    data.load(store, edge)
    yield edge


@pytest.mark.parametrize("model", MODELS)
def test_lookback_is_inclusive_at_both_ends(store: Client, edges: Shop, model: str) -> None:
    order = edges.hits[-1]
    span = (order.ts - DAY, order.ts + DAY)
    edge_touches: dict[str, list[Touch]] = {}
    for hits in data.sessions(edges.hits).values():
        edge_touches.setdefault(data.session_person(hits), []).append(
            (hits[0].ts, hits[0].channel.name))
    for lookback, n_touches in ((2 * DAY, 3), (2 * DAY - timedelta(milliseconds=1), 2)):
        assert len(path_of(order, edge_touches, lookback)) == n_touches
        got = attribution(store, edges.project_id, conversion_event="purchase", start=span[0],
                          end=span[1], model=model, lookback=lookback, half_life=DAY)
        check(got, expected(edges, edge_touches, event="purchase", span=span, model=model,
                            lookback=lookback, half_life=DAY))
