"""Order events: the input contract and its parser.

``parse_event`` turns one Kafka record value into an ``OrderEvent`` or raises
``InvalidEvent(reason, code)``: ``reason`` says exactly what is wrong (field and value, the
value shortened), ``code`` is one of ``ReasonCode``, short and stable, for counting and
alerting. The contract's bounds are the constants below; the README's "Input contract"
table says the same in words.

Hostile input costs microseconds, never more: the size is checked before anything else,
then UTF-8, the JSON syntax (msgspec) and the nesting depth, and a number is compared with
its bounds by its exponent before any arithmetic. A message too long for every number in it
to be cheap is decoded field by field from raw text, so no integer literal of thousands of
digits ever reaches int(). Numbers become exact ``Decimal``s straight from the JSON text
(``34010.0`` never passes through a binary float) and are normalised, so ``34010.0`` and
``34010`` give the same event.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation
from enum import StrEnum
from typing import Any, Callable, Mapping

import msgspec

OPEN = "OPEN"
CLOSED = "CLOSED"
BUY = "BUY"
SELL = "SELL"
SIDES = (BUY, SELL)
# A side as the order-book job stores and ships it (one small int an order, not a string).
BUY_CODE, SELL_CODE = 1, 0
SIDE_CODES = {BUY: BUY_CODE, SELL: SELL_CODE}
SIDE_NAMES = {BUY_CODE: BUY, SELL_CODE: SELL}
STATUSES = (OPEN, CLOSED)

# --- The input contract --------------------------------------------------------------
MAX_EVENT_BYTES = 4096  # a record value, checked before parsing
MAX_JSON_DEPTH = 8  # the event object itself is depth 1
MAX_ORDER_ID = 2**63 - 1  # order_id: an integer in 0 .. MAX_ORDER_ID (signed 64-bit)
MAX_PRICE_SIZE = 10**10  # price and size: 0 < x < MAX_PRICE_SIZE ...
PRICE_SIZE_DECIMALS = 8  # ... with at most this many decimal places
MAX_CREATED_AT = 10**18  # created_at (optional): 0 <= x < MAX_CREATED_AT, same decimal places
MAX_SYMBOL_LENGTH = 32
SYMBOL_CHARACTERS = "A-Z a-z 0-9 . _ / : -"
_SYMBOL = re.compile(r"[A-Za-z0-9._/:-]+")
# So every price and size is a whole number of 1e-8 units below 10**18: an int64.
UNIT = Decimal(1).scaleb(-PRICE_SIZE_DECIMALS)
# The upper bounds are powers of ten, so a Decimal is compared by its exponent alone.
_PRICE_SIZE_POWER, _CREATED_AT_POWER = len(str(MAX_PRICE_SIZE)) - 1, len(str(MAX_CREATED_AT)) - 1
MAX_REASON_LENGTH = 300


class ReasonCode(StrEnum):
    """Why an event was rejected: a closed set, stable across releases (dashboards and
    alerts count by it). The parser uses all but the last two."""

    TOO_LARGE = "too_large"  # record value over MAX_EVENT_BYTES
    TOO_DEEP = "too_deep"  # JSON nested deeper than MAX_JSON_DEPTH
    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"  # empty or malformed
    NOT_OBJECT = "not_object"  # valid JSON, but not an object
    MISSING_FIELD = "missing_field"  # absent or null
    WRONG_TYPE = "wrong_type"  # e.g. a string where a number belongs
    OUT_OF_RANGE = "out_of_range"  # a number outside its bounds
    BAD_VALUE = "bad_value"  # right type, not allowed: unknown status/side, bad symbol, too many decimals
    SYMBOL_LIMIT = "symbol_limit"  # the book: an OPEN for a symbol beyond BOOK_MAX_SYMBOLS
    CLOSED_ID_LIMIT = "closed_id_limit"  # the book: a CLOSE whose id could not be remembered (CLOSED_ID_MAX)
    INTERNAL_ERROR = "internal_error"  # the job: an unexpected exception while handling one event


REASON_CODES = frozenset(ReasonCode)


class InvalidEvent(ValueError):
    """An event that cannot be applied: ``reason`` a human sentence (at most
    ``MAX_REASON_LENGTH`` characters), ``code`` a ``ReasonCode``."""

    def __init__(self, reason: str, code: ReasonCode | str = ReasonCode.BAD_VALUE):
        reason = str(reason) or "invalid event"
        if len(reason) > MAX_REASON_LENGTH:
            reason = reason[: MAX_REASON_LENGTH - 1] + "…"
        super().__init__(reason)
        self.reason = reason
        self.code = ReasonCode(code)  # an unknown code is a programming error: ValueError


class OrderEvent(msgspec.Struct, frozen=True, gc=False):
    """One valid event. A frozen msgspec Struct: built in 0.07 us where a frozen dataclass
    took 1 us, a fifth of the whole parse (gc=False: its fields are never containers)."""

    order_id: int
    status: str
    symbol: str | None = None
    side: str | None = None
    size: Decimal | None = None
    price: Decimal | None = None
    created_at: Decimal | None = None

    @property
    def is_open(self) -> bool:
        return self.status == OPEN


# --- Exact 1e-8 units ----------------------------------------------------------------
# Wide enough for every int64 of units, and any rounding is an error, not a silent change:
# results never depend on the caller's (thread-local) decimal context.
_EXACT = Context(prec=40, traps=[Inexact, InvalidOperation])
_ONE = Decimal(1)
_INT64_MAX = 2**63 - 1
# Amounts (sums of sizes) in from_units: up to 2**63 orders of the largest size, exactly.
_AMOUNTS = Context(prec=60, traps=[Inexact, InvalidOperation])


def to_units(amount: Decimal) -> int:
    """``amount`` as a whole number of 1e-8 units, exactly; ``ValueError`` when it has more
    than ``PRICE_SIZE_DECIMALS`` decimal places or its units do not fit a signed int64."""
    if not amount.is_finite() or (amount and amount.adjusted() > 10):  # cheap guard before scaling
        raise ValueError(f"{_show_number(amount)} is not a whole number of 1e-8 units in the int64 range")
    try:
        units = int(_EXACT.quantize(amount, UNIT).scaleb(PRICE_SIZE_DECIMALS, _EXACT))
    except DecimalException:
        raise ValueError(f"{_show_number(amount)} has more than {PRICE_SIZE_DECIMALS} decimal places") from None
    if not -_INT64_MAX - 1 <= units <= _INT64_MAX:
        raise ValueError(f"{_show_number(amount)} does not fit a signed int64 of 1e-8 units")
    return units


def from_units(units: int) -> Decimal:
    """The ``Decimal`` of a whole number of 1e-8 units, exactly, normalised (no trailing
    zeros, no exponent for whole numbers). Any size: a level's amount, a sum of sizes,
    can outgrow 64 bits."""
    whole, fraction = divmod(units, 10**PRICE_SIZE_DECIMALS)
    if not fraction:
        return Decimal(whole)
    return Decimal(units).scaleb(-PRICE_SIZE_DECIMALS, _AMOUNTS).normalize(_AMOUNTS)


# --- Showing values in reasons -------------------------------------------------------
_SHOWN_CHARACTERS = 40


def _show_text(value: str) -> str:
    """A string as it appears in a reason: quoted, at most ~40 characters."""
    if len(value) <= _SHOWN_CHARACTERS:
        return repr(value)
    return f"{value[:_SHOWN_CHARACTERS]!r}… ({len(value):,} characters)"


def _show_number(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 13_000:  # str() refuses > 4,300 digits
        return f"an integer of {value.bit_length():,} bits"
    text = str(value)
    if len(text) <= _SHOWN_CHARACTERS:
        return text
    return f"{text[:_SHOWN_CHARACTERS]}… ({len(text):,} characters)"


class _Container:
    """A JSON array or object in a known field: never built, only named in the reason."""

    def __init__(self, json_type: str):
        self.json_type = json_type


_ARRAY, _OBJECT = _Container("array"), _Container("object")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, _Container):
        return value.json_type
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__  # e.g. float, from a caller's own mapping


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


# --- Field rules (one place: parse_event and validate_fields both use them) ------------

def _order_id(value: Any) -> int:
    if value is None:
        raise InvalidEvent("missing order_id", ReasonCode.MISSING_FIELD)
    if not _is_number(value):
        raise InvalidEvent(f"order_id must be an integer, got {_json_type(value)}", ReasonCode.WRONG_TYPE)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidEvent(f"order_id must be an integer, got {value}", ReasonCode.BAD_VALUE)
        # Range before integrality: adjusted() is the exponent of the first digit, free to read.
        if value and value.adjusted() > 18:
            if value < 0:
                raise InvalidEvent(f"order_id must not be negative, got {_show_number(value)}", ReasonCode.OUT_OF_RANGE)
            raise InvalidEvent(f"order_id must be at most {MAX_ORDER_ID}, got {_show_number(value)}",
                               ReasonCode.OUT_OF_RANGE)
        if value != value.to_integral_value():
            raise InvalidEvent(f"order_id must be an integer, got {_show_number(value)}", ReasonCode.BAD_VALUE)
        value = int(value)
    if value < 0:
        raise InvalidEvent(f"order_id must not be negative, got {_show_number(value)}", ReasonCode.OUT_OF_RANGE)
    if value > MAX_ORDER_ID:
        raise InvalidEvent(f"order_id must be at most {MAX_ORDER_ID}, got {_show_number(value)}", ReasonCode.OUT_OF_RANGE)
    return value


def _bounded_decimal(value: Any, name: str, zero_allowed: bool, below: int, below_power: int) -> Decimal:
    """A number ``0 < value < below`` (``0 <=`` with ``zero_allowed``; ``below`` is
    ``10**below_power``) with at most ``PRICE_SIZE_DECIMALS`` decimal places, normalised.
    The caller has checked presence."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 < value < below or (zero_allowed and value == 0):
            return Decimal(value)
    elif not isinstance(value, Decimal):
        raise InvalidEvent(f"{name} must be a number, got {_json_type(value)}", ReasonCode.WRONG_TYPE)
    elif value.is_finite() and value > 0:
        # The exponent of the first digit is free to read: the range before any arithmetic.
        magnitude = value.adjusted()
        if -PRICE_SIZE_DECIMALS <= magnitude < below_power:
            try:
                exact = _EXACT.quantize(value, UNIT)  # traps Inexact: more decimal places
            except DecimalException:
                pass
            else:
                if exact == exact.to_integral_value():
                    return _EXACT.quantize(exact, _ONE)
                return exact.normalize(_EXACT)
        if magnitude < below_power:
            raise InvalidEvent(f"{name} has more than {PRICE_SIZE_DECIMALS} decimal places: {_show_number(value)}",
                               ReasonCode.BAD_VALUE)
    elif not value.is_finite():
        raise InvalidEvent(f"{name} must be finite, got {value}", ReasonCode.OUT_OF_RANGE)
    elif not value and zero_allowed:
        return Decimal(0)
    # Out of range: an int or a finite Decimal.
    if value < 0 or (value == 0 and not zero_allowed):
        raise InvalidEvent(f"{name} must be {'>= 0' if zero_allowed else 'positive'}, got {_show_number(value)}",
                           ReasonCode.OUT_OF_RANGE)
    raise InvalidEvent(f"{name} must be below {below}, got {_show_number(value)}", ReasonCode.OUT_OF_RANGE)


