"""The times a user types: ISO-8601 with ``Z`` or an offset, or epoch seconds, to the
second they fall in (a snapshot describes a whole second)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from marketstream.orderbook.message import format_snapshot_time

_EPOCH = re.compile(r"^\d+(\.\d+)?$")
# Epoch seconds stay below this until the year 5138; a larger number is milliseconds.
_LARGEST_EPOCH_SECONDS = 10**11


def parse_time(text: str) -> int:
    """The epoch second ``text`` falls in; ``ValueError`` with a sentence for the user.

    Accepted: ``2026-12-06T14:03:27Z``, ``2026-12-06T15:03:27+01:00``, ``2026-12-06 14:03:27.5Z``
    and ``1796566407`` (epoch seconds, fractions allowed). A time without a zone is
    refused rather than guessed."""
    value = text.strip()
    if _EPOCH.match(value):
        seconds = float(value) if "." in value else int(value)
        if seconds >= _LARGEST_EPOCH_SECONDS:
            raise ValueError(f"{text!r} looks like epoch milliseconds; give epoch seconds "
                             f"({int(seconds) // 1000} for this one)")
        return math.floor(seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO-8601 time (2026-12-06T14:03:27Z, or with an offset "
                         "like +01:00) nor epoch seconds") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z for UTC (e.g. {value}Z) or an offset like +01:00")
    return math.floor(moment.astimezone(UTC).timestamp())


def show(second: int) -> str:
    """How every message of the tool writes a second: ISO-8601 UTC."""
    return format_snapshot_time(second)
