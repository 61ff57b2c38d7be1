"""The snapshot message on the output topic: the contract between the Spark job, the
exporter/validator and the dashboard.

- value: the book in the snapshot format (README, "The order book"): a JSON array of
  levels (``render.levels_to_json``);
- key: the snapshot time, ISO-8601 UTC to the second (``2026-11-22T08:12:03Z``);
- headers (all UTF-8 text):
  ``sequence``      1, 2, 3 ... one per snapshot, continuing across restarts;
  ``snapshot_time`` same as the key;
  ``input_offsets`` JSON ``{"<partition>": <next offset>}`` of the input topic: the
                    snapshot reflects exactly the input events below these offsets;
  ``open_orders``   number of open orders in the book (all symbols, all depths);
  ``recovered``     ``true`` when the job published this second late, after a restart or
                    an overrun (the true book of that second, from the input records'
                    broker timestamps), else ``false``.

One snapshot per ``SNAPSHOT_CADENCE_SECONDS`` (one second): exactly one message for every
second, none twice, in order of snapshot time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence

from marketstream.orderbook.render import Level, levels_from_json

SEQUENCE = "sequence"
SNAPSHOT_TIME = "snapshot_time"
INPUT_OFFSETS = "input_offsets"
OPEN_ORDERS = "open_orders"
RECOVERED = "recovered"

# The product's promise: one snapshot for every second.
SNAPSHOT_CADENCE_SECONDS = 1


def format_snapshot_time(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_snapshot_time(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())


@dataclass(frozen=True)
class SnapshotMessage:
    snapshot_time: int  # epoch seconds
    sequence: int
    input_offsets: dict[int, int]
    open_orders: int
    value: str  # the JSON array, exactly as published
    recovered: bool = False  # published late: a backfilled second

    @property
    def key(self) -> str:
        return format_snapshot_time(self.snapshot_time)

    def headers(self) -> list[tuple[str, bytes]]:
        offsets = {str(p): o for p, o in sorted(self.input_offsets.items())}
        return [
            (SEQUENCE, str(self.sequence).encode()),
            (SNAPSHOT_TIME, self.key.encode()),
            (INPUT_OFFSETS, json.dumps(offsets, separators=(",", ":")).encode()),
            (OPEN_ORDERS, str(self.open_orders).encode()),
            (RECOVERED, b"true" if self.recovered else b"false"),
        ]

    def levels(self) -> list[Level]:
        return levels_from_json(self.value)

    @classmethod
    def from_record(
        cls, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes]
    ) -> "SnapshotMessage":
        """Decode a consumed record; raises ``ValueError`` when the contract is not met."""
        items = dict(headers.items() if isinstance(headers, Mapping) else headers)
        try:
            snapshot_time = parse_snapshot_time(items[SNAPSHOT_TIME].decode())
            offsets = json.loads(items[INPUT_OFFSETS].decode())
            return cls(
                snapshot_time=snapshot_time,
                sequence=int(items[SEQUENCE].decode()),
                input_offsets={int(p): int(o) for p, o in offsets.items()},
                open_orders=int(items.get(OPEN_ORDERS, b"-1").decode()),
                value=value.decode(),
                recovered=items.get(RECOVERED, b"false") == b"true",
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"not a snapshot message (key={key!r}): {exc}") from None
