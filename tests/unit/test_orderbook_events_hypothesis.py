"""Property tests of the order-event contract: whatever the bytes, ``parse_event`` returns
an event inside the contract or raises ``InvalidEvent`` with a code from the closed set and
a short reason, never anything else; accepted events round-trip through their wire format;
the two decoding paths (whole message / raw fields) agree."""

from __future__ import annotations

import json
import os
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from marketstream.orderbook import events
from marketstream.orderbook.events import (
    MAX_CREATED_AT, MAX_EVENT_BYTES, MAX_ORDER_ID, MAX_PRICE_SIZE, MAX_REASON_LENGTH, REASON_CODES, InvalidEvent,
    OrderEvent, event_to_json, from_units, parse_event, to_units,
)

# No example database (nothing written to the checkout) and no deadline: parse time is
# asserted by the unit tests, where a loaded machine cannot make it flaky.
# HYPOTHESIS_EXAMPLES=5000 for a longer search than the suite's.
PROPERTIES = settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "300")), deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

FIELDS = ("order_id", "status", "symbol", "order_side", "size", "price", "created_at")

# --- JSON text, numbers written as any literal JSON allows --------------------------------
number_literals = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,11})?", fullmatch=True),
    st.sampled_from(["1e5000", "1e999999999", "-1e999999999", "1e-9999999", "1e999999999999999999999",
                     "9" * 400, "-0", "-0.0", "0.00000001", "0.000000001", "9999999999.99999999", "1E10",
                     str(MAX_ORDER_ID), str(MAX_ORDER_ID + 1), "7.0", "1.5"]),
)
strings = st.one_of(st.text(max_size=40), st.sampled_from(["OPEN", "closed", " Buy ", "SELL", "BTC-USDT", ""]))
string_literals = strings.map(lambda s: json.dumps(s, ensure_ascii=False))
scalar_literals = st.one_of(st.just("null"), st.just("true"), st.just("false"), number_literals, string_literals)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: dict[str, str]) -> str:
    return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{v}" for k, v in pairs.items()) + "}"


json_literals = st.recursive(
    scalar_literals,
    lambda children: st.one_of(st.lists(children, max_size=4).map(_array),
                               st.dictionaries(st.text(max_size=8), children, max_size=4).map(_object)),
    max_leaves=24,
)
# Objects with the known field names (any values) are where the rules get exercised.
event_like = st.dictionaries(st.sampled_from(FIELDS + ("extra",)), json_literals, max_size=8).map(_object)


# --- Valid events, spelled in every way the contract allows ------------------------------
amounts = st.integers(1, MAX_PRICE_SIZE * 10**8 - 1).map(from_units)
created_ats = st.none() | st.integers(0, MAX_CREATED_AT * 10**8 - 1).map(
    from_units)
symbols = st.from_regex(r"[A-Za-z0-9._/:-]{1,32}", fullmatch=True)


@st.composite
def spelled(draw, value: Decimal) -> str:
    """One JSON literal for ``value``: plain, with trailing zeros, or with an exponent."""
    zeros = draw(st.integers(0, 6))
    form = draw(st.sampled_from(["plain", "zeros", "exponent"]))
    text = events.format_decimal(value)
    if form == "plain":
        return text
    if form == "zeros":
        return text + ("" if "." in text else ".") + "0" * (zeros + 1)
    units = int(value.scaleb(8))  # exact: at most 8 decimal places (created_at's may exceed int64)
    return f"{units * 10**zeros}{draw(st.sampled_from('eE'))}-{8 + zeros}"


@st.composite
def valid_events(draw) -> tuple[dict[str, str], OrderEvent]:
    order_id = draw(st.integers(0, MAX_ORDER_ID))
    status = draw(st.sampled_from(["OPEN", "CLOSED"]))
    created_at = draw(created_ats)
    fields = {"order_id": draw(st.sampled_from([str(order_id), f"{order_id}.0", f"{order_id}E0"])),
              "status": json.dumps(draw(st.sampled_from([status, status.lower(), f" {status.title()} "])))}
    if created_at is not None:
        fields["created_at"] = draw(spelled(created_at))
    if status == "CLOSED":
        return fields, OrderEvent(order_id=order_id, status=status, created_at=created_at)
    symbol, side, size, price = draw(symbols), draw(st.sampled_from(["BUY", "SELL"])), draw(amounts), draw(amounts)
    fields.update(symbol=json.dumps(symbol), order_side=json.dumps(draw(st.sampled_from([side, side.lower()]))),
                  size=draw(spelled(size)), price=draw(spelled(price)))
    if draw(st.booleans()):  # an unknown field, shallow enough for the depth bound
        fields["extra"] = draw(st.one_of(scalar_literals, st.lists(scalar_literals, max_size=4).map(_array)))
    return fields, OrderEvent(order_id=order_id, status=status, symbol=symbol, side=side, size=size, price=price,
                              created_at=created_at)


