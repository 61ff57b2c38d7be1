from decimal import Decimal

import pytest

from marketstream.orderbook.events import InvalidEvent, event_to_json, format_decimal, parse_event

OPEN = b'{"order_id":1,"symbol":"BTC-USDT","order_side":"BUY","size":1,"price":393078814.9,"status":"OPEN","created_at":1693973208}'


def test_seed_open_event_parses_with_exact_decimals():
    event = parse_event(OPEN)
    assert (event.order_id, event.symbol, event.side, event.status) == (1, "BTC-USDT", "BUY", "OPEN")
    assert event.price == Decimal("393078814.9") and isinstance(event.price, Decimal)
    assert event.size == Decimal(1)


def test_close_event_needs_only_id_and_status():
    event = parse_event(b'{"order_id":1,"status":"CLOSED","created_at":1693973208}')
    assert (event.order_id, event.status, event.symbol, event.price) == (1, "CLOSED", None, None)


def test_pretty_printed_json_nulls_and_float_numbers_are_valid():
    raw = b"""{
      "order_id": 7.0,
      "symbol": "ETH-USDT",
      "order_side": "sell",
      "size": 34010.0,
      "price": 1800.50,
      "status": "open",
      "created_at": null
    }"""
    event = parse_event(raw)
    assert (event.order_id, event.side, event.status) == (7, "SELL", "OPEN")
    assert event.size == Decimal("34010") and event.price == Decimal("1800.5")
    closed = parse_event(b'{"order_id":7,"symbol":null,"order_side":null,"size":null,"price":null,"status":"CLOSED"}')
    assert closed.status == "CLOSED"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{not json", "bad JSON"),
        (b"", "empty message"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"status":"OPEN"}', "missing order_id"),
        (b'{"order_id":null,"status":"CLOSED"}', "missing order_id"),
        (b'{"order_id":"1","status":"CLOSED"}', "order_id must be an integer"),
        (b'{"order_id":1.5,"status":"CLOSED"}', "order_id must be an integer"),
        (b'{"order_id":true,"status":"CLOSED"}', "order_id must be an integer"),
        (b'{"order_id":-3,"status":"CLOSED"}', "order_id must not be negative"),
        (b'{"order_id":1}', "missing status"),
        (b'{"order_id":1,"status":"PENDING"}', "unknown status"),
        (b'{"order_id":1,"status":5}', "status must be a string"),
        (b'{"order_id":1,"status":"OPEN","order_side":"BUY","size":1,"price":1}', "missing symbol"),
        (b'{"order_id":1,"status":"OPEN","symbol":"","order_side":"BUY","size":1,"price":1}', "symbol must be a non-empty string"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","size":1,"price":1}', "missing order_side"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"HOLD","size":1,"price":1}', "unknown order_side"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"BUY","price":1}', "missing size"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"BUY","size":0,"price":1}', "size must be positive"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"BUY","size":1,"price":-2}', "price must be positive"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"BUY","size":"1","price":1}', "size must be a number"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"BUY","size":1,"price":false}', "price must be a number"),
        (b'{"order_id":1,"status":"CLOSED","created_at":"yesterday"}', "created_at must be a number"),
    ],
)
def test_every_rejection_has_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    "value, text",
    [("34010.0", "34010"), ("0.10531", "0.10531"), ("221760.4797880", "221760.479788"),
     ("1E+3", "1000"), ("0.00000001", "0.00000001"), ("177.6", "177.6")],
)
def test_decimal_formatting_has_no_exponent_or_noise(value, text):
    assert format_decimal(Decimal(value)) == text


def test_event_round_trips_through_its_wire_format():
    event = parse_event(OPEN)
    assert parse_event(event_to_json(event)) == event
