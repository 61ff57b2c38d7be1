"""The exchange's deal confirmation: the deal contract and its parser.

A websocket message looks like::

    {"deal_confirmation": {"id": "3624e951…", "price": 20.64, "quantity": 1.2, "direction": "sell",
     "delivery_day": "2023-02-21", "delivery_hour": "15-16", "trader_id": "flex_trader_4",
     "execution_time": "2023-02-21T06:13:43+00:00"}}

``parse_deal`` turns one message into a ``Deal`` or raises ``InvalidDeal(reason, code)``:
``reason`` says what is wrong (field and value, shortened), ``code`` is one of
``DealReasonCode``, short and stable, for counting. The bounds are the constants below; the
package README's "Deal contract" table says the same in words.

Hostile input costs microseconds (the approach of ``marketstream.orderbook.events``): the
size is checked before anything else, then UTF-8 and the nesting depth, on the raw bytes;
msgspec then keeps each known field as its raw JSON text and skips unknown ones unbuilt, and
a number becomes an exact ``Decimal`` straight from its text, compared with its bounds by
its exponent before any arithmetic (``1e999999999`` is out of range at once, never a
``decimal.Overflow``). The listener puts the original bytes on the deals topic, so the
loader parses exactly what was received.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation
from enum import StrEnum
from typing import Any

import msgspec

# --- The deal contract ---------------------------------------------------------------
MAX_DEAL_BYTES = 4096  # a message (a real one is ~300 bytes, at most ~800), checked before parsing
MAX_JSON_DEPTH = 8  # the message object itself is depth 1, deal_confirmation depth 2
MAX_MAGNITUDE = 1_000_000  # |price| (EUR/MWh) and quantity (MW) at most this
MAX_DECIMALS = 6  # price and quantity: at most this many decimal places
MAX_TEXT_LENGTH = 200  # id, trader_id: 1..200 characters, not blank, no control character
MAX_TIMESTAMP_LENGTH = 64  # execution_time: ISO-8601 with a UTC offset, at most this long
DIRECTIONS = ("buy", "sell")
MAX_REASON_LENGTH = 300

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_HOUR = re.compile(r"(\d{2})-(\d{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # PostgreSQL text cannot even hold NUL
_MAGNITUDE_POWER = len(str(MAX_MAGNITUDE)) - 1  # MAX_MAGNITUDE is a power of ten
_SMALLEST = Decimal(1).scaleb(-MAX_DECIMALS)
# Rounding is an error, never a silent change; independent of the thread's decimal context.
_EXACT = Context(prec=40, traps=[Inexact, InvalidOperation])


class DealReasonCode(StrEnum):
    """Why a deal was dead-lettered: a closed set, stable across releases (metrics and the
    dashboard count by it). The names the order events share mean the same there."""

    TOO_LARGE = "too_large"  # message over MAX_DEAL_BYTES
    TOO_DEEP = "too_deep"  # JSON nested deeper than MAX_JSON_DEPTH
    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"  # empty or malformed
    NOT_OBJECT = "not_object"  # not an object with an object deal_confirmation
    MISSING_FIELD = "missing_field"  # absent or null
    WRONG_TYPE = "wrong_type"  # e.g. a string where a number belongs
    OUT_OF_RANGE = "out_of_range"  # a number outside its bounds
    BAD_VALUE = "bad_value"  # right type, not allowed: direction, date, hour, time, text
    # Not from the parser:
    TOO_LARGE_FOR_TOPIC = "too_large_for_topic"  # the producer or the broker refused the record's size
    REFUSED_BY_BROKER = "refused_by_broker"  # the broker refused the record otherwise (invalid, corrupt)
    FRAME_TOO_LARGE = "frame_too_large"  # the listener: a websocket message over MAX_FRAME_BYTES (connection closed)
    REFUSED_BY_DATABASE = "refused_by_database"  # the loader: a rule of the database the contract does not know
    INTERNAL_ERROR = "internal_error"  # an unexpected exception while handling one message


class InvalidDeal(ValueError):
    """A message that is not a valid deal confirmation: ``reason`` a sentence (at most
    ``MAX_REASON_LENGTH`` characters), ``code`` a ``DealReasonCode``."""

    def __init__(self, reason: str, code: DealReasonCode | str = DealReasonCode.BAD_VALUE):
        reason = str(reason) or "invalid deal"
        if len(reason) > MAX_REASON_LENGTH:
            reason = reason[: MAX_REASON_LENGTH - 1] + "…"
        super().__init__(reason)
        self.reason = reason
        self.code = DealReasonCode(code)


@dataclass(frozen=True, slots=True)
class Deal:
    id: str
    price: Decimal
    quantity: Decimal
    direction: str
    delivery_day: date
    delivery_hour: str
    trader_id: str
    execution_time: datetime

    def row(self) -> dict[str, Any]:
        """The ``trades`` row of this deal (without ``loaded_at``)."""
        return {
            "deal_id": self.id, "trader_id": self.trader_id, "direction": self.direction, "price": self.price,
            "quantity": self.quantity, "delivery_day": self.delivery_day, "delivery_hour": self.delivery_hour,
            "execution_time": self.execution_time,
        }


# --- Showing values in reasons -------------------------------------------------------
_SHOWN_CHARACTERS = 40


def _show(text: str) -> str:
    if len(text) <= _SHOWN_CHARACTERS:
        return repr(text)
    return f"{text[:_SHOWN_CHARACTERS]!r}… ({len(text):,} characters)"


# --- Field rules (shared with the reference-price ETL for the same kinds of value) --------

def check_delivery_hour(value: Any) -> str:
    """``HH-HH`` with the second hour one after the first: 00-01 … 23-24."""
    match = _HOUR.fullmatch(value) if isinstance(value, str) else None
    if not match or int(match[1]) > 23 or int(match[2]) != int(match[1]) + 1:
        raise ValueError(f"delivery_hour must be 'HH-HH' from 00-01 to 23-24, got {_show(str(value))}")
    return value


def check_delivery_day(value: Any) -> date:
    if not isinstance(value, str) or not _DAY.fullmatch(value):
        raise ValueError(f"delivery_day must be a 'YYYY-MM-DD' string, got {_show(str(value))}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"delivery_day is not a calendar date: {value!r}") from None


def check_number(name: str, value: Any) -> Decimal:
    """A finite JSON number (``int``, ``Decimal`` or ``float``) as a ``Decimal``; uses no
    decimal context, so no value can raise ``decimal.Overflow`` here."""
    # bool is an int in Python; a JSON true is still not a price.
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, float)):
        raise ValueError(f"{name} must be a JSON number, got {type(value).__name__} {_show(str(value))}")  # noqa: TRY004 - pydantic reports ValueError, not TypeError
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def check_timestamp(name: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO-8601 string, got {type(value).__name__} {_show(str(value))}")  # noqa: TRY004 - pydantic reports ValueError, not TypeError
    if len(value) > MAX_TIMESTAMP_LENGTH:
        raise ValueError(f"{name} is not ISO-8601: {_show(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not ISO-8601: {_show(value)}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name} has no UTC offset: {_show(value)}")
    return parsed.astimezone(UTC)


# --- Parsing bytes ---------------------------------------------------------------------
_NULL = msgspec.Raw(b"null")


class _Envelope(msgspec.Struct):
    deal_confirmation: msgspec.Raw = _NULL


class _RawDeal(msgspec.Struct):
    """The known fields, each as its raw JSON text (absent = ``null``); others are skipped."""

    id: msgspec.Raw = _NULL
    price: msgspec.Raw = _NULL
    quantity: msgspec.Raw = _NULL
    direction: msgspec.Raw = _NULL
    delivery_day: msgspec.Raw = _NULL
    delivery_hour: msgspec.Raw = _NULL
    trader_id: msgspec.Raw = _NULL
    execution_time: msgspec.Raw = _NULL


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_DEAL = msgspec.json.Decoder(_RawDeal)
_SYNTAX = msgspec.json.Decoder(msgspec.Raw)  # checks syntax, builds nothing
_STRING = msgspec.json.Decoder(str)
_JSON_TYPE_BY_FIRST_BYTE = {ord("["): "array", ord('"'): "string", ord("t"): "boolean", ord("f"): "boolean",
                            ord("n"): "null", ord("{"): "object"}
# Depth on raw bytes: strings removed, only the brackets kept (one kind: which kind does not
# change the depth), then innermost pairs removed one level a pass; a pair left after
# MAX_JSON_DEPTH passes = too deep. All in C (regex, translate, replace): at most ~100 us.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_ONE_BRACKET_KIND = bytes.maketrans(b"{}", b"[]")


def _message_bytes(raw: bytes | bytearray | memoryview | str | None) -> bytes:
    if raw is None:
        raise InvalidDeal("empty message", DealReasonCode.BAD_JSON)
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")  # a lone surrogate then fails the UTF-8 check
    elif not isinstance(raw, bytes):
        raw = bytes(raw)
    if len(raw) > MAX_DEAL_BYTES:
        raise InvalidDeal(f"message of {len(raw):,} bytes is over the {MAX_DEAL_BYTES:,}-byte limit",
                          DealReasonCode.TOO_LARGE)
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError as exc:
            raise InvalidDeal(f"not UTF-8 text (byte {exc.start})", DealReasonCode.NOT_UTF8) from None
    return raw


def _check_depth(data: bytes) -> None:
    """Before parsing. A count of brackets bounds the depth, so only a message with many
    needs the exact check. In malformed text the unmatched brackets that remain form no
    pair: it is left to the syntax check."""
    if data.count(b"{") + data.count(b"[") <= MAX_JSON_DEPTH:
        return
    brackets = _JSON_STRING.sub(b"", data).translate(_ONE_BRACKET_KIND, _NOT_BRACKETS)
    for _ in range(MAX_JSON_DEPTH):
        fewer = brackets.replace(b"[]", b"")
        if len(fewer) == len(brackets):  # no pair left: no deeper level either
            return
        brackets = fewer
    if b"[]" in brackets:
        raise InvalidDeal(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", DealReasonCode.TOO_DEEP)


def _bad_json(data: bytes, error: Exception) -> InvalidDeal:
    if not data.strip():
        return InvalidDeal("empty message", DealReasonCode.BAD_JSON)
    return InvalidDeal(f"not JSON: {str(error).removeprefix('JSON is malformed: ')}", DealReasonCode.BAD_JSON)


def _decode(decoder: msgspec.json.Decoder, data: bytes, what: str):
    try:
        return decoder.decode(data)
    except msgspec.ValidationError:  # valid JSON so far, but not an object
        try:
            _SYNTAX.decode(data)
        except msgspec.DecodeError as syntax_error:
            raise _bad_json(data, syntax_error) from None
        except RecursionError:  # unreachable after _check_depth; msgspec's own guard
            raise InvalidDeal(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", DealReasonCode.TOO_DEEP) from None
        got = _JSON_TYPE_BY_FIRST_BYTE.get(data.lstrip()[0], "number")
        raise InvalidDeal(f"{what} must be a JSON object, got {got}", DealReasonCode.NOT_OBJECT) from None
    except msgspec.DecodeError as exc:
        raise _bad_json(data, exc) from None
    except RecursionError:
        raise InvalidDeal(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", DealReasonCode.TOO_DEEP) from None


def _json_type(raw: bytes) -> str:
    return _JSON_TYPE_BY_FIRST_BYTE.get(raw[0], "number")


def _present(raw: msgspec.Raw, name: str) -> bytes:
    if raw is _NULL or bytes(raw) == b"null":
        raise InvalidDeal(f"{name}: missing", DealReasonCode.MISSING_FIELD)
    return bytes(raw)


def _string(raw: msgspec.Raw, name: str) -> str:
    text = _present(raw, name)
    if text[0] != ord('"'):
        raise InvalidDeal(f"{name} must be a string, got {_json_type(text)}", DealReasonCode.WRONG_TYPE)
    return _STRING.decode(text)  # escapes; msgspec has checked the syntax already


def _text(raw: msgspec.Raw, name: str) -> str:
    value = _string(raw, name)
    if not value.strip() or len(value) > MAX_TEXT_LENGTH or _CONTROL.search(value):
        raise InvalidDeal(f"{name} must be a non-empty string of printable text of at most {MAX_TEXT_LENGTH} "
                          f"characters, got {_show(value)}", DealReasonCode.BAD_VALUE)
    return value


def _number(raw: msgspec.Raw, name: str, positive: bool) -> Decimal:
    """A JSON number with |x| <= MAX_MAGNITUDE (0 < x with ``positive``) and at most
    MAX_DECIMALS decimal places, exactly as written."""
    text = _present(raw, name)
    if _json_type(text) != "number":
        raise InvalidDeal(f"{name} must be a JSON number, got {_json_type(text)}", DealReasonCode.WRONG_TYPE)
    shown = text.decode()
    try:
        number = Decimal(shown)  # a JSON number's text is a valid Decimal literal, linear in its length ...
    except InvalidOperation:  # ... unless its exponent is beyond Decimal's own
        raise InvalidDeal(f"{name} is out of range: {_show(shown)}", DealReasonCode.OUT_OF_RANGE) from None
    bound = f"0 < {name} <= {MAX_MAGNITUDE:,}" if positive else f"|{name}| <= {MAX_MAGNITUDE:,}"
    # The exponent of the first digit is free to read: the range before any arithmetic
    # (no operation here uses a decimal context, so nothing can overflow).
    if number and number.adjusted() >= _MAGNITUDE_POWER and number.copy_abs() > MAX_MAGNITUDE:
        raise InvalidDeal(f"{name} out of range ({bound}), got {_show(shown)}", DealReasonCode.OUT_OF_RANGE)
    if positive and number <= 0:
        raise InvalidDeal(f"{name} out of range ({bound}), got {_show(shown)}", DealReasonCode.OUT_OF_RANGE)
    dot = text.find(b".")
    plain = dot < 0 or len(text) - dot - 1 <= MAX_DECIMALS  # e.g. 20.64: few enough decimals as written
    if not (plain and b"e" not in text and b"E" not in text) and number.as_tuple().exponent < -MAX_DECIMALS:
        try:  # exact or an error: trailing zeros do not count (20.640000000 is 20.64)
            number = _EXACT.quantize(number, _SMALLEST)
        except DecimalException:
            raise InvalidDeal(f"{name} has more than {MAX_DECIMALS} decimal places: {_show(shown)}",
                              DealReasonCode.BAD_VALUE) from None
    return number


def _checked(check, raw: msgspec.Raw, name: str):
    value = _string(raw, name)
    try:
        return check(value)
    except ValueError as exc:
        raise InvalidDeal(str(exc), DealReasonCode.BAD_VALUE) from None


def _direction(raw: msgspec.Raw) -> str:
    value = _string(raw, "direction")
    if value not in DIRECTIONS:
        raise InvalidDeal(f"direction must be 'buy' or 'sell', got {_show(value)}", DealReasonCode.BAD_VALUE)
    return value


def parse_deal(raw: bytes | bytearray | memoryview | str | None) -> Deal:
    """The deal in one websocket message; ``InvalidDeal`` for anything else, never another
    exception. Checks run in this order: size, UTF-8, depth, JSON syntax, the object and its
    ``deal_confirmation`` object, then id, price, quantity, direction, delivery_day,
    delivery_hour, trader_id, execution_time; the first violation is the one reported."""
    data = _message_bytes(raw)
    _check_depth(data)
    body = _decode(_ENVELOPE, data, "the message").deal_confirmation
    if body is _NULL:
        raise InvalidDeal("not a deal confirmation: expected an object with key 'deal_confirmation'",
                          DealReasonCode.NOT_OBJECT)
    fields = _decode(_DEAL, bytes(body), "deal_confirmation")
    return Deal(
        id=_text(fields.id, "id"),
        price=_number(fields.price, "price", positive=False),
        quantity=_number(fields.quantity, "quantity", positive=True),
        direction=_direction(fields.direction),
        delivery_day=_checked(check_delivery_day, fields.delivery_day, "delivery_day"),
        delivery_hour=_checked(check_delivery_hour, fields.delivery_hour, "delivery_hour"),
        trader_id=_text(fields.trader_id, "trader_id"),
        execution_time=_checked(lambda v: check_timestamp("execution_time", v), fields.execution_time,
                                "execution_time"),
    )


# --- Writing ---------------------------------------------------------------------------

def deal_message(fields: dict[str, Any]) -> str:
    """The websocket text for one deal, as the exchange sends it."""
    return json.dumps({"deal_confirmation": fields}, default=_json_default)


def _json_default(value: Any):
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def tradable_hours(now: datetime) -> list[tuple[date, str]]:
    """Delivery hours open for trading at ``now``: from the next hour to the end of the next
    day (UTC), as ``(delivery_day, "HH-HH")``."""
    now = now.astimezone(UTC)
    first = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    end = datetime.combine(now.date() + timedelta(days=2), time(0), tzinfo=UTC)
    hours, slot = [], first
    while slot < end:
        hours.append((slot.date(), f"{slot.hour:02d}-{slot.hour + 1:02d}"))
        slot += timedelta(hours=1)
    return hours
