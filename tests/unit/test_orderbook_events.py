import json
import pickle
import time
from decimal import Decimal

import pytest

from marketstream.orderbook import events
from marketstream.orderbook.events import (
    MAX_CREATED_AT, MAX_EVENT_BYTES, MAX_JSON_DEPTH, MAX_ORDER_ID, MAX_PRICE_SIZE, MAX_REASON_LENGTH,
    MAX_SYMBOL_LENGTH, REASON_CODES, InvalidEvent, ReasonCode, csv_row_to_fields, event_to_json, format_decimal,
    from_units, parse_event, to_units, validate_fields,
)

OPEN = b'{"order_id":1,"symbol":"BTC-USDT","order_side":"BUY","size":1,"price":393078814.9,"status":"OPEN","created_at":1693973208}'


def open_event(**changes) -> dict:
    fields = {"order_id": 1, "symbol": "BTC-USDT", "order_side": "BUY", "size": 1, "price": 100, "status": "OPEN"}
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not ...}


def encode(fields: dict, *, long: bool = False) -> bytes:
    """JSON bytes; numbers given as strings are written verbatim (``{"price": "1e5000"}``
    becomes ``"price":1e5000``). ``long`` pads the message past the whole-message decoder's
    limit so the raw-field path parses it (both paths must agree)."""
    parts = [f"{json.dumps(k)}:{v.removeprefix('#') if isinstance(v, str) and v.startswith('#') else json.dumps(v, ensure_ascii=False)}"
             for k, v in fields.items()]
    if long:
        parts.append(f'"padding":"{"x" * 600}"')
    return ("{" + ",".join(parts) + "}").encode()


def num(text: str) -> str:
    """A number literal, written verbatim by ``encode``."""
    return "#" + text


def rejected(raw) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    assert caught.value.code in REASON_CODES and caught.value.reason
    return caught.value


def test_seed_open_event_parses_with_exact_decimals():
    event = parse_event(OPEN)
    assert (event.order_id, event.symbol, event.side, event.status) == (1, "BTC-USDT", "BUY", "OPEN")
    assert event.price == Decimal("393078814.9") and isinstance(event.price, Decimal)
    assert event.size == Decimal(1)


def test_close_event_needs_only_id_and_status():
    event = parse_event(b'{"order_id":1,"status":"CLOSED","created_at":1693973208}')
    assert (event.order_id, event.status, event.symbol, event.price) == (1, "CLOSED", None, None)


def test_a_close_does_not_look_at_the_fields_only_an_open_needs():
    event = parse_event(b'{"order_id":1,"status":"CLOSED","price":1e999999999,"symbol":[1],"size":"x"}')
    assert event.status == "CLOSED" and event.price is None


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


@pytest.mark.parametrize("long", [False, True], ids=["short", "long"])
def test_numbers_are_normalised_whatever_their_spelling(long):
    for spelling in ("34010", "34010.0", "34010.00000000000000000000000000000000", "3.401E4", "3401000000E-5"):
        event = parse_event(encode(open_event(price=num(spelling)), long=long))
        assert event.price == Decimal(34010) and str(event.price) == "34010", spelling
    event = parse_event(encode(open_event(size=num("0.10531000"), order_id=num("7.0E0")), long=long))
    assert str(event.size) == "0.10531" and event.order_id == 7


