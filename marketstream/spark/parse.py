"""The parse stage of the order-book job: input records -> events routed to the state
partition of their order id. Stateless; runs in the read tasks (``mapInArrow``), so
parsing, the heaviest per-event work, spreads over the input's Kafka partitions.

Input rows (``kafka_source.SOURCE_SCHEMA``): ``partition, offsets[], timestamps[],
values[]``, records of one Kafka partition in offset order; plus the source's heartbeat
row (``partition = HEARTBEAT_PARTITION``) with the batch's progress per partition.

Output rows (``ROUTED_SCHEMA``), each for one state partition (``key``, the grouping key):
- ``events``: parsed events of one Kafka partition, as column arrays;
- ``dead``: records that break the input contract, with reason, code and original bytes;
- ``runs`` (to every state partition): per Kafka partition, where each run of records
  with the same batch-local running-maximum second ends (the snapshot clock's input);
- ``heartbeat`` (to every state partition): the source's progress (``values``) and the
  batch's tick, the second the source took its offsets (``offsets``).
Every state partition gets the broadcast rows, so all of them see the same clock input.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from marketstream.deadletter import DeadLetter
from marketstream.orderbook.events import BUY, InvalidEvent, parse_units
from marketstream.spark.clock import second_of
from marketstream.spark.memory_index import BUY as BUY_CODE, SELL as SELL_CODE
from marketstream.spark.partition_state import DeadLetterRef, state_partition_of

HEARTBEAT_PARTITION = -1
EVENTS, DEAD, RUNS, HEARTBEAT = "events", "dead", "runs", "heartbeat"
ROWS_PER_PACK = 5_000


_EVENT_COLUMNS = ("offsets", "lmax", "order_ids", "opens", "symbols", "sides", "prices", "sizes")
_DEAD_COLUMNS = ("partitions_of", "offsets", "reasons", "codes", "values")


@dataclass
class Routed:
    """One read task's output, grouped for packing: column lists per group."""

    # (state partition, kafka partition) -> column -> values (``_EVENT_COLUMNS``)
    events: dict[tuple[int, int], dict[str, list]] = field(default_factory=dict)
    # state partition -> column -> values (``_DEAD_COLUMNS``)
    dead: dict[int, dict[str, list]] = field(default_factory=dict)
    runs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # kafka part -> [(lmax, end)]
    heartbeat: bytes | None = None
    tick: int | None = None


def route(rows: Iterable[tuple[int, list[int], list[int], list[bytes | None]]], partitions: int,
          topic: str = "") -> Routed:
    """Parse and route the records of one read task (rows in offset order per partition)
    of the input ``topic``."""
    out = Routed()
    lmax: dict[int, int] = {}
    for partition, offsets, timestamps, values in rows:
        if partition == HEARTBEAT_PARTITION:
            out.heartbeat, out.tick = values[0], offsets[0] if offsets else None
            continue
        runs = out.runs.setdefault(partition, [])
        groups = [out.events.setdefault((target, partition), {c: [] for c in _EVENT_COLUMNS})
                  for target in range(partitions)]
        running = lmax.get(partition)
        for offset, timestamp, value in zip(offsets, timestamps, values):
            second = second_of(timestamp) if timestamp is not None and timestamp >= 0 else 0
            if running is None or second > running:
                running = second
                runs.append((running, offset + 1))
            else:
                runs[-1] = (running, offset + 1)
            try:
                order_id, is_open, symbol, side, price, size = parse_units(value)
            except InvalidEvent as exc:
                # Bounded here already: the bytes travel to the driver, which publishes them.
                letter = DeadLetter(value if value is not None else b"", exc.reason, str(exc.code), topic or None,
                                    partition, offset).bounded()
                dead = out.dead.setdefault(offset % partitions, {c: [] for c in _DEAD_COLUMNS})
                for column, item in zip(_DEAD_COLUMNS, (partition, offset, letter.reason, letter.code, letter.value)):
                    dead[column].append(item)
                continue
            group = groups[state_partition_of(order_id, partitions)]
            group["offsets"].append(offset)
            group["lmax"].append(running)
            group["order_ids"].append(order_id)
            group["opens"].append(is_open)
            group["symbols"].append(symbol)
            group["sides"].append(None if side is None else (BUY_CODE if side == BUY else SELL_CODE))
            group["prices"].append(price)
            group["sizes"].append(size)
        lmax[partition] = running
    out.events = {key: columns for key, columns in out.events.items() if columns["offsets"]}
    return out


