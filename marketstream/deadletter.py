"""The dead-letter record: the contract between everything that rejects input (the Spark
job, the trade listener and loader) and everything that shows rejects (the dashboard).

- value: the rejected record's bytes, verbatim (nothing is lost, even undecodable input);
- headers (UTF-8 text; absent when unknown):
  ``reason``            one sentence: why it was rejected;
  ``reason_code``       the same as a short stable code (e.g. ``bad_json``,
                        ``symbol_limit``; the order events' codes are
                        ``marketstream.orderbook.events.ReasonCode``), for counting;
  ``source_topic``      the topic it was read from,
  ``source_partition``  its partition and
  ``source_offset``     its offset there: where to find the original;
  ``source``            for input that has no offsets (the exchange websocket): where it
                        came from, e.g. the websocket URL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

# A dead letter keeps the original bytes up to this many (the rest is cut, and the reason
# says where the whole record is); the dead-letter topics take this plus headers.
MAX_VALUE_BYTES = 1024 * 1024
DEADLETTER_MAX_MESSAGE_BYTES = 2 * MAX_VALUE_BYTES

REASON = "reason"
REASON_CODE = "reason_code"
SOURCE_TOPIC = "source_topic"
SOURCE_PARTITION = "source_partition"
SOURCE_OFFSET = "source_offset"
SOURCE = "source"


@dataclass(frozen=True)
class DeadLetter:
    value: bytes
    reason: str
    code: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    source: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """The record headers, in the order above; unknown fields are left out."""
        fields = [(REASON, self.reason), (REASON_CODE, self.code), (SOURCE_TOPIC, self.source_topic),
                  (SOURCE_PARTITION, self.source_partition), (SOURCE_OFFSET, self.source_offset),
                  (SOURCE, self.source)]
        return [(name, str(value).encode()) for name, value in fields if value is not None]

    def bounded(self) -> "DeadLetter":
        """This dead letter with its value cut to ``MAX_VALUE_BYTES`` (the reason then says
        so and where the whole record is), so that any reject can be published."""
        if len(self.value) <= MAX_VALUE_BYTES:
            return self
        where = f"; the whole record is at {self.origin}" if self.origin else ""
        return replace(self, value=self.value[:MAX_VALUE_BYTES],
                       reason=f"{self.reason} (value cut to {MAX_VALUE_BYTES:,} of {len(self.value):,} bytes{where})")

    @property
    def origin(self) -> str:
        """Where the original is: ``topic[partition]@offset``, the ``source``, or ``""``."""
        if self.source_topic is not None:
            return f"{self.source_topic}[{_text(self.source_partition)}]@{_text(self.source_offset)}"
        return self.source or ""

    @classmethod
    def from_record(cls, value: bytes | None,
                    headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None]) -> "DeadLetter":
        """Decode a consumed dead-letter record. Missing headers are ``None`` (a reject
        is worth showing even when its writer said little); a partition or offset that is
        not a number raises ``ValueError``."""
        items = {name: (raw or b"").decode("utf-8", "replace")
                 for name, raw in (headers.items() if isinstance(headers, Mapping) else headers)}
        return cls(
            value=value or b"",
            reason=items.get(REASON, ""),
            code=items.get(REASON_CODE),
            source_topic=items.get(SOURCE_TOPIC),
            source_partition=_number(items, SOURCE_PARTITION),
            source_offset=_number(items, SOURCE_OFFSET),
            source=items.get(SOURCE),
        )


def _number(items: Mapping[str, str], name: str) -> int | None:
    text = items.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"dead-letter header {name!r} is not a number: {text!r}") from None


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