@pytest.mark.parametrize(
    "raw, reason, code",
    [
        (b"{not json", "bad JSON", "bad_json"),
        (b"", "empty message", "bad_json"),
        (b"  \n", "empty message", "bad_json"),
        (None, "empty message", "bad_json"),
        (b'{"order_id":1,"status":"CLOSED"} trailing', "bad JSON", "bad_json"),
        (b"\xff\xfe", "not UTF-8", "not_utf8"),
        (b'{"order_id":1,"status":"CLOSED","note":"\xc3"}', "not UTF-8", "not_utf8"),
        ("{\"order_id\":1,\"status\":\"CLOSED\",\"x\":\"\ud800\"}", "not UTF-8", "not_utf8"),
        (b"[1, 2]", "expected a JSON object, got array", "not_object"),
        (b'"text"', "expected a JSON object, got string", "not_object"),
        (b"5", "expected a JSON object, got number", "not_object"),
        (b"null", "expected a JSON object, got null", "not_object"),
        (b'{"status":"OPEN"}', "missing order_id", "missing_field"),
        (b'{"order_id":null,"status":"CLOSED"}', "missing order_id", "missing_field"),
        (b'{"order_id":"1","status":"CLOSED"}', "order_id must be an integer, got string", "wrong_type"),
        (b'{"order_id":1.5,"status":"CLOSED"}', "order_id must be an integer, got 1.5", "bad_value"),
        (b'{"order_id":true,"status":"CLOSED"}', "order_id must be an integer, got boolean", "wrong_type"),
        (b'{"order_id":[1],"status":"CLOSED"}', "order_id must be an integer, got array", "wrong_type"),
        (b'{"order_id":-3,"status":"CLOSED"}', "order_id must not be negative, got -3", "out_of_range"),
        (b'{"order_id":1}', "missing status", "missing_field"),
        (b'{"order_id":1,"status":"PENDING"}', "unknown status 'PENDING'", "bad_value"),
        (b'{"order_id":1,"status":"CLO\xc5\xbfED"}', "unknown status", "bad_value"),  # long s: no Unicode folding
        (b'{"order_id":1,"status":5}', "status must be a string, got number", "wrong_type"),
        (b'{"order_id":1,"status":"OPEN","order_side":"BUY","size":1,"price":1}', "missing symbol", "missing_field"),
        (b'{"order_id":1,"status":"OPEN","symbol":"","order_side":"BUY","size":1,"price":1}',
         "symbol must be a non-empty string", "bad_value"),
        (b'{"order_id":1,"status":"OPEN","symbol":7,"order_side":"BUY","size":1,"price":1}',
         "symbol must be a non-empty string, got number", "wrong_type"),
        (b'{"order_id":1,"status":"OPEN","symbol":"BTC USDT","order_side":"BUY","size":1,"price":1}',
         "symbol may only contain", "bad_value"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","size":1,"price":1}', "missing order_side", "missing_field"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"HOLD","size":1,"price":1}',
         "unknown order_side 'HOLD'", "bad_value"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":{},"size":1,"price":1}',
         "order_side must be a string, got object", "wrong_type"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"BUY","price":1}', "missing size", "missing_field"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"BUY","size":0,"price":1}',
         "size must be positive", "out_of_range"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"BUY","size":1,"price":-2}',
         "price must be positive", "out_of_range"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"BUY","size":"1","price":1}',
         "size must be a number, got string", "wrong_type"),
        (b'{"order_id":1,"status":"OPEN","symbol":"X","order_side":"BUY","size":1,"price":false}',
         "price must be a number, got boolean", "wrong_type"),
        (b'{"order_id":1,"status":"CLOSED","created_at":"yesterday"}', "created_at must be a number", "wrong_type"),
        (b'{"order_id":1,"status":"CLOSED","created_at":-1}', "created_at must be >= 0", "out_of_range"),
    ],
)
def test_every_rejection_has_a_reason_and_a_code(raw, reason, code):
    caught = rejected(raw)
    assert reason in caught.reason and caught.code == code


# --- Bounds: just inside and just outside each limit, on both decoding paths -------------

