"""The event contract: names, times, ids, money and enrichment, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from tracklane.collector.enrich import anonymize_ip, parse_user_agent
from tracklane.contract import (
    EVENT_COLUMNS,
    ContractError,
    Envelope,
    RequestFacts,
    TimeLimits,
    UserAgentInfo,
    build_envelope,
    envelope_fields,
    envelope_record,
    envelope_to_row,
    parse_message,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FACTS = RequestFacts("demo", NOW, "203.0.113.0", UserAgentInfo())


def envelope(raw: dict[str, Any], default_type: str | None = None) -> Envelope:
    return build_envelope(parse_message(raw, default_type), FACTS, TimeLimits())


@pytest.mark.parametrize(("raw", "name"), [
    ({"type": "track", "event": "Signed Up"}, "Signed Up"),
    ({"type": "page", "name": "Home"}, "page_view"),
    ({"type": "screen"}, "screen_view"),
    ({"type": "identify", "traits": {"a": 1}}, "identify"),
    ({"type": "group", "groupId": "g"}, "group"),
    ({"type": "alias", "previousId": "p"}, "alias"),
])
def test_event_names(raw: dict[str, Any], name: str) -> None:
    assert envelope({**raw, "anonymousId": "a"}).event == name


def test_clock_skew_is_removed_using_sent_at() -> None:
    # The client clock runs 10 minutes fast: both its timestamp and sentAt carry that error.
    fast = NOW + timedelta(minutes=10)
    env = envelope({"type": "track", "event": "e", "anonymousId": "a",
                    "timestamp": (fast - timedelta(seconds=30)).isoformat(),
                    "sentAt": fast.isoformat()})
    assert env.timestamp == NOW - timedelta(seconds=30)
    assert env.received_at == NOW


def test_missing_timestamp_means_arrival_time() -> None:
    assert envelope({"type": "track", "event": "e", "userId": 7}).timestamp == NOW


@pytest.mark.parametrize(("raw", "reason"), [
    ({"type": "track", "anonymousId": "a"}, "event: required"),
    ({"type": "track", "event": "e"}, "anonymousId or userId"),
    ({"type": "track", "event": "e", "anonymousId": "a", "timestamp": "2030-01-01T00:00:00Z"},
     "future"),
    ({"type": "track", "event": "e", "anonymousId": "a", "timestamp": "2020-01-01T00:00:00Z"},
     "past"),
    ({"type": "track", "event": "e", "anonymousId": "a", "properties": []}, "properties"),
    ({"type": "track", "event": "e", "anonymousId": True}, "anonymousId"),
    ({"type": "track", "event": "e" * 201, "anonymousId": "a"}, "event"),
    ({"type": "track", "event": "e", "anonymousId": "a", "properties": {"revenue": "x"}},
     "revenue"),
    ({"type": "click", "anonymousId": "a"}, "type"),
])
def test_contract_errors_name_the_field(raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        envelope(raw)


def test_revenue_campaign_and_page_fields() -> None:
    env = envelope({
        "type": "track", "event": "Order Completed", "anonymousId": "a", "userId": "u",
        "properties": {"total": "120.5", "currency": "usd"},
        "context": {"campaign": {"name": "spring", "source": "news"},
                    "page": {"url": "https://www.shop.example/cart?gclid=abc&utm_medium=mail",
                             "referrer": "https://www.google.com/search?q=x"}},
    })
    assert (env.revenue, env.currency) == (Decimal("120.5000"), "USD")
    assert (env.utm_campaign, env.utm_source, env.utm_medium) == ("spring", "news", "mail")
    assert (env.click_id, env.click_id_type) == ("abc", "gclid")
    assert (env.path, env.referrer_domain) == ("/cart", "google.com")


def test_envelope_round_trips_through_kafka_bytes_and_fills_every_column() -> None:
    env = envelope({"type": "page", "anonymousId": "a", "messageId": "m1"})
    again = Envelope.from_kafka_value(env.to_kafka_value())
    assert again == env
    assert again.kafka_key == b"demo:m1"
    row = envelope_to_row(again, 3, 42, "tok")
    assert len(row) == len(EVENT_COLUMNS)
    assert dict(zip(EVENT_COLUMNS, row, strict=True))["distinct_id"] == "a"


def test_kafka_bytes_are_the_validated_models_json() -> None:
    """The hand-rolled encoder writes what pydantic's JSON mode would, revenue and times too."""
    raw = {"type": "track", "event": "Buy", "anonymousId": "a", "messageId": "m1",
           "properties": {"revenue": 12.5, "currency": "eur"}, "context": {"ip": "1.2.3.4"},
           "timestamp": "2026-11-21T10:00:00.123Z", "sentAt": "2026-11-21T10:00:01Z"}
    env = envelope(raw)
    assert env.to_kafka_value() == orjson.dumps(env.model_dump(mode="json"))
    # The collector's path, which builds no model, writes the very same record.
    fields = envelope_fields(parse_message(raw), FACTS, TimeLimits())
    assert list(fields) == list(Envelope.model_fields)
    assert envelope_record(fields) == (env.kafka_key, env.to_kafka_value())


def test_ip_anonymization_and_user_agents() -> None:
    assert anonymize_ip("198.51.100.250") == "198.51.100.0"
    assert anonymize_ip("2001:db8:1234:5678::9") == "2001:db8:1234::"
    # Addresses that carry the client's IPv4 are anonymized as that IPv4.
    assert anonymize_ip("::ffff:203.0.113.77") == "203.0.113.0"
    assert anonymize_ip("2002:cb00:714d::1") == "203.0.113.0"  # 6to4 of 203.0.113.77
    # Teredo: server 65.54.227.120, client 192.0.2.45 (stored inverted).
    assert anonymize_ip("2001:0:4136:e378:8000:63bf:3fff:fdd2") == "192.0.2.0"
    assert anonymize_ip("garbage") == ""
    iphone = parse_user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
                              "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 "
                              "Mobile/15E148 Safari/604.1")
    assert (iphone.os, iphone.device_type, iphone.is_bot) == ("iOS", "mobile", False)
    bot = parse_user_agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    assert bot.is_bot and bot.device_type == "bot"


def test_the_row_is_the_events_table_the_migrations_create(store: Client) -> None:
    """``EVENT_COLUMNS`` (and so ``envelope_to_row``) name the table's columns, in order,
    and every envelope field is stored in the column of its name, in the envelope's
    order."""
    columns = [row[0] for row in store.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() "
        "AND table = 'events' ORDER BY position").result_rows]
    assert tuple(columns) == EVENT_COLUMNS
    # In the same order (the envelope's version is the contract's, not a column).
    fields = [name for name in Envelope.model_fields if name != "v"]
    assert fields == [column for column in EVENT_COLUMNS if column in Envelope.model_fields]
