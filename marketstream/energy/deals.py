"""The exchange's deal confirmation: parsing and validation with a reason for every rejection.

A websocket message looks like::

    {"deal_confirmation": {"id": "3624e951…", "price": 20.64, "quantity": 1.2, "direction": "sell",
     "delivery_day": "2023-02-21", "delivery_hour": "15-16", "trader_id": "flex_trader_4",
     "execution_time": "2023-02-21T06:13:43+00:00"}}

Numbers are read as exact decimals (no float noise in the database). The listener puts the
original message bytes on the deals topic, so the loader parses exactly what was received.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HOUR = re.compile(r"^(\d{2})-(\d{2})$")
MAX_MAGNITUDE = 1_000_000  # sanity bound for price (EUR/MWh) and quantity (MW)


class InvalidDeal(ValueError):
    """A message that is not a valid deal confirmation; ``reason`` says why, for the dead letter."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_delivery_hour(value: str) -> str:
    """``HH-HH`` with the second hour one after the first: 00-01 … 23-24."""
    match = _HOUR.match(value) if isinstance(value, str) else None
    if not match or int(match[1]) > 23 or int(match[2]) != int(match[1]) + 1:
        raise ValueError(f"delivery_hour must be 'HH-HH' from 00-01 to 23-24, got {value!r}")
    return value


def check_delivery_day(value: Any) -> date:
    if not isinstance(value, str) or not _DAY.match(value):
        raise ValueError(f"delivery_day must be a 'YYYY-MM-DD' string, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"delivery_day is not a calendar date: {value!r}") from None


def check_number(name: str, value: Any) -> Decimal:
    # bool is an int in Python; a JSON true is still not a price.
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, float)):
        raise ValueError(f"{name} must be a JSON number, got {type(value).__name__} {value!r}")  # noqa: TRY004 - pydantic reports ValueError, not TypeError
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def check_timestamp(name: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO-8601 string, got {type(value).__name__} {value!r}")  # noqa: TRY004 - pydantic reports ValueError, not TypeError
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not ISO-8601: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name} has no UTC offset: {value!r}")
    return parsed.astimezone(UTC)


class Deal(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    price: Decimal
    quantity: Decimal
    direction: Literal["buy", "sell"]
    delivery_day: date
    delivery_hour: str
    trader_id: str
    execution_time: datetime

    @field_validator("id", "trader_id", mode="before")
    @classmethod
    def _text(cls, value: Any, info) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{info.field_name} must be a non-empty string, got {value!r}")
        if "\x00" in value or len(value) > 200:  # PostgreSQL text cannot hold NUL
            raise ValueError(f"{info.field_name} must be printable text of at most 200 characters")
        return value

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Decimal:
        # Power prices can be negative; they must be real numbers. The bound is far beyond
        # any exchange's price limits (EPEX: ±9,999 €/MWh) and keeps absurd values out.
        number = check_number("price", value)
        if abs(number) > MAX_MAGNITUDE:
            raise ValueError(f"price out of range (|price| <= {MAX_MAGNITUDE}), got {value!r}")
        return number

    @field_validator("quantity", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Decimal:
        number = check_number("quantity", value)
        if number <= 0 or number > MAX_MAGNITUDE:
            raise ValueError(f"quantity must be positive and at most {MAX_MAGNITUDE}, got {value!r}")
        return number

    @field_validator("direction", mode="before")
    @classmethod
    def _direction(cls, value: Any) -> str:
        if value not in ("buy", "sell"):
            raise ValueError(f"direction must be 'buy' or 'sell', got {value!r}")
        return value

    @field_validator("delivery_day", mode="before")
    @classmethod
    def _day(cls, value: Any) -> date:
        return check_delivery_day(value)

    @field_validator("delivery_hour", mode="before")
    @classmethod
    def _hour(cls, value: Any) -> str:
        return check_delivery_hour(value)

    @field_validator("execution_time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> datetime:
        return check_timestamp("execution_time", value)

    def row(self) -> dict[str, Any]:
        """The ``trades`` row of this deal (without ``loaded_at``)."""
        return {
            "deal_id": self.id, "trader_id": self.trader_id, "direction": self.direction, "price": self.price,
            "quantity": self.quantity, "delivery_day": self.delivery_day, "delivery_hour": self.delivery_hour,
            "execution_time": self.execution_time,
        }


def _reject_constant(token: str):
    raise ValueError(f"{token} is not a JSON number")


def _reason(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "deal_confirmation"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "missing"
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def parse_deal(raw: bytes | str) -> Deal:
    """The deal in one websocket message; raises ``InvalidDeal`` with a readable reason."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    except UnicodeDecodeError as exc:
        raise InvalidDeal(f"not UTF-8 text: {exc}") from None
    try:
        message = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InvalidDeal(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or "deal_confirmation" not in message:
        raise InvalidDeal("not a deal confirmation: expected an object with key 'deal_confirmation'")
    body = message["deal_confirmation"]
    if not isinstance(body, dict):
        raise InvalidDeal(f"deal_confirmation must be an object, got {type(body).__name__}")
    try:
        return Deal.model_validate(body)
    except ValidationError as exc:
        raise InvalidDeal(_reason(exc)) from None


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