@pytest.mark.parametrize("long", [False, True], ids=["short", "long"])
@pytest.mark.parametrize(
    "field, inside, outside, code",
    [
        ("order_id", "0", "-1", "out_of_range"),
        ("order_id", str(MAX_ORDER_ID), str(MAX_ORDER_ID + 1), "out_of_range"),
        ("order_id", "9223372036854775807.0", "9223372036854775808.0", "out_of_range"),
        ("order_id", "9.223372036854775807E18", "9.223372036854775808E18", "out_of_range"),
        ("order_id", "42", "42.5", "bad_value"),
        ("order_id", "1", "1" * 21, "out_of_range"),
        ("price", "0.00000001", "0.000000009", "bad_value"),
        ("price", "0.00000001", "0", "out_of_range"),
        ("price", "9999999999.99999999", str(MAX_PRICE_SIZE), "out_of_range"),
        ("price", "9999999999", "1E10", "out_of_range"),
        ("price", "1.12345678", "1.123456789", "bad_value"),
        ("price", "9999999999.99999999", "9999999999.999999999", "bad_value"),
        ("size", "0.00000001", "-0.00000001", "out_of_range"),
        ("size", "9999999999.99999999", "10000000000.00000000", "out_of_range"),
        ("created_at", "0", "-0.00000001", "out_of_range"),
        ("created_at", str(MAX_CREATED_AT - 1), str(MAX_CREATED_AT), "out_of_range"),
        ("created_at", "1693973208.12345678", "1693973208.123456789", "bad_value"),
    ],
)
def test_numbers_at_their_bounds(field, inside, outside, code, long):
    event = parse_event(encode(open_event(**{field: num(inside)}), long=long))
    value = event.order_id if field == "order_id" else getattr(event, field)
    assert value == Decimal(inside)
    caught = rejected(encode(open_event(**{field: num(outside)}), long=long))
    assert caught.code == code and field in caught.reason


@pytest.mark.parametrize("long", [False, True], ids=["short", "long"])
def test_symbol_bounds(long):
    for symbol in ("X", "A" * MAX_SYMBOL_LENGTH, "BTC/USDT:PERP-1.x_y", "  ETH-USDT  "):
        assert parse_event(encode(open_event(symbol=symbol), long=long)).symbol == symbol.strip()
    for symbol, code in [("A" * (MAX_SYMBOL_LENGTH + 1), "bad_value"), ("", "bad_value"), (" ", "bad_value"),
                         ("BTCé", "bad_value"), ("BTC\nUSDT", "bad_value"), (None, "missing_field"),
                         (["BTC"], "wrong_type")]:
        assert rejected(encode(open_event(symbol=symbol), long=long)).code == code, symbol


@pytest.mark.parametrize("long", [False, True], ids=["short", "long"])
def test_status_and_side_ignore_case_and_surrounding_blanks(long):
    event = parse_event(encode(open_event(status=" open\t", order_side="sElL "), long=long))
    assert (event.status, event.side) == ("OPEN", "SELL")


def test_message_size_bound_is_in_bytes():
    base = encode(open_event(note=""))
    fits = base.replace(b'"note":""', b'"note":"' + b"x" * (MAX_EVENT_BYTES - len(base)) + b'"')
    assert len(fits) == MAX_EVENT_BYTES and parse_event(fits).order_id == 1
    assert parse_event(fits.decode()).order_id == 1
    over = fits.replace(b'"note":"', b'"note":"x')
    assert rejected(over).code == "too_large" and rejected(over.decode()).code == "too_large"
    # 2,100 two-byte characters: under the limit in characters, over it in bytes.
    wide = encode(open_event(note="é" * 2100)).decode()
    assert len(wide) < MAX_EVENT_BYTES < len(wide.encode()) and rejected(wide).code == "too_large"


