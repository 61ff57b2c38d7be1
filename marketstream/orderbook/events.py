"""Parsing and validation of order events.

``parse_event`` turns raw bytes (or an already decoded mapping) into an ``OrderEvent`` or
raises ``InvalidEvent`` whose ``reason`` says exactly what is wrong, for the dead-letter
topic. Numbers are parsed as ``Decimal`` straight from the JSON text, so ``34010.0`` never
passes through a binary float.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

OPEN = "OPEN"
CLOSED = "CLOSED"
BUY = "BUY"
SELL = "SELL"
SIDES = (BUY, SELL)
STATUSES = (OPEN, CLOSED)


class InvalidEvent(ValueError):
    """An event that cannot be applied; ``reason`` is a short human-readable cause."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OrderEvent:
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


# One decoder: ``json.loads(raw, parse_float=...)`` builds a new one on every call.
_JSON = json.JSONDecoder(parse_float=Decimal)


def _decode(raw: bytes | str) -> Mapping[str, Any]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("not UTF-8 text") from None
    if not raw.strip():
        raise InvalidEvent("empty message")
    try:
        value = _JSON.decode(raw)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"bad JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(value, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(value).__name__}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def _order_id(value: Any) -> int:
    if value is None:
        raise InvalidEvent("missing order_id")
    if not _is_number(value):
        raise InvalidEvent(f"order_id must be an integer, got {type(value).__name__}")
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise InvalidEvent(f"order_id must be an integer, got {value}")
        value = int(value)
    if value < 0:
        raise InvalidEvent(f"order_id must not be negative, got {value}")
    return value


def _positive(fields: Mapping[str, Any], name: str) -> Decimal:
    value = fields.get(name)
    if value is None:
        raise InvalidEvent(f"missing {name}")
    if not _is_number(value):
        raise InvalidEvent(f"{name} must be a number, got {type(value).__name__}")
    number = Decimal(value)
    if not number.is_finite() or number <= 0:
        raise InvalidEvent(f"{name} must be positive, got {value}")
    return number


def validate_fields(fields: Mapping[str, Any]) -> OrderEvent:
    """Validate a decoded event. Absent and ``null`` optional fields are the same thing."""
    order_id = _order_id(fields.get("order_id"))

    status = fields.get("status")
    if status is None:
        raise InvalidEvent("missing status")
    if not isinstance(status, str):
        raise InvalidEvent(f"status must be a string, got {type(status).__name__}")
    status = status.strip().upper()
    if status not in STATUSES:
        raise InvalidEvent(f"unknown status {fields.get('status')!r}")

    created_at = fields.get("created_at")
    if created_at is not None and not _is_number(created_at):
        raise InvalidEvent(f"created_at must be a number, got {type(created_at).__name__}")
    created_at = Decimal(created_at) if created_at is not None else None

    if status == CLOSED:
        return OrderEvent(order_id=order_id, status=CLOSED, created_at=created_at)

    symbol = fields.get("symbol")
    if symbol is None:
        raise InvalidEvent("missing symbol")
    if not isinstance(symbol, str) or not symbol.strip():
        raise InvalidEvent(f"symbol must be a non-empty string, got {symbol!r}")

    side = fields.get("order_side")
    if side is None:
        raise InvalidEvent("missing order_side")
    if not isinstance(side, str) or side.strip().upper() not in SIDES:
        raise InvalidEvent(f"unknown order_side {side!r}")

    return OrderEvent(
        order_id=order_id,
        status=OPEN,
        symbol=symbol.strip(),
        side=side.strip().upper(),
        size=_positive(fields, "size"),
        price=_positive(fields, "price"),
        created_at=created_at,
    )


def parse_event(raw: bytes | str) -> OrderEvent:
    """Decode and validate one Kafka message value."""
    return validate_fields(_decode(raw))


def csv_row_to_fields(row: Mapping[str, str]) -> dict[str, Any]:
    """Map a row of the official sample CSV (all strings, empty = absent) to JSON-like fields."""

    def number(text: str) -> int | Decimal | str:
        try:
            return int(text)
        except ValueError:
            try:
                return Decimal(text)
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
            f'"symbol":{json.dumps(event.symbol)}',
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