def _amount(value: Any, name: str) -> Decimal:
    if value is None:
        raise InvalidEvent(f"missing {name}", ReasonCode.MISSING_FIELD)
    return _bounded_decimal(value, name, False, MAX_PRICE_SIZE, _PRICE_SIZE_POWER)


def _choice(value: Any, name: str, allowed: tuple[str, ...], unknown: str) -> str:
    if value is None:
        raise InvalidEvent(f"missing {name}", ReasonCode.MISSING_FIELD)
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} must be a string, got {_json_type(value)}", ReasonCode.WRONG_TYPE)
    choice = value.strip()
    if choice.isascii():  # no Unicode case folding: "CLOſED".upper() would be "CLOSED"
        choice = choice.upper()
    if choice not in allowed:
        raise InvalidEvent(f"{unknown} {_show_text(value)}", ReasonCode.BAD_VALUE)
    return choice


def _symbol(value: Any) -> str:
    if value is None:
        raise InvalidEvent("missing symbol", ReasonCode.MISSING_FIELD)
    if not isinstance(value, str):
        raise InvalidEvent(f"symbol must be a non-empty string, got {_json_type(value)}", ReasonCode.WRONG_TYPE)
    symbol = value.strip()
    if not symbol:
        raise InvalidEvent(f"symbol must be a non-empty string, got {_show_text(value)}", ReasonCode.BAD_VALUE)
    if len(symbol) > MAX_SYMBOL_LENGTH:
        raise InvalidEvent(f"symbol must be at most {MAX_SYMBOL_LENGTH} characters, got {len(symbol):,}: "
                           f"{_show_text(symbol)}", ReasonCode.BAD_VALUE)
    if not _SYMBOL.fullmatch(symbol):
        raise InvalidEvent(f"symbol may only contain {SYMBOL_CHARACTERS}, got {_show_text(symbol)}",
                           ReasonCode.BAD_VALUE)
    return symbol