@pytest.mark.parametrize("long", [False, True], ids=["short", "long"])
def test_nesting_depth_bound(long):
    def nested(depth: int) -> bytes:  # the event object is level 1
        inner = "[" * (depth - 1) + "1" + "]" * (depth - 1)
        return encode(open_event(extra=num(inner)), long=long)

    assert parse_event(nested(MAX_JSON_DEPTH)).order_id == 1
    assert rejected(nested(MAX_JSON_DEPTH + 1)).code == "too_deep"
    # Brackets in strings and many shallow containers are not depth.
    assert parse_event(encode(open_event(note="[[[[[[[[[[{{{{{{{{{{", more=num('[[],{},[{"a":[1]}],[],[],[],[],[]]')),
                              long=long)).order_id == 1
    assert rejected(("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)).encode()).code == "too_deep"
    assert rejected(b"[" * 2000 + b"]" * 2000).code == "too_deep"  # 4,000 bytes: within the size bound
    assert rejected(b"[" * 4000).code == "too_deep"  # and unbalanced


@pytest.mark.parametrize("field", ["extra", "price", "size", "created_at"])
def test_the_fast_path_rejects_what_is_too_deep_in_any_field(field):
    """``parse_units`` answers typical events without ``parse_event``; its depth guard is
    what keeps it from accepting nesting that msgspec skips (an unknown field) or that a
    later duplicate key overwrites (a typed field)."""
    deep = encode(open_event(**{field: num("[" * MAX_JSON_DEPTH + "1" + "]" * MAX_JSON_DEPTH)}))
    overwritten = deep[:-1] + f',"{field}":1}}'.encode()
    for raw in (deep, overwritten):
        with pytest.raises(InvalidEvent) as caught:
            events.parse_units(raw)
        assert caught.value.code == "too_deep"
    shallow = "[" * (MAX_JSON_DEPTH - 1) + "1" + "]" * (MAX_JSON_DEPTH - 1)
    assert events.parse_units(encode(open_event(extra=num(shallow))))[0] == 1


# --- Hostile cases: each rejected with its code in microseconds --------------------------

HOSTILE = [
    ('{"order_id":1e5000,"status":"CLOSED"}', "out_of_range"),
    ('{"order_id":%s,"status":"CLOSED"}' % ("9" * 5001), "too_large"),
    ('{"order_id":%s,"status":"CLOSED"}' % ("9" * 4000), "out_of_range"),
    ('{"order_id":1e3000000,"status":"CLOSED"}', "out_of_range"),
    ('{"order_id":1e999999999,"status":"CLOSED"}', "out_of_range"),
    ('{"order_id":1e999999999999999999999,"status":"CLOSED"}', "out_of_range"),
    ('{"order_id":-1e999999999,"status":"CLOSED"}', "out_of_range"),
    ('{"order_id":1e-999999999,"status":"CLOSED"}', "bad_value"),
    (json.dumps(open_event(price=1)).replace('"price": 1', '"price": 1e5000'), "out_of_range"),
    (json.dumps(open_event(price=1)).replace('"price": 1', '"price": 1e9999999'), "out_of_range"),
    (json.dumps(open_event(price=1)).replace('"price": 1', '"price": 1e-9999999'), "bad_value"),
    (json.dumps(open_event(size=1)).replace('"size": 1', '"size": 0.%s1' % ("0" * 3900)), "bad_value"),
    (json.dumps(open_event(size=1)).replace('"size": 1', '"size": %s' % ("9" * 3900)), "out_of_range"),
    ('{"order_id":1,"status":"CLOSED","created_at":1e-999999999}', "bad_value"),
    ('{"order_id":1,"status":"CLOSED","x":%s}' % ("9" * 4000), None),  # unknown field: ignored, cheaply
    ("[" * 100_000 + "]" * 100_000, "too_large"),
    ("[" * 2_040 + "]" * 2_040, "too_deep"),
    ('{"order_id":1,"status":"CLOSED","x":"%s"}' % ("x" * 10_000_000), "too_large"),
]


@pytest.mark.parametrize("raw, code", HOSTILE, ids=[f"{raw[:40]}...{len(raw)}" for raw, _ in HOSTILE])
def test_hostile_messages_are_rejected_with_their_code_in_microseconds(raw, code):
    data = raw.encode()
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        try:
            outcome = parse_event(data).status
        except InvalidEvent as exc:
            outcome = exc.code
            assert len(exc.reason) <= 200, exc.reason  # the value shortened, never pasted whole
        timings.append(time.perf_counter() - started)
    assert outcome == (code or "CLOSED")
    assert min(timings) < 0.005, f"{min(timings) * 1e3:.1f} ms"


def test_validate_fields_has_the_same_bounds_cheaply():
    started = time.perf_counter()
    with pytest.raises(InvalidEvent) as caught:
        validate_fields({"order_id": 10**5000, "status": "CLOSED"})
    assert caught.value.code == "out_of_range" and "bits" in caught.value.reason
    with pytest.raises(InvalidEvent) as caught:
        validate_fields(open_event(price=Decimal("1e999999999")))
    assert caught.value.code == "out_of_range"
    assert time.perf_counter() - started < 0.005
    with pytest.raises(InvalidEvent) as caught:
        validate_fields(open_event(size=Decimal("NaN")))
    assert caught.value.code == "out_of_range"
    with pytest.raises(InvalidEvent) as caught:
        validate_fields(open_event(size=1.5))  # a binary float is not an exact number
    assert caught.value.code == "wrong_type"
    assert validate_fields(open_event(size=Decimal("2.50"))).size == Decimal("2.5")


def test_csv_numbers_follow_the_same_rules_cheaply():
    row = {"order_id": "9" * 5000, "symbol": "X", "order_side": "BUY", "size": "1", "price": "1", "status": "OPEN"}
    started = time.perf_counter()
    with pytest.raises(InvalidEvent) as caught:
        validate_fields(csv_row_to_fields(row))
    assert caught.value.code == "out_of_range" and time.perf_counter() - started < 0.005
    row.update(order_id="12", price="34010.0", created_at="")
    event = validate_fields(csv_row_to_fields(row))
    assert (event.order_id, str(event.price), event.created_at) == (12, "34010", None)


# --- Reasons and codes -----------------------------------------------------------------

def test_reason_codes_are_a_closed_set():
    assert REASON_CODES == {"too_large", "too_deep", "not_utf8", "bad_json", "not_object", "missing_field",
                            "wrong_type", "out_of_range", "bad_value", "symbol_limit", "closed_id_limit",
                            "internal_error"}
    assert InvalidEvent("over the limit", "symbol_limit").code is ReasonCode.SYMBOL_LIMIT
    with pytest.raises(ValueError):
        InvalidEvent("x", "no_such_code")


def test_invalid_event_is_a_value_error_that_survives_pickling():
    exc = InvalidEvent("price must be positive, got 0", ReasonCode.OUT_OF_RANGE)
    assert isinstance(exc, ValueError) and str(exc) == exc.reason
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.reason, copy.code) == (exc.reason, "out_of_range")


def test_reasons_are_bounded_and_show_values_shortened():
    long_symbol = "A" * 4000
    caught = rejected(encode(open_event(symbol=long_symbol)))
    assert "4,000" in caught.reason and long_symbol not in caught.reason and len(caught.reason) < 200
    assert len(InvalidEvent("x" * 10**6, "internal_error").reason) == MAX_REASON_LENGTH


# --- Units and formatting --------------------------------------------------------------

@pytest.mark.parametrize(
    "amount, units",
    [("0.00000001", 1), ("1", 100_000_000), ("34010.0", 3_401_000_000_000), ("0.10531", 10_531_000),
     ("9999999999.99999999", 999_999_999_999_999_999), ("-5.5", -550_000_000), ("0", 0),
     ("92233720368.54775807", 2**63 - 1), ("-92233720368.54775808", -(2**63))],
)
def test_units_are_exact_both_ways_at_the_bounds(amount, units):
    assert to_units(Decimal(amount)) == units
    assert from_units(units) == Decimal(amount)
    assert from_units(units) == Decimal(format_decimal(from_units(units)))


@pytest.mark.parametrize("amount", ["0.000000001", "92233720368.54775808", "1e999999999", "NaN", "1e-999999999"])
def test_to_units_refuses_what_is_not_a_whole_int64_of_units(amount):
    started = time.perf_counter()
    with pytest.raises(ValueError):
        to_units(Decimal(amount))
    assert time.perf_counter() - started < 0.005


def test_from_units_takes_amounts_beyond_int64_and_normalises():
    # A level's amount is a sum of sizes: it can outgrow 64 bits and must stay exact.
    assert from_units(2**63 * (10**18 - 1)) == Decimal("92233720368547757987766279631.45224192")
    assert str(from_units(3_401_000_000_000)) == "34010" and str(from_units(10_531_000)) == "0.10531"
    assert format_decimal(from_units(1)) == "0.00000001"


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


def test_both_decoding_paths_are_exercised():
    assert len(encode(open_event())) <= events._DECODE_WHOLE_MAX_BYTES < len(encode(open_event(), long=True))
