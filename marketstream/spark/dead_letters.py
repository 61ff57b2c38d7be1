"""Every dead letter of the order-book job is made here, as one type, ``DeadLetterRef``: the
rejected record's place on the input topic, why, and its bytes when the stage that
rejected it had them.

- the read tasks reject what breaks the input contract (``invalid_event``: bytes kept,
  cut to the dead-letter bound there already, as they travel to the driver);
- the state partitions reject what the book's bounds refuse (``symbol_limit``,
  ``closed_id_limit``) and an event whose application failed (``internal_error``); they
  hold no bytes: the publisher reads them back from the input topic (``with_values``);
- the publisher turns each into the dead-letter topic's record (``record``,
  ``marketstream.deadletter.DeadLetter``).

Between the stages they travel as rows of kind ``KIND`` with the columns ``COLUMNS``
(the shuffle's rows and the state partitions' output alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from marketstream.deadletter import DeadLetter

KIND = "dead"
COLUMNS = ("partitions", "offsets", "reasons", "codes", "values")


@dataclass(frozen=True, slots=True)
class DeadLetterRef:
    """A dead letter of the job: input ``partition`` and ``offset``, ``reason``, ``code``,
    and the record's bytes (None: read them back from the input topic)."""

    partition: int
    offset: int
    reason: str
    code: str
    value: bytes | None = None


def invalid_event(value: bytes | None, error, topic: str, partition: int, offset: int) -> DeadLetterRef:
    """A record that is not a valid order event (``error``: its ``InvalidEvent``)."""
    letter = DeadLetter(value if value is not None else b"", error.reason, str(error.code), topic or None,
                        partition, offset).bounded()
    return DeadLetterRef(partition, offset, letter.reason, letter.code, letter.value)


def symbol_limit(partition: int, offset: int, symbol: str, symbols: int, limit: int) -> DeadLetterRef:
    return DeadLetterRef(partition, offset, f"symbol limit: {symbol!r} would be symbol {symbols + 1} in the book "
                                            f"(BOOK_MAX_SYMBOLS={limit})", "symbol_limit")


def closed_id_limit(partition: int, offset: int, limit: int, ttl_s: int | None) -> DeadLetterRef:
    return DeadLetterRef(partition, offset,
                         f"closed-id limit: this close's id would be closed id {limit + 1} the state partition "
                         f"remembers (CLOSED_ID_MAX, CLOSED_ID_TTL_SECONDS={ttl_s}): the close is not applied",
                         "closed_id_limit")


def internal_error(partition: int, offset: int, error: BaseException) -> DeadLetterRef:
    return DeadLetterRef(partition, offset, f"internal error while applying the event: {error!r}"[:500],
                         "internal_error")


def to_columns(letters: list[DeadLetterRef]) -> dict[str, list]:
    """Dead letters as a row's ``COLUMNS``."""
    return {"partitions": [d.partition for d in letters], "offsets": [d.offset for d in letters],
            "reasons": [d.reason for d in letters], "codes": [str(d.code) for d in letters],
            "values": [d.value for d in letters]}


def from_columns(row: Mapping) -> Iterable[DeadLetterRef]:
    """The dead letters of a row of kind ``KIND`` (a Spark ``Row`` or a dict)."""
    return (DeadLetterRef(p, o, r, c, bytes(v) if v is not None else None)
            for p, o, r, c, v in zip(row["partitions"], row["offsets"], row["reasons"], row["codes"], row["values"]))


def with_values(letters: list[DeadLetterRef], orders) -> list[DeadLetterRef]:
    """Dead letters with their original bytes, read back from the input topic (``orders``,
    a ``kafka_io.TopicReader``) where they have none."""
    wanted: dict[int, set[int]] = {}
    for d in letters:
        if d.value is None:
            wanted.setdefault(d.partition, set()).add(d.offset)
    values: dict[tuple[int, int], bytes | None] = {}
    for partition, offsets in wanted.items():
        for record in orders.read(partition, min(offsets), max(offsets) + 1):
            if record.offset in offsets:
                values[(partition, record.offset)] = record.value
    return [d if d.value is not None else
            DeadLetterRef(d.partition, d.offset, d.reason, d.code, values.get((d.partition, d.offset)) or b"")
            for d in letters]


def record(letter: DeadLetterRef, topic: str) -> DeadLetter:
    """The dead-letter topic's record of ``letter`` (read from the input ``topic``)."""
    return DeadLetter(value=letter.value or b"", reason=letter.reason, code=str(letter.code), source_topic=topic,
                      source_partition=letter.partition, source_offset=letter.offset).bounded()