def _validate(get: Callable[[str], Any]) -> OrderEvent:
    order_id = _order_id(get("order_id"))
    status = _choice(get("status"), "status", STATUSES, "unknown status")
    created_at = get("created_at")
    if created_at is not None:
        created_at = _bounded_decimal(created_at, "created_at", True, MAX_CREATED_AT, _CREATED_AT_POWER)
    if status == CLOSED:  # a close names only its order: other fields are not looked at
        return OrderEvent(order_id=order_id, status=CLOSED, created_at=created_at)
    return OrderEvent(
        order_id=order_id,
        status=OPEN,
        symbol=_symbol(get("symbol")),
        side=_choice(get("order_side"), "order_side", SIDES, "unknown order_side"),
        size=_amount(get("size"), "size"),
        price=_amount(get("price"), "price"),
        created_at=created_at,
    )


def validate_fields(fields: Mapping[str, Any]) -> OrderEvent:
    """Validate an already decoded event (numbers as ``int`` or ``Decimal``; absent and
    ``None`` are the same thing) against the same contract as ``parse_event``."""
    return _validate(fields.get)


# --- Parsing bytes ---------------------------------------------------------------------
# Two decoders, one result. Every real event is short, and in a short message no number can
# be costly: msgspec decodes it whole, numbers straight to int and Decimal (fast). In a
# longer one an integer literal could have thousands of digits (int() is quadratic), so
# msgspec keeps each known field as its raw text, skips unknown fields unbuilt, and the
# parser converts a number only after its length or exponent says it is in range.
_DECODE_WHOLE_MAX_BYTES = 512  # an integer literal of <= 510 digits converts in ~2 us
_WHOLE = msgspec.json.Decoder(float_hook=Decimal)
_NULL = msgspec.Raw(b"null")