def pack(routed: Routed, partitions: int) -> Iterator[dict]:
    """The routed output as ``ROUTED_SCHEMA`` rows (dicts of column -> value), each packing
    up to ``ROWS_PER_PACK`` records."""
    for (target, partition), columns in sorted(routed.events.items()):
        for start in range(0, len(columns["offsets"]), ROWS_PER_PACK):
            yield _row(target, EVENTS, partition, **{c: v[start:start + ROWS_PER_PACK] for c, v in columns.items()})
    for target, columns in sorted(routed.dead.items()):
        for start in range(0, len(columns["offsets"]), ROWS_PER_PACK):
            yield _row(target, DEAD, -1, **{c: v[start:start + ROWS_PER_PACK] for c, v in columns.items()})
    for target in range(partitions):
        for partition, runs in sorted(routed.runs.items()):
            yield _row(target, RUNS, partition, lmax=[r[0] for r in runs], offsets=[r[1] for r in runs])
        if routed.heartbeat is not None:
            yield _row(target, HEARTBEAT, HEARTBEAT_PARTITION, values=[routed.heartbeat],
                       offsets=[routed.tick] if routed.tick is not None else [])


ROUTED_COLUMNS = ("target", "kind", "partition", "partitions_of", "offsets", "lmax", "order_ids", "opens", "symbols",
                  "sides", "prices", "sizes", "reasons", "codes", "values")


def _row(target: int, kind: str, partition: int, **arrays) -> dict:
    row = {"target": target, "kind": kind, "partition": partition}
    for name in ROUTED_COLUMNS[3:]:
        row[name] = arrays.get(name)
    return row


def to_columns(rows: list[dict]) -> dict[str, list]:
    """Rows of ``pack`` as columns (what Arrow builds a record batch from quickly)."""
    return {name: [row[name] for row in rows] for name in ROUTED_COLUMNS}


def unpack(rows: Iterable) -> tuple[list[dict], list[DeadLetterRef], dict[int, list[tuple[int, int]]], bytes | None]:
    """A state partition's routed rows (Spark ``Row``s or dicts) back into event rows
    (``partition`` and the event columns, as ``PartitionBatch.events`` takes them), dead
    letters, clock runs and the heartbeat."""
    events: list[dict] = []
    dead: list[DeadLetterRef] = []
    runs: dict[int, list[tuple[int, int]]] = {}
    heartbeat = None
    for row in rows:
        kind, partition = row["kind"], row["partition"]
        if kind == EVENTS:
            events.append({"partition": partition, **{column: row[column] for column in _EVENT_COLUMNS}})
        elif kind == DEAD:
            dead.extend(DeadLetterRef(p, o, r, c, bytes(v) if v is not None else None)
                        for p, o, r, c, v in zip(row["partitions_of"], row["offsets"], row["reasons"], row["codes"],
                                                 row["values"]))
        elif kind == RUNS:
            runs.setdefault(partition, []).extend(zip(row["lmax"], row["offsets"]))
        elif kind == HEARTBEAT:
            heartbeat = bytes(row["values"][0])
    for partition in runs:
        runs[partition] = _joined(runs[partition])
    for row in events:
        _rebase(row, runs.get(row["partition"], []))
    return events, dead, runs, heartbeat


def _joined(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A Kafka partition's runs from one or more read tasks (each read a contiguous piece
    of it, ``kafka_source.split_ranges``) as one read would have made them: in offset
    order, each ``lmax`` the running maximum over the whole batch, equal neighbours one run."""
    joined: list[tuple[int, int]] = []
    for lmax, end in sorted(runs, key=lambda run: run[1]):
        if joined and lmax <= joined[-1][0]:
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((lmax, end))
    return joined


def _rebase(row: dict, runs: list[tuple[int, int]]) -> None:
    """An event row's ``lmax`` (the running maximum within its read task's piece) as the
    running maximum over the batch: raised to the batch's maximum before the piece."""
    lmaxes = row["lmax"]
    if not lmaxes:
        return
    index = bisect.bisect_right(runs, row["offsets"][0], key=lambda run: run[1])  # the run holding it
    if index < len(runs) and runs[index][0] > lmaxes[0]:
        floor = runs[index][0]
        row["lmax"] = [floor if value < floor else value for value in lmaxes]
