"""Deal validation: every field the exchange sends is checked, and a rejection says why."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from marketstream.energy.deals import InvalidDeal, parse_deal, tradable_hours
from marketstream.energy.exchange_emulator import MALFORMED_KINDS, DealFactory

SEED_MESSAGE = {"deal_confirmation": {
    "id": "3624e95119f04b7bb054b2f91a980a83", "price": 20.64, "quantity": 1.2, "direction": "sell",
    "delivery_day": "2023-02-21", "delivery_hour": "15-16", "trader_id": "flex_trader_4",
    "execution_time": "2023-02-21T06:13:43+00:00",
}}


def with_field(name, value):
    message = json.loads(json.dumps(SEED_MESSAGE))
    if value is ...:
        del message["deal_confirmation"][name]
    else:
        message["deal_confirmation"][name] = value
    return json.dumps(message)


def test_seed_message_parses_exactly():
    deal = parse_deal(json.dumps(SEED_MESSAGE).encode())
    assert deal.row() == {
        "deal_id": "3624e95119f04b7bb054b2f91a980a83", "trader_id": "flex_trader_4", "direction": "sell",
        "price": Decimal("20.64"), "quantity": Decimal("1.2"), "delivery_day": date(2023, 2, 21),
        "delivery_hour": "15-16", "execution_time": datetime(2023, 2, 21, 6, 13, 43, tzinfo=UTC),
    }


@pytest.mark.parametrize("raw, reason", [
    (b"\xff\xfe", "not UTF-8"),
    ("{oops", "not JSON"),
    ("[1, 2]", "not a deal confirmation"),
    ('{"deal_confirmation": "x"}', "deal_confirmation must be an object"),
    (with_field("id", ...), "id: missing"),
    (with_field("id", 42), "id must be a non-empty string"),
    (with_field("price", "20.64"), "price must be a JSON number"),
    (with_field("price", True), "price must be a JSON number"),
    ('{"deal_confirmation": {"price": NaN}}', "NaN is not a JSON number"),
    (with_field("quantity", 0), "quantity must be positive"),
    (with_field("quantity", -1.5), "quantity must be positive"),
    (with_field("direction", "BUY"), "direction must be 'buy' or 'sell'"),
    (with_field("direction", "hold"), "direction must be 'buy' or 'sell'"),
    (with_field("delivery_day", "2023-02-30"), "not a calendar date"),
    (with_field("delivery_day", "21.02.2023"), "delivery_day must be a 'YYYY-MM-DD'"),
    (with_field("delivery_hour", "15-17"), "delivery_hour must be 'HH-HH'"),
    (with_field("delivery_hour", "24-25"), "delivery_hour must be 'HH-HH'"),
    (with_field("trader_id", ""), "trader_id must be a non-empty string"),
    (with_field("id", "abc\u0000def"), "id must be printable text"),
    (with_field("price", 1e300), "price out of range"),
    ('{"deal_confirmation": {"quantity": 1e200000}}', "quantity must be positive and at most"),
    (with_field("execution_time", "2023-02-21T06:13:43"), "no UTC offset"),
    (with_field("execution_time", "yesterday"), "not ISO-8601"),
])
def test_bad_deals_are_rejected_with_reason(raw, reason):
    with pytest.raises(InvalidDeal) as caught:
        parse_deal(raw)
    assert reason in caught.value.reason


def test_negative_price_is_a_valid_power_price():
    assert parse_deal(with_field("price", -3.5)).price == Decimal("-3.5")


def test_tradable_hours_next_hour_to_end_of_next_day():
    hours = tradable_hours(datetime(2026, 11, 22, 8, 20, tzinfo=UTC))
    assert hours[0] == (date(2026, 11, 22), "09-10")
    assert hours[-1] == (date(2026, 11, 23), "23-24")
    assert len(hours) == 15 + 24
    late = tradable_hours(datetime(2026, 11, 22, 23, 59, tzinfo=UTC))
    assert late[0] == (date(2026, 11, 23), "00-01") and len(late) == 24


def test_emulator_deals_are_valid_and_malformed_ones_are_not():
    now = datetime(2026, 11, 22, 8, 20, tzinfo=UTC)
    factory = DealFactory(random.Random(3), traders=5)
    tradable = set(tradable_hours(now))
    for _ in range(200):
        deal = factory.deal(now)
        parsed = parse_deal(json.dumps({"deal_confirmation": deal}))
        assert (parsed.delivery_day, parsed.delivery_hour) in tradable
        assert 10 <= parsed.price <= 30 and 1 <= parsed.quantity <= 5
        assert parsed.trader_id in {f"flex_trader_{i}" for i in range(1, 6)}
    for kind in MALFORMED_KINDS:
        with pytest.raises(InvalidDeal):
            parse_deal(factory.malformed(now, kind)[1])


def test_emulator_streams_repeat_with_a_seed():
    now = datetime(2026, 11, 22, 8, 20, tzinfo=UTC)
    first = [DealFactory(random.Random("7:1"), 5).deal(now) for _ in range(1)]
    again = [DealFactory(random.Random("7:1"), 5).deal(now) for _ in range(1)]
    other = [DealFactory(random.Random("7:2"), 5).deal(now) for _ in range(1)]
    assert first == again and first != other