class _RawFields(msgspec.Struct):
    """The known fields, each as its raw JSON text (absent = ``null``)."""

    order_id: msgspec.Raw = _NULL
    status: msgspec.Raw = _NULL
    symbol: msgspec.Raw = _NULL
    order_side: msgspec.Raw = _NULL
    size: msgspec.Raw = _NULL
    price: msgspec.Raw = _NULL
    created_at: msgspec.Raw = _NULL


_FIELDS = msgspec.json.Decoder(_RawFields)
_SYNTAX = msgspec.json.Decoder(msgspec.Raw)  # checks a whole document's syntax, builds nothing
_LONGEST_INT_TEXT = len(str(-_INT64_MAX))  # longer integer literals are out of range unread
_QUOTE, _BACKSLASH, _MINUS = ord('"'), ord("\\"), ord("-")
_OTHER_JSON = {ord("n"): None, ord("t"): True, ord("f"): False, ord("["): _ARRAY, ord("{"): _OBJECT}
# Depth, once msgspec has accepted the syntax: strings blanked, innermost containers removed
# pass by pass; brackets left after MAX_JSON_DEPTH passes = too deep.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_INNERMOST_CONTAINER = re.compile(rb"\[[^\[\]{}]*\]|\{[^\[\]{}]*\}")