# --- What every outcome must satisfy -------------------------------------------------------

def outcome(raw) -> OrderEvent | InvalidEvent:
    """The parse result; any exception but ``InvalidEvent`` fails the test. The job's
    fast path (``parse_units``) must give the same answer every time."""
    try:
        event = parse_event(raw)
    except InvalidEvent as exc:
        assert exc.code in REASON_CODES
        assert exc.reason and len(exc.reason) <= MAX_REASON_LENGTH
        with pytest.raises(InvalidEvent) as fast:
            events.parse_units(raw)
        assert (fast.value.code, fast.value.reason) == (exc.code, exc.reason)
        return exc
    assert_inside_contract(event)
    assert parse_event(event_to_json(event)) == event  # round trip
    assert events.parse_units(raw) == (
        (event.order_id, True, event.symbol, event.side, to_units(event.price), to_units(event.size))
        if event.is_open else (event.order_id, False, None, None, None, None))
    return event


def normalised(number: Decimal) -> bool:
    """Whole numbers with exponent 0 (34010, not 3.401E+4), others without trailing zeros."""
    sign, digits, exponent = number.as_tuple()
    return exponent == 0 or (exponent < 0 and digits[-1] != 0)


def assert_inside_contract(event: OrderEvent) -> None:
    assert 0 <= event.order_id <= MAX_ORDER_ID and event.status in ("OPEN", "CLOSED")
    if event.created_at is not None:
        assert 0 <= event.created_at < MAX_CREATED_AT and normalised(event.created_at)
    if event.status == "OPEN":
        assert event.side in ("BUY", "SELL") and 1 <= len(event.symbol) <= 32
        for amount in (event.price, event.size):
            assert 0 < amount < MAX_PRICE_SIZE and normalised(amount)
            assert from_units(to_units(amount)) == amount


def same_outcome(a: OrderEvent | InvalidEvent, b: OrderEvent | InvalidEvent) -> bool:
    if isinstance(a, OrderEvent) or isinstance(b, OrderEvent):
        return a == b
    # bad_json reasons quote msgspec's byte position, which its two decoders count differently.
    return a.code == b.code and (a.code == "bad_json" or a.reason == b.reason)


def raw_path_outcome(data: bytes) -> OrderEvent | InvalidEvent:
    try:
        return events._parse_raw_fields(events._message_bytes(data))
    except InvalidEvent as exc:
        return exc


# --- The properties ------------------------------------------------------------------------

@PROPERTIES
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_invalid_event(data):
    outcome(data)


@PROPERTIES
@given(st.one_of(json_literals, event_like))
def test_random_json_never_raises_anything_but_invalid_event(text):
    data = text.encode()
    result = outcome(data)
    if len(data) <= MAX_EVENT_BYTES:
        assert same_outcome(result, raw_path_outcome(data))


@PROPERTIES
@given(valid_events())
def test_valid_events_in_any_spelling_parse_to_the_same_event(case):
    fields, expected = case
    text = _object(fields)
    assert parse_event(text.encode()) == expected
    assert raw_path_outcome(text.encode()) == expected
    assert outcome(event_to_json(expected)) == expected


@PROPERTIES
@given(valid_events(), st.sampled_from(FIELDS), st.one_of(st.none(), json_literals))
@example(case=({"order_id": "0", "status": '"CLOSED"'}, OrderEvent(order_id=0, status="CLOSED")), field="status",
         replacement='"OPEN"')
def test_valid_events_mutated_field_by_field(case, field, replacement):
    fields, expected = case
    fields = dict(fields)
    if replacement is None:
        fields.pop(field, None)
    else:
        fields[field] = replacement
    data = _object(fields).encode()
    result = outcome(data)
    if len(data) <= MAX_EVENT_BYTES:
        assert same_outcome(result, raw_path_outcome(data))
    if isinstance(result, InvalidEvent):
        # The mutation is the only thing that can be wrong, and the reason names its field
        # (a JSON-level failure names none); a close mutated into an open lacks what only
        # an open has, and the first of those checks is the symbol's.
        reopened = field == "status" and expected.status == "CLOSED" and result.reason == "missing symbol"
        assert field in result.reason or result.code in ("too_deep", "too_large", "bad_json") or reopened
        assert replacement is not None or result.code == "missing_field"
    elif field in ("symbol", "order_side", "size", "price") and result.status == "CLOSED":
        assert result == expected  # a close ignores the fields only an open needs