def _message_bytes(raw: bytes | bytearray | memoryview | str | None) -> bytes:
    if raw is None:
        raise InvalidEvent("empty message (null value)", ReasonCode.BAD_JSON)
    if isinstance(raw, str):
        if len(raw) > MAX_EVENT_BYTES:  # every character is at least one byte
            raise InvalidEvent(f"message of {len(raw):,} characters is over the {MAX_EVENT_BYTES:,}-byte limit",
                               ReasonCode.TOO_LARGE)
        try:
            raw = raw.encode()
        except UnicodeEncodeError:
            raise InvalidEvent("not UTF-8 text (lone surrogate)", ReasonCode.NOT_UTF8) from None
    elif not isinstance(raw, bytes):
        raw = bytes(raw)
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"message of {len(raw):,} bytes is over the {MAX_EVENT_BYTES:,}-byte limit",
                           ReasonCode.TOO_LARGE)
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"not UTF-8 text (byte {exc.start})", ReasonCode.NOT_UTF8) from None
    return raw


def _bad_json(data: bytes, error: msgspec.DecodeError) -> InvalidEvent:
    if not data.strip():
        return InvalidEvent("empty message", ReasonCode.BAD_JSON)
    return InvalidEvent(f"bad JSON: {str(error).removeprefix('JSON is malformed: ')}", ReasonCode.BAD_JSON)


def _too_deep() -> InvalidEvent:
    return InvalidEvent(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", ReasonCode.TOO_DEEP)


def _check_depth(data: bytes) -> None:
    """For a syntactically valid document. A count of brackets bounds the depth, so only a
    message with many needs the exact check."""
    if data.count(b"{") + data.count(b"[") <= MAX_JSON_DEPTH:
        return
    text = _JSON_STRING.sub(b'""', data)
    for _ in range(MAX_JSON_DEPTH):
        text, removed = _INNERMOST_CONTAINER.subn(b"0", text)
        if not removed:
            return
    if b"[" in text or b"{" in text:
        raise _too_deep()


def _not_object(json_type: str) -> InvalidEvent:
    return InvalidEvent(f"expected a JSON object, got {json_type}", ReasonCode.NOT_OBJECT)


def _decode_whole(data: bytes) -> dict | None:
    """A short message decoded whole; ``None`` when a number's exponent is beyond
    Decimal's own (the raw-field path then names the field)."""
    try:
        value = _WHOLE.decode(data)
    except msgspec.DecodeError as exc:
        raise _bad_json(data, exc) from None
    except RecursionError:  # msgspec's own guard, far deeper than MAX_JSON_DEPTH
        raise _too_deep() from None
    except DecimalException:
        return None
    _check_depth(data)
    if not isinstance(value, dict):
        raise _not_object(_json_type(value))
    return value


_TYPE_BY_FIRST_BYTE = {ord("["): "array", ord('"'): "string", ord("t"): "boolean", ord("f"): "boolean",
                       ord("n"): "null", ord("{"): "object"}


def _decode_fields(data: bytes) -> _RawFields:
    try:
        fields = _FIELDS.decode(data)
    except msgspec.ValidationError:  # not an object: msgspec stopped at its first value
        try:
            _SYNTAX.decode(data)
        except msgspec.DecodeError as syntax_error:
            raise _bad_json(data, syntax_error) from None
        except RecursionError:
            raise _too_deep() from None
        _check_depth(data)
        raise _not_object(_TYPE_BY_FIRST_BYTE.get(data.lstrip()[0], "number")) from None
    except msgspec.DecodeError as exc:
        raise _bad_json(data, exc) from None
    except RecursionError:
        raise _too_deep() from None
    _check_depth(data)
    return fields


def _field_value(raw: msgspec.Raw, name: str) -> Any:
    """One field's raw JSON text as the value ``_WHOLE`` would give, converted only when
    cheap: ``str``, ``int`` (short literals), ``Decimal`` (the other numbers, linear in their
    length), ``bool``, ``None`` or a ``_Container``."""
    if raw is _NULL:
        return None
    text = bytes(raw)
    first = text[0]
    if first == _QUOTE:
        if _BACKSLASH not in text:
            return text[1:-1].decode()
        return msgspec.json.decode(text)  # escapes; msgspec has checked them already
    if first in _OTHER_JSON:
        return _OTHER_JSON[first]
    if len(text) <= _LONGEST_INT_TEXT and (text.isdigit() or (first == _MINUS and text[1:].isdigit())):
        return int(text)
    try:
        number = Decimal(text.decode())  # a JSON number's text is a valid Decimal literal ...
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():  # ... unless its exponent is beyond Decimal's own
        raise InvalidEvent(f"{name} is out of range: {_show_number(text.decode())}", ReasonCode.OUT_OF_RANGE)
    return number


def _parse_raw_fields(data: bytes) -> OrderEvent:
    fields = _decode_fields(data)
    return _validate(lambda name: _field_value(getattr(fields, name), name))


def parse_event(raw: bytes | bytearray | memoryview | str | None) -> OrderEvent:
    """Decode and validate one Kafka record value; ``InvalidEvent`` for anything else,
    never another exception. Checks run in this order: size, UTF-8, JSON syntax, depth,
    top-level object, then the fields (order_id, status, created_at, and for an OPEN
    symbol, order_side, size, price)."""
    data = _message_bytes(raw)
    if len(data) <= _DECODE_WHOLE_MAX_BYTES:
        fields = _decode_whole(data)
        if fields is not None:
            return _validate(fields.get)
    return _parse_raw_fields(data)


# --- The typical event, fast ---------------------------------------------------------
# The job parses every record; most are plain, well-formed events. For those, msgspec
# checks the shape in C (typed fields) and a few comparisons do the rest; anything else
# (an odd spelling, a bound, an error to explain) goes through ``parse_event``, so the
# answers are the same (the hypothesis suite checks it).

class _Typical(msgspec.Struct, gc=False):
    order_id: int
    status: str
    symbol: str | None = None
    order_side: str | None = None
    size: Any = None
    price: Any = None
    created_at: Any = None


_TYPICAL = msgspec.json.Decoder(_Typical, float_hook=Decimal)
_UNITS_PER_ONE = 10**PRICE_SIZE_DECIMALS
_SIMPLE_FAILURES = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, DecimalException, ValueError)


def parse_units(raw: bytes | bytearray | memoryview | str | None) -> tuple:
    """``(order_id, is_open, symbol, side, price, size)`` of a valid event, price and size
    in 1e-8 units (None for a close); ``InvalidEvent`` exactly when ``parse_event`` raises
    it, with the same reason and code."""
    if type(raw) is bytes and len(raw) <= _DECODE_WHOLE_MAX_BYTES and \
            raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH:
        try:
            typical = _typical(_TYPICAL.decode(raw))
        except _SIMPLE_FAILURES:
            typical = None
        if typical is not None:
            return typical
    event = parse_event(raw)
    if not event.is_open:
        return (event.order_id, False, None, None, None, None)
    return (event.order_id, True, event.symbol, event.side, to_units(event.price), to_units(event.size))


def _typical(e: _Typical) -> tuple | None:
    """The event's tuple when every field has its plain, in-contract form, else None."""
    if not 0 <= e.order_id <= MAX_ORDER_ID:
        return None
    if e.created_at is not None and _plain_units(e.created_at, MAX_CREATED_AT, zero_allowed=True) is None:
        return None
    if e.status == CLOSED:
        return (e.order_id, False, None, None, None, None)
    symbol, side = e.symbol, e.order_side
    if e.status != OPEN or side not in SIDES or symbol is None or len(symbol) > MAX_SYMBOL_LENGTH \
            or not _SYMBOL.fullmatch(symbol):
        return None
    price = _plain_units(e.price, MAX_PRICE_SIZE)
    size = _plain_units(e.size, MAX_PRICE_SIZE)
    if price is None or size is None:
        return None
    return (e.order_id, True, symbol, side, price, size)


def _plain_units(value: Any, below: int, zero_allowed: bool = False) -> int | None:
    """A JSON number in ``(0, below)`` (``[0, below)``) with at most 8 decimal places, as
    1e-8 units; None otherwise."""
    kind = type(value)
    if kind is int:
        return value * _UNITS_PER_ONE if (0 < value < below or (zero_allowed and value == 0)) else None
    if kind is not Decimal or not value.is_finite() or value < 0 or (not zero_allowed and not value):
        return None
    if value and not -PRICE_SIZE_DECIMALS <= value.adjusted() <= _DIGITS_BELOW[below]:
        return None  # far out of range or too many decimal places: read off the exponent, no arithmetic
    numerator, denominator = value.as_integer_ratio()
    if _UNITS_PER_ONE % denominator:
        return None  # more than 8 decimal places
    units = numerator * (_UNITS_PER_ONE // denominator)
    return units if units < below * _UNITS_PER_ONE else None


_DIGITS_BELOW = {MAX_PRICE_SIZE: len(str(MAX_PRICE_SIZE)), MAX_CREATED_AT: len(str(MAX_CREATED_AT))}


# --- Other formats -------------------------------------------------------------------

def csv_row_to_fields(row: Mapping[str, str]) -> dict[str, Any]:
    """Map a row of the official sample CSV (all strings, empty = absent) to the values
    ``validate_fields`` takes. Numbers follow JSON's rules, at the same cost bounds."""

    def number(text: str) -> int | Decimal | str:
        if len(text) <= _LONGEST_INT_TEXT:
            try:
                return int(text)
            except ValueError:
                pass
        try:
            return Decimal(text)  # linear in the length, unlike int()
        except InvalidOperation:
            return text  # left as a string so validation reports the wrong type

    fields: dict[str, Any] = {}
    for name, text in row.items():
        if text is None or text.strip() == "":
            continue
        text = text.strip()
        fields[name] = number(text) if name in ("order_id", "size", "price", "created_at") else text
    return fields


def event_to_json(event: OrderEvent) -> str:
    """Serialise an event in the seed's wire format (numbers exact, absent fields omitted)."""
    parts = [f'"order_id":{event.order_id}']
    if event.is_open:
        parts += [
            f'"symbol":{msgspec.json.encode(event.symbol).decode()}',
            f'"order_side":"{event.side}"',
            f'"size":{format_decimal(event.size)}',
            f'"price":{format_decimal(event.price)}',
        ]
    parts.append(f'"status":"{event.status}"')
    if event.created_at is not None:
        parts.append(f'"created_at":{format_decimal(event.created_at)}')
    return "{" + ",".join(parts) + "}"


def format_decimal(value: Decimal) -> str:
    """A JSON number with no exponent, no trailing zeros and no float noise."""
    if value == value.to_integral_value():
        return str(int(value))
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
